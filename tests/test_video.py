"""restore.video: frame count, timestamps, audio, odd sizes, corrupt data, atomic output, flicker smoothing.

Videos are generated here with PyAV (12 frames of 64x48). Most tests use a stand-in restorer so they test the
video plumbing only; one runs the real Restorer with a tiny random model.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from restore.imageio import is_temporary
from restore.video import ChromaSmoother, FlickerConfig, VideoError, restore_video, temp_path_for

FPS = 12
N_FRAMES = 12
SAMPLE_RATE = 16000


def scene(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A frame with a moving bar, so frames differ and a broken order or a dropped frame would show."""
    img = np.full((height, width, 3), 90, np.uint8)
    img[..., 0] = (60 + 10 * i) % 256
    x = (4 * i) % (width - 8)
    img[:, x:x + 8, 1] = 220
    return img


def make_video(path: Path, *, n: int = N_FRAMES, size: tuple[int, int] = (64, 48), audio: str | None = "aac",
               durations_ms: list[int] | None = None, codec: str = "libx264", pix_fmt: str = "yuv420p",
               corrupt_index: int | None = None, frames: list[np.ndarray] | None = None,
               rotation: int = 0) -> Path:
    """Write a test clip. `durations_ms` makes it variable-frame-rate; `corrupt_index` replaces that frame's
    packet with junk (an intra-only codec is needed for that to hit exactly one frame)."""
    width, height = size
    container = av.open(str(path), "w")
    video = container.add_stream(codec, rate=FPS)
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    time_base = Fraction(1, 1000)
    video.codec_context.time_base = time_base
    if rotation:
        video.set_display_rotation(rotation)
    out_audio = None
    if audio:
        out_audio = container.add_stream(audio, rate=SAMPLE_RATE)
        out_audio.layout = "mono"
    pts = 0
    for i in range(n):
        image = frames[i] if frames is not None else scene(i, width, height)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        pts += durations_ms[i] if durations_ms else 1000 // FPS
        for packet in video.encode(frame):
            if i == corrupt_index:
                junk = av.Packet(b"\xff\xd8" + b"not a jpeg frame" * 40)
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                junk.stream = video
                container.mux(junk)
            else:
                container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    if out_audio is not None:
        samples = int(SAMPLE_RATE * pts / 1000)
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / SAMPLE_RATE)
        sample_format = "fltp" if audio == "aac" else "s16"
        for start in range(0, samples, 1024):
            chunk = tone[start:start + 1024]
            data = chunk.astype(np.float32) if sample_format == "fltp" else (chunk * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(data[None], format=sample_format, layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            for packet in out_audio.encode(frame):
                container.mux(packet)
        for packet in out_audio.encode(None):
            container.mux(packet)
    container.close()
    return path


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video=0))
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "frames": len(frames),
            "times": [float(f.pts * f.time_base) for f in frames],
            "images": [f.to_ndarray(format="rgb24") for f in frames],
            "size": (video.codec_context.width, video.codec_context.height),
            "codec": video.codec_context.name,
            "audio_codec": audio.codec_context.name if audio else None,
            "audio_seconds": float(audio.duration * audio.time_base) if audio and audio.duration else None,
            "rate": video.average_rate,
        }


class StandIn:
    """Restorer stand-in: returns the frame (optionally changed by `fn`) and records what it was given."""

    def __init__(self, fn=None, fail_at: int | None = None):
        self.fn, self.fail_at, self.seen = fn, fail_at, []

    def restore_array(self, rgb):
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise RuntimeError("model blew up")
        self.seen.append(rgb.copy())
        out = self.fn(rgb, len(self.seen) - 1) if self.fn else rgb.copy()
        return out, {"input_type": "bw"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_temporary(p) or p.name.startswith("."))


