"""Reading Kling tasks back on both API designs: status by task id (one, or many at once), the
lookup by the caller's external id, and the list scans that stand in when it cannot answer.

One job: given a way to call Kling (``call``: one request, the envelope's ``data`` or a mapped
``ProviderError``), say what Kling holds. It remembers which endpoint kind (``text2video``,
``image2video``) or design (``newer``) each task id and idempotency key belongs to, from every
answer; a task id or key it has not seen is asked of every design the run may use
(``kinds_to_try``), because a "none" from one design proves nothing about the other. Only a task
whose own external id equals the key is ever returned for it (``listing``, ``newer``).

* Legacy: ``GET /v1/videos/{kind}/{id}``; ``GET /v1/videos/{kind}?external_task_id=<key>`` (both
  kinds, the remembered one first: 404 / 1203 or an empty ``data`` is "none", a refusal or a page
  of other tasks "cannot answer"); list pages ``?pageNum=&pageSize=`` for scans and, from
  ``list_threshold`` tasks on, for polling (never more pages than the single GETs they replace).
* Newer: ``GET /tasks?task_ids=a,b`` (``newer.MAX_BATCH`` at a time) and
  ``?external_task_ids=<key>`` (an empty array is "none"; any refusal, or an array of other tasks,
  "cannot answer"); the scan is the ``POST /tasks`` cursor listing over the rows' submit window.
* The newer design is tried when the provider option says so, when a row of it was checked or
  sent, or when the rows are unseen (``status``, ``repair``, a worker) and the credential is a
  console API key, the only one Kling documents there.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

from ...errors import ConfigError, NotFoundError, ProviderError, RejectedError
from ...request import VideoRequest
from ..base import Resolved, ScanResult, TaskStatus
from . import listing, newer, wire
from .wire import KINDS, TEXT2VIDEO

__all__ = ["NEWER", "Call", "TaskReader"]

NEWER = newer.DESIGN  # the "kind" remembered for newer-design tasks (legacy: text2video, image2video)


class Call(Protocol):
    """One API request: the envelope's ``data``, or the mapped ``ProviderError`` raised."""

    def __call__(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                 params: dict[str, Any] | None = None) -> Awaitable[Any]: ...


