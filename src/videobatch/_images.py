"""Image cells checked before anything is paid, for every provider: a local file exists and is an
image; image data (a ``data:`` URL, base64) is an image; an ``http(s)`` URL answers with an image
within a timeout. URLs are fetched concurrently (bounded), each distinct value once, reading only
its first bytes; ``check_images=False`` (``--no-check-images``) skips all of it.

What is an image is judged from the first bytes (``videobatch.media.image_type``), never from a name or a
``Content-Type``. Fetches follow up to five redirects, each hop asked of the ``guard`` first: in
service mode the caller passes its address policy (``AddressPolicy.refusal``) and its guarded
transport, so this engine module never imports the service, and ``local_files=False`` so no path
a client names is looked at. Providers still judge what they alone refuse (sizes, formats).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from ._input_keys import Prompts
from ._loops import in_running_loop
from ._plan import starting
from ._row_requests import distinct
from ._settings import RunSettings
from ._store import open_rows
from .errors import InputError, Problem
from .media import image_type

if TYPE_CHECKING:
    import httpx

__all__ = ["IMAGE_FIELDS", "ImageCheck", "ImageGuard", "check_images_of", "image_problems"]

IMAGE_FIELDS = ("image", "end_image")
ImageGuard = Callable[[str], Awaitable[str | None]]
"""A URL -> why it may not be fetched (None: it may), e.g. ``AddressPolicy.refusal``."""

ALLOWED = "an image file that exists, an http(s) URL answering with an image, or image data"
_HEAD = 64  # bytes read of each image: enough for every signature below
_REDIRECTS = 5
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")
_DATA = re.compile(r"^data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)


@dataclass(frozen=True)
class ImageCheck:
    """How image cells are checked. ``timeout``: seconds a URL has to answer with its first
    bytes; ``concurrency``: URLs fetched at once; ``guard`` and ``transport``: what a fetch must
    pass (service mode: the address policy and its guarded transport); ``local_files``: whether a
    value may name a file of this machine. For a server checking what its clients send:
    ``shared``, a gate every fetch also passes (one per client: its fetches at once, across all
    its requests), and ``budget``, the seconds all of one check's fetches may take (a URL not
    judged by then is a problem, so a request of many slow URLs cannot hold the server for hours)."""

    timeout: float = 10.0
    concurrency: int = 16
    guard: ImageGuard | None = None
    transport: httpx.AsyncBaseTransport | None = None
    local_files: bool = True
    shared: asyncio.Semaphore | None = None
    budget: float | None = None


Cell = tuple[int, str, str]  # row number (1-based), column, value


async def image_problems(cells: Sequence[Cell], check: ImageCheck | None = None) -> list[Problem]:
    """A problem for each cell whose image is missing, unreadable or not an image; each distinct
    value judged once (a batch names few images, many times), URLs concurrently."""
    check = check or ImageCheck()
    by_value: dict[str, list[tuple[int, str]]] = {}
    for row, column, value in cells:
        text = value.strip()
        if text:
            by_value.setdefault(text, []).append((row, column))
    if not by_value:
        return []
    urls = [v for v in by_value if v.lower().startswith(("http://", "https://"))]
    verdicts = {v: _local_problem(v, check.local_files) for v in by_value if v not in urls}
    if urls:
        verdicts.update(await _fetch_all(urls, check))
    problems = [Problem(row, column, reason, allowed=ALLOWED)
                for value, reason in verdicts.items() if reason is not None
                for row, column in by_value[value]]
    return sorted(problems, key=lambda p: (p.row or 0, p.column or ""))


def check_images_of(checkpoint: str | os.PathLike[str] | None, prompts: Prompts,
                    described: dict[str, Any], settings: RunSettings, force: bool,
                    check: ImageCheck | None = None) -> None:
    """Raise one ``InputError`` for the image problems of the rows a run of ``prompts`` would
    send, the checkpoint read as the run will open it and not written (rows kept, waited for or
    left alone are not fetched again). Blocking; inside a running event loop (Jupyter) the
    fetches run on a thread of their own. A table without images costs a look at one request per
    combination of its non-prompt cells (``distinct``)."""
    if not any(r.image or r.end_image for r in distinct(prompts.requests)):
        return
    jobs = open_rows(checkpoint, prompts, settings=described, force=force, dry_run=True)[1]
    sending = {job.key for job in starting(jobs, settings).pending}
    cells = [(row, column, value) for row, job in enumerate(jobs, 1) if job.key in sending
             for column in IMAGE_FIELDS if (value := getattr(job.request, column))]
    if not cells:
        return
    if not in_running_loop():
        problems = asyncio.run(image_problems(cells, check))
    else:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="videobatch-images") as pool:
            problems = pool.submit(asyncio.run, image_problems(cells, check)).result()
    if problems:
        raise InputError(problems, source=prompts.source)


# ---------------------------------------------------------------------- values of this machine
def _local_problem(value: str, local_files: bool) -> str | None:
    if value.lower().startswith("data:"):
        return _data_problem(value)
    path = value[len("file://"):] if value.lower().startswith("file://") else value
    full = path
    if local_files:
        try:
            full = os.path.abspath(os.path.expanduser(path))
            is_file = os.path.isfile(full)
        except (OSError, ValueError):  # e.g. a name too long for the file system
            is_file = False
        if is_file:
            try:
                with open(full, "rb") as handle:
                    head = handle.read(_HEAD)
            except OSError as exc:
                return f"image file {full} cannot be read: {exc.strerror or exc}"
            return None if image_type(head) else (f"{full} is not an image (a JPEG, PNG, WebP, "
                                                   "GIF, ... file, judged by its content)")
    if len(value) >= 16 and _BASE64.match(value):
        data = _decode_head(value)
        if data is not None and image_type(data):
            return None
    if not local_files:
        return "not an http(s) URL or image data (no file of this machine is read)"
    if os.sep in value or "." in value or (os.altsep is not None and os.altsep in value):
        return f"image file not found: {full} (paths are relative to the folder the run starts in)"
    return "neither an image file that exists, an http(s) URL, nor image data (base64)"


def _data_problem(value: str) -> str | None:
    match = _DATA.match(value)
    if match is None or ";base64" not in match.group(2).lower():
        return "a data: URL must be data:image/<type>;base64,<data>"
    data = _decode_head(value[match.end():])
    if data is None:
        return "the data: URL's data is not valid base64"
    return None if image_type(data) else "the data: URL does not hold an image (judged by its content)"


def _decode_head(text: str) -> bytes | None:
    """The first bytes of base64 ``text`` (standard or URL-safe), decoding only its start."""
    compact = "".join(text[: 4 * _HEAD].split())
    compact = compact[: len(compact) // 4 * 4]
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------- URLs
async def _fetch_all(urls: Sequence[str], check: ImageCheck) -> dict[str, str | None]:
    import httpx  # only a table with image URLs needs it (a run of the local provider never does)

    gate = asyncio.Semaphore(max(1, check.concurrency))
    timeout = httpx.Timeout(check.timeout)
    limits = httpx.Limits(max_connections=max(1, check.concurrency))
    async with httpx.AsyncClient(transport=check.transport, timeout=timeout, limits=limits,
                                 follow_redirects=False, trust_env=check.transport is None) as client:

        async def one(url: str) -> tuple[str, str | None]:
            async with gate, check.shared or contextlib.nullcontext():
                try:
                    return url, await asyncio.wait_for(_url_problem(client, url, check), check.timeout)
                except TimeoutError:
                    return url, f"the image URL did not answer within {check.timeout:g} s"

        fetches = [asyncio.ensure_future(one(url)) for url in urls]
        done, late = await asyncio.wait(fetches, timeout=check.budget)  # (None: all of them)
        for fetch in late:
            fetch.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        verdicts = dict(fetch.result() for fetch in done)
        if not late:
            return verdicts
        unjudged = (f"not checked: the image URLs of one request are given {check.budget:g} s in "
                    "all, and this one was not judged by then; send fewer distinct image URLs per "
                    "request, or ones that answer faster")
        return {url: verdicts.get(url, unjudged) for url in urls}


async def _url_problem(client: httpx.AsyncClient, url: str, check: ImageCheck) -> str | None:
    """Why ``url`` does not answer with an image, or None. Messages leave the URL out: its query
    may carry a signature, and the problem already names the row and column."""
    import httpx

    for _ in range(_REDIRECTS + 1):
        if check.guard is not None:
            reason = await check.guard(url)
            if reason:
                return f"image URL refused: {reason}"
        try:
            async with client.stream("GET", url, headers={"Range": f"bytes=0-{_HEAD - 1}"}) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    if not url.lower().startswith(("http://", "https://")):
                        return "the image URL redirects to something that is not an http(s) URL"
                    continue
                if response.status_code not in (200, 206):
                    phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                    return f"the image URL answered HTTP {response.status_code}{phrase}"
                head = b""
                async for chunk in response.aiter_raw():
                    head += chunk
                    if len(head) >= _HEAD:
                        break
        except httpx.TimeoutException:
            return f"the image URL did not answer within {check.timeout:g} s"
        except (httpx.HTTPError, OSError) as exc:
            return f"the image URL cannot be fetched ({type(exc).__name__}: {exc})"
        if image_type(head):
            return None
        kind = response.headers.get("content-type", "").partition(";")[0].strip() or "no content type"
        return f"the image URL answered with {kind}, not an image (judged by its content)"
    return f"the image URL redirects more than {_REDIRECTS} times"
