"""Images sent to Google, and finished videos kept on this machine.

Images: a row's ``image`` / ``end_image`` is a local file, a ``data:`` URL, bare base64 or an
http(s) URL. The Interactions API takes image bytes inline (``{"type": "image", "data", "mime_type"}``;
the ``uri`` form is documented only for Files API URIs), so a URL is fetched by the client (without
the API key) and every image goes as base64 with its MIME type, judged from its first bytes.

Videos: Google's video is either inline base64 in the interaction or a Files API URI that needs the
API key to download. Neither can go into the results as it is (a 7 MB string; a URL that needs the
key, which must never reach the results or logs), so each finished video is written once to
``VideoStore`` (``<dir>/<interaction id>.mp4``, atomically: ``.part`` then rename) and the results
carry its ``file://`` URL, which videobatch's downloader copies like any other.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from ...errors import RejectedError
from ...media import image_mime

__all__ = ["ALLOWED", "VideoStore", "decode", "default_video_dir", "image_problem", "is_url", "local_image"]

ALLOWED = "a JPEG, PNG or WebP file, a data: URL, base64, or an http(s) URL of one"
VIDEO_DIR_ENV = "VIDEOBATCH_GOOGLE_VIDEO_DIR"
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def is_url(value: str) -> bool:
    return value.strip().lower().startswith(("http://", "https://"))


def _file(value: str) -> Path | None:
    try:
        path = Path(value.strip()).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):  # e.g. a base64 string too long to be a file name
        return None


def decode(value: str) -> bytes | None:
    """The bytes of a ``data:`` URL or of bare base64 (at least 16 characters), else None."""
    text = value.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    elif len(text) < 16 or not _BASE64.match(text):
        return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def image_problem(value: str) -> str | None:
    """Why this image cannot be sent, judged locally; None if it looks fine (or is a URL)."""
    if is_url(value):
        return None
    path = _file(value)
    if path is not None:
        try:
            with path.open("rb") as handle:
                head = handle.read(16)
        except OSError as exc:
            return f"file {value!r} cannot be read: {exc.strerror}"
    else:
        data = decode(value)
        if data is None:
            return (f"file {value!r} not found (relative paths are from the working directory), "
                    "and it is not base64 or a data: URL either")
        head = data[:16]
    return None if image_mime(head) else "image is not a JPEG, PNG or WebP file"


def local_image(column: str, value: str) -> bytes:
    """The bytes of a non-URL image cell (file, data: URL, base64)."""
    path = _file(value)
    if path is not None:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise RejectedError(f"{column} file {value!r} cannot be read: {exc.strerror}") from None
    data = decode(value)
    if data is None:
        raise RejectedError(f"{column} {value!r} is neither an image file, base64 nor a URL")
    return data


def default_video_dir() -> Path:
    """``$VIDEOBATCH_GOOGLE_VIDEO_DIR``, else ``$XDG_CACHE_HOME/videobatch/google`` (~/.cache)."""
    given = os.environ.get(VIDEO_DIR_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "videobatch" / "google"


class VideoStore:
    """Finished videos on this machine, one file per interaction, written whole or not at all."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, task_id: str) -> Path:
        return self.directory / f"{_SAFE.sub('_', task_id)[:150] or '_'}.mp4"

    def existing(self, task_id: str) -> Path | None:
        path = self.path(task_id)
        return path if path.is_file() and path.stat().st_size > 0 else None

    def part(self, task_id: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.path(task_id).with_suffix(".mp4.part")

    def seal(self, task_id: str, part: Path) -> Path:
        """Move a complete ``part`` onto the final name (fsynced first)."""
        with part.open("rb") as handle:
            os.fsync(handle.fileno())
        final = self.path(task_id)
        os.replace(part, final)
        return final

    def write(self, task_id: str, data: bytes) -> Path:
        part = self.part(task_id)
        part.write_bytes(data)
        return self.seal(task_id, part)
