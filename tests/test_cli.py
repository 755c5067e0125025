"""The `restore` command: files, folders, resume, no overwrites, odd inputs, the video branch, --version.

In-process runs use typer's CliRunner with the generator loaded once per weights file (loading is the slow
part and is tested once, unpatched, in the subprocess test).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restore import cli

RUNNER = CliRunner()
_LOADED: dict = {}


@pytest.fixture(autouse=True)
def _load_weights_once(monkeypatch):
    from restore import inference

    real = inference.load_generator

    def cached(path, device="cpu", spec=None):
        key = (str(path), str(device))
        if key not in _LOADED:
            _LOADED[key] = real(path, device, spec)
        return _LOADED[key]

    monkeypatch.setattr(inference, "load_generator", cached)


def _photo(path: Path, size=(48, 36), mode="RGB", seed=0, **save) -> Path:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(size[1] // 6, 1), max(size[0] // 6, 1), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BILINEAR)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invoke(*args, weights: Path):
    return RUNNER.invoke(cli.app, [*map(str, args), "--weights", str(weights)])


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def test_single_file_is_restored_beside_it_with_the_same_size(tmp_path, tiny_weights):
    photo = _photo(tmp_path / "photo.jpg", size=(333, 217))
    before = _sha(photo)
    result = _invoke(photo, weights=tiny_weights)
    assert result.exit_code == 0, result.output
    output = tmp_path / "photo_restored.jpg"
    assert _size(output) == (333, 217)
    assert _sha(photo) == before
    assert any(kind in result.output for kind in ("negative", "bw", "color"))   # detected type is reported
    assert "restored" in result.output and "Traceback" not in result.output


def test_several_files_into_an_out_folder(tmp_path, tiny_weights):
    a = _photo(tmp_path / "a.jpg")
    b = _photo(tmp_path / "in" / "b.png", size=(31, 45), seed=1)
    result = _invoke(a, b, "--out", tmp_path / "out", weights=tiny_weights)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.png"]
    assert _size(tmp_path / "out" / "b.png") == (31, 45)


def test_folder_with_a_corrupt_file_restores_the_rest_and_fails(tmp_path, tiny_weights):
    scans = tmp_path / "scans"
    good = [_photo(scans / "a.jpg"), _photo(scans / "sub" / "deeper" / "b.png", seed=2)]
    (scans / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not finished")
    (scans / "notes.txt").write_text("not a photo, not our business")
    hashes = {p: _sha(p) for p in good}
    out = tmp_path / "restored"
    result = _invoke(scans, "--out", out, weights=tiny_weights)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if "broken.jpg" in line]
    assert len(errors) == 1 and "error" in errors[0], result.output
    assert (out / "a.jpg").is_file() and (out / "sub" / "deeper" / "b.png").is_file()
    assert not (out / "sub" / "broken.jpg").exists() and not (out / "notes.txt").exists()
    assert all(_sha(p) == h for p, h in hashes.items())
    assert "Traceback" not in result.output


def test_second_run_skips_everything(tmp_path, tiny_weights):
    scans = tmp_path / "scans"
    _photo(scans / "a.jpg")
    _photo(scans / "b.png", seed=3)
    out = tmp_path / "out"
    assert _invoke(scans, "--out", out, weights=tiny_weights).exit_code == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    stale = out / ".a.jpg.0badcafe.restore-tmp"          # what a run killed mid-write leaves behind
    stale.write_bytes(b"half a jpeg")
    again = _invoke(scans, "--out", out, weights=tiny_weights)
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") >= 2 and "already restored" in again.output
    assert not stale.exists()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_two_inputs_with_one_output_name_do_not_overwrite_each_other(tmp_path):
    from restore.batch import plan

    first, second = _photo(tmp_path / "x" / "a.jpg"), _photo(tmp_path / "y" / "a.jpg")
    jobs, settled = plan([first, second], tmp_path / "out")
    assert [job.source for job in jobs] == [first]
    assert settled[0].status == "failed" and f"also the output of {first}" in settled[0].message


def test_beside_mode_in_a_folder_does_not_restore_its_own_outputs(tmp_path, tiny_weights):
    scans = tmp_path / "scans"
    _photo(scans / "a.jpg")
    assert _invoke(scans, weights=tiny_weights).exit_code == 0
    assert (scans / "a_restored.jpg").is_file()
    again = _invoke(scans, weights=tiny_weights)
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in scans.iterdir()) == ["a.jpg", "a_restored.jpg"]


def test_existing_output_is_not_overwritten_without_overwrite(tmp_path, tiny_weights):
    photo = _photo(tmp_path / "photo.png")
    output = tmp_path / "photo_restored.png"
    output.write_bytes(b"the user's own file")
    result = _invoke(photo, weights=tiny_weights)
    assert result.exit_code == 0 and output.read_bytes() == b"the user's own file"
    result = _invoke(photo, "--overwrite", weights=tiny_weights)
    assert result.exit_code == 0, result.output
    assert _size(output) == _size(photo)


def test_output_folder_equal_to_input_never_replaces_originals(tmp_path, tiny_weights):
    photo = _photo(tmp_path / "photo.jpg")
    before = _sha(photo)
    result = _invoke(photo, "--out", tmp_path, "--overwrite", weights=tiny_weights)
    assert result.exit_code == 1 and "replace the original" in result.output
    assert _sha(photo) == before


def test_compare_writes_a_side_by_side(tmp_path, tiny_weights):
    photo = _photo(tmp_path / "photo.png", size=(50, 40))
    result = _invoke(photo, "--compare", weights=tiny_weights)
    assert result.exit_code == 0, result.output
    assert _size(tmp_path / "photo_compare.jpg") == (2 * 50 + 8, 40)
    assert _size(tmp_path / "photo_restored.png") == (50, 40)


def test_exif_rotated_input_comes_out_upright(tmp_path, tiny_weights):
    image = Image.fromarray(np.full((20, 36, 3), 128, np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    result = _invoke(tmp_path / "rotated.jpg", weights=tiny_weights)
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "rotated_restored.jpg") as restored:
        assert restored.size == (20, 36) and restored.getexif().get(0x0112, 1) == 1


@pytest.mark.parametrize("name, mode, alpha", [
    ("gray.png", "L", False), ("palette.gif", "P", False), ("rgba.png", "RGBA", True),
])
def test_awkward_modes_are_restored(tmp_path, tiny_weights, name, mode, alpha):
    photo = _photo(tmp_path / name, size=(41, 29), mode=mode)
    result = _invoke(photo, "--out", tmp_path / "out", weights=tiny_weights)
    assert result.exit_code == 0, result.output
    output = tmp_path / "out" / Path(name).with_suffix(".png").name
    with Image.open(output) as restored:
        assert restored.size == (41, 29)
        assert ("A" in restored.getbands()) == alpha


def test_sixteen_bit_input(tmp_path, tiny_weights):
    gradient = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    result = _invoke(tmp_path / "deep.png", weights=tiny_weights)
    assert result.exit_code == 0, result.output
    assert _size(tmp_path / "deep_restored.png") == (40, 30)


def test_missing_weights_is_one_line_without_traceback(tmp_path):
    photo = _photo(tmp_path / "photo.png")
    result = RUNNER.invoke(cli.app, [str(photo), "--weights", str(tmp_path / "none.safetensors")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if "none.safetensors" in line]
    assert len(lines) == 1 and "not found" in lines[0] and "Traceback" not in result.output


def test_bad_input_type_is_a_usage_error(tmp_path, tiny_weights):
    result = _invoke(_photo(tmp_path / "p.png"), "--input-type", "sepia", weights=tiny_weights)
    assert result.exit_code == 2


def test_tones_and_saturation_options_reach_the_restorer(tmp_path, tiny_weights, monkeypatch):
    from restore import inference

    seen = []
    original = inference.Restorer.__init__

    def recording(self, *args, **kwargs):
        seen.append((kwargs.get("tones"), kwargs.get("saturation")))
        original(self, *args, **kwargs)

    monkeypatch.setattr(inference.Restorer, "__init__", recording)
    photo = _photo(tmp_path / "p.png")
    assert _invoke(photo, "--tones", "network", "--saturation", "1.8", "--out", tmp_path / "a",
                   weights=tiny_weights).exit_code == 0
    assert _invoke(photo, "--out", tmp_path / "b", weights=tiny_weights).exit_code == 0
    assert seen == [("network", 1.8), ("input", 1.0)]
    assert _invoke(photo, "--tones", "sepia", weights=tiny_weights).exit_code == 2
    refused = _invoke(photo, "--saturation", "9", weights=tiny_weights)
    assert refused.exit_code == 2 and "saturation" in refused.output


def test_detector_options_reach_the_restorer(tmp_path, tiny_weights, monkeypatch):
    from restore import inference
    from restore.arch import DetectorSpec, build_detector
    from restore.weights import save_detector

    detector = tmp_path / "my_detector.safetensors"
    save_detector(build_detector(DetectorSpec(channels=(4, 8))), detector, DetectorSpec(channels=(4, 8)))
    seen = []
    original = inference.Restorer.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append((kwargs.get("detector_weights"), self.detector is not None))

    monkeypatch.setattr(inference.Restorer, "__init__", recording)
    photo = _photo(tmp_path / "p.png")
    assert _invoke(photo, "--detector", detector, "--out", tmp_path / "a", weights=tiny_weights).exit_code == 0
    assert _invoke(photo, "--no-detector", "--out", tmp_path / "b", weights=tiny_weights).exit_code == 0
    assert seen == [(detector, True), (None, False)]
    missing = _invoke(photo, "--detector", tmp_path / "none.safetensors", "--out", tmp_path / "c",
                      weights=tiny_weights)
    assert missing.exit_code == 2 and "none.safetensors" in missing.output
    version = RUNNER.invoke(cli.app, ["--version", "--detector", str(detector)]).output
    assert "damage detector: my_detector" in version


def test_denoiser_options_reach_the_restorer(tmp_path, tiny_weights, monkeypatch):
    from restore import inference
    from restore.arch import DenoiserSpec, build_denoiser
    from restore.weights import save_denoiser

    denoiser = tmp_path / "my_denoiser.safetensors"
    save_denoiser(build_denoiser(DenoiserSpec(channels=(4, 8))), denoiser, DenoiserSpec(channels=(4, 8)))
    seen = []
    original = inference.Restorer.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        seen.append((kwargs.get("denoiser_weights"), self.denoiser is not None,
                     kwargs.get("negative_denoiser_weights"), self.negative_denoiser is not None))

    monkeypatch.setattr(inference.Restorer, "__init__", recording)
    monkeypatch.setattr("restore.inference.default_denoiser_path", lambda: tmp_path / "none.safetensors")
    monkeypatch.setattr("restore.inference.default_negative_denoiser_path", lambda: tmp_path / "none.safetensors")
    photo = _photo(tmp_path / "p.png")
    assert _invoke(photo, "--denoiser", denoiser, "--out", tmp_path / "a", weights=tiny_weights).exit_code == 0
    assert _invoke(photo, "--no-denoiser", "--out", tmp_path / "b", weights=tiny_weights).exit_code == 0
    assert _invoke(photo, "--negative-denoiser", denoiser, "--out", tmp_path / "n",
                   weights=tiny_weights).exit_code == 0
    assert _invoke(photo, "--negative-denoiser", denoiser, "--no-denoiser", "--out", tmp_path / "m",
                   weights=tiny_weights).exit_code == 0
    assert seen == [(denoiser, True, None, False), (None, False, None, False), (None, False, denoiser, True),
                    (None, False, None, False)]
    for option in ("--denoiser", "--negative-denoiser"):
        missing = _invoke(photo, option, tmp_path / "none.safetensors", "--out", tmp_path / "c",
                          weights=tiny_weights)
        assert missing.exit_code == 2 and "none.safetensors" in missing.output
    version = RUNNER.invoke(cli.app, ["--version", "--denoiser", str(denoiser)]).output
    assert "denoiser: my_denoiser" in version and "negative denoiser: " in version
    version = RUNNER.invoke(cli.app, ["--version", "--negative-denoiser", str(denoiser)]).output
    assert "negative denoiser: my_denoiser" in version


def test_version_names_the_model_and_says_placeholder(tmp_path, tiny_weights):
    weights = tmp_path / "model.safetensors"
    shutil.copy(tiny_weights, weights)
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    card.update(name="restore-placeholder", version="0.0.1", placeholder=True)
    weights.with_suffix(".json").write_text(json.dumps(card))
    result = RUNNER.invoke(cli.app, ["--version", "--weights", str(weights)])
    assert result.exit_code == 0
    assert "restore 0.1.0" in result.output or "restore " in result.output.splitlines()[0]
    assert "restore-placeholder 0.0.1" in result.output and "placeholder" in result.output.split("0.0.1")[1]
    card["placeholder"] = False
    weights.with_suffix(".json").write_text(json.dumps(card))
    assert "placeholder" not in RUNNER.invoke(cli.app, ["--version", "--weights", str(weights)]).output \
        .split("0.0.1")[1]


def test_video_files_go_through_restore_video(tmp_path, tiny_weights, monkeypatch):
    import restore.video

    calls = []

    def fake_restore_video(src, dst, restorer, progress=None, **kwargs):
        calls.append((Path(src), Path(dst), restorer))
        progress(1, 2)
        progress(2, 2)
        Path(dst).write_bytes(b"video")
        return {"frames": 2, "input_type": "bw"}

    monkeypatch.setattr(restore.video, "restore_video", fake_restore_video)
    film = tmp_path / "film.mov"
    film.write_bytes(b"not decoded by the fake")
    result = _invoke(film, weights=tiny_weights)
    assert result.exit_code == 0, result.output
    assert calls and calls[0][:2] == (film, tmp_path / "film_restored.mp4")
    assert hasattr(calls[0][2], "restore_array")
    assert (tmp_path / "film_restored.mp4").read_bytes() == b"video"


def test_python_dash_m_restore_as_a_subprocess(tmp_path, tiny_weights):
    scans = tmp_path / "scans"
    _photo(scans / "a.jpg", size=(333, 217))
    (scans / "empty.png").write_bytes(b"")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "restore", str(scans), "--out", str(tmp_path / "out"),
                             "--weights", str(tiny_weights)], check=False, capture_output=True, text=True,
                            env=env,
                            timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == \
        [f"error: {scans / 'empty.png'}: empty file (0 bytes)"]
    assert _size(tmp_path / "out" / "a.jpg") == (333, 217)
    assert "Traceback" not in result.stdout + result.stderr
