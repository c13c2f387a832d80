"""What a row's images may be in service mode: no file is read on a client's say-so.

The library and the CLI take a local path for ``image`` / ``end_image`` (``image_tail``, the first
release's spelling); over HTTP that would let any client make a worker read (and upload to the
provider) any file of its host. So over HTTP an image is only:

* an ``http(s)`` URL whose host the address policy allows (``service.addresses``); or
* image bytes sent with the request: a ``data:image/...;base64,`` URL or bare base64 of a JPEG,
  PNG or WebP file (stored as a ``data:`` URL, so no provider ever takes it for a path); or
* the name of a file in the folder an operator configured (``VIDEOBATCH_SERVICE_IMAGE_DIR``),
  relative to it; it is resolved with ``realpath`` and must stay inside it (stored as that path).

Anything else (a local path, ``file://``) is refused with the same short answer whether or not
such a file exists, and nothing is read. ``ImageRules.accepted`` is the API's check (it returns
the value to store); ``ImageRules.worker_refusal`` is the worker's, made again before a row reaches
the provider (a row can reach Redis another way), and ``ImageGate`` makes it the run's gate.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
from urllib.parse import urlsplit

from .._gate import Gate
from .._jobs import Job
from ..errors import ConfigError
from ..media import image_mime
from ..request import VideoRequest
from .addresses import AddressPolicy

__all__ = ["IMAGE_COLUMNS", "IMAGE_DIR_ENV", "ImageGate", "ImageRules"]

IMAGE_DIR_ENV = "VIDEOBATCH_SERVICE_IMAGE_DIR"
IMAGE_COLUMNS = ("image", "end_image", "image_tail")
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.IGNORECASE)
_PATH_MAX = 4096
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
_REFUSED = ("an image must be an http(s) URL or the image itself (a data:image/...;base64 URL, or "
            "base64 of a JPEG, PNG or WebP file): local file paths and file:// URLs are not "
            "accepted over HTTP")


class ImageRules:
    """The service's rules for image cells. ``folder``: the operator's image folder (None: no
    file may be named); ``addresses``: the policy image URLs must pass."""

    def __init__(self, folder: str | os.PathLike[str] | None = None,
                 addresses: AddressPolicy | None = None) -> None:
        self.folder = os.path.realpath(folder) if folder else None
        if self.folder is not None and not os.path.isdir(self.folder):
            raise ConfigError(f"{IMAGE_DIR_ENV}: {folder} is not a folder; create it or unset it")
        self.addresses = addresses or AddressPolicy()

    @classmethod
    def from_env(cls, addresses: AddressPolicy | None = None) -> ImageRules:
        return cls(os.environ.get(IMAGE_DIR_ENV) or None, addresses)

    def __repr__(self) -> str:
        return f"<ImageRules folder={self.folder!r}>"

    @property
    def refused(self) -> str:
        """The one answer to a local path (the same whether or not the file exists)."""
        if self.folder is None:
            return _REFUSED
        return _REFUSED + " (but for the names of files in the service's image folder)"

    def _contained(self, value: str) -> str | None:
        """The real path of ``value`` (relative to the folder, or absolute) if it lies inside the
        folder, else None."""
        if self.folder is None or "\x00" in value or len(value) > _PATH_MAX:
            return None  # (no folder; or not a path: realpath would lstat each of its parts)
        real = os.path.realpath(os.path.join(self.folder, value))
        return real if os.path.commonpath([real, self.folder]) == self.folder and real != self.folder \
            else None

    # ------------------------------------------------------------------ the API's check
    async def accepted(self, value: str, cache: dict[str, str | None] | None = None,
                       ) -> tuple[str | None, str | None]:
        """(the value to store, None) for an acceptable image cell, or (None, why not).
        ``cache``: the address policy's answers by host, shared by one request's cells."""
        text = value.strip()
        lower = text.lower()
        if lower.startswith(("http://", "https://")):
            scheme, _, rest = text.partition("://")
            url = f"{scheme.lower()}://{rest}"  # every provider reads a lowercase scheme as a URL
            reason = await self.addresses.refusal(url, cache)
            return (None, f"image URL refused: {reason}") if reason else (url, None)
        if lower.startswith("data:"):
            match = _DATA_URL.match(text)
            if match is None:
                return None, "a data: URL must be data:image/<type>;base64,<data>"
            return self._bytes(text[match.end():])
        if len(text) >= 16 and _BASE64.match(text):
            stored, _ = self._bytes(text)
            if stored is not None:
                return stored, None
        inside = await asyncio.to_thread(self._contained, text) if not lower.startswith("file:") else None
        if inside is not None:
            if not await asyncio.to_thread(os.path.isfile, inside):
                return None, "there is no such file in the service's image folder"
            return inside, None
        return None, self.refused

    def _bytes(self, encoded: str) -> tuple[str | None, str | None]:
        try:
            data = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            return None, "the image is not valid base64"
        mime = image_mime(data)
        if mime is None:
            return None, "the image is not a JPEG, PNG or WebP file"
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", None

    # ------------------------------------------------------------------ the worker's check
    def worker_refusal(self, column: str, value: str) -> str | None:
        """Why a worker must not pass ``value`` to the provider, or None. Blocking (resolves URL
        hosts); the file system is touched only for paths that name the image folder."""
        text = value.strip()
        if text.startswith(("http://", "https://")):
            try:
                host = urlsplit(text).hostname
            except ValueError:  # e.g. "http://[not-an-address]/"
                host = None
            reason = self.addresses.resolve_refusal(host) if host else "the URL names no host"
            return f"{column} URL refused: {reason}" if reason else None
        if text.startswith("data:"):
            return None
        if os.path.isabs(text) and self._contained(text) is not None:
            return None  # (a symlink swapped in the folder after this check: the operator's folder)
        return (f"{column} is neither an http(s) URL, a data: URL nor a file in the service's "
                "image folder: the service reads no other file; resubmit the request with the "
                "image as a URL or as data")


class ImageGate(Gate):
    """The worker's run gate (``videobatch._gate``) for images: a request whose images break
    ``rules`` is never sent (the row fails, nothing read or paid) and never read to match a
    provider's listing (it is searched by key only)."""

    def __init__(self, rules: ImageRules) -> None:
        self.rules = rules

    async def refusal(self, job: Job, request: VideoRequest) -> str | None:
        return await self.refusal_of(request)

    async def readable(self, request: VideoRequest) -> bool:
        return await self.refusal_of(request) is None

    async def refusal_of(self, request: VideoRequest) -> str | None:
        """Why ``request``'s images break the rules (None: they keep them); no file is read."""
        for column in ("image", "end_image"):
            value = getattr(request, column)
            reason = await asyncio.to_thread(self.rules.worker_refusal, column, value) if value else None
            if reason:
                return reason
        return None