def test_frames_fps_and_audio_kept(tmp_path):
    src = make_video(tmp_path / "clip.mp4")
    before, source = sha256(src), probe(src)
    calls = []
    stats = restore_video(src, tmp_path / "clip_restored.mp4", StandIn(), progress=lambda d, t: calls.append((d, t)))
    out = probe(tmp_path / "clip_restored.mp4")
    assert stats["frames"] == out["frames"] == source["frames"] == N_FRAMES
    assert stats["had_audio"] and stats["audio"] == "copied"
    assert out["audio_codec"] == "aac"
    assert out["audio_seconds"] == pytest.approx(source["audio_seconds"], abs=0.05)
    assert out["codec"] == "h264" and stats["video_codec"] == "libx264"
    assert stats["fps"] == pytest.approx(float(source["rate"]), rel=1e-6)
    assert float(out["rate"]) == pytest.approx(FPS, rel=0.02)
    assert out["times"] == pytest.approx(source["times"], abs=1e-3)
    assert stats["input_type"] == "bw" and stats["corrupt_frames"] == 0
    assert calls[-1] == (N_FRAMES, N_FRAMES) and len(calls) == N_FRAMES
    # identity restorer: the picture survives decode -> encode (lossy, so loosely)
    assert np.abs(out["images"][7].astype(int) - source["images"][7].astype(int)).mean() < 6
    assert sha256(src) == before and leftovers(tmp_path) == []


def test_no_audio_and_variable_frame_rate(tmp_path):
    durations = [40, 120, 80, 40, 200, 40, 40, 120, 80, 40, 60, 100]
    src = make_video(tmp_path / "vfr.mp4", audio=None, durations_ms=durations)
    stats = restore_video(src, tmp_path / "vfr_out.mp4", StandIn())
    out = probe(tmp_path / "vfr_out.mp4")
    assert stats["had_audio"] is False and out["audio_codec"] is None
    assert out["frames"] == N_FRAMES
    # each frame shows at its own source time: the uneven gaps survive
    assert out["times"] == pytest.approx(np.cumsum([0] + durations[:-1]) / 1000, abs=1e-3)


@pytest.mark.parametrize("name, video_codec, pix_fmt, audio", [
    ("pcm.mov", "libx264", "yuv420p", "pcm_s16le"),
    ("pcm.avi", "mjpeg", "yuvj420p", "pcm_s16le"),        # AVI names its layout only "1 channels"
    ("opus.webm", "libvpx-vp9", "yuv420p", "libopus"),
])
def test_audio_that_mp4_cannot_hold_is_transcoded_to_aac(tmp_path, name, video_codec, pix_fmt, audio):
    src = make_video(tmp_path / name, audio=audio, codec=video_codec, pix_fmt=pix_fmt)
    stats = restore_video(src, tmp_path / "restored.mp4", StandIn())
    out = probe(tmp_path / "restored.mp4")
    assert stats["frames"] == out["frames"] == N_FRAMES
    assert stats["audio"] == "transcoded to aac" and any("AAC" in note for note in stats["notes"])
    assert out["audio_codec"] == "aac"
    assert out["audio_seconds"] == pytest.approx(N_FRAMES / FPS, abs=0.1)


def test_odd_frame_size_is_padded_and_said(tmp_path):
    src = make_video(tmp_path / "odd.mov", size=(63, 47), audio=None, codec="png", pix_fmt="rgb24")
    restorer = StandIn()
    stats = restore_video(src, tmp_path / "odd_out.mp4", restorer)
    out = probe(tmp_path / "odd_out.mp4")
    assert restorer.seen[0].shape == (47, 63, 3)      # the restorer sees the true frame
    assert out["size"] == (64, 48) and stats["size"] == (63, 47)
    assert any("padded to 64x48" in note for note in stats["notes"])
    # the added column repeats the edge instead of adding a black border
    assert np.abs(out["images"][0][:, 63].astype(int) - out["images"][0][:, 62].astype(int)).mean() < 6


def test_corrupt_frame_is_counted_and_replaced(tmp_path, caplog):
    src = make_video(tmp_path / "broken.mkv", audio=None, codec="mjpeg", pix_fmt="yuvj420p", corrupt_index=5)
    stats = restore_video(src, tmp_path / "broken_out.mp4", StandIn())
    out = probe(tmp_path / "broken_out.mp4")
    assert stats["corrupt_frames"] == 1
    assert out["frames"] == N_FRAMES          # the lost frame is replaced by the previous one, timing kept
    assert np.abs(out["images"][5].astype(int) - out["images"][4].astype(int)).mean() < 2
    assert any("broken.mkv" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 20])
