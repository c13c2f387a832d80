"""The Runway provider: puts a ``VideoRequest`` on Runway's developer API and reads the task back.

One job: videobatch's provider interface on top of Runway's wire contract
(docs/providers/runway.md; ``wire`` writes bodies and reads answers, ``shapes`` judges sizes,
prompts and images). Every request goes out through the paced client (``Provider.http_client``).

What Runway lacks decides the capabilities: no idempotency key, no client reference, no task
listing, no webhooks, no batch status. A create whose answer may have been lost (timeout after
sending, dropped connection, a 5xx other than 503, an unreadable 200) raises
``TransientError(maybe_accepted=True)``; with neither ``lookup`` nor ``listing`` the runner then
marks the row ``unknown`` and never sends it again on its own. This client never retries anything
itself (the official SDKs retry creates by default: up to three billed tasks for one call).

``cancel`` asks ``GET`` first and sends ``DELETE`` only for a task still PENDING or THROTTLED: a
DELETE on a running task stops it without a refund, and on a finished one deletes its output. The
task may start between the two (Runway then keeps the credits), so only a task read back afterwards
as CANCELLED at no cost counts as stopped unpaid; otherwise the row ends failed, "may have been
charged", and sending it again is left to the user (``retry``).

The key (``api_secret`` option, else ``RUNWAYML_API_SECRET``) is checked in ``check()`` and before
the first request, never at construction, and never shown: not in repr, logs, errors or describe().
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ...errors import ConfigError, NotFoundError, Problem, ProviderError
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, TaskState, TaskStatus
from ..setup import Secret, number
from . import wire
from .options import MODELS_FILE, RunwayOptions
from .wire import SECRET_ENV, VERSION

__all__ = ["DEFAULT_BASE_URL", "RunwayProvider"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.dev.runwayml.com"
BASE_URL_ENV = "RUNWAYML_BASE_URL"  # the official SDK's name for the same override
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")
_CANCELLABLE = ("PENDING", "THROTTLED")

_now = time.time  # the clock; tests replace it




class RunwayProvider(Provider):
    """Runway text-to-video and image-to-video (gen4.5, veo3.1, seedance2, ...).

    Options (strings are accepted, as from ``-P key=value``): ``api_secret`` (default: env
    RUNWAYML_API_SECRET), ``base_url`` (env RUNWAYML_BASE_URL, default the official API),
    ``max_parallel`` (tasks open at once: Runway's ``maxConcurrentGenerations`` for the model;
    more are accepted but wait THROTTLED, holding daily quota), ``max_rps``, ``http_timeout``
    (HTTP seconds; ``timeout`` when constructing directly), ``first_poll`` / ``poll_interval`` /
    ``max_poll_interval`` (seconds; Runway asks for 5 s or more between polls of a task), and
    ``transport`` (an ``httpx.AsyncBaseTransport``, for tests; it is wrapped in the paced one).
    """

    name: ClassVar[str] = "runway"
    # No idempotency key, lookup or listing: a create whose answer was lost cannot be found again,
    # so the runner never resends it (the row ends ``unknown``). DELETE cancels a queued task.
    capabilities: ClassVar[Capabilities] = Capabilities(cancel=True)
    option_schema = RunwayOptions
    models_file = MODELS_FILE

    def __init__(
        self,
        *,
        api_secret: str | None = None,
        base_url: str | None = None,
        max_parallel: int | str = 2,
        max_rps: float | str | None = 5.0,
        timeout: float | str = 60.0,
        http_timeout: float | str | None = None,
        first_poll: float | str = 15.0,
        poll_interval: float | str = 5.0,
        max_poll_interval: float | str = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        value = (api_secret if api_secret is not None else os.environ.get(SECRET_ENV, "")).strip()
        self._key = Secret(value, "Runway credentials") if value else None
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"runway base_url {url!r} is not an http(s) URL; set {BASE_URL_ENV} "
                              "or base_url=")
        self.base_url = url
        # A generous default: creates answer quickly, and an answer that never comes is a row
        # whose outcome is unknown.
        self.timeout = float(number("runway", "http_timeout", timeout if http_timeout is None else http_timeout,
                                     float, 0.001))
        rps = None if max_rps in (None, "", "none", "None") else number("runway", "max_rps", max_rps, float, 0.001)
        self.limits = Limits(int(number("runway", "max_parallel", max_parallel, int, 1)), rps)
        interval = float(number("runway", "poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(number("runway", "first_poll", first_poll, float, 0.0)),
            min_interval=interval,
            max_interval=max(interval, float(number("runway", "max_poll_interval", max_poll_interval,
                                                      float, 0.001))),
        )
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._durations: dict[str, float] = {}  # task id -> the seconds asked for (this process)

    # -- credentials -------------------------------------------------------------------------

    def _secret(self) -> str:
        """The key, or a ConfigError naming the variable to set (never showing a value)."""
        if self._key is None:
            raise ConfigError(f"Runway API key missing: set the environment variable {SECRET_ENV} "
                              "(or pass api_secret=...). Keys are in the Runway developer portal.")
        value = self._key.reveal()
        if not _KEY_CHARS.match(value) or value[0] in "\"'<" or value[-1] in "\"'>" or len(value) < 8:
            raise ConfigError(f"Runway API key malformed: {SECRET_ENV} (api_secret) has spaces, "
                              "quotes or is too short. Copy the key again from the developer portal.")
        return value

    # -- the provider interface --------------------------------------------------------------

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._secret()
        problems: list[Problem] = []
        for row, request in enumerate(requests, start=1):
            for column, message, allowed in wire.request_problems(request, self.resolve(request)):
                problems.append(Problem(row, column, message, allowed=allowed))
        return problems

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        """One create, sent once. ``idempotency_key`` cannot reach Runway (it keeps none)."""
        resolved = self.resolve(request)
        path, body = await wire.request_body(request, resolved)
        response = await self._send("POST", path, body=body, submitting=True, model=resolved.model)
        task_id = wire.parse_created(response)
        if body.get("duration") is not None:
            self._durations[task_id] = float(body["duration"])
        log.debug("runway: created task %s", task_id)
        # The create answer has no status: a new task is queued until a GET says otherwise.
        return TaskStatus(task_id=task_id, state=TaskState.QUEUED, created_at=_now())

    async def status(self, task_id: str) -> TaskStatus:
        response = await self._send("GET", f"/v1/tasks/{quote(task_id, safe='')}")
        return wire.parse_task(self._body(response), now=_now(),
                               duration=self._durations.get(task_id))

    async def cancel(self, task_id: str) -> bool | None:
        """True only when Runway shows the task stopped before it ran: it was PENDING or THROTTLED,
        took the DELETE, and reads back CANCELLED at no cost. A running or finished task is left
        alone (False): a DELETE would stop a running one without a refund, and delete a finished
        one's output.

        A queued task may start between the look and the DELETE, and Runway then keeps the
        credits (docs/providers/runway.md, 3.4). A task read back gone (404, what Runway answered
        in a live capture) or CANCELLED with a cost is stopped but perhaps charged (None): its row
        fails, and only the user's ``retry`` pays again. Read back still open, the DELETE did not
        take (False: left to end on its own).
        """
        path = f"/v1/tasks/{quote(task_id, safe='')}"
        data = self._body(await self._send("GET", path))
        if not isinstance(data, dict) or data.get("status") not in _CANCELLABLE:
            return False
        try:
            await self._send("DELETE", path)
        except NotFoundError:
            return False  # gone meanwhile: nothing of ours was stopped
        try:
            after = self._body(await self._send("GET", path))
        except NotFoundError:
            return None  # stopped and gone: whether it was charged, Runway does not say
        return wire.cancel_outcome(after)

    def too_fast(self, response: httpx.Response) -> float | None:
        return wire.too_fast(response)  # a create's 429 is the daily cap, not a rate

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "base_url": self.base_url, "api_version": VERSION}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<RunwayProvider base_url={self.base_url!r} max_parallel={self.limits.max_parallel}>"

    # -- wire ----------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            # A client is bound to the event loop it was made in; a new run may bring a new loop.
            self._client = self.http_client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._transport,
                headers={"User-Agent": "videobatch-runway", "Accept": "application/json",
                         "X-Runway-Version": VERSION},
                limits=httpx.Limits(max_connections=max(10, 2 * self.limits.max_parallel)),
            )
            self._client_loop = loop
        return self._client

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    async def _send(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    submitting: bool = False, model: str | None = None) -> httpx.Response:
        """One request, never repeated here: the answer on success, else the mapped error."""
        headers = {"Authorization": f"Bearer {self._secret()}"}
        failure: ProviderError | None = None
        try:
            response = await self._http().request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            failure = wire.transport_error(exc, method, path, submitting)
        if failure is not None:
            raise failure  # raised outside the except block: no chained request or headers
        log.debug("runway %s %s -> HTTP %s", method, path, response.status_code)
        if response.is_success:
            return response
        raise wire.map_error(response, submitting=submitting, model=model, now=_now())
