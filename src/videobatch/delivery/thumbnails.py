"""Poster frames: one small PNG per video clip, made with PyAV (no system ffmpeg, no Pillow).

``poster_frame(video, png)`` seeks to a quarter of the clip (past fade-ins, still early), decodes
one frame, scales it to ``width`` pixels wide and encodes it with FFmpeg's PNG encoder. The PNG
appears under its final name only when complete (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import av

__all__ = ["png_bytes", "poster_frame"]


def _grab(video: Path, at: float) -> av.VideoFrame:
    """The first frame at or after fraction ``at`` of the clip (the first frame if none is)."""
    with av.open(str(video), "r") as container:
        if not container.streams.video:
            raise ValueError(f"{video}: no video stream to take a poster frame from")
        stream = container.streams.video[0]
        target = None
        if stream.duration and stream.time_base and 0 < at < 1:
            target = int(stream.duration * at) + (stream.start_time or 0)
            container.seek(target, stream=stream, backward=True, any_frame=False)
        first = None
        for frame in container.decode(stream):
            if first is None:
                first = frame
            if target is None or frame.pts is None or frame.pts >= target:
                return frame
        if first is None:
            raise ValueError(f"{video}: no decodable frame")
        return first


def png_bytes(video: str | os.PathLike[str], *, width: int = 320, at: float = 0.25) -> bytes:
    """A PNG (RGB, ``width`` wide, aspect kept, even height) of one frame of ``video``."""
    frame = _grab(Path(video), at)
    height = max(2, round(frame.height * width / max(1, frame.width) / 2) * 2)
    rgb = frame.reformat(width=width, height=height, format="rgb24")
    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "rgb24"
    packets = list(codec.encode(rgb)) + list(codec.encode(None))
    return b"".join(bytes(p) for p in packets)


def poster_frame(
    video: str | os.PathLike[str], png: str | os.PathLike[str], *, width: int = 320, at: float = 0.25
) -> Path:
    """Write a poster PNG of ``video`` to ``png`` (atomically) and return its path.

    Raises ``ValueError``/``av.FFmpegError``/``OSError`` when the video cannot be read.
    """
    png = Path(png)
    data = png_bytes(video, width=width, at=at)
    png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{png.name}.", suffix=".tmp", dir=png.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, png)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return png
