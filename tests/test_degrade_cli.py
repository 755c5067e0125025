"""`degrade` end to end on a few generated photos: outputs and manifest, a corrupt file, resume, the same
bytes for 1 and 2 workers, sources untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from degradations.builder import build_pairs, contact_sheet, output_name
from degradations.cli import app

runner = CliRunner()


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    """Three photos (PNG, JPEG, one in a subfolder), a corrupt PNG, a truncated JPEG and a text file."""
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "a.png"), _photo(40, 56, 0))
    cv2.imwrite(str(root / "b.jpg"), _photo(64, 48, 1))
    cv2.imwrite(str(root / "sub" / "c.png"), _photo(36, 36, 2))
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "cut.jpg").write_bytes((root / "b.jpg").read_bytes()[:300])  # truncated mid-stream
    (root / "notes.txt").write_text("not a photo")
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _invoke(src: Path, out: Path, *extra: str):
    return runner.invoke(app, [str(src), "--out", str(out), "--seed", "3", "--size", "32", *extra])


def test_pairs_manifest_corrupt_file_and_resume(src, tmp_path):
    before = _hashes(src)
    out = tmp_path / "out"
    result = _invoke(src, out)
    assert result.exit_code == 1, result.output  # the corrupt file fails the run...
    lines = result.output.splitlines()
    assert any(line.startswith("failed:") and "bad.png" in line for line in lines), result.output
    assert any(line.startswith("failed:") and "cut.jpg" in line for line in lines), result.output
    assert any(line.startswith("skipped:") and "notes.txt" in line for line in lines), result.output
    names = ["a.png", "b.png", "sub/c.png"]
    for name in names:  # ...but every good photo is done
        degraded = cv2.imread(str(out / "input" / name))
        clean = cv2.imread(str(out / "target" / name))
        assert degraded.shape == clean.shape and min(clean.shape[:2]) == 32
    records = _manifest(out)
    assert [r["input"] for r in records] == [f"input/{n}" for n in names]
    assert {r["source"] for r in records} == {"a.png", "b.jpg", "sub/c.png"}
    assert all(r["category"] in {"negative_color", "negative_bw", "bw", "color"} for r in records)
    assert all({"target", "seed", "ops"} <= set(r) for r in records)
    assert _hashes(src) == before, "sources must never change"

    # resume: nothing new is written, the manifest keeps one line per pair
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = _invoke(src, out)
    assert again.exit_code == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    assert _manifest(out) == records

    # a lost output is rebuilt with the same bytes, without a duplicate manifest line
    lost = out / "input" / "b.png"
    original = lost.read_bytes()
    lost.unlink()
    _invoke(src, out)
    assert lost.read_bytes() == original
    assert _manifest(out) == records
    assert _hashes(src) == before


@pytest.mark.slow  # starts two spawned worker processes
def test_one_and_two_workers_give_identical_bytes(src, tmp_path):
    (src / "bad.png").unlink()
    (src / "cut.jpg").unlink()
    for i in range(3):  # a few more files so both workers get some
        cv2.imwrite(str(src / f"extra{i}.png"), _photo(48, 40, 10 + i))
    one, two = tmp_path / "one", tmp_path / "two"
    assert build_pairs(src, one, seed=9, size=32, workers=1).written == 6
    assert build_pairs(src, two, seed=9, size=32, workers=2).written == 6
    assert _hashes(one) == _hashes(two)


def test_per_image_suffixes_and_distinct_degradations(src, tmp_path):
    (src / "bad.png").unlink()
    (src / "cut.jpg").unlink()
    out = tmp_path / "out"
    result = _invoke(src, out, "--per-image", "2")
    assert result.exit_code == 0, result.output
    first, second = out / "input" / "a_k00.png", out / "input" / "a_k01.png"
    assert first.read_bytes() != second.read_bytes()
    assert (out / "target" / "a_k00.png").read_bytes() == (out / "target" / "a_k01.png").read_bytes()
    assert len(_manifest(out)) == 6
    assert output_name("x/y.jpeg", 3, 12) == "x/y_k03.png"


def test_pixel_limit_refuses_big_images(src, tmp_path):
    result = _invoke(src, tmp_path / "out", "--max-pixels", "1000")
    assert result.exit_code == 1
    assert "pixel limit" in result.output and "a.png" in result.output
    assert not list((tmp_path / "out").rglob("*.png"))


def test_bad_config_is_a_clear_error(src, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("no_such_field = 1\n")
    result = _invoke(src, tmp_path / "out", "--config", str(config))
    assert result.exit_code != 0 and "no_such_field" in result.output


def test_contact_sheet(src, tmp_path):
    images = [_photo(40, 56, 0), _photo(64, 48, 1)]
    sheet = contact_sheet(images, tile=32, samples=1)
    assert sheet.dtype == np.uint8 and sheet.shape[0] == 2 * (32 + 20)
    target = tmp_path / "sheet.jpg"
    result = runner.invoke(app, [str(src), "--contact-sheet", str(target)])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(target)) is not None


@pytest.mark.slow  # a fresh interpreter importing albumentations
def test_console_script_runs(src, tmp_path):
    """The entry point in a fresh process, as users run it."""
    (src / "bad.png").unlink()
    (src / "cut.jpg").unlink()
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-c",
        "from degradations.cli import main; main()",
        str(src),
        "--out",
        str(out),
        "--size",
        "32",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert len(_manifest(out)) == 3


def test_unwritable_output_is_one_error_line(src, tmp_path):
    out = tmp_path / "taken"
    out.write_text("a file where the output folder should go")  # fails even for root, unlike chmod
    result = _invoke(src, out)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(out) in errors[0] and "cannot write" in errors[0], result.output
    assert "Traceback" not in result.output


def test_temporaries_of_a_killed_run_are_removed(src, tmp_path):
    out = tmp_path / "out"
    stale = out / "input" / ".a.png.4242.degrade-tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a png")
    _invoke(src, out)
    assert not stale.exists()
    assert not [p for p in out.rglob(".*") if p.is_file()]
