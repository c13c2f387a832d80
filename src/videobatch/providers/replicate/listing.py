"""Finding our predictions in Replicate's list, which keeps no key of ours: matched on model + input.

``GET /v1/predictions?created_after=<time>`` answers 100 predictions a page, newest first, with a
``next`` URL (a cursor) to follow as given. Each holds its ``model``, ``version`` and ``input``; but
an API prediction's input is deleted an hour after it was made (``data_removed``), and other
systems' predictions share the account. So a row's prediction is adopted only when exactly one
listed prediction matches the row's model and every input field we send, and that prediction matches
no other row asked about (two rows with the same inputs are a tie: neither is adopted). A listing
proves a row *has no prediction* (``complete``) only when it read every page back to the time asked
for, and no prediction there could be that row's without showing it: none of the same model with its
input deleted, no tie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .wire import parse_time

__all__ = ["Listed", "Wanted", "match", "read_pages"]

Page = Callable[[str | None], Awaitable[Any]]  # the next URL (None: the first page) -> its body


@dataclass(frozen=True)
class Wanted:
    """What one row's prediction looks like in a listing (None input: it cannot be written)."""

    model: str  # "owner/name" or "owner/name:version"
    input: Mapping[str, Any] | None


@dataclass
class Listed:
    """What the pages read said: the predictions made at or after ``since``, and whether every one
    of them was read (``complete``)."""

    items: list[dict[str, Any]]
    complete: bool


async def read_pages(page: Page, since: float, *, max_pages: int, follows: Callable[[str], bool]) -> Listed:
    """Read pages (newest first) until one reaches back before ``since``, the list ends, or
    ``max_pages`` were read (then it is incomplete). ``follows``: whether a ``next`` URL may be
    fetched (it must point at the API this provider talks to)."""
    items: list[dict[str, Any]] = []
    seen: set[str] = set()  # a prediction shown twice (pages shifting under new ones) is one
    url: str | None = None
    for _ in range(max_pages):
        body = await page(url)
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return Listed(items, complete=False)
        reached = False
        for item in results:
            if not isinstance(item, dict):
                return Listed(items, complete=False)  # a prediction we cannot read may be ours
            created = parse_time(item.get("created_at"))
            if created is not None and created < since:
                reached = True  # the server ignored created_after: older ones are not ours
                continue
            if str(item.get("id")) not in seen:
                seen.add(str(item.get("id")))
                items.append(item)
        nxt = body.get("next")
        if reached or not nxt:
            return Listed(items, complete=True)
        if not isinstance(nxt, str) or not follows(nxt):
            return Listed(items, complete=False)
        url = nxt
    return Listed(items, complete=False)


def _same_model(item: Mapping[str, Any], model: str) -> bool:
    name, _, version = model.partition(":")
    if item.get("model") != name:
        return False
    return not version or str(item.get("version") or "").endswith(version)


def _holds(listed: Any, sent: Mapping[str, Any]) -> bool:
    """Every field we send is echoed with the same value (Replicate may add its own defaults)."""
    return isinstance(listed, Mapping) and all(k in listed and listed[k] == v for k, v in sent.items())


def match(items: list[dict[str, Any]], wanted: Mapping[str, Wanted]) -> tuple[dict[str, dict[str, Any]], bool]:
    """Rows' predictions found one-to-one (key -> prediction), and whether the rows not found
    certainly have none among ``items`` (no deleted input of their model, no tie)."""
    candidates: dict[str, list[dict[str, Any]]] = {key: [] for key in wanted}
    claimed: dict[str, int] = {}  # prediction id -> rows it matches
    sure = all(w.input is not None for w in wanted.values())
    for item in items:
        input_ = item.get("input")
        readable = isinstance(input_, Mapping) and bool(input_) and not item.get("data_removed")
        for key, want in wanted.items():
            if want.input is None or not _same_model(item, want.model):
                continue
            if not readable:
                sure = False  # this one may be the row's, with its input deleted
            elif _holds(input_, want.input):
                candidates[key].append(item)
                claimed[str(item.get("id"))] = claimed.get(str(item.get("id")), 0) + 1
    found: dict[str, dict[str, Any]] = {}
    for key, items_ in candidates.items():
        if len(items_) == 1 and claimed[str(items_[0].get("id"))] == 1:
            found[key] = items_[0]
        elif items_:
            sure = False  # a tie: adopting either could pay twice or swap rows
    return found, sure