class TaskReader:
    """What Kling holds about tasks, read through ``call``; see the module docstring."""

    def __init__(self, call: Call, *, api: str, page_size: int, scan_pages: int,
                 list_threshold: int, signs_tokens: Callable[[], bool], now: Callable[[], float],
                 resolve: Callable[[VideoRequest], Resolved],
                 to_usd: Callable[[float | None], float | None] = lambda units: None) -> None:
        self._call = call
        self._to_usd = to_usd  # Kling units -> USD (the catalogue's unit price)
        self.api = api
        self._page_size, self._scan_pages, self._list_threshold = page_size, scan_pages, list_threshold
        self._signs_tokens, self._now, self._resolve = signs_tokens, now, resolve
        self.kinds: dict[str, str] = {}  # task_id -> text2video / image2video / newer
        self.key_kinds: dict[str, str] = {}  # external_task_id -> the same
        self.newer_rows = False  # a checked or sent row goes to the newer design
        self.rows_unseen = False  # asked about tasks of rows it was not shown (check([]))

    def newer_possible(self) -> bool:
        """Whether tasks of this run may be on the newer design (then lookups try it too): a row
        of it was checked or sent, or the rows are unseen and the key is a console API key (the
        only credential Kling documents for that design: with a key pair, a refusal there must not
        stop a run that never used it)."""
        if self.api != "auto":
            return self.api == NEWER
        if self.newer_rows:
            return True
        try:
            return self.rows_unseen and not self._signs_tokens()
        except ConfigError:
            return False

    def kinds_to_try(self, first: str | None = None) -> tuple[str, ...]:
        """Where an unknown task id or key is looked for, in order (``first``: the remembered one)."""
        kinds: tuple[str, ...] = ((NEWER,) if self.newer_possible() else ()) + KINDS
        if self.api == "legacy":
            kinds = KINDS
        return tuple(sorted(kinds, key=lambda k: k != first)) if first else kinds

    def task(self, data: Any, kind: str, *, submitting: bool = False,
             key: str | None = None) -> TaskStatus:
        """A task object of ``kind``'s design as a ``TaskStatus``, its kind remembered; a task
        that ended carries what Kling says it was charged (``cost_units``, and ``cost_actual`` in
        USD)."""
        is_newer = kind == NEWER
        status = (newer.parse_task if is_newer else wire.parse_task)(data, submitting=submitting, key=key)
        self.kinds[status.task_id] = kind
        if status.state.done:
            units = (newer.units if is_newer else wire.units)(data)
            cost = self._to_usd(units)
            if units is not None:
                status = dataclasses.replace(status, cost_units=units,
                                             cost_actual=None if cost is None else round(cost, 6))
        return status

    async def status(self, task_id: str, *, tried: Collection[str] = ()) -> TaskStatus:
        """One task's status (``tried``: designs or kinds already asked without an answer)."""
        known = self.kinds.get(task_id)
        missing = NotFoundError(f"Kling has no task {task_id!r}", provider_code=1203)
        refused: RejectedError | None = None  # a design that would not answer about an unknown id
        for kind in (known,) if known else [k for k in self.kinds_to_try() if k not in tried]:
            try:
                if kind == NEWER:
                    data = self._one_of(await self._call("GET", "/tasks", params={"task_ids": task_id}),
                                        task_id)
                else:
                    data = await self._call("GET", f"/v1/videos/{kind}/{quote(task_id, safe='')}")
            except NotFoundError as exc:
                missing = exc
                continue
            except RejectedError as exc:
                if known:
                    raise
                refused = exc  # perhaps not this design's task: ask the others first
                continue
            if not data:
                missing = NotFoundError(f"Kling has no task {task_id!r}", provider_code=1203)
                continue
            return self.task(data, kind)
        if refused is not None:
            raise refused  # not "no such task": one design could not say
        raise missing

    @staticmethod
    def _one_of(data: Any, task_id: str) -> dict[str, Any] | None:
        """The object for ``task_id`` in a ``GET /tasks?task_ids=`` answer (an array), or None."""
        items = data if isinstance(data, list) else []
        return next((i for i in items if isinstance(i, dict) and str(i.get("id")) == task_id), None)

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        first = self.key_kinds.get(idempotency_key, TEXT2VIDEO)
        unanswered: ProviderError | None = None
        for kind in self.kinds_to_try(first):
            if kind == NEWER:
                try:
                    data = await self._call("GET", "/tasks", params={"external_task_ids": idempotency_key})
                except (NotFoundError, RejectedError) as exc:  # no documented "none" but an empty array
                    unanswered = listing.cannot_look_up("newer-design", f"the query was refused ({exc.message})",
                                                        exc)
                    continue
                item, answered = newer.read_lookup(data, idempotency_key)
                if item is not None:
                    return self.task(item, NEWER, key=idempotency_key)
                if not answered:
                    unanswered = listing.cannot_look_up(
                        "newer-design", "it answered about other tasks (the parameter seems ignored)", None)
                continue
            try:
                data = await self._call("GET", f"/v1/videos/{kind}",
                                        params={"external_task_id": idempotency_key})
            except (NotFoundError, RejectedError) as exc:
                if isinstance(exc, NotFoundError) and exc.provider_code == 1203:
                    continue  # Kling answered: no task of this kind has that id
                unanswered = listing.cannot_look_up(kind, f"the query was refused ({exc.message})", exc)
                continue
            item, answered = listing.read_lookup(data, idempotency_key)
            if item is not None:
                return self.task(item, kind, key=idempotency_key)
            if not answered:
                unanswered = listing.cannot_look_up(
                    kind, "it answered about other tasks (the parameter seems ignored)", None)
        if unanswered is not None:
            raise unanswered
        return None

    async def scan(self, keys: Collection[str], since: float) -> ScanResult:
        """List each kind's tasks (newest first, ``page_size`` a page, at most ``scan_pages``
        pages) back past ``since`` for tasks carrying one of ``keys``; see ``listing.scan_kind``."""
        wanted = set(keys)
        items: dict[str, dict[str, Any]] = {}
        kinds: dict[str, str] = {}
        complete = True
        requests = keys.values() if isinstance(keys, Mapping) else ()
        if any(r is not None and newer.is_newer(self._resolve(r).values) for r in requests):
            self.newer_rows = True
        for kind in self.kinds_to_try():
            if wanted <= items.keys():
                break
            before = set(items)
            if kind == NEWER:
                start, end = int((since - listing.CLOCK_SLACK) * 1000), int((self._now() + listing.CLOCK_SLACK) * 1000)

                async def cursor_page(cursor: str, start: int = start, end: int = end) -> Any:
                    return await self._call("POST", "/tasks", body=newer.cursor_body(
                        start, end, cursor, self._page_size))

                done = await listing.scan_cursor(cursor_page, wanted, items, max_pages=self._scan_pages)
            else:
                async def page(number: int, kind: str = kind) -> Any:
                    return await self._call("GET", f"/v1/videos/{kind}",
                                            params={"pageNum": number, "pageSize": self._page_size})

                done = await listing.scan_kind(page, wanted, items, since, page_size=self._page_size,
                                               max_pages=self._scan_pages, what=kind)
            kinds.update(dict.fromkeys(set(items) - before, kind))
            complete = complete and done
        found = {key: self.task(item, kinds[key], key=key) for key, item in items.items()}
        return ScanResult(found=found, complete=complete or wanted <= found.keys())

    async def status_many(
        self, task_ids: Sequence[str], riders: Sequence[str] = ()
    ) -> Mapping[str, TaskStatus | ProviderError]:
        """Status of many tasks: list-endpoint pages first (cheaper), single GETs for the rest.

        ``riders`` are reported when they appear on a page fetched for ``task_ids``; no request
        is spent on them otherwise.
        """
        ids = list(dict.fromkeys(task_ids))
        extra = [t for t in dict.fromkeys(riders) if t not in set(ids)]
        out: dict[str, TaskStatus | ProviderError] = {}
        # Newer-design tasks in batches; so are unknown ids when the run may have such tasks (one
        # request for 20 of them), and whatever that does not find is looked for on /v1 below.
        unseen = self.newer_possible()
        late = [t for t in ids if self.kinds.get(t) == NEWER or (unseen and t not in self.kinds)]
        absent: set[str] = set()  # unknown ids the newer design answered it does not have
        for start in range(0, len(late), newer.MAX_BATCH):
            for task_id, answer in (await self._status_newer(late[start:start + newer.MAX_BATCH])).items():
                if self.kinds.get(task_id) == NEWER:  # known, or just found there
                    out[task_id] = answer
                elif isinstance(answer, NotFoundError):
                    absent.add(task_id)
        missing = set(ids) - set(out)
        for kind in KINDS:
            wanted = {t for t in missing if self.kinds.get(t) in (kind, None)}
            along = {t for t in extra if t not in out and self.kinds.get(t) in (kind, None)}
            seen: dict[str, dict[str, Any]] = {}

            async def page(number: int, kind: str = kind) -> Any:
                try:
                    return await self._call("GET", f"/v1/videos/{kind}",
                                            params={"pageNum": number, "pageSize": self._page_size})
                except (NotFoundError, RejectedError):
                    return None  # no usable list endpoint: single GETs below

            failure: ProviderError | None = None
            try:
                await listing.pages_for_status(page, wanted, along, seen, page_size=self._page_size,
                                               threshold=self._list_threshold)
            except ProviderError as exc:  # rate limited, auth, 5xx: report, don't pile on
                failure = exc
            for task_id, item in seen.items():
                try:
                    out[task_id] = self.task(item, kind)
                except ProviderError:
                    continue
                missing.discard(task_id)
            if failure is not None:
                out.update(dict.fromkeys(missing, failure))
                return {t: out[t] for t in ids}
        if missing:
            out.update(await self._status_each([t for t in ids if t in missing], absent))
        return {t: out[t] for t in [*ids, *extra] if t in out}

    async def _status_newer(self, task_ids: list[str]) -> dict[str, TaskStatus | ProviderError]:
        """Newer-design tasks, one ``GET /tasks?task_ids=a,b,...`` for all of them; an error is
        reported for each, a task the answer leaves out is NotFoundError."""
        try:
            data = await self._call("GET", "/tasks", params={"task_ids": ",".join(task_ids)})
        except ProviderError as exc:
            return dict.fromkeys(task_ids, exc)
        out: dict[str, TaskStatus | ProviderError] = {}
        for task_id in task_ids:
            item = self._one_of(data, task_id)
            try:
                out[task_id] = (self.task(item, NEWER) if item is not None else NotFoundError(
                    f"Kling has no task {task_id!r}", provider_code=1203))
            except ProviderError as exc:
                out[task_id] = exc
        return out

    async def _status_each(self, task_ids: list[str],
                           absent: Collection[str] = ()) -> dict[str, TaskStatus | ProviderError]:
        gate = asyncio.Semaphore(4)

        async def one(task_id: str) -> TaskStatus | ProviderError:
            async with gate:
                try:
                    return await self.status(task_id, tried=(NEWER,) if task_id in absent else ())
                except ProviderError as exc:
                    return exc

        answers = await asyncio.gather(*(one(t) for t in task_ids))
        return dict(zip(task_ids, answers, strict=True))
