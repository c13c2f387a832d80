"""The Kling AI provider: puts a ``VideoRequest`` on Kling's HTTP API and reads the task back.

One job: videobatch's provider interface on top of Kling's wire contract (``shared/kling-api.md``).
Retries, slots and reconciliation belong to the runner; every request goes out through the paced
client from the core (``Provider.http_client``: one rate token per request, and a 1302 answer slows
the shared limiter). The package's other modules: ``wire`` writes create bodies, reads answers and
maps errors; ``newer`` does the same for Kling's newer API design; ``lookups`` reads tasks back
(status, lookup by external id, scans) on both; ``listing`` reads lookup answers and list pages
(with what public sources say about both); ``credentials`` holds the keys and signs JWTs;
``images`` judges and encodes images.

**Two API designs.** Each model's catalogue card says which one it is sent to (its ``api`` option:
``legacy``, ``/v1/videos/{kind}`` with ``model_name``; or ``newer``, ``/text-to-video/{model}``
with a ``settings``/``options`` body, looked up by ``GET /tasks?external_task_ids=``). The
provider option ``api`` (``auto``, the default: the card decides; ``legacy``; ``newer``) can insist
on one: a row whose model is on the other design is then an input problem, found before paying.
Task ids are remembered with their design; a task id or key this process has not seen is tried on
every design the run may use (``lookups.TaskReader.kinds_to_try``), because a
"none" from one design proves nothing about the other.

Decisions where the contract is *unsure* (the client is lenient in what it reads):

* **Lookups, scans and polling** (both designs) are ``lookups.TaskReader``'s: only a task carrying
  exactly the row's external id is adopted; a refused or ignored lookup "cannot answer", never
  "none", and ``scan`` lists the account's tasks instead.
* **Duplicate external_task_id**: Kling documents only that the id is unique per account. A
  1200/1201 refusal of a create naming ``external_task_id`` means "already used": ``find`` adopts
  the task; if it misses it or fails, ``KeyAlreadyUsed`` (a paid task may exist: never "failed").
  (The project's test server answers 400 / 1201 "Invalid parameters: external_task_id '…' already
  exists".)

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

import httpx

from ...errors import (
    AuthError,
    ConfigError,
    KeyAlreadyUsed,
    Problem,
    ProviderError,
    RejectedError,
)
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, ScanResult, TaskStatus
from ..setup import number
from . import newer, wire
from .credentials import Credentials
from .lookups import NEWER, TaskReader
from .options import MODELS_FILE, KlingOptions

__all__ = ["DEFAULT_BASE_URL", "KlingProvider"]

log = logging.getLogger(__name__)

# Keys are bound to a region: a global (international console) key on the Beijing host gets 1002.
HOSTS = {"global": "https://api-singapore.klingai.com", "cn": "https://api-beijing.klingai.com"}
DEFAULT_BASE_URL = HOSTS["global"]
BASE_URL_ENV = "KLING_BASE_URL"
PROBE_UP_TO = 40  # parallel tasks per model the run may look for when no limit is given

_now = time.time  # the clock; tests replace it
APIS = ("auto", "legacy", "newer")



class KlingProvider(Provider):
    """Kling AI text-to-video and image-to-video.

    Options (strings are accepted, as from ``-P key=value``): ``api_key`` (a console API key;
    default env KLING_API_KEY) or ``access_key`` + ``secret_key`` (default: env KLING_ACCESS_KEY /
    KLING_SECRET_KEY), ``region`` (``global``: api-singapore.klingai.com, ``cn``:
    api-beijing.klingai.com), ``base_url`` (env KLING_BASE_URL; wins over the region),
    ``max_parallel`` (the account's parallel-task limit, per model; when not given the run starts at
    5 and looks for more, up to ``PROBE_UP_TO``), ``max_rps`` (default 10: Kling's concurrency
    page says it imposes no QPS limit, and a 1302 answer slows the run anyway),
    ``http_timeout`` (HTTP seconds; ``timeout`` when constructing directly), ``callback_url``,
    ``api`` (``auto``: each model's catalogue card picks the API design; ``legacy`` or ``newer``:
    only that design, rows of models on the other are input problems),
    ``first_poll`` / ``poll_interval`` / ``max_poll_interval`` (seconds; the defaults, 2 / 1 / 60,
    only shape the first wave: one list request answers for every task, and once tasks finish
    the run polls when a task end is expected, see ``videobatch._polling``), ``polls_per_end``
    (default 1, about one status request per task; 2 sees ends sooner and keeps slots fuller for
    about two per task), ``list_threshold``
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
        max_parallel: int | str | None = None,
        max_rps: float | str | None = 10.0,
        timeout: float | str = 30.0,
        http_timeout: float | str | None = None,
        callback_url: str | None = None,
        first_poll: float | str = 2.0,
        poll_interval: float | str = 1.0,
        max_poll_interval: float | str = 60.0,
        polls_per_end: float | str = 1.0,
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
        # Kling counts parallel tasks per account and model version: one pool per model. Its
        # limit is the account's resource pack: when nobody states it, the run looks for it.
        stated = max_parallel not in (None, "")
        self.limits = Limits(int(number("kling", "max_parallel", max_parallel if stated else 5, int, 1)),
                             rps, per_model=True, probe_up_to=None if stated else PROBE_UP_TO)
        interval = float(number("kling", "poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(number("kling", "first_poll", first_poll, float, 0.0)),
            min_interval=interval,
            max_interval=max(interval, float(number("kling", "max_poll_interval", max_poll_interval,
                                                      float, 0.001))),
            growth=1.25,
            polls_per_end=float(number("kling", "polls_per_end", polls_per_end, float, 0.1)),
        )
        self.callback_url = callback_url or None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._reader = TaskReader(
            self._call, api=api, resolve=self.resolve, now=lambda: _now(),
            list_threshold=int(number("kling", "list_threshold", list_threshold, int, 1)),
            page_size=min(500, int(number("kling", "page_size", page_size, int, 1))),
            scan_pages=int(number("kling", "scan_pages", scan_pages, int, 1)),
            signs_tokens=self._keys.signs_tokens, to_usd=self._units_to_usd)

    def _units_to_usd(self, units: float | None) -> float | None:
        """Kling units (what a task says it was charged) in USD, at the catalogue's unit price."""
        catalog = self.catalog()
        return None if catalog is None or units is None else catalog.to_usd(units)

    # -- credentials -------------------------------------------------------------------------

    def _bearer(self, *, renew: bool = False) -> str:
        return self._keys.bearer(_now(), renew=renew)

    # -- the provider interface --------------------------------------------------------------

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._keys.check()
        if not requests:  # asked about tasks of rows it will not see (status, repair, a worker)
            self._reader.rows_unseen = True
        return self.check_rows(requests)

    def check_rows(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        problems = wire.body_problems(requests)
        for row, request in enumerate(requests, start=1):
            resolved = self.resolve(request)
            design = NEWER if newer.is_newer(resolved.values) else "legacy"
            self._reader.newer_rows = self._reader.newer_rows or design == NEWER
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

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        resolved = self.resolve(request)
        if newer.is_newer(resolved.values):
            kind, (path, body) = NEWER, await newer.request_body(
                request, resolved, idempotency_key, self.callback_url)
            self._reader.newer_rows = True
        else:
            kind, body = await wire.request_body(request, resolved, idempotency_key,
                                                 self.callback_url)
            path = f"/v1/videos/{kind}"
        self._reader.key_kinds[idempotency_key] = kind
        try:
            data = await self._call("POST", path, body=body, submitting=True, model=resolved.model)
        except RejectedError as exc:
            if not wire.is_duplicate(exc):
                raise
            refusal = exc
        else:
            return self._reader.task(data, kind, submitting=True, key=idempotency_key)
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
        return await self._reader.status(task_id)

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        return await self._reader.find(idempotency_key)

    async def scan(self, keys: Collection[str], since: float) -> ScanResult:
        """List each kind's tasks (newest first, ``page_size`` a page, at most ``scan_pages``
        pages; the newer design's cursor listing over the same window) back past ``since`` for
        tasks carrying one of ``keys``; see ``lookups``."""
        return await self._reader.scan(keys, since)

    async def status_many(
        self, task_ids: Sequence[str], riders: Sequence[str] = ()
    ) -> Mapping[str, TaskStatus | ProviderError]:
        """Status of many tasks: list pages or batched ``/tasks`` queries first (cheaper), single
        GETs for the rest; ``riders`` are reported only when they come free."""
        return await self._reader.status_many(task_ids, riders)

    @property
    def _kinds(self) -> dict[str, str]:
        """Task id -> the endpoint kind or design it was found on (tests read it)."""
        return self._reader.kinds

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
