"""Restore a video frame by frame: decode with PyAV, restore, smooth colour over time, re-encode H.264.

The audio stream is copied packet for packet (transcoded to AAC only when the output container cannot hold
its codec), the source timestamps are kept (so variable frame rates survive), and the output is written to a
temporary file beside the destination and renamed into place, so an interrupted run never leaves a
half-written video under the final name. The source is never written to.
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np

from restore.imageio import is_temporary, temporary_path

log = logging.getLogger(__name__)

# Audio codecs the MP4/MOV muxers take as they are; anything else (PCM, Vorbis, ...) is transcoded to AAC.
_MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
_MOV_AUDIO = _MP4_AUDIO | {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le", "pcm_u8"}
_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


class VideoError(ValueError):
    """A video that cannot be restored; the message names the file and the reason in one line."""


class ArrayRestorer(Protocol):
    def restore_array(self, image: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]: ...


@dataclass(frozen=True)
class FlickerConfig:
    strength: float = 0.7           # EMA weight of the running chroma (0 = off); 0.7 ~ a 3-frame memory
    motion_sigma: float = 12.0      # luma change (0-255) at which a pixel follows its own frame's chroma
    cut_threshold: float = 0.4      # luma-histogram distance (0-1) above which a frame starts a new shot...
    cut_min_shift: float = 0.05     # ...if the tones also moved this far (earth mover's, 0-1): fades are not cuts
    histogram_bins: int = 32


def luma_histogram(rgb: np.ndarray, bins: int = 32) -> np.ndarray:
    """Normalised histogram of the luminance of a uint8 RGB frame (sums to 1)."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hist = cv2.calcHist([luma], [0], None, [bins], [0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Total-variation distance between two normalised histograms: 0 identical, 1 disjoint."""
    return 0.5 * float(np.abs(a - b).sum())


def histogram_shift(a: np.ndarray, b: np.ndarray) -> float:
    """1-D earth mover's distance between two normalised histograms, as a fraction of the tone range.

    A fade moves every tone a little (large total variation on a narrow histogram, small shift); a cut to
    another shot moves the tones far.
    """
    return float(np.abs(np.cumsum(a - b)).sum()) / len(a)


