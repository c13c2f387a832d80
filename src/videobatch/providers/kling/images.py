"""Images for image-to-video: judged locally before anything is paid, and put on the wire.

A row's ``image``/``image_tail`` cell may be an http(s) URL (passed through), a local file path
(read and sent as bare base64), a ``data:`` URL (its prefix dropped) or bare base64. ``problem``
says why a provider with Kling's documented limits would refuse it (JPEG/PNG, at most 10 MB, sides
at least 300 px, aspect between 1:2.5 and 2.5:1); ``wire_value`` gives what goes in the body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from pathlib import Path

from ...errors import RejectedError

__all__ = ["ALLOWED", "problem", "wire_value"]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 300
MAX_IMAGE_ASPECT = 2.5
ALLOWED = ("an http(s) URL, or a readable JPEG/PNG file of at most 10 MB, sides ≥ 300 px, "
           "aspect between 1:2.5 and 2.5:1")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")


def _is_url(value: str) -> bool:
    return value.strip().lower().startswith(("http://", "https://"))


def _local_file(value: str) -> Path | None:
    try:
        path = Path(value.strip()).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):  # e.g. a base64 string too long to be a file name
        return None


def _looks_base64(value: str) -> bool:
    return len(value) >= 64 and bool(_BASE64.match(value))


async def wire_value(column: str, value: str) -> str:
    """What goes on the wire for ``image``/``image_tail``: a URL, or bare base64."""
    value = value.strip()
    if _is_url(value):
        return value
    if value.startswith("data:"):
        return value.partition(",")[2]
    path = _local_file(value)
    if path is not None:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise RejectedError(f"{column} file {value!r} cannot be read: {exc.strerror}") from None
        return base64.b64encode(data).decode("ascii")
    if _looks_base64(value):
        return "".join(value.split())
    raise RejectedError(f"{column} {value!r} is neither an http(s) URL nor an existing file")


def problem(value: str) -> str | None:
    """Why Kling would refuse this image, judged locally; None if it looks fine (or is a URL)."""
    value = value.strip()
    if _is_url(value):
        return None
    if value.startswith("data:") or (_local_file(value) is None and _looks_base64(value)):
        try:
            data = base64.b64decode(value.partition(",")[2] if value.startswith("data:")
                                    else value, validate=False)
        except (binascii.Error, ValueError):
            return "is not valid base64"
        return _image_bytes_problem(data, len(data))
    path = _local_file(value)
    if path is None:
        return f"file {value!r} not found (relative paths are from the working directory)"
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(256 * 1024)
    except OSError as exc:
        return f"file {value!r} cannot be read: {exc.strerror}"
    return _image_bytes_problem(head, size)


def _image_bytes_problem(head: bytes, size: int) -> str | None:
    if size > MAX_IMAGE_BYTES:
        return f"image is {size / 1024 / 1024:.1f} MB, Kling accepts at most 10 MB"
    if not (head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff")):
        return "image is not a JPEG or PNG file"
    dims = _image_size(head)
    if dims is None:
        return None
    width, height = dims
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"image is {width}x{height} px, Kling needs both sides ≥ {MIN_IMAGE_SIDE} px"
    if max(width, height) / max(1, min(width, height)) > MAX_IMAGE_ASPECT:
        return f"image is {width}x{height} px, aspect beyond 2.5:1"
    return None


def _image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG or JPEG from its first bytes, or None if not found there."""
    if head.startswith(b"\x89PNG") and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            i += 1
            continue
        marker = head[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7],
                                                                              "big")
        i += 2 + length
    return None
