"""How much a client may send: the service's size limits, and the checks that enforce them cheaply.

Limits (environment variables read by ``python -m videobatch serve``; ``create_app(limits=...)``):

    VIDEOBATCH_SERVICE_MAX_BODY_BYTES      10485760  (10 MB) a request body, JSON or CSV upload
    VIDEOBATCH_SERVICE_MAX_METADATA_BYTES  16384     (16 KB) one request's metadata, as JSON
    VIDEOBATCH_SERVICE_MAX_ROWS            10000     rows per batch (JSON or CSV)
    VIDEOBATCH_SERVICE_MAX_PROMPT_CHARS    2500      characters of a prompt (and negative prompt)
    VIDEOBATCH_SERVICE_MAX_IMAGE_FETCHES   8         image URLs fetched at once for one tenant
                                                     (all its requests together), to check them
    VIDEOBATCH_SERVICE_MAX_IMAGE_CHECK_SECONDS  30   seconds one request's image URLs may take
                                                     in all (a URL not judged by then: 422)

``BodyLimit`` answers 413 to a body over the limit: at once from its ``Content-Length``, else
(chunked) as soon as the bytes received pass it, never reading the rest; and to a JSON body of more
than 50 values per row allowed (``MAX_ROWS`` x 50: 500,000), counted on its bytes before it is
parsed (a body of ten million empty objects would take 300 MB and seconds to parse). ``count_csv_rows`` reads
an uploaded CSV as a stream and stops one row past the limit, so a million-row upload costs neither
memory nor time. ``short_problems`` makes a 422 list short: no input echoed back, messages cut to
a few hundred characters, at most 100 entries.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigError
from ..request import is_unicode

__all__ = ["BodyLimit", "ServiceLimits", "copy_in_chunks", "count_csv_rows", "json_size", "json_values",
           "short_problems", "unencodable"]

MAX_PROBLEMS = 100  # entries of one 422 answer
MAX_MESSAGE = 300  # characters of one problem's message


_ENV = {"max_body_bytes": "VIDEOBATCH_SERVICE_MAX_BODY_BYTES",
        "max_metadata_bytes": "VIDEOBATCH_SERVICE_MAX_METADATA_BYTES",
        "max_rows": "VIDEOBATCH_SERVICE_MAX_ROWS",
        "max_prompt_chars": "VIDEOBATCH_SERVICE_MAX_PROMPT_CHARS",
        "max_image_fetches": "VIDEOBATCH_SERVICE_MAX_IMAGE_FETCHES",
        "max_image_check_seconds": "VIDEOBATCH_SERVICE_MAX_IMAGE_CHECK_SECONDS"}


@dataclass(frozen=True)
class ServiceLimits:
    max_body_bytes: int = 10 * 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_rows: int = 10_000
    max_prompt_chars: int = 2500
    max_image_fetches: int = 8
    max_image_check_seconds: int = 30

    @property
    def max_json_values(self) -> int:
        """Values a JSON body may hold (objects, arrays, members): 50 per row allowed."""
        return 50 * self.max_rows

    @classmethod
    def from_env(cls) -> ServiceLimits:
        """The defaults, with each ``VIDEOBATCH_SERVICE_MAX_*`` variable that is set."""
        given: dict[str, int] = {}
        for name, variable in _ENV.items():
            text = os.environ.get(variable, "").strip().replace("_", "")
            if not text:
                continue
            try:
                given[name] = int(text)
            except ValueError:
                given[name] = 0
            if given[name] < 1:
                raise ConfigError(f"{variable}={text!r}: give a whole number of at least 1")
        return cls(**given)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_values(body: bytes) -> int:
    """About how many values a JSON text holds (objects, arrays and their members), counted on
    the bytes at C speed, without building them: its strings dropped, its ``{``, ``[`` and ``,``."""
    bare = _STRING.sub(b"", body)
    return bare.count(b"{") + bare.count(b"[") + bare.count(b",")


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413, unread; a JSON body
    with more than ``max_json_values`` values too (parsing it would take ~50 times its size)."""

    def __init__(self, app: ASGIApp, limit: int, max_json_values: int | None = None) -> None:
        self.app = app
        self.limit = limit
        self.max_json_values = max_json_values

    def _too_large(self) -> HTTPException:
        return HTTPException(status_code=413, detail=(
            f"the request body is over {self.limit} bytes; send fewer rows per request, or images "
            "as URLs"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        try:
            declared = int(length) if length is not None else None
        except ValueError:
            declared = None
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        kind = dict(scope["headers"]).get(b"content-type", b"").partition(b";")[0].strip().lower()
        if self.max_json_values is not None and kind == b"application/json":
            await self._json(scope, receive, send)
            return
        received = 0
        started = False

        async def counting() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large()  # inside a route: its 413; else caught below
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, sending)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await self._refuse(scope, receive, send)

    async def _json(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read a JSON body (the route would read all of it anyway), count its values, pass it on."""
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        assert self.max_json_values is not None
        if json_values(body) > self.max_json_values:
            await self._refuse(scope, receive, send, detail=(
                f"the JSON body holds more than {self.max_json_values} values; send fewer rows "
                "per request"))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, detail: str | None = None) -> None:
        response = JSONResponse({"detail": detail or self._too_large().detail}, status_code=413,
                                headers={"Connection": "close"})
        await response(scope, receive, send)


def _text_stream(raw: IO[bytes]) -> Iterator[str]:
    """Lines of a UTF-8 byte stream (a BOM dropped; bad bytes replaced: the library's reader
    reports them exactly later)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    pending = ""
    while chunk := raw.read(1 << 16):
        pending += decoder.decode(chunk)
        *lines, pending = pending.split("\n")
        for line in lines:
            yield line + "\n"
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending


def count_csv_rows(raw: IO[bytes], limit: int) -> int:
    """The data rows of a CSV stream (blank lines skipped, as the library does), counting at most
    ``limit + 1``: reading stops as soon as the file has more rows than ``limit``."""
    reader = csv.reader(_text_stream(raw))
    rows = -1  # the header line
    try:
        for cells in reader:
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            rows += 1
            if rows > limit:
                break
    except csv.Error:  # e.g. a cell over the csv module's size limit: count lines from here on
        for line in raw:
            rows += bool(line.strip())
            if rows > limit:
                break
    return max(rows, 0)


def unencodable(value: Any, where: str = "body") -> str | None:
    """Where in a parsed JSON value a string cannot be stored as UTF-8 (a lone surrogate such as
    ``"\\ud800"``), or None."""
    if isinstance(value, str):
        return None if is_unicode(value) else where
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = unencodable(key, f"{where} key") if isinstance(key, str) else None
        found = found or unencodable(item, f"{where}.{key}")
        if found:
            return found
    return None


def _short(text: Any) -> Any:
    if not isinstance(text, str) or len(text) <= MAX_MESSAGE:
        return text
    return text[: MAX_MESSAGE - 1] + "…"


def short_problems(problems: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """422 entries without the input: only their place and a short message (and hint)."""
    kept = [{k: _short(v) if k in ("msg", "allowed") else v for k, v in p.items()
             if k in ("loc", "msg", "type", "row", "line", "column", "allowed")}
            for p in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        kept.append({"loc": ["body"], "msg": f"... and {len(problems) - MAX_PROBLEMS} more problems"})
    for p in kept:
        if "loc" in p:
            p["loc"] = [_short(str(part)) if isinstance(part, str) else part for part in p["loc"]][:6]
    return kept


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (how metadata is stored)."""
    return len(json.dumps(value, separators=(",", ":"), default=str).encode("utf-8", "replace"))


def copy_in_chunks(source: IO[bytes], target: IO[bytes]) -> None:
    """Copy an upload (its size bounded by ``BodyLimit``) in chunks, not as one bytes object."""
    while chunk := source.read(1 << 16):
        target.write(chunk)

