"""The fal provider: puts a ``VideoRequest`` on fal's queue API and reads the request back.

One job: videobatch's provider interface on top of fal's queue contract (``docs/providers/fal.md``).
Every request goes out through the paced client from the core (``Provider.http_client``). The
package's other modules: ``wire`` writes model input bodies, reads answers and maps errors;
``listing`` finds a request whose submit answer was lost in the Platform API's listing.

* **Submit** is one raw ``POST {queue}/{endpoint id}``, never retried here (fal's SDKs retry it and
  can pay twice). An answer that may have been lost is ``TransientError(maybe_accepted=True)``; the
  runner then scans the listing (there is no idempotency key and no lookup) and never resends it
  on its own.
* **Status** follows the URLs the submit answer gave (kept in the task id, see ``wire.TaskRef``),
  never URLs built from the model id; and only on this provider's queue host, so the key never goes
  elsewhere. Once ``COMPLETED`` the result is fetched at once (fal keeps it about an hour).
* **Cancel** is ``PUT cancel_url``; only ``OK`` (removed from the queue) counts as stopped.

The key (``FAL_KEY``, or ``FAL_KEY_ID`` + ``FAL_KEY_SECRET``, or the ``key`` option) is checked in
``check()`` and before the first request, never shown by repr, describe, logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

import httpx

from ...errors import AuthError, ConfigError, NotFoundError, Problem, ProviderError, TransientError
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, ScanResult, TaskState, TaskStatus
from ..setup import Secret, number
from . import listing, wire
from .options import MODELS_FILE, FalOptions
from .wire import KEY_ENV, TaskRef

__all__ = ["DEFAULT_API_URL", "DEFAULT_BASE_URL", "FalProvider"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://queue.fal.run"
DEFAULT_API_URL = "https://api.fal.ai/v1"
BASE_URL_ENV = "FAL_QUEUE_URL"
_now = time.time  # the clock; tests replace it




def _url(name: str, value: str) -> str:
    url = value.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"fal {name} {url!r} is not an http(s) URL")
    return url


class FalProvider(Provider):
    """fal.ai's hosted video models through its queue API.

    Options (strings accepted, as from ``-P key=value``): ``key`` (default env FAL_KEY, else
    FAL_KEY_ID + FAL_KEY_SECRET), ``base_url`` (the queue; env FAL_QUEUE_URL, default
    https://queue.fal.run), ``api_base_url`` (the Platform API for the listing; default
    https://api.fal.ai/v1 with the official queue, else ``base_url`` + ``/v1``), ``max_parallel``
    (requests in flight; fal queues the ones beyond the account's limit, so a little above it keeps
    fal's slots full), ``max_rps``, ``http_timeout``, ``first_poll`` / ``poll_interval`` /
    ``max_poll_interval`` (seconds), ``scan_pages`` (listing pages per scan), ``transport`` (tests).
    """

    name: ClassVar[str] = "fal"
    # No client key and no lookup (fal keeps nothing of ours); the request listing can find a lost
    # submit by its inputs; PUT cancel_url; ?fal_webhook= exists (not used); no multi-id status.
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotency_key=False, lookup=False, listing=True, cancel=True, webhooks=True,
        batch_status=False)
    option_schema = FalOptions
    models_file = MODELS_FILE

    def __init__(
        self,
        *,
        key: str | None = None,
        base_url: str | None = None,
        api_base_url: str | None = None,
        max_parallel: int | str = 4,
        max_rps: float | str | None = 10.0,
        timeout: float | str = 60.0,
        http_timeout: float | str | None = None,
        first_poll: float | str = 20.0,
        poll_interval: float | str = 5.0,
        max_poll_interval: float | str = 30.0,
        scan_pages: int | str = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if key is None:
            key = os.environ.get(KEY_ENV)
            pair = os.environ.get("FAL_KEY_ID"), os.environ.get("FAL_KEY_SECRET")
            if not (key or "").strip() and all(pair):
                key = f"{pair[0]}:{pair[1]}"
        self._key = Secret(key.strip(), "the fal key") if key and key.strip() else None
        self.base_url = _url("base_url", base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL)
        default_api = DEFAULT_API_URL if self.base_url == DEFAULT_BASE_URL else f"{self.base_url}/v1"
        self.api_base_url = _url("api_base_url", api_base_url or default_api)
        self.timeout = float(number("fal", "http_timeout", timeout if http_timeout is None
                                     else http_timeout, float, 0.001))
        rps = None if max_rps in (None, "", "none", "None") else number("fal", "max_rps", max_rps, float, 0.001)
        self.limits = Limits(int(number("fal", "max_parallel", max_parallel, int, 1)), rps)
        interval = float(number("fal", "poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(number("fal", "first_poll", first_poll, float, 0.0)), min_interval=interval,
            max_interval=max(interval, float(number("fal", "max_poll_interval", max_poll_interval, float, 0.001))))
        self._scan_pages = int(number("fal", "scan_pages", scan_pages, int, 1))
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- the provider interface --------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self._key is None:
            raise ConfigError(f"fal needs an API key: set {KEY_ENV} (or FAL_KEY_ID and "
                              "FAL_KEY_SECRET), or pass key=...")
        return {"Authorization": f"Key {self._key.reveal()}"}

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._auth()
        problems: list[Problem] = []
        for row, req in enumerate(requests, start=1):
            model = self.resolve(req).model
            shape = wire.shape_of(model)
            for column in ("image", "end_image"):
                value = getattr(req, column)
                if value and not value.strip().lower().startswith(("http://", "https://", "data:")):
                    problems.append(Problem(row, column, f"fal takes images by URL, not {value!r}",
                                            allowed="an http(s) URL (or a small data: URI)"))
            if req.aspect_ratio and not shape.aspect_ratio:
                problems.append(Problem(row, "aspect_ratio", f"fal endpoint {model} takes no "
                                        "aspect ratio (it follows the image)",
                                        allowed="leave it empty for this model"))
            if req.duration is not None and shape.duration is None:
                problems.append(Problem(row, "duration", f"fal endpoint {model} takes no duration",
                                        allowed="leave it empty for this model"))
        return problems

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        resolved = self.resolve(request)
        model = resolved.model
        if not model:
            raise ConfigError("fal needs a model (an endpoint id such as "
                              "fal-ai/kling-video/v2.5-turbo/pro/text-to-video)")
        body = wire.request_body(resolved)
        path = "/".join(p for p in str(model).split("/") if p)
        response = await self._send("POST", f"{self.base_url}/{path}", json=body, submitting=True,
                                    what=str(model))
        answer = _body(response)
        try:
            ref = self._own(TaskRef.from_answer(answer))
        except (ValueError, ProviderError):
            raise TransientError(f"fal accepted the submit to {model} but its answer has no usable "
                                 "request id / URLs", maybe_accepted=True,
                                 status_code=response.status_code,
                                 request_id=response.headers.get("x-fal-request-id")) from None
        log.debug("fal: %s accepted as %s", model, ref.request_id)
        running = isinstance(answer, dict) and answer.get("status") == "IN_PROGRESS"
        return TaskStatus(ref.encode(), TaskState.RUNNING if running else TaskState.QUEUED,
                          created_at=_now())

    async def status(self, task_id: str) -> TaskStatus:
        ref = self._own(TaskRef.decode(task_id))
        response = await self._send("GET", ref.status_url, what="status")
        data = _body(response)
        result: tuple[int, Any] | None = None
        if isinstance(data, dict) and data.get("status") == "COMPLETED":
            result = await self._result(ref, failed=bool(data.get("error") or data.get("error_type")))
        return wire.task_status(ref, data, result, _now())

    async def _result(self, ref: TaskRef, *, failed: bool) -> tuple[int, Any] | None:
        """The result's code and body, fetched as soon as the request completed. A failed
        request's result only adds detail: a failure to read it is not an error."""
        try:
            response = await self._send("GET", ref.response_url, what="result", raw=True)
        except AuthError:
            raise
        except ProviderError:
            if failed:
                return None
            raise
        if response.status_code >= 500 and not failed and "x-fal-request-id" not in response.headers:
            raise wire.map_error(response, submitting=False, what="result", now=_now())
        if response.status_code == 404 and not failed:
            raise NotFoundError("fal no longer has this request's result (it keeps it about an "
                                "hour after completion)", status_code=404)
        return response.status_code, _body(response)

    async def cancel(self, task_id: str) -> bool:
        """True only when fal says ``OK`` (removed from the queue: nothing charged)."""
        ref = self._own(TaskRef.decode(task_id))
        response = await self._send("PUT", ref.cancel_url, what="cancel", raw=True)
        said = _body(response)
        value = said.get("status") if isinstance(said, dict) else None
        if response.is_success:
            return value == "OK"
        if value in ("ALREADY_COMPLETED", "NOT_FOUND"):
            return False
        raise wire.map_error(response, submitting=False, what="cancel", now=_now())

    async def scan(self, keys: Collection[str], since: float) -> ScanResult:
        """Requests in fal's listing whose inputs match the rows' requests one-to-one. Never
        ``complete``: the listing may show finished requests only (see ``listing``)."""
        requests: Mapping[str, Any] = keys if isinstance(keys, Mapping) else {}
        wanted: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, request in requests.items():
            if isinstance(request, VideoRequest):
                resolved = self.resolve(request)
                if resolved.model:
                    wanted[key] = (str(resolved.model), wire.request_body(resolved))
        if not wanted:
            return ScanResult(found={}, complete=False)

        async def fetch(params: list[tuple[str, str]]) -> Any:
            url = f"{self.api_base_url}/models/requests/by-endpoint"
            return _body(await self._send("GET", url, params=params, what="request listing"))

        endpoints = sorted({endpoint for endpoint, _ in wanted.values()})
        items = await listing.list_requests(fetch, endpoints, since, max_pages=self._scan_pages)
        matched = listing.match(wanted, items, since)
        return ScanResult(found={k: listing.item_status(i, self.base_url) for k, i in matched.items()},
                          complete=False)

    def too_fast(self, response: httpx.Response) -> float | None:
        return wire.too_fast(response)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "base_url": self.base_url}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<FalProvider base_url={self.base_url!r} max_parallel={self.limits.max_parallel}>"

    # -- wire ----------------------------------------------------------------------------------

    def _own(self, ref: TaskRef) -> TaskRef:
        """The key goes only to this provider's queue host."""
        for url in (ref.status_url, ref.response_url, ref.cancel_url):
            if not url.startswith(f"{self.base_url}/"):
                raise NotFoundError(f"fal request {ref.request_id} lives at {url}, not on "
                                    f"{self.base_url}; the key is not sent there")
        return ref

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            self._client = self.http_client(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._transport,
                headers={"User-Agent": "videobatch-fal", "Accept": "application/json"},
                limits=httpx.Limits(max_connections=max(10, 2 * self.limits.max_parallel)))
            self._client_loop = loop
        return self._client

    async def _send(self, method: str, url: str, *, what: str, json: Any = None,
                    params: Any = None, submitting: bool = False,
                    raw: bool = False) -> httpx.Response:
        """One request, never retried. ``raw``: hand back any answer (the caller reads it)."""
        headers = self._auth()
        failure: ProviderError | None = None
        try:
            response = await self._http().request(method, url, json=json, params=params,
                                                  headers=headers)
        except httpx.TransportError as exc:
            failure = wire.transport_error(exc, method, what, submitting)
        if failure is not None:
            raise failure  # outside the except block: no chained request (and its headers)
        log.debug("fal %s %s -> HTTP %s", method, what, response.status_code)
        if response.status_code in (401, 403) or (not raw and not response.is_success):
            raise wire.map_error(response, submitting=submitting, what=what, now=_now())
        if not raw and _body(response) is None:
            raise TransientError(f"fal answered {what} with a body that is not JSON",
                                 maybe_accepted=submitting, status_code=response.status_code)
        return response


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
