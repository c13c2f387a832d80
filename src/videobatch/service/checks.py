"""The service's own checks of what a client sends, before the library's rules: limits, images, URLs.

One ``RequestChecks`` per app, from its ``ServiceLimits``, ``ImageRules`` and ``AddressPolicy``.
It checks a single request (``video``), a batch's run-wide ``defaults`` and ``rows``, and each
row's ``metadata``; every method returns what to store for the image cells (URLs with a lowercase
scheme, image bytes as ``data:`` URLs, folder files as their real path) and every problem found,
so a 422 lists them all together with the library's. ``cache`` holds the address policy's answers
by host for one request (a batch names few hosts, many times). An image URL the policy allows is
then fetched, as the library checks images before paying (``videobatch._images``): it must answer
with an image in time; the fetch itself passes the address policy (every redirect too) and reads
only the first bytes (``fetch=False``: not fetched). A tenant's fetches share one gate
(``max_image_fetches`` at once, across all its requests) and one request's fetches end within
``max_image_check_seconds``: a client sending many slow URLs holds neither the service nor
other tenants' checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .._images import ImageCheck, image_problems
from ..errors import Problem
from .addresses import AddressPolicy, guarded_transport
from .images import IMAGE_COLUMNS, ImageRules
from .limits import ServiceLimits, json_size
from .schemas import VideoCreate

__all__ = ["Cache", "RequestChecks"]

Cache = dict[str, str | None]
_TEXTS = ("prompt", "negative_prompt")


class RequestChecks:
    def __init__(self, limits: ServiceLimits, images: ImageRules, addresses: AddressPolicy,
                 *, fetch: bool = True) -> None:
        self.limits = limits
        self.images = images
        self.addresses = addresses
        self.fetch = fetch
        self._gates: dict[str, asyncio.Semaphore] = {}  # by tenant: its image fetches at once

    async def fetched(self, stored: Mapping[int, Mapping[str, str]], tenant: str) -> list[Problem]:
        """Problems of the image URLs among ``stored`` cells (by row number) that do not answer
        with an image (data: URLs and folder files were judged already); ``tenant``: whose
        request it is (its fetches share a gate)."""
        cells = [(row, column, value) for row, fields in stored.items()
                 for column, value in fields.items() if value.startswith(("http://", "https://"))]
        if not self.fetch or not cells:
            return []
        # A transport of its own per request: the client that uses it closes it when done, and
        # requests of other clients are checked meanwhile.
        gate = self._gates.get(tenant)
        if gate is None:
            gate = self._gates[tenant] = asyncio.Semaphore(self.limits.max_image_fetches)
        check = ImageCheck(guard=self.addresses.refusal, transport=guarded_transport(self.addresses),
                           local_files=False, concurrency=self.limits.max_image_fetches, shared=gate,
                           budget=float(self.limits.max_image_check_seconds))
        return await image_problems(cells, check)

    def too_long(self, field: str, text: Any) -> str | None:
        if isinstance(text, str) and len(text) > self.limits.max_prompt_chars:
            return f"{field} is {len(text)} characters; at most {self.limits.max_prompt_chars} are accepted"
        return None

    def too_much(self, metadata: Any) -> str | None:
        size = json_size(metadata) if metadata else 0
        if size > self.limits.max_metadata_bytes:
            return (f"metadata is {size} bytes as JSON; at most {self.limits.max_metadata_bytes} "
                    "are accepted (keep large data elsewhere and send a reference to it)")
        return None

    async def webhook(self, url: str, cache: Cache) -> str | None:
        reason = await self.addresses.refusal(url.strip(), cache)
        return reason and f"webhook URL refused: {reason}"

    async def _cell(self, column: str, value: Any, cache: Cache) -> tuple[str | None, str | None]:
        """(the image cell as stored, None) or (None, a problem) for one text cell."""
        if not isinstance(value, str) or not value.strip():
            return None, None
        if column in _TEXTS:
            return None, self.too_long(column, value)
        if column == "webhook_url":  # (a malformed one is reported as such elsewhere)
            well_formed = value.strip().lower().startswith(("http://", "https://"))
            return None, await self.webhook(value, cache) if well_formed else None
        return await self.images.accepted(value, cache)

    async def video(self, body: VideoCreate, tenant: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """One request of ``tenant``: (its image fields as stored, problems as 422 entries)."""
        problems: list[dict[str, Any]] = []
        stored: dict[str, str] = {}
        cache: Cache = {}
        for column in (*_TEXTS, *IMAGE_COLUMNS, "webhook_url"):
            kept, reason = await self._cell(column, getattr(body, column), cache)
            if reason:
                problems.append({"loc": ["body", column], "msg": reason})
            elif kept is not None:
                stored[column] = kept
        reason = self.too_much(body.metadata)
        if reason:
            problems.append({"loc": ["body", "metadata"], "msg": reason})
        problems += [{"loc": ["body", p.column], "msg": p.message}
                     for p in await self.fetched({1: stored}, tenant)]
        return stored, problems

    async def defaults(self, defaults: Mapping[str, Any], cache: Cache) -> tuple[dict[str, Any], list[Problem]]:
        """A batch's run-wide cells: (the defaults with images as stored, problems)."""
        out = dict(defaults)
        problems: list[Problem] = []
        for column in [c for c in defaults if c in (*_TEXTS, *IMAGE_COLUMNS)]:
            kept, reason = await self._cell(column, defaults[column], cache)
            if reason:
                problems.append(Problem(None, f"defaults.{column}", reason))
            elif kept is not None:
                out[column] = kept
        return out, problems

    async def rows(self, frame: pd.DataFrame, webhook_url: str | None, cache: Cache,
                   tenant: str) -> tuple[dict[int, dict[str, str]], list[Problem]]:
        """A batch's rows (and its run-wide webhook) sent by ``tenant``: (image cells as stored,
        by 1-based row number, as request fields), problems)."""
        problems: list[Problem] = []
        stored: dict[int, dict[str, str]] = {}
        if webhook_url:
            reason = await self.webhook(webhook_url, cache)
            if reason:
                problems.append(Problem(None, "webhook_url", reason))
        columns = [c for c in frame.columns if c in (*_TEXTS, *IMAGE_COLUMNS, "webhook_url")]
        for n, row in enumerate(frame[columns].to_dict("records"), start=1):
            for column, value in row.items():
                kept, reason = await self._cell(str(column), value, cache)
                if reason:
                    problems.append(Problem(n, str(column), reason))
                elif kept is not None:
                    stored.setdefault(n, {})["end_image" if column == "image_tail" else str(column)] = kept
        problems += await self.fetched(stored, tenant)
        return stored, problems

    def metadata(self, metas: list[dict[str, Any]]) -> list[Problem]:
        """Rows whose metadata is over the limit."""
        return [Problem(n, "metadata", reason) for n, meta in enumerate(metas, start=1)
                if (reason := self.too_much(meta))]
