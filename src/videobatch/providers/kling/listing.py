"""Finding Kling tasks by the caller's ``external_task_id``: the lookup's answer read safely, and the
scan of the task list that stands in when the lookup cannot answer.

Only a task whose own ``task_info.external_task_id`` equals the key exactly is ever taken; a task
without one, or with another system's id (other systems share the account), never is.

What public sources say, and what this module relies on:

* **The lookup.** Kling's page for the single-task query lists ``task_id`` (path) and
  ``external_task_id`` as "choose one of the two" without pinning the external id's wire form
  (doc.aimanyi.top/api-386109649.html). An apidoc mirror of the official page (github
  betasecond/KlingDemo, APIDoc.md) sends ``GET /v1/videos/{kind}?external_task_id=X``; that is
  what the client asks. Nothing public says what a server that does not support it answers, so
  every answer is read for what it proves (``read_lookup``): a task carrying the key is found;
  404 / 1203 or an empty ``data`` is "Kling has none"; a refusal, or a list of *other* tasks (the
  parameter ignored), or a task without an external id is "cannot answer" — never "not found",
  which would let a paid row be submitted again.
* **The list.** ``GET /v1/videos/{kind}?pageNum=N&pageSize=M``: pageNum 1-1000 (default 1),
  pageSize 1-500 (default 30), ``data`` a list of task objects with ``created_at`` (ms) and
  ``task_info.external_task_id`` (the KlingDemo mirror; Baidu Qianfan's copy of the Kling API,
  cloud.baidu.com/doc/qianfan-api/s/Qmbt1kjiz, states the same ranges; docs.kapon.cloud/kling/
  task-query shows ``?pageNum=1&pageSize=30``; the kling-sdk 1.0.0 types on unpkg list the same
  fields). **No source states the order**: live notes say newest first, while the mirror's
  example page happens to list the older task first. So ``scan_kind`` does not assume it: it
  stops early at ``since`` only while every page it has read was in newest-first order by
  ``created_at``; otherwise it reads on to the end of the list (or its page budget). At most
  1000 pages can be asked for.
* **The newer design's listing** (``scan_cursor``). ``POST /tasks`` with ``start_time`` /
  ``end_time`` (ms strings), ``cursor`` and ``limit`` (≤ 500) answers ``data: {result[], count,
  next_cursor, has_more}``; a non-empty cursor overrides the times (Kling's newer docs, "Query Task
  (By Cursor)", e.g. kling.ai/document-api/api/video/motion-control, read 2026-11-28). The window
  is asked for explicitly (the row's submit time less ``CLOCK_SLACK`` to now plus it), so reading
  until ``has_more`` is false proves every task of the window was seen, whatever the order.
* **Clocks.** ``since`` is this machine's clock, ``created_at`` Kling's: the scan reaches
  ``CLOCK_SLACK`` seconds further back than asked, so a skewed clock cannot hide a task.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from ...errors import NotFoundError, ProviderError, RejectedError, TransientError
from . import newer
from .wire import created_ms, external_id

__all__ = ["CLOCK_SLACK", "MAX_PAGE", "cannot_look_up", "pages_for_status", "read_lookup", "scan_cursor",
           "scan_kind"]

CLOCK_SLACK = 600.0  # seconds the scan reaches back beyond ``since``
MAX_PAGE = 1000  # Kling's highest pageNum


def read_lookup(data: Any, key: str) -> tuple[dict[str, Any] | None, bool]:
    """What a successful answer to ``?external_task_id=key`` proves: ``(task, answered)``.

    ``(task, True)``: the task carrying exactly ``key``. ``(None, True)``: Kling answered that it
    has none (empty ``data``). ``(None, False)``: the answer is about other tasks (the parameter
    was ignored), or about a task that does not say its external id: it proves nothing.
    """
    if data in (None, [], {}):
        return None, True
    items = data if isinstance(data, list) else [data]
    for item in items:
        if isinstance(item, dict) and item.get("task_id") and external_id(item) == key:
            return item, True
    return None, False


def cannot_look_up(kind: str, why: str, refusal: ProviderError | None) -> ProviderError:
    """The lookup by external_task_id proved nothing: not "not found" (that would let the row be
    paid again), but a plain ProviderError the runner answers with a list scan."""
    return ProviderError(
        f"Kling cannot look {kind} tasks up by external_task_id here: {why}. Whether this row's "
        "task exists is unknown until the task list is scanned for it.",
        provider_code=refusal.provider_code if refusal else None,
        status_code=refusal.status_code if refusal else None,
        request_id=refusal.request_id if refusal else None,
    )


async def scan_kind(
    fetch: Callable[[int], Awaitable[Any]],
    keys: Collection[str],
    found: dict[str, dict[str, Any]],
    since: float,
    *,
    page_size: int,
    max_pages: int,
    what: str = "",
) -> bool:
    """Read list pages (``await fetch(page_number)`` gives a page's ``data``) looking for tasks
    whose external id is one of ``keys``; put each one's task object into ``found``.

    True when the scan proves that no other key has a task of this kind: every key is found, the
    list ended, or a newest-first list reached back past ``since`` (epoch seconds, less
    ``CLOCK_SLACK``). False when the page budget ran out first, or a task with a wanted key could
    not be read. A refused list (404, 1201, ...) raises a plain ``ProviderError`` (the list cannot
    answer; never ``NotFoundError``); other errors of ``fetch`` propagate.
    """
    cutoff = (since - CLOCK_SLACK) * 1000.0
    newest_first = True
    previous_oldest: float | None = None
    readable = True
    for number in range(1, min(max_pages, MAX_PAGE) + 1):
        refusal: ProviderError | None = None
        try:
            data = await fetch(number)
        except (NotFoundError, RejectedError) as exc:
            refusal = exc
        if refusal is not None:  # raised outside the except block: nothing chained
            raise ProviderError(f"Kling refused to list its {what} tasks ({refusal.message})",
                                provider_code=refusal.provider_code,
                                status_code=refusal.status_code, request_id=refusal.request_id)
        items = data if isinstance(data, list) else [] if data in (None, {}) else None
        if items is None:
            raise TransientError(f"Kling answered page {number} of its {what} task list with a "
                                 f"{type(data).__name__}, not a list", maybe_accepted=False)
        stamps: list[float] = []
        for item in items:
            key = external_id(item)
            if key is not None and key in keys and key not in found:
                if isinstance(item, dict) and item.get("task_id"):
                    found[key] = item
                else:
                    readable = False  # it exists, but unreadable: not proof that it does not
            stamp = created_ms(item)
            if stamp is None:
                newest_first = False  # cannot tell the order: no early stop
            else:
                stamps.append(stamp)
        if any(a < b for a, b in itertools.pairwise(stamps)) or (
                stamps and previous_oldest is not None and stamps[0] > previous_oldest):
            newest_first = False
        if all(k in found for k in keys):
            return True
        if len(items) < page_size:
            return readable  # the end of the list
        if newest_first and stamps and stamps[-1] < cutoff:
            return readable  # everything further is older still
        previous_oldest = stamps[-1] if stamps else previous_oldest
    return False


async def scan_cursor(
    fetch: Callable[[str], Awaitable[Any]],
    keys: Collection[str],
    found: dict[str, dict[str, Any]],
    *,
    max_pages: int,
) -> bool:
    """The newer design's ``POST /tasks`` listing (``await fetch(cursor)`` gives a page's ``data``,
    for a window fixed by the caller): put each task object whose own ``external_id`` is one of
    ``keys`` into ``found``. True when that proves no other key has a task in the window (every
    key found, or the listing ended readably); False when the page budget ran out first. A refused
    listing raises a plain ``ProviderError`` (never ``NotFoundError``)."""
    cursor, readable = "", True
    for _ in range(max(1, max_pages)):
        refusal: ProviderError | None = None
        try:
            data = await fetch(cursor)
        except (NotFoundError, RejectedError) as exc:
            refusal = exc
        if refusal is not None:
            raise ProviderError(f"Kling refused to list its tasks (POST /tasks: {refusal.message})",
                                provider_code=refusal.provider_code,
                                status_code=refusal.status_code, request_id=refusal.request_id)
        items, cursor, more = newer.read_cursor_page(data)
        for item in items:
            key = newer.external_id(item)
            if key is not None and key in keys and key not in found:
                if isinstance(item, dict) and item.get("id"):
                    found[key] = item
                else:
                    readable = False
        if all(k in found for k in keys):
            return True
        if not more:
            return readable
        if not cursor:
            return False  # "more" without a way to ask for it: cannot prove the rest free
    return False


async def pages_for_status(
    fetch: Callable[[int], Awaitable[Any]],
    wanted: set[str],
    along: set[str],
    found: dict[str, dict[str, Any]],
    *,
    threshold: int,
    page_size: int,
) -> None:
    """Status polling by list pages: put the task objects of ``wanted`` tasks (and of ``along``,
    riders that come free) seen on pages 1, 2, ... into ``found``, removing them from both sets.

    Reads pages only while at least ``threshold`` tasks are looked for and never more pages than
    the single GETs they replace; stops at the end of the list, or when ``fetch`` returns None (no
    usable list endpoint). Errors ``fetch`` raises propagate; ``found`` keeps what was seen.
    """
    budget = max(1 if wanted and along else 0, -(-len(wanted) // threshold))
    for number in range(1, min(budget, MAX_PAGE) + 1):
        if not wanted or len(wanted) + len(along) < threshold:
            return
        data = await fetch(number)
        if data is None:
            return
        items = data if isinstance(data, list) else []
        for item in items:
            task_id = item.get("task_id") if isinstance(item, dict) else None
            if task_id in wanted or task_id in along:
                found[task_id] = item
                wanted.discard(task_id)
                along.discard(task_id)
        if len(items) < page_size:
            return