def test_not_a_video_is_one_line_error_naming_the_file(tmp_path, content):
    src = tmp_path / "fake video.mp4"
    src.write_bytes(content)
    with pytest.raises(VideoError) as caught:
        restore_video(src, tmp_path / "out.mp4", StandIn())
    message = str(caught.value)
    assert "fake video.mp4" in message and "\n" not in message
    assert not (tmp_path / "out.mp4").exists() and leftovers(tmp_path) == []


def test_pipe_or_missing_file_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(VideoError, match="pipe.mp4: not a regular file"):
        restore_video(tmp_path / "pipe.mp4", tmp_path / "out.mp4", StandIn())
    with pytest.raises(VideoError, match="gone.mp4: video file not found"):
        restore_video(tmp_path / "gone.mp4", tmp_path / "out.mp4", StandIn())


def test_truncated_video_keeps_what_decodes_or_fails_cleanly(tmp_path):
    full = make_video(tmp_path / "full.mkv", audio=None, codec="mjpeg", pix_fmt="yuvj420p")
    src = tmp_path / "cut.mkv"
    src.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])   # mkv has its index up front
    stats = restore_video(src, tmp_path / "cut_out.mp4", StandIn())
    assert 4 <= stats["frames"] < N_FRAMES
    assert probe(tmp_path / "cut_out.mp4")["frames"] == stats["frames"]


def test_never_writes_over_the_source(tmp_path):
    src = make_video(tmp_path / "clip.mp4", audio=None)
    before = sha256(src)
    with pytest.raises(VideoError, match="source"):
        restore_video(src, src, StandIn())
    link = tmp_path / "alias.mp4"
    os.link(src, link)
    with pytest.raises(VideoError, match="source"):
        restore_video(src, link, StandIn())
    assert sha256(src) == before


def test_failure_mid_video_leaves_no_output_and_no_temporary(tmp_path):
    src = make_video(tmp_path / "clip.mp4")
    dst = tmp_path / "clip_restored.mp4"
    with pytest.raises(RuntimeError, match="blew up"):
        restore_video(src, dst, StandIn(fail_at=5))
    assert not dst.exists() and leftovers(tmp_path) == []


def test_existing_output_replaced_atomically_and_stale_temporaries_removed(tmp_path):
    src = make_video(tmp_path / "clip.mp4", audio=None)
    dst = tmp_path / "clip_restored.mp4"
    dst.write_bytes(b"old output")
    # what a SIGKILLed run leaves behind: a temporary named after a process that no longer exists
    stale = temp_path_for(dst)
    stale.write_bytes(b"half a video")
    assert leftovers(tmp_path) == [stale.name]
    restore_video(src, dst, StandIn())
    assert probe(dst)["frames"] == N_FRAMES
    assert leftovers(tmp_path) == []


def chroma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float64)


def flickering_clip(n: int = N_FRAMES, cut_at: int | None = None):
    """Static scene; the 'restorer' tints every frame by a random amount, as a per-frame colouriser does."""
    rng = np.random.default_rng(0)
    sources, restored = [], []
    for i in range(n):
        dark = cut_at is not None and i >= cut_at
        source = np.full((48, 64, 3), 40 if dark else 170, np.uint8)
        source[10:30, 10:40] = 10 if dark else 230
        tint = rng.normal(0, 12, size=3)
        base = np.array([30, 60, 200] if dark else [200, 120, 60], float)
        sources.append(source)
        restored.append(np.clip(source * 0.3 + base * 0.7 + tint, 0, 255).astype(np.uint8))
    return sources, restored


def frame_to_frame_chroma_change(frames) -> float:
    return float(np.mean([np.abs(chroma(a) - chroma(b)).mean() for a, b in itertools.pairwise(frames)]))


