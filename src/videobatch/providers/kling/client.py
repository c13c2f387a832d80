"""The Kling AI provider: puts a ``VideoRequest`` on Kling's HTTP API and reads the task back.

One job: videobatch's provider interface on top of Kling's wire contract (``shared/kling-api.md``).
Retries, slots and reconciliation belong to the runner; every request goes out through the paced
client from the core (``Provider.http_client``: one rate token per request, and a 1302 answer slows
the shared limiter). The package's other modules: ``wire`` writes create bodies, reads answers and
maps errors; ``newer`` does the same for Kling's newer API design; ``listing`` reads lookups and
scans the task lists (with what public sources say about both); ``credentials`` holds the keys and
signs JWTs; ``images`` judges and encodes images.

**Two API designs.** Each model's catalogue card says which one it is sent to (its ``api`` option:
``legacy``, ``/v1/videos/{kind}`` with ``model_name``; or ``newer``, ``/text-to-video/{model}``
with a ``settings``/``options`` body, looked up by ``GET /tasks?external_task_ids=``). The
provider option ``api`` (``auto``, the default: the card decides; ``legacy``; ``newer``) can insist
on one: a row whose model is on the other design is then an input problem, found before paying.
Task ids are remembered with their design; a task id or key this process has not seen is tried on
every design the run may use (both, once a newer-design row has been checked or sent), because a
"none" from one design proves nothing about the other.

Decisions where the contract is *unsure* (the client is lenient in what it reads):

* **Lookup by external_task_id**: ``GET /v1/videos/{kind}?external_task_id=<id>``, both kinds, the
  remembered one first. Only a task carrying exactly the id is adopted; 404 / 1203 or an empty
  ``data`` is "none"; a refusal or a page of other tasks raises a ``ProviderError`` saying the
  lookup cannot answer, and ``scan`` lists the account's tasks instead.
* **Duplicate external_task_id**: Kling documents only that the id is unique per account. A
  1200/1201 refusal of a create naming ``external_task_id`` means "already used": ``find`` adopts
  the task; if it misses it or fails, ``KeyAlreadyUsed`` (a paid task may exist: never "failed").
  (The project's test server answers 400 / 1201 "Invalid parameters: external_task_id '…' already
  exists".)
* The task path needs the kind: it is remembered per task id from submit/find/list answers; an
  unknown id (after a restart) is tried as text2video, then image2video.
* Newer design: ``GET /tasks?external_task_ids=<key>``; an empty ``data`` array is "none", a
  refusal (any code) or an array of other tasks "cannot answer"; the fallback scan is the
  ``POST /tasks`` cursor listing from the row's submit time (less a clock margin) to now.
  Statuses of newer-design tasks are read ``newer.MAX_BATCH`` at a time with ``?task_ids=a,b``.
* ``status_many`` reads list pages when at least ``list_threshold`` (3) tasks are asked, never more
  pages than the single GETs they replace, then single GETs for the rest; a rate-limit or server
  error on the list is reported for every task asked.

Credentials are checked in ``check()`` (and before the first request), never at import or
construction, so ``describe()`` and cost estimates work without keys; nothing shows them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ...errors import (
    AuthError,
    ConfigError,
    KeyAlreadyUsed,
    NotFoundError,
    Problem,
    ProviderError,
    RejectedError,
)
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, ScanResult, TaskStatus
from ..setup import number
from . import listing, newer, wire
from .credentials import Credentials
from .options import MODELS_FILE, KlingOptions
from .wire import KINDS, TEXT2VIDEO

__all__ = ["DEFAULT_BASE_URL", "KlingProvider"]

log = logging.getLogger(__name__)

# Keys are bound to a region: a global (international console) key on the Beijing host gets 1002.
HOSTS = {"global": "https://api-singapore.klingai.com", "cn": "https://api-beijing.klingai.com"}
DEFAULT_BASE_URL = HOSTS["global"]
BASE_URL_ENV = "KLING_BASE_URL"

_now = time.time  # the clock; tests replace it
NEWER = newer.DESIGN  # the "kind" remembered for newer-design tasks (legacy: text2video, image2video)
APIS = ("auto", "legacy", "newer")



class KlingProvider(Provider):
    """Kling AI text-to-video and image-to-video.

    Options (strings are accepted, as from ``-P key=value``): ``api_key`` (a console API key;
    default env KLING_API_KEY) or ``access_key`` + ``secret_key`` (default: env KLING_ACCESS_KEY /
    KLING_SECRET_KEY), ``region`` (``global``: api-singapore.klingai.com, ``cn``:
    api-beijing.klingai.com), ``base_url`` (env KLING_BASE_URL; wins over the region),
    ``max_parallel`` (the account's parallel-task limit), ``max_rps``,
    ``http_timeout`` (HTTP seconds; ``timeout`` when constructing directly), ``callback_url``,
    ``api`` (``auto``: each model's catalogue card picks the API design; ``legacy`` or ``newer``:
    only that design, rows of models on the other are input problems),
    ``first_poll`` / ``poll_interval`` / ``max_poll_interval`` (seconds), ``list_threshold``
    (use the list endpoint from this many tasks on), ``page_size``, ``scan_pages`` (list pages a
    scan may read per kind), and ``transport`` (an ``httpx.AsyncBaseTransport``, for tests; it is
    wrapped in the paced transport like the default one).
    """

    name: ClassVar[str] = "kling"
    # external_task_id is kept with each task and can be looked up; task lists page back in time;
    # callback_url reports ends; one list page answers for many tasks. No cancel endpoint.
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotency_key=True, lookup=True, listing=True, webhooks=True, batch_status=True)
    batch_polling = True
    option_schema = KlingOptions
    models_file = MODELS_FILE

    def __init__(
        self,
        *,
        api_key: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        base_url: str | None = None,
        region: str = "global",
        max_parallel: int | str = 5,
        max_rps: float | str | None = 5.0,
        timeout: float | str = 30.0,
        http_timeout: float | str | None = None,
        callback_url: str | None = None,
        first_poll: float | str = 30.0,
        poll_interval: float | str = 5.0,
        max_poll_interval: float | str = 60.0,
        list_threshold: int | str = 3,
        page_size: int | str = 500,
        scan_pages: int | str = 20,
        transport: httpx.AsyncBaseTransport | None = None,
        api: str = "auto",
    ) -> None:
        self._keys = Credentials(api_key, access_key, secret_key)
        api = str(api).strip().lower()
        if api not in APIS:
            raise ConfigError(f"kling api {api!r} is not one of {', '.join(APIS)} (auto: each model's "
                              "catalogue entry picks Kling's API design)")
        self.api = api
        self._newer_rows = False  # a checked or sent row goes to the newer design
        self._rows_unseen = False  # asked about tasks of rows it was not shown (check([]))
        if region not in HOSTS:
            raise ConfigError(f"kling region {region!r} is not one of {', '.join(HOSTS)} (keys are "
                              "bound to the region of the console that issued them)")
        url = (base_url or os.environ.get(BASE_URL_ENV) or HOSTS[region]).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"kling base_url {url!r} is not an http(s) URL; set {BASE_URL_ENV} or base_url="
            )
        self.base_url = url
        # ``http_timeout`` is the name to use through run()/the CLI, whose own ``timeout`` is per row.
        self.timeout = float(number("kling", "http_timeout", timeout if http_timeout is None
                                     else http_timeout, float, 0.001))
        rps = None if max_rps in (None, "", "none", "None") else number("kling", "max_rps", max_rps, float, 0.001)
        self.limits = Limits(int(number("kling", "max_parallel", max_parallel, int, 1)), rps)
        interval = float(number("kling", "poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(number("kling", "first_poll", first_poll, float, 0.0)),
            min_interval=interval,
            max_interval=max(interval, float(number("kling", "max_poll_interval", max_poll_interval,
                                                      float, 0.001))),
        )
        self.callback_url = callback_url or None
        self._list_threshold = int(number("kling", "list_threshold", list_threshold, int, 1))
        self._page_size = min(500, int(number("kling", "page_size", page_size, int, 1)))
        self._scan_pages = int(number("kling", "scan_pages", scan_pages, int, 1))
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._kinds: dict[str, str] = {}  # task_id -> text2video / image2video
        self._key_kinds: dict[str, str] = {}  # external_task_id -> kind

    # -- credentials -------------------------------------------------------------------------

    def _bearer(self, *, renew: bool = False) -> str:
        return self._keys.bearer(_now(), renew=renew)

    # -- the provider interface --------------------------------------------------------------

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._keys.check()
        if not requests:  # asked about tasks of rows it will not see (status, repair, a worker)
            self._rows_unseen = True
        return self.check_rows(requests)

    def check_rows(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        problems = wire.body_problems(requests)
        for row, request in enumerate(requests, start=1):
            resolved = self.resolve(request)
            design = NEWER if newer.is_newer(resolved.values) else "legacy"
            self._newer_rows = self._newer_rows or design == NEWER
            if self.api != "auto" and design != self.api:
                catalog = self.catalog()
                fits = [c.id for c in (catalog.current() if catalog else ())
                        if (c.options["api"].default if "api" in c.options else "legacy") == self.api]
                problems.append(Problem(
                    row, "model", f"kling model {resolved.model} is sent to Kling's {design} API "
                    f"design, but the provider option api={self.api} allows only the {self.api} one",
                    allowed=", ".join(fits) or f"a model of the {self.api} design"))
            if design == NEWER and request.end_image and not request.image:
                problems.append(Problem(row, "end_image", "Kling's newer API design takes a last "
                                        "frame only together with a first frame",
                                        allowed="an image as well, or no end_image"))
        return problems

    def _newer_possible(self) -> bool:
        """Whether tasks of this run may be on the newer design (then lookups try it too): a row
        of it was checked or sent, or the rows are unseen and the key is a console API key (the
        only credential Kling documents for that design: with a key pair, a refusal there must not
        stop a run that never used it)."""
        if self.api != "auto":
            return self.api == NEWER
        if self._newer_rows:
            return True
        try:
            return self._rows_unseen and not self._keys.signs_tokens()
        except ConfigError:
            return False

    def _kinds_to_try(self, first: str | None = None) -> tuple[str, ...]:
        kinds: tuple[str, ...] = ((NEWER,) if self._newer_possible() else ()) + KINDS
        if self.api == "legacy":
            kinds = KINDS
        return tuple(sorted(kinds, key=lambda k: k != first)) if first else kinds

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        resolved = self.resolve(request)
        if newer.is_newer(resolved.values):
            kind, (path, body) = NEWER, await newer.request_body(
                request, resolved, idempotency_key, self.callback_url)
            self._newer_rows = True
        else:
            kind, body = await wire.request_body(request, resolved, idempotency_key,
                                                 self.callback_url)
            path = f"/v1/videos/{kind}"
        self._key_kinds[idempotency_key] = kind
        try:
            data = await self._call("POST", path, body=body, submitting=True, model=resolved.model)
        except RejectedError as exc:
            if not wire.is_duplicate(exc):
                raise
            refusal = exc
        else:
            return self._task(data, kind, submitting=True, key=idempotency_key)
        log.info("kling: external_task_id %s already used; looking up that task", idempotency_key)
        try:
            found = await self.find(idempotency_key)
        except ProviderError as lookup:
            why = f"looking it up failed ({lookup.message})"
        else:
            if found is not None:
                return found
            why = "a lookup did not find it"
        raise KeyAlreadyUsed(
            f"Kling says external_task_id {idempotency_key!r} was already used, so a task was "
            f"created for this row before, but {why}. Its outcome is unknown until a list scan "
            f"finds that task; it is not submitted again on its own. Kling said: {refusal.message}",
            provider_code=refusal.provider_code, status_code=refusal.status_code,
            request_id=refusal.request_id)

    async def status(self, task_id: str) -> TaskStatus:
        known = self._kinds.get(task_id)
        missing: NotFoundError | None = None
        refused: RejectedError | None = None  # a design that would not answer about an unknown id
        for kind in (known,) if known else self._kinds_to_try():
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
            return self._task(data, kind)
        if refused is not None:
            raise refused  # not "no such task": one design could not say
        assert missing is not None
        raise missing

    @staticmethod
    def _one_of(data: Any, task_id: str) -> dict[str, Any] | None:
        """The object for ``task_id`` in a ``GET /tasks?task_ids=`` answer (an array), or None."""
        items = data if isinstance(data, list) else []
        return next((i for i in items if isinstance(i, dict) and str(i.get("id")) == task_id), None)

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        first = self._key_kinds.get(idempotency_key, TEXT2VIDEO)
        unanswered: ProviderError | None = None
        for kind in self._kinds_to_try(first):
            if kind == NEWER:
                try:
                    data = await self._call("GET", "/tasks", params={"external_task_ids": idempotency_key})
                except (NotFoundError, RejectedError) as exc:  # no documented "none" but an empty array
                    unanswered = listing.cannot_look_up("newer-design", f"the query was refused ({exc.message})",
                                                        exc)
                    continue
                item, answered = newer.read_lookup(data, idempotency_key)
                if item is not None:
                    return self._task(item, NEWER, key=idempotency_key)
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
                return self._task(item, kind, key=idempotency_key)
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
        if any(r is not None and newer.is_newer(self.resolve(r).values) for r in requests):
            self._newer_rows = True
        for kind in self._kinds_to_try():
            if wanted <= items.keys():
                break
            before = set(items)
            if kind == NEWER:
                start, end = int((since - listing.CLOCK_SLACK) * 1000), int((_now() + listing.CLOCK_SLACK) * 1000)

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
        found = {key: self._task(item, kinds[key], key=key) for key, item in items.items()}
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
        late = [t for t in ids if self._kinds.get(t) == NEWER]
        for start in range(0, len(late), newer.MAX_BATCH):
            out.update(await self._status_newer(late[start:start + newer.MAX_BATCH]))
        missing = set(ids) - set(late)
        for kind in KINDS:
            wanted = {t for t in missing if self._kinds.get(t) in (kind, None)}
            along = {t for t in extra if t not in out and self._kinds.get(t) in (kind, None)}
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
                    out[task_id] = self._task(item, kind)
                except ProviderError:
                    continue
                missing.discard(task_id)
            if failure is not None:
                out.update(dict.fromkeys(missing, failure))
                return {t: out[t] for t in ids}
        if missing:
            out.update(await self._status_each([t for t in ids if t in missing]))
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
                out[task_id] = (self._task(item, NEWER) if item is not None else NotFoundError(
                    f"Kling has no task {task_id!r}", provider_code=1203))
            except ProviderError as exc:
                out[task_id] = exc
        return out

    async def _status_each(self, task_ids: list[str]) -> dict[str, TaskStatus | ProviderError]:
        gate = asyncio.Semaphore(4)

        async def one(task_id: str) -> TaskStatus | ProviderError:
            async with gate:
                try:
                    return await self.status(task_id)
                except ProviderError as exc:
                    return exc

        answers = await asyncio.gather(*(one(t) for t in task_ids))
        return dict(zip(task_ids, answers, strict=True))

    def too_fast(self, response: httpx.Response) -> float | None:
        return wire.too_fast(response)  # 1302 slows the run; quota and busy-slot 429s do not

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "base_url": self.base_url}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    def __repr__(self) -> str:
        return (f"<KlingProvider base_url={self.base_url!r} "
                f"max_parallel={self.limits.max_parallel}>")

    # -- wire ----------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            # A client is bound to the event loop it was made in; a new run may bring a new loop.
            # Paced: every request takes a token from the run's limiter (or this provider's own).
            self._client = self.http_client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._transport,
                headers={"User-Agent": "videobatch-kling", "Accept": "application/json"},
                limits=httpx.Limits(max_connections=max(10, 2 * self.limits.max_parallel)),
            )
            self._client_loop = loop
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        submitting: bool = False,
        model: str | None = None,
    ) -> Any:
        """One API request: the envelope's ``data`` on success, else the mapped ProviderError.

        The only retry here is a single token renewal after code 1004 (token expired).
        """
        renewed = False
        while True:
            headers = {"Authorization": f"Bearer {self._bearer(renew=renewed)}"}
            failure: ProviderError | None = None
            try:
                response = await self._http().request(method, path, json=body, params=params,
                                                      headers=headers)
            except httpx.TransportError as exc:
                failure = wire.transport_error(exc, method, path, submitting)
            if failure is not None:
                raise failure  # raised outside the except block: no chained request/headers
            envelope = wire.envelope_of(response)
            code = wire.code_of(envelope)
            log.debug("kling %s %s -> HTTP %s code %s", method, path, response.status_code, code)
            if response.is_success and envelope is not None and code == 0:
                return envelope.get("data")
            if code == 1004 and not renewed:
                renewed = True
                continue
            error = wire.map_error(response, envelope, code, submitting=submitting, model=model,
                                   now=_now())
            if isinstance(error, AuthError) and not path.startswith("/v1/") and self._keys.signs_tokens():
                # *Unsure* whether the newer design takes JWTs: every documented example uses a key.
                error = AuthError(
                    f"{error.message} Kling documents its newer API design ({path}) with a console "
                    f"API key only: set {wire.API_KEY_ENV} (or api_key=), or use a /v1 model.",
                    provider_code=error.provider_code, status_code=error.status_code,
                    request_id=error.request_id)
            raise error

    def _task(self, data: Any, kind: str, *, submitting: bool = False,
              key: str | None = None) -> TaskStatus:
        parse = newer.parse_task if kind == NEWER else wire.parse_task
        status = parse(data, submitting=submitting, key=key)
        self._kinds[status.task_id] = kind
        return status

