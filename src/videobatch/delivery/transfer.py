"""Move one video from a URL to one verified local file, never leaving a partial file under its name.

``fetch_video(client, url, dest)`` streams ``http(s)://`` (through an ``httpx.AsyncClient``) or
copies ``file://`` URLs into ``dest.part``, then checks, in order: the HTTP status, the byte count
against ``Content-Length`` (or ``Content-Range``), and that the bytes are a readable, complete
video container (``check_container``); only then is the file fsync'ed and renamed onto ``dest``.

An interrupted transfer leaves ``dest.part`` plus ``dest.part.json`` (URL and validators). The
next attempt resumes it with ``Range: bytes=N-`` (and ``If-Range``) when the server answers 206
for the same representation; any other answer restarts from byte 0. A body that fails
verification is deleted, so the next attempt starts clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit
from urllib.request import url2pathname

import av
import httpx

from .._retry import parse_retry_after
from ..errors import DownloadError

__all__ = ["DownloadError", "FetchResult", "check_container", "fetch_video"]

_PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 410, 451})
_CHUNK = 1 << 16
_FLUSH = 1 << 20  # bytes buffered before a write (done off the event loop)
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str
    resumed: bool  # part of the bytes came from an earlier interrupted attempt


def _short(url: str) -> str:
    """The URL without its query (signed URLs carry credentials-like tokens there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url


# ---------------------------------------------------------------------- verification
def _check_boxes(path: Path, size: int) -> None:
    """ISO-BMFF (mp4/mov): every top-level box must end inside the file (catches a cut tail)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
            return  # not an ISO-BMFF file: the demux check below has to do
        offset = 0
        while offset < size:
            f.seek(offset)
            header = f.read(16)
            if len(header) < 8:
                raise DownloadError(f"{path.name}: truncated: box header cut at byte {offset}")
            box = struct.unpack(">I", header[:4])[0]
            if box == 1:
                if len(header) < 16:
                    raise DownloadError(f"{path.name}: truncated: box header cut at byte {offset}")
                box = struct.unpack(">Q", header[8:16])[0]
            elif box == 0:  # extends to the end of the file
                return
            if box < 8:
                raise DownloadError(f"{path.name}: corrupt box of size {box} at byte {offset}")
            if offset + box > size:
                kind = header[4:8].decode("latin-1")
                raise DownloadError(
                    f"{path.name}: truncated: the {kind!r} box needs {offset + box} bytes, "
                    f"the file has {size}"
                )
            offset += box


def check_container(path: Path) -> dict[str, Any]:
    """Raise ``DownloadError`` unless ``path`` is a complete, readable video; return its facts.

    Opens it with PyAV, requires a video stream, reads (without decoding) every packet, and checks
    the packet count against the stream's declared frame count and, for mp4/mov, that no box runs
    past the end of the file. Cheap: no frame is decoded.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read the downloaded file: {exc}") from None
    if size == 0:
        raise DownloadError(f"{path.name}: the download is empty")
    _check_boxes(path, size)
    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                raise DownloadError(f"{path.name}: not a video (no video stream)")
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            packets = sum(1 for packet in container.demux(stream) if packet.size)
            codec = str(stream.codec_context.name)
    except DownloadError:
        raise
    except (OSError, av.FFmpegError) as exc:
        raise DownloadError(f"{path.name}: not a readable video ({exc})") from None
    if packets == 0 or (declared and packets < declared):
        raise DownloadError(f"{path.name}: truncated video: {packets} of {declared or '?'} frames present")
    return {"frames": packets, "codec": codec, "size": size}


# ---------------------------------------------------------------------- transfer
def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_state(part: Path) -> dict[str, Any]:
    try:
        state = json.loads(_state_path(part).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)


def _status_error(response: httpx.Response, url: str) -> DownloadError:
    code = response.status_code
    if code in (404, 410):
        what = "gone (404/410): the link expired or the video was deleted"
    elif code in (401, 403):
        what = "refused (401/403): a signed link that expired or needs credentials"
    else:
        what = response.reason_phrase or "error"
    return DownloadError(f"HTTP {code} {what} for {_short(url)}", url=url, status_code=code,
                         permanent=code in _PERMANENT_STATUS,
                         retry_after=parse_retry_after(response.headers.get("retry-after")))


def _resume_point(part: Path, url: str) -> tuple[int, dict[str, str]]:
    """Bytes already in ``part`` for this URL, and the request headers to resume after them."""
    try:
        offset = part.stat().st_size
    except FileNotFoundError:
        return 0, {}
    state = _read_state(part)
    if not offset or state.get("url") != url:
        return 0, {}
    headers = {"Range": f"bytes={offset}-"}
    validator = state.get("etag") or state.get("last_modified")
    if validator:
        headers["If-Range"] = validator
    return offset, headers


def _begin(part: Path, append: bool, state: dict[str, Any]) -> BinaryIO:
    """Record what ``part`` is being filled from, then open it (the caller closes it)."""
    _state_path(part).write_text(json.dumps(state))
    return open(part, "ab" if append else "wb")


async def _fetch_http(client: httpx.AsyncClient, url: str, part: Path) -> bool:
    """Fill ``part`` with the body; returns whether an earlier part was resumed."""
    offset, headers = await asyncio.to_thread(_resume_point, part, url)
    headers["Accept-Encoding"] = "identity"  # byte counts and ranges refer to the file itself
    out: BinaryIO | None = None
    buffer = bytearray()
    try:
        async with client.stream("GET", url, headers=headers) as response:
            total: int | None
            if response.status_code == 206 and offset:
                match = _RANGE.fullmatch(response.headers.get("content-range", "").strip())
                if not match or int(match.group(1)) != offset:
                    await asyncio.to_thread(_discard, part)
                    raise DownloadError(f"{_short(url)}: the server resumed at the wrong byte",
                                        url=url)
                total = None if match.group(3) == "*" else int(match.group(3))
                append = True
            elif response.status_code == 200:
                offset, append = 0, False
                length = response.headers.get("content-length")
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                total = int(length) if length and length.isdigit() and not encoded else None
            elif response.status_code == 416:
                await asyncio.to_thread(_discard, part)
                raise DownloadError(f"{_short(url)}: the server refused to resume; restarting",
                                    url=url)
            else:
                raise _status_error(response, url)
            state = {"url": url, "etag": response.headers.get("etag"),
                     "last_modified": response.headers.get("last-modified"), "total": total}
            out = await asyncio.to_thread(_begin, part, append, state)
            received = offset
            async for chunk in response.aiter_bytes():  # as they arrive: a cut keeps them
                buffer += chunk
                received += len(chunk)
                if len(buffer) >= _FLUSH:
                    await asyncio.to_thread(out.write, bytes(buffer))
                    buffer.clear()
            await asyncio.to_thread(out.write, bytes(buffer))
            buffer.clear()
    except httpx.HTTPError as exc:  # connection reset, timeout, body cut short: resume later
        raise DownloadError(f"{_short(url)}: transfer interrupted ({type(exc).__name__}: {exc})",
                            url=url) from None
    finally:
        if out is not None:  # keep what arrived before an error or a cancel: the next try resumes
            out.write(buffer)
            out.close()
    if total is not None and received != total:
        if received > total:
            await asyncio.to_thread(_discard, part)
        raise DownloadError(f"{_short(url)}: received {received} of {total} bytes", url=url)
    return bool(offset)


def _copy_file(url: str, part: Path) -> None:
    source = Path(url2pathname(urlsplit(url).path))
    try:
        expected = source.stat().st_size
        with open(source, "rb") as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except FileNotFoundError:
        raise DownloadError(f"{source} does not exist (the local result was deleted)", url=url,
                            permanent=True) from None
    except OSError as exc:
        raise DownloadError(f"cannot copy {source}: {exc}", url=url) from None
    if part.stat().st_size != expected:
        raise DownloadError(f"{source}: copied {part.stat().st_size} of {expected} bytes", url=url)


def _seal(part: Path, dest: Path) -> tuple[int, str]:
    """Verify, hash, fsync and rename ``part`` onto ``dest``; returns (size, sha256)."""
    try:
        check_container(part)
    except DownloadError:
        _discard(part)
        raise
    digest = hashlib.sha256()
    with open(part, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        os.fsync(f.fileno())
    size = part.stat().st_size
    os.replace(part, dest)
    _state_path(part).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return size, digest.hexdigest()


async def fetch_video(client: httpx.AsyncClient, url: str, dest: str | os.PathLike[str]) -> FetchResult:
    """Download ``url`` to ``dest`` (one attempt, resuming an earlier ``dest.part`` when possible).

    Raises ``DownloadError`` (``.permanent`` says whether another attempt can help); nothing is
    ever left under ``dest`` unless it was verified.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    scheme = urlsplit(url).scheme.lower()
    resumed = False
    if scheme in ("http", "https"):
        resumed = await _fetch_http(client, url, part)
    elif scheme == "file":
        await asyncio.to_thread(_copy_file, url, part)
    else:
        raise DownloadError(f"cannot download {_short(url)}: unsupported URL scheme {scheme!r}",
                            url=url, permanent=True)
    try:
        size, sha256 = await asyncio.to_thread(_seal, part, dest)
    except DownloadError as exc:
        raise DownloadError(f"{exc} (from {_short(url)})", url=url) from None
    return FetchResult(dest, size, sha256, resumed)