def test_chroma_smoothing_reduces_flicker_and_keeps_luminance():
    sources, restored = flickering_clip()
    smoother = ChromaSmoother()
    smoothed = [smoother(s, r) for s, r in zip(sources, restored)]
    assert frame_to_frame_chroma_change(smoothed) < 0.6 * frame_to_frame_chroma_change(restored)
    for out, original in zip(smoothed, restored):   # luminance is each frame's own (up to rounding)
        luma_out = cv2.cvtColor(out, cv2.COLOR_RGB2YCrCb)[..., 0].astype(int)
        luma_in = cv2.cvtColor(original, cv2.COLOR_RGB2YCrCb)[..., 0].astype(int)
        assert np.abs(luma_out - luma_in).max() <= 2
    off = ChromaSmoother(FlickerConfig(strength=0.0))
    assert all(np.array_equal(off(s, r), r) for s, r in zip(sources, restored))


def test_chroma_smoothing_resets_at_a_scene_cut():
    sources, restored = flickering_clip(cut_at=6)
    smoother = ChromaSmoother()
    smoothed = [smoother(s, r) for s, r in zip(sources, restored)]
    assert smoother.cuts == 1
    # the first frame of the new shot is its own colour, not a blend with the old shot
    assert np.array_equal(smoothed[6], restored[6])
    assert not np.array_equal(smoothed[7], restored[7])   # and smoothing resumes within the shot


def test_a_fade_is_not_a_cut_but_a_new_shot_is():
    rng = np.random.default_rng(1)
    texture = rng.normal(0, 2, size=(48, 64, 1))   # a narrow histogram: each fade step empties whole bins
    fade = [np.clip(130 - 6 * i + texture, 0, 255).astype(np.uint8).repeat(3, axis=2) for i in range(15)]
    smoother = ChromaSmoother()
    assert [smoother.is_cut(frame) for frame in fade] == [False] * 15
    tones_only = ChromaSmoother(FlickerConfig(cut_min_shift=0.0))   # what histogram distance alone would say
    assert sum(tones_only.is_cut(frame) for frame in fade) >= 10
    other_shot = np.clip(200 + texture, 0, 255).astype(np.uint8).repeat(3, axis=2)
    assert smoother.is_cut(other_shot)


def test_moving_pixels_follow_their_own_frame():
    source = np.full((48, 64, 3), 150, np.uint8)
    moved_source = source.copy()
    moved_source[30:45, 45:60] = 0                      # something dark enters this corner
    first = np.full((48, 64, 3), (200, 120, 60), np.uint8)
    second = np.full((48, 64, 3), (170, 130, 110), np.uint8)   # the colouriser changed its mind
    second[30:45, 45:60] = (0, 0, 255)
    smoother = ChromaSmoother()
    smoother(source, first)
    out = smoother(moved_source, second)
    assert np.abs(chroma(out)[35, 50] - chroma(second)[35, 50]).max() < 3     # no colour trail
    # a still pixel is pulled towards the previous frame's colour
    previous, own, smoothed = chroma(first)[5, 5], chroma(second)[5, 5], chroma(out)[5, 5]
    assert np.abs(smoothed - previous).sum() < 0.5 * np.abs(own - previous).sum()


def test_flicker_reduced_in_the_written_video(tmp_path):
    sources, restored = flickering_clip()
    src = make_video(tmp_path / "flicker.mov", audio=None, codec="png", pix_fmt="rgb24", frames=sources)
    tinted = StandIn(fn=lambda rgb, i: restored[i])
    restore_video(src, tmp_path / "smooth.mp4", tinted)
    restore_video(src, tmp_path / "raw.mp4", StandIn(fn=lambda rgb, i: restored[i]),
                  flicker=FlickerConfig(strength=0.0))
    smooth = frame_to_frame_chroma_change(probe(tmp_path / "smooth.mp4")["images"])
    raw = frame_to_frame_chroma_change(probe(tmp_path / "raw.mp4")["images"])
    assert smooth < 0.6 * raw


@pytest.fixture(scope="module")
def tiny_restorer(tiny_weights):
    inference = pytest.importorskip("restore.inference", reason="restore/inference.py not written yet")
    return inference.Restorer(weights=tiny_weights, device="cpu")


