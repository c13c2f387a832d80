"""The Replicate provider: puts a ``VideoRequest`` on Replicate's HTTP API and reads the prediction back.

One job: videobatch's provider interface on top of Replicate's contract
(``docs/providers/replicate.md``). Retries, slots and reconciliation belong to the runner; every
request goes out through the paced client from the core (``Provider.http_client``). ``wire`` writes
bodies, reads predictions and maps errors; ``listing`` finds our predictions in the account's list.

What Replicate lacks, and what this provider does about it:

* **No idempotency key, no lookup** (the create body is closed; nothing of ours is kept). A create
  whose answer may have been lost raises ``TransientError(maybe_accepted=True)`` and is never sent
  again here; the runner then asks ``scan``, which matches listed predictions on model + input
  (one-to-one only) within the hour Replicate keeps inputs; after that a row in doubt stays
  ``unknown``.
* **Cancel**: ``POST /v1/predictions/{id}/cancel``; True only when the answer shows it never started
  (no ``started_at``): a started prediction is billed for the time it ran.
* **Webhooks** exist (signed); videobatch does not register one yet.
* ``aborted`` (its ``Cancel-After`` deadline passed before it started) is terminal, unlike in the
  official SDKs' wait loops. ``cancel_after`` sends that header with every create.

The token is read in ``check()`` (and before the first request), never at import or construction,
so ``describe()`` and cost estimates work without it; nothing shows it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ...errors import ConfigError, Problem, ProviderError
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, ScanResult, TaskStatus
from ..setup import Secret, number
from . import listing, wire
from .options import MODELS_FILE, ReplicateOptions
from .wire import TOKEN_ENV

__all__ = ["BASE_URL_ENV", "DEFAULT_BASE_URL", "ReplicateProvider"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.replicate.com/v1"
BASE_URL_ENV = "REPLICATE_BASE_URL"

_now = time.time  # the clock; tests replace it




class ReplicateProvider(Provider):
    """Replicate's text-to-video and image-to-video models (``owner/name`` or ``owner/name:version``).

    Options (strings are accepted, as from ``-P key=value``): ``api_token`` (default: env
    REPLICATE_API_TOKEN), ``base_url`` (env REPLICATE_BASE_URL, default the official API),
    ``max_parallel`` (predictions in flight; Replicate documents no cap and queues the rest),
    ``max_rps`` (default 10: creates are limited to 600 a minute), ``http_timeout`` (HTTP seconds;
    ``timeout`` when constructing directly), ``first_poll`` / ``poll_interval`` /
    ``max_poll_interval`` (seconds), ``scan_pages`` (list pages a scan may read), ``cancel_after``
    (a ``Cancel-After`` deadline such as ``30m``: a prediction not started by then is aborted,
    unpaid), and ``transport`` (an ``httpx.AsyncBaseTransport``, for tests).
    """

    name: ClassVar[str] = "replicate"
    # No key of ours is kept and nothing looks one up; the list shows inputs for an hour; cancel
    # and signed webhooks exist; there is no batch get.
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotency_key=False, lookup=False, listing=True, cancel=True, webhooks=True, batch_status=False)
    option_schema = ReplicateOptions
    models_file = MODELS_FILE

    def __init__(
        self,
        *,
        api_token: str | None = None,
        base_url: str | None = None,
        max_parallel: int | str = 10,
        max_rps: float | str | None = 10.0,
        timeout: float | str = 30.0,
        http_timeout: float | str | None = None,
        first_poll: float | str = 30.0,
        poll_interval: float | str = 5.0,
        max_poll_interval: float | str = 30.0,
        scan_pages: int | str = 20,
        cancel_after: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        given = api_token if api_token is not None else os.environ.get(TOKEN_ENV)
        self._token = Secret(given.strip(), "the Replicate API token") if given and given.strip() else None
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"replicate base_url {url!r} is not an http(s) URL; set {BASE_URL_ENV} or base_url=")
        self.base_url = url
        self.timeout = float(number("replicate", "http_timeout", timeout if http_timeout is None else http_timeout,
                                     float, 0.001))
        rps = None if max_rps in (None, "", "none", "None") else number("replicate", "max_rps", max_rps, float, 0.001)
        self.limits = Limits(int(number("replicate", "max_parallel", max_parallel, int, 1)), rps)
        interval = float(number("replicate", "poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(number("replicate", "first_poll", first_poll, float, 0.0)), min_interval=interval,
            max_interval=max(interval, float(number("replicate", "max_poll_interval", max_poll_interval,
                                                    float, 0.001))))
        self._scan_pages = int(number("replicate", "scan_pages", scan_pages, int, 1))
        self.cancel_after = (str(cancel_after).strip() or None) if cancel_after is not None else None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _bearer(self) -> str:
        if self._token is None:
            raise ConfigError(f"no Replicate API token: set the environment variable {TOKEN_ENV} "
                              "(or pass api_token=); tokens are at replicate.com/account/api-tokens")
        value = self._token.reveal()
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ConfigError(f"the Replicate API token in {TOKEN_ENV} (or api_token=) contains spaces "
                              "or characters a token never has")
        return value

    # -- the provider interface --------------------------------------------------------------

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._bearer()
        return wire.body_problems(requests, [self.resolve(r) for r in requests])

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        """Create one prediction. Replicate keeps no key of ours: ``idempotency_key`` goes nowhere."""
        resolved = self.resolve(request)
        model = str(resolved.model or "")
        if not model:
            raise ConfigError("replicate needs a model (owner/name); the catalogue names none")
        path, body = wire.create_call(model)
        body["input"] = wire.prediction_input(request, resolved)
        headers = {"Cancel-After": self.cancel_after} if self.cancel_after else None
        data = await self._call("POST", path, body=body, submitting=True, model=model, headers=headers)
        return wire.parse_prediction(data, submitting=True)

    async def status(self, task_id: str) -> TaskStatus:
        return wire.parse_prediction(await self._call("GET", f"/predictions/{quote(task_id, safe='')}"))

    async def cancel(self, task_id: str) -> bool | None:
        """True only when Replicate's answer shows the prediction never started (nothing charged).

        A prediction that has started is left alone (False): Replicate would stop it, charge the
        time it ran and lose its clip; it finishes and the next run collects it. (It may start
        between the look and the cancel: then it is stopped and charged for the time it ran, None,
        and its row ends failed, retryable.)
        """
        path = f"/predictions/{quote(task_id, safe='')}"
        now = await self._call("GET", path)
        if not isinstance(now, dict) or now.get("status") != "starting" or now.get("started_at"):
            return False
        data = await self._call("POST", f"{path}/cancel")
        if not isinstance(data, dict) or data.get("status") not in ("canceled", "aborted"):
            return False
        return None if data.get("started_at") else True

    async def scan(self, keys: Collection[str], since: float) -> ScanResult:
        """Predictions made since ``since`` matched to ``keys``' requests on model + input; see
        ``listing``. ``keys`` maps each key to the request sent under it."""
        requests: Mapping[str, VideoRequest | None] = keys if isinstance(keys, Mapping) else dict.fromkeys(keys)
        wanted: dict[str, listing.Wanted] = {}
        for key, request in requests.items():
            try:
                resolved = self.resolve(request) if request is not None else None
            except ValueError:  # no longer fits the catalogue or the options: cannot be matched
                resolved = None
            wanted[key] = listing.Wanted(
                str(resolved.model or "") if resolved else "",
                wire.wanted_input(request, resolved) if request is not None and resolved else None)
        after = datetime.fromtimestamp(max(0.0, since), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        async def page(url: str | None) -> Any:
            if url is None:
                return await self._call("GET", "/predictions", params={"created_after": after})
            return await self._call("GET", url)

        listed = await listing.read_pages(page, since, max_pages=self._scan_pages,
                                          follows=lambda u: u.startswith(self.base_url + "/"))
        found, sure = listing.match(listed.items, wanted)
        return ScanResult(found={k: wire.parse_prediction(v) for k, v in found.items()},
                          complete=listed.complete and sure)

    def too_fast(self, response: httpx.Response) -> float | None:
        return wire.too_fast(response)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "base_url": self.base_url}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<ReplicateProvider base_url={self.base_url!r} max_parallel={self.limits.max_parallel}>"

    # -- wire ----------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            # A client is bound to the event loop it was made in; a new run may bring a new loop.
            self._client = self.http_client(
                base_url=self.base_url + "/",
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._transport,
                headers={"User-Agent": "videobatch-replicate", "Accept": "application/json"},
                limits=httpx.Limits(max_connections=max(10, 2 * self.limits.max_parallel)),
            )
            self._client_loop = loop
        return self._client

    async def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None, submitting: bool = False,
                    model: str | None = None, headers: dict[str, str] | None = None) -> Any:
        """One API request: the JSON body on success, else the mapped ProviderError. No retries."""
        sent = {"Authorization": f"Bearer {self._bearer()}", **(headers or {})}
        url = path if path.startswith(("http://", "https://")) else path.lstrip("/")
        failure: ProviderError | None = None
        try:
            response = await self._http().request(method, url, json=body, params=params, headers=sent)
        except httpx.TransportError as exc:
            failure = wire.transport_error(exc, method, path.split("?")[0], submitting)
        if failure is not None:
            raise failure  # raised outside the except block: no chained request/headers
        log.debug("replicate %s %s -> HTTP %s", method, path.split("?")[0], response.status_code)
        if not response.is_success:
            raise wire.map_error(response, submitting=submitting, model=model, now=_now())
        try:
            return response.json()
        except ValueError:
            raise wire.map_error(response, submitting=submitting, model=model, now=_now()) from None
