"""Render small, real H.264 MP4 clips from a prompt, and probe video files — no system ffmpeg.

``render_clip`` is what the offline ``local`` provider "generates": a few seconds of moving
colours derived from a sha256 of the prompt, so different prompts give visibly different clips
and the same prompt always gives the same frames. ``probe`` reads a file's duration, size and
frame count (used by tests and by download verification). Everything goes through PyAV (``av``),
whose wheels bundle ffmpeg with libx264.

Writes are atomic: the clip is encoded into a temporary file in the target directory, flushed to
disk, and ``os.replace``-d onto the final name only when complete, so a crash at any instant never
leaves a half-written file under the final name (at worst an orphaned ``.*.tmp`` file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

__all__ = ["ASPECT_RATIOS", "InvalidVideo", "clip_size", "probe", "render_clip"]

ASPECT_RATIOS: dict[str, tuple[int, int]] = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1)}


class InvalidVideo(ValueError):
    """The file is not a readable video (missing, truncated, not a container, no video stream)."""


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def clip_size(aspect_ratio: str, height: int) -> tuple[int, int]:
    """(width, height) of a clip: both even (yuv420p needs it), width from the aspect ratio."""
    try:
        aw, ah = ASPECT_RATIOS[aspect_ratio]
    except KeyError:
        raise ValueError(
            f"aspect ratio {aspect_ratio!r} is not supported; use one of {', '.join(ASPECT_RATIOS)}"
        ) from None
    h = _even(height)
    return _even(h * aw / ah), h


def _frames(
    prompt: str, width: int, height: int, count: int
) -> list[npt.NDArray[np.uint8]]:
    """``count`` RGB frames (height x width x 3) seeded by the prompt's sha256."""
    d = hashlib.sha256(prompt.encode("utf-8")).digest()
    c0 = np.array(list(d[0:3]), dtype=np.float32)
    c1 = np.array(list(d[3:6]), dtype=np.float32)
    ink = np.array(list(d[6:9]), dtype=np.uint8)
    angle = d[9] / 255 * 2 * np.pi  # gradient direction
    drift = 1 + d[10] % 4  # pixels per frame the background slides
    stripes = 2 + d[11] % 6  # bands across the gradient
    side = max(4, height // (3 + d[12] % 3))  # moving square's side
    vx, vy = 2 + d[13] % 5, 1 + d[14] % 4  # square's velocity (bounces off the edges)
    x0, y0 = d[15] % max(1, width - side), d[16] % max(1, height - side)

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    proj = xs * np.cos(angle) + ys * np.sin(angle)
    proj = (proj - proj.min()) / max(1e-6, float(np.ptp(proj)))
    wave = 0.5 + 0.5 * np.sin(proj * stripes * 2 * np.pi)
    base = (c0 * (1 - wave[..., None]) + c1 * wave[..., None]).astype(np.uint8)

    def bounce(p: int, span: int) -> int:
        if span <= 0:
            return 0
        p %= 2 * span
        return p if p <= span else 2 * span - p

    out = []
    for i in range(count):
        frame = np.roll(base, shift=i * drift, axis=1)
        x = bounce(x0 + i * vx, width - side)
        y = bounce(y0 + i * vy, height - side)
        frame[y : y + side, x : x + side] = ink
        out.append(np.ascontiguousarray(frame))
    return out


def render_clip(
    path: Path | str,
    prompt: str,
    *,
    seconds: float = 2.0,
    fps: int = 12,
    aspect_ratio: str = "16:9",
    height: int = 96,
) -> Path:
    """Write an H.264 (yuv420p) MP4 whose frames are derived from ``prompt``; return its path.

    Deterministic: the same arguments give the same frames. The file appears under ``path`` only
    once complete (temporary file in the same directory, fsync, ``os.replace``).
    """
    path = Path(path)
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got seconds={seconds}, fps={fps}")
    width, height = clip_size(aspect_ratio, height)
    count = max(1, round(seconds * fps))
    frames = _frames(prompt, width, height, count)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=Fraction(fps))
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            # One thread: tiny frames encode faster without thread start-up, and x264 output is
            # then bit-for-bit reproducible.
            stream.codec_context.thread_count = 1
            stream.options = {"preset": "ultrafast", "crf": "23"}
            for i, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def probe(path: Path | str) -> dict[str, Any]:
    """Facts about a video: ``duration`` (s), ``width``, ``height``, ``frames``, ``codec``, ``fps``.

    Raises ``InvalidVideo`` when the file is missing, unreadable or holds no video stream.
    """
    path = Path(path)
    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                raise InvalidVideo(f"{path}: no video stream")
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            if frames == 0:  # container without a frame count: decode to count
                frames = sum(1 for _ in container.decode(stream))
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            rate = stream.average_rate or stream.guessed_rate
            return {
                "duration": duration,
                "width": int(stream.codec_context.width),
                "height": int(stream.codec_context.height),
                "frames": frames,
                "codec": str(stream.codec_context.name),
                "fps": float(rate) if rate else None,
            }
    except InvalidVideo:
        raise
    except (OSError, av.FFmpegError) as exc:
        raise InvalidVideo(f"{path}: not a readable video ({exc})") from None