def test_real_restorer_on_a_video(tmp_path, tiny_restorer):
    src = make_video(tmp_path / "clip.mp4")
    stats = restore_video(src, tmp_path / "clip_restored.mp4", tiny_restorer)
    out = probe(tmp_path / "clip_restored.mp4")
    assert out["frames"] == stats["frames"] == N_FRAMES
    assert out["size"] == (64, 48) and out["audio_codec"] == "aac"
    assert stats["input_type"] != "unknown"


def test_cli_restores_a_video_beside_it(tmp_path, tiny_weights):
    cli = pytest.importorskip("restore.cli", reason="restore/cli.py not written yet")
    from typer.testing import CliRunner

    src = make_video(tmp_path / "clip.mp4")
    before = sha256(src)
    result = CliRunner().invoke(cli.app, [str(src), "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    out = probe(tmp_path / "clip_restored.mp4")
    assert out["frames"] == N_FRAMES and out["audio_codec"] == "aac"
    assert sha256(src) == before


class Detecting(StandIn):
    """Auto-detecting stand-in: says 'bw' on even frames and 'color' on odd ones unless its type is forced."""

    def __init__(self):
        super().__init__()
        self.input_type = "auto"
        self.forced = []

    def restore_array(self, rgb):
        out, _ = super().restore_array(rgb)
        self.forced.append(self.input_type)
        detected = self.input_type if self.input_type != "auto" else ("bw", "color")[(len(self.seen) - 1) % 2]
        return out, {"input_type": detected}


def test_input_type_detected_once_per_shot(tmp_path):
    sources, _ = flickering_clip(cut_at=7)
    src = make_video(tmp_path / "shots.mov", audio=None, codec="png", pix_fmt="rgb24", frames=sources)
    restorer = Detecting()
    stats = restore_video(src, tmp_path / "shots.mp4", restorer)
    # auto on each shot's first frame, then locked to what that frame was detected as
    assert restorer.forced == ["auto"] + ["bw"] * 6 + ["auto"] + ["color"] * 4
    assert stats["input_types"] == {"bw": 7, "color": 5} and stats["scene_cuts"] == 1
    assert restorer.input_type == "auto"          # the caller's object is left as it was



def test_cli_folder_with_a_broken_video_goes_on(tmp_path, tiny_weights):
    cli = pytest.importorskip("restore.cli", reason="restore/cli.py not written yet")
    from typer.testing import CliRunner

    films = tmp_path / "films"
    films.mkdir()
    make_video(films / "good.mp4", audio=None)
    (films / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)   # a header, no movie
    before = {p.name: sha256(p) for p in films.iterdir()}
    result = CliRunner().invoke(cli.app, [str(films), "--out", str(tmp_path / "out"), "--weights",
                                          str(tiny_weights)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if "broken.mp4" in line]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert probe(tmp_path / "out" / "good.mp4")["frames"] == N_FRAMES
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.mp4"]
    assert {p.name: sha256(p) for p in films.iterdir()} == before



def test_phone_video_rotation_is_applied_to_the_pixels(tmp_path):
    marked = [scene(i) for i in range(N_FRAMES)]
    for image in marked:
        image[:8, :8] = (255, 255, 255)            # stored top-left corner
    src = make_video(tmp_path / "portrait.mp4", audio=None, frames=marked, rotation=90)
    with av.open(str(src)) as container:           # the file says: show it turned 90 deg counter-clockwise
        assert next(container.decode(video=0)).rotation == 90
    restorer = StandIn()
    stats = restore_video(src, tmp_path / "upright.mp4", restorer)
    out = probe(tmp_path / "upright.mp4")
    assert restorer.seen[0].shape == (64, 48, 3)   # the model sees the upright picture
    assert out["size"] == (48, 64) and stats["size"] == (48, 64)
    first = out["images"][0].astype(int)
    assert first[-8:, :8].mean() > 200 and first[:8, :8].mean() < 200   # top-left went to bottom-left
    with av.open(str(tmp_path / "upright.mp4")) as container:
        assert not next(container.decode(video=0)).rotation            # not rotated a second time