class ChromaSmoother:
    """Temporal smoothing of chroma, reset at scene cuts.

    Each restored frame keeps its own luminance (the detail); only its Cr/Cb planes are blended with a running
    average, so colour that the network guesses a little differently on each frame stops flickering. Where a
    pixel's luma changed a lot since the previous frame (motion) the blend falls back to the frame's own
    chroma, so moving objects do not drag colour trails. Cuts are detected on the *source* frames, which do not
    depend on what the network did.
    """

    def __init__(self, config: FlickerConfig = FlickerConfig()):
        self.config = config
        self.cuts = 0
        self._chroma: np.ndarray | None = None
        self._luma: np.ndarray | None = None
        self._histogram: np.ndarray | None = None

    def is_cut(self, source_rgb: np.ndarray) -> bool:
        histogram = luma_histogram(source_rgb, self.config.histogram_bins)
        previous, self._histogram = self._histogram, histogram
        return (previous is not None and histogram_distance(previous, histogram) > self.config.cut_threshold
                and histogram_shift(previous, histogram) > self.config.cut_min_shift)

    def __call__(self, source_rgb: np.ndarray, restored_rgb: np.ndarray, cut: bool | None = None) -> np.ndarray:
        """The restored frame with smoothed chroma. `cut`: whether this frame starts a shot (None: detect)."""
        if cut is None:
            cut = self.is_cut(source_rgb)
        self.cuts += bool(cut)
        ycc = cv2.cvtColor(restored_rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
        luma, chroma = ycc[..., 0], ycc[..., 1:]
        if (cut or self._chroma is None or self._chroma.shape != chroma.shape or self.config.strength <= 0):
            self._chroma, self._luma = chroma, luma
            return restored_rgb
        # per-pixel weight of the history: strength where the scene is still, ~0 where it moved
        change = np.abs(luma - self._luma) / self.config.motion_sigma
        weight = (self.config.strength * np.exp(-change * change))[..., None]
        smoothed = weight * self._chroma + (1.0 - weight) * chroma
        self._chroma, self._luma = smoothed, luma
        ycc[..., 1:] = smoothed
        return cv2.cvtColor(np.clip(np.rint(ycc), 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


def _even(n: int) -> int:
    return n + (n % 2)


def _pad_even(rgb: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column rather than crop, so no source pixel is lost."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _video_codec() -> tuple[str, str | None]:
    """libx264 when PyAV's bundled ffmpeg has it; otherwise MPEG-4 Part 2, with a note saying so."""
    for name in ("libx264", "h264"):
        try:
            av.Codec(name, "w")
            return name, None
        except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
    return "mpeg4", "no H.264 encoder in this PyAV build: wrote MPEG-4 Part 2 video instead"


def temp_path_for(dst: Path) -> Path:
    """The project's temporary-output name (restore.imageio), so `restore`'s start-up cleanup knows it too."""
    return temporary_path(dst)


def remove_stale_temp_files(dst: Path) -> int:
    """Delete temporaries that a killed earlier run left for `dst`."""
    removed = 0
    for path in dst.parent.glob(f".{glob.escape(dst.name)}.*"):
        if is_temporary(path) and path.is_file():
            try:
                path.unlink()
                removed += 1
            except OSError:
                pass
    return removed


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:200]


def restore_video(src: str | Path, dst: str | Path, restorer: ArrayRestorer,
                  progress: Callable[[int, int], None] | None = None, *,
                  flicker: FlickerConfig = FlickerConfig(), crf: int = 18, preset: str = "medium") -> dict:
    """Restore every frame of `src` with `restorer.restore_array` and write an H.264 video to `dst`.

    Returns stats: frames, fps, had_audio, audio ("copied"/"transcoded to aac"/None), seconds, input_type
    (the type detected most often), input_types (counts), corrupt_frames, scene_cuts, size, notes.
    Raises VideoError (one line naming the file) for anything that stops the restoration.
    """
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst):
        raise VideoError(f"{src}: refusing to write the output over the source video")
    container_format = _CONTAINERS.get(dst.suffix.lower())
    if container_format is None:
        raise VideoError(f"{dst}: unsupported output extension {dst.suffix!r} (use .mp4, .mov, .m4v or .mkv)")
    if not src.exists():
        raise VideoError(f"{src}: video file not found")
    if not src.is_file():   # a pipe or a device would block or never end
        raise VideoError(f"{src}: not a regular file")
    start = time.perf_counter()
    try:
        source = av.open(str(src), mode="r")
    except (av.FFmpegError, OSError, ValueError) as error:
        raise VideoError(f"{src}: cannot open as a video ({_reason(error)})") from None
    try:
        if not source.streams.video:
            raise VideoError(f"{src}: contains no video stream")
        dst.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(dst)
        tmp = temp_path_for(dst)
        try:
            stats = _transcode(source, src, tmp, container_format, restorer, progress, flicker, crf, preset)
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        source.close()
    stats["seconds"] = round(time.perf_counter() - start, 3)
    return stats


def _transcode(source, src: Path, tmp: Path, container_format: str, restorer: ArrayRestorer,
               progress: Callable[[int, int], None] | None, flicker: FlickerConfig, crf: int,
               preset: str) -> dict:
    in_video = source.streams.video[0]
    in_audio = source.streams.audio[0] if source.streams.audio else None
    in_video.thread_type = "AUTO"
    time_base = in_video.time_base or Fraction(1, 90000)
    rate = in_video.average_rate or in_video.guessed_rate or Fraction(25)
    total = in_video.frames or (int(float(source.duration) / av.time_base * rate) if source.duration else 0)
    notes: list[str] = []
    codec_name, note = _video_codec()
    if note:
        notes.append(note)
        log.warning("%s: %s", src, note)

    # Restorer(input_type="auto") is locked to the type detected on each shot's first frame
    lock_type = getattr(restorer, "input_type", None) == "auto"
    try:
        output = av.open(str(tmp), mode="w", format=container_format)
    except (av.FFmpegError, OSError) as error:
        raise VideoError(f"{tmp.parent}: cannot write the output video ({_reason(error)})") from None
    try:
        width, height = in_video.codec_context.width, in_video.codec_context.height
        if not width or not height:
            raise VideoError(f"{src}: the video stream has no frame size")
        turns = _quarter_turns(src)
        if turns % 2:
            width, height = height, width
        if turns:
            notes.append(f"display rotation {90 * turns} deg applied to the pixels (the model sees upright frames)")
        out_video = output.add_stream(codec_name, rate=rate)
        # sized before anything is muxed: the first (audio) packet opens every encoder
        out_video.width, out_video.height = _even(width), _even(height)
        if (out_video.width, out_video.height) != (width, height):
            notes.append(f"odd frame size {width}x{height} padded to {out_video.width}x{out_video.height} "
                         "by repeating the edge (yuv420p needs even sizes)")
        out_video.pix_fmt = "yuv420p"
        out_video.codec_context.time_base = time_base
        out_video.time_base = time_base
        if codec_name == "libx264":
            out_video.options = {"crf": str(crf), "preset": preset}
        else:
            out_video.bit_rate = 8_000_000

        out_audio, audio_mode, resampler = None, None, None
        if in_audio is not None:
            allowed = {"mp4": _MP4_AUDIO, "mov": _MOV_AUDIO}.get(container_format)
            if allowed is None or in_audio.codec_context.name in allowed:
                out_audio = output.add_stream_from_template(in_audio)
                audio_mode = "copied"
            else:
                rate_hz = in_audio.codec_context.sample_rate or 48000
                # a named layout: AVI/WAV often say only "1 channels", which the AAC encoder refuses
                channels = in_audio.layout.nb_channels if in_audio.layout else 2
                layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}.get(channels, "stereo")
                out_audio = output.add_stream("aac", rate=rate_hz)
                out_audio.layout = layout
                resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate_hz)
                audio_mode = "transcoded to aac"
                notes.append(f"audio codec {in_audio.codec_context.name} cannot go into "
                             f"{container_format}: transcoded to AAC")
                log.warning("%s: %s", src, notes[-1])

        smoother = ChromaSmoother(flicker)
        state: dict[str, Any] = {"frames": 0, "corrupt": 0, "last": None, "last_pts": None,
                                 "size": (width, height), "types": Counter()}

        def emit(rgb_out: np.ndarray, pts: int | None) -> None:
            if pts is None or (state["last_pts"] is not None and pts <= state["last_pts"]):
                # missing or non-increasing timestamps (broken muxing): continue one frame step after the last
                step = max(round(1 / (rate * time_base)), 1)
                pts = 0 if state["last_pts"] is None else state["last_pts"] + step
            state["last_pts"] = pts
            frame = av.VideoFrame.from_ndarray(_pad_even(rgb_out), format="rgb24")
            frame.pts, frame.time_base = pts, time_base
            for packet in out_video.encode(frame):
                output.mux(packet)
            state["frames"] += 1
            if progress is not None:
                progress(state["frames"], max(total, state["frames"]))

        def restore_frame(frame) -> None:
            rgb = frame.to_ndarray(format="rgb24")
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, turns))
            if (rgb.shape[1], rgb.shape[0]) != state["size"]:
                # a mid-stream resolution change: keep the output size stable
                rgb = cv2.resize(rgb, state["size"], interpolation=cv2.INTER_AREA)
            cut = smoother.is_cut(rgb)
            if lock_type and (cut or state["frames"] == 0):
                restorer.input_type = "auto"   # a new shot may be another kind of film: detect again
            restored, info = restorer.restore_array(rgb)
            if restored.shape != rgb.shape:
                raise VideoError(f"{src}: restorer returned {restored.shape} for a {rgb.shape} frame")
            detected = str((info or {}).get("input_type", "unknown"))
            state["types"][detected] += 1
            if lock_type and detected in ("negative", "bw", "color"):
                # one type per shot: auto-detection flipping between frames would flicker far more than colour
                restorer.input_type = detected
            restored = smoother(rgb, restored, cut=cut)
            state["last"] = restored
            emit(restored, frame.pts)

        def lost_frame(packet, error: BaseException) -> None:
            state["corrupt"] += 1
            log.warning("%s: corrupt video data at packet %s (%s): %s", src, packet.pts, _reason(error),
                        "repeating the previous frame" if state["last"] is not None else "skipped")
            if state["last"] is not None and packet.pts is not None:
                emit(state["last"], packet.pts)

        streams = [in_video] + ([in_audio] if in_audio is not None else [])
        packets = source.demux(*streams)
        while True:
            # only the demuxer's own errors mean "the file ends here"; encoder errors must not be taken for that
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as error:
                if state["frames"] == 0:
                    raise VideoError(f"{src}: cannot decode any video frame ({_reason(error)})") from None
                notes.append(f"stream ended early after {state['frames']} frames ({_reason(error)})")
                log.warning("%s: %s", src, notes[-1])
                break
            if packet.stream.type == "video":
                try:
                    frames = packet.decode()
                except av.FFmpegError as error:
                    lost_frame(packet, error)
                    continue
                for frame in frames:
                    restore_frame(frame)
            elif out_audio is not None:
                if resampler is None:
                    if packet.dts is None:  # demuxer flush packet: nothing to copy
                        continue
                    packet.stream = out_audio
                    output.mux(packet)
                else:
                    _transcode_audio(packet, resampler, out_audio, output)
        try:
            # demux() ends with a flush packet that drains the decoder; this drains it if demuxing stopped early
            for frame in in_video.codec_context.decode(None):
                restore_frame(frame)
        except av.error.EOFError:
            pass  # already drained
        except av.FFmpegError as error:
            state["corrupt"] += 1
            log.warning("%s: corrupt data at the end of the stream (%s)", src, _reason(error))
        if state["frames"] == 0:
            raise VideoError(f"{src}: no decodable video frames")
        for packet in out_video.encode(None):
            output.mux(packet)
        if resampler is not None:
            _transcode_audio(None, resampler, out_audio, output)
    except av.FFmpegError as error:
        raise VideoError(f"{src}: video re-encoding failed ({_reason(error)})") from None
    finally:
        if lock_type:
            restorer.input_type = "auto"
        output.close()

    types: Counter = state["types"]
    return {
        "frames": state["frames"],
        "fps": float(rate),
        "average_rate": str(rate),
        "had_audio": in_audio is not None,
        "audio": audio_mode,
        "video_codec": codec_name,
        "input_type": types.most_common(1)[0][0] if types else "unknown",
        "input_types": dict(types),
        "corrupt_frames": state["corrupt"],
        "scene_cuts": smoother.cuts,
        "size": state["size"],
        "notes": notes,
    }


def _quarter_turns(src: Path) -> int:
    """Counter-clockwise quarter turns that the file's display matrix asks for (phone videos), from its first
    frame. Read before the output is set up, because the output's size depends on it."""
    try:
        with av.open(str(src)) as container:
            for frame in container.decode(video=0):
                degrees = frame.rotation or 0
                if degrees % 90:
                    log.warning("%s: display rotation %s deg is not a quarter turn; ignored", src, degrees)
                    return 0
                return int(degrees // 90) % 4
    except av.FFmpegError:
        pass  # the main pass reports decode problems
    return 0


def _transcode_audio(packet, resampler, out_audio, output) -> None:
    """Decode -> resample to AAC's planar float -> encode; `packet=None` flushes."""
    if packet is None:
        frames = [None]
    else:
        try:
            frames = packet.decode()
        except av.FFmpegError as error:
            log.warning("corrupt audio packet at %s skipped (%s)", packet.pts, _reason(error))
            return
    for frame in frames:
        for resampled in resampler.resample(frame):
            for out_packet in out_audio.encode(resampled):
                output.mux(out_packet)
    if packet is None:
        for out_packet in out_audio.encode(None):
            output.mux(out_packet)
