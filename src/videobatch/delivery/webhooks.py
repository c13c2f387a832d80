"""Tell other systems when a row ends: a signed JSON POST per completed or failed row, retried.

``WebhookNotifier`` is a run observer. When a row reaches ``completed`` or ``failed`` it POSTs to
the row's own ``webhook_url`` cell (a column carried through from the input) or else the run-wide
URL. Deliveries run as background tasks (bounded concurrency, the skeleton shared with downloads in
``videobatch.delivery._observer``), retried under the one retry policy (``videobatch._retry``) on
network errors, 408/425/429 and 5xx (honouring ``Retry-After``); other 4xx answers are final. The
batch never waits for a receiver, except for a bounded ``drain_timeout`` at the end of the run.

The body (identical on every attempt)::

    {"event": "video.completed", "request_id": "<row key>", "status": "completed",
     "video_url": "...", "error": null, "error_kind": null, "task_id": "...",
     "prompt": "...", "metadata": {<the row's other input columns>},
     "submitted_at": "2025-01-01T12:00:00Z", "completed_at": "...", "expires_at": "...",
     "run_id": "...", "delivery_id": "whd-..."}

Headers: ``X-Videobatch-Event``, ``X-Videobatch-Delivery`` (same on every attempt: receivers
de-duplicate on it), ``X-Videobatch-Attempt``, ``X-Videobatch-Timestamp`` (Unix seconds of this
attempt) and, when a secret is configured, ``X-Videobatch-Signature: sha256=<hex>`` where hex is
HMAC-SHA256(secret, ``"<timestamp>." + raw body``). A receiver recomputes it over the raw bytes it
received, compares in constant time and rejects timestamps older than a few minutes (replays):
``verify_signature`` does exactly that.

Outcomes join the results: ``webhook_status`` (delivered / failed / abandoned),
``webhook_attempts``, ``webhook_error`` and ``webhook_event`` (the row status last delivered).

``url_check``: an address policy for the URLs (service mode passes one: clients name them). A URL
it refuses is not called at all: the delivery fails at once, without retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

import httpx
import pandas as pd

from .._jobs import RowSnapshot, State
from .._retry import RetryPolicy, parse_retry_after
from ..errors import ConfigError, Problem
from ._observer import BackgroundObserver, retry_policy

__all__ = ["WebhookNotifier", "build_payload", "check_urls", "sign", "verify_signature"]

log = logging.getLogger("videobatch")

SIGNATURE_HEADER = "X-Videobatch-Signature"
TIMESTAMP_HEADER = "X-Videobatch-Timestamp"
_RETRY_STATUS = frozenset({408, 425, 429})


class _Context(Protocol):
    @property
    def run_id(self) -> str: ...

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot: ...


class _Undelivered(Exception):
    """One attempt that did not deliver: why, whether another may, and the receiver's Retry-After."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


def _worth_retrying(exc: Exception) -> bool:
    return isinstance(exc, _Undelivered) and exc.retryable


# ---------------------------------------------------------------------- signing
def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Videobatch-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, body: bytes, timestamp: str | int | None, signature: str | None,
                     *, tolerance: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: True only for a valid signature on a fresh timestamp."""
    if timestamp is None or signature is None:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, ts), signature)


# ---------------------------------------------------------------------- payload
def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _plain(value: Any) -> Any:
    """A JSON-safe version of a DataFrame cell."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    with contextlib.suppress(TypeError, ValueError):
        if pd.isna(value):
            return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return _plain(item())
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def build_payload(job: RowSnapshot, row: Mapping[str, Any], *, run_id: str,
                  column: str = "webhook_url") -> dict[str, Any]:
    """The JSON body for ``job``'s current state; ``row`` is its input columns."""
    metadata = {str(k): _plain(v) for k, v in row.items() if k not in ("prompt", column)}
    delivery = hashlib.sha256(f"{run_id}\x1f{job.key}\x1f{job.generation}\x1f{job.state.value}"
                              .encode()).hexdigest()[:24]
    return {
        "event": f"video.{job.state.value}",
        "request_id": job.key,
        "status": job.state.value,
        "video_url": job.video_url,
        "error": job.error,
        "error_kind": job.error_kind,
        "task_id": job.task_id,
        "prompt": job.request.prompt or _plain(row.get("prompt")),
        "metadata": metadata,
        "submitted_at": _iso(job.submitted_at),
        "completed_at": _iso(job.completed_at),
        "expires_at": _iso(job.expires_at),
        "run_id": run_id,
        "delivery_id": "whd-" + delivery,
    }


def _bad_url(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[not-an-address]/"
        return "a webhook URL must start with http:// or https:// and name a host"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "a webhook URL must start with http:// or https:// and name a host"
    return None


def check_urls(frame: pd.DataFrame, column: str = "webhook_url") -> list[Problem]:
    """Every malformed cell of the per-row webhook column (empty cells are fine)."""
    if column not in frame.columns:
        return []
    problems = []
    for n, value in enumerate(frame[column].tolist(), start=1):
        if _plain(value) in (None, ""):
            continue
        reason = _bad_url(str(value))
        if reason:
            problems.append(Problem(n, column, f"{str(value)[:80]!r}: {reason}"))
    return problems


# ---------------------------------------------------------------------- the observer
class WebhookNotifier(BackgroundObserver[_Context]):
    """An observer that POSTs each row's completion or failure to its webhook URL.

    ``url``: run-wide receiver, used for rows whose ``column`` cell is empty (or when the input
    has no such column). ``secret``: HMAC key (kept in memory only, never shown). ``frame``: the
    input table (``Batch.prompts.frame``) for per-row URLs and metadata. ``client``: an
    ``httpx.AsyncClient`` to use instead of a private one. ``retry``: the retry policy of one
    delivery (default: ``max_attempts`` tries, waits from ``backoff_base`` doubling to ``backoff_cap``).
    ``url_check``: why a URL may not be called (None: it may), awaited before delivering to it.
    """

    states: ClassVar[frozenset[State]] = frozenset({State.COMPLETED, State.FAILED})
    noun: ClassVar[str] = "webhook"

    def __init__(
        self,
        url: str | None = None,
        *,
        secret: str | None = None,
        frame: pd.DataFrame | None = None,
        client: httpx.AsyncClient | None = None,
        column: str = "webhook_url",
        max_attempts: int = 5,
        concurrency: int = 8,
        timeout: float = 10.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        drain_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        url_check: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        if url is not None and _bad_url(url):
            raise ConfigError(f"webhook URL {url!r}: {_bad_url(url)}")
        super().__init__(concurrency=concurrency, client=client, drain_timeout=drain_timeout, retry=retry_policy(
            retry, attempts=max_attempts, base=backoff_base, cap=backoff_cap, what="webhook"))
        self.url = url
        self.__secret = secret or None
        self.frame = frame
        self.column = column
        self.timeout = timeout
        self.url_check = url_check

    def __repr__(self) -> str:
        signed = "signed" if self.__secret else "unsigned"
        return f"<WebhookNotifier url={self.url!r} {signed}>"

    @property
    def signed(self) -> bool:
        return self.__secret is not None

    # ------------------------------------------------------------------ the observer's parts
    def owed(self, job: RowSnapshot) -> bool:
        return job.extras.get("webhook_event") != job.state.value  # ended before a crash, untold

    def work(self, job: RowSnapshot) -> Coroutine[Any, Any, None] | None:
        url = self.target(job)
        if url is None or self._context is None:
            return None
        return self.delivery(job, url, self.row(job))

    def delivery(self, job: RowSnapshot, url: str, row: Mapping[str, Any]) -> Coroutine[Any, Any, None]:
        """The delivery of ``job``'s notification, with ``row`` (its input columns), to ``url``."""
        assert self._context is not None, "bind() first"
        payload = build_payload(job, row, run_id=self._context.run_id, column=self.column)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        return self._deliver(job, url, body, payload["event"], payload["delivery_id"])

    def new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                 limits=httpx.Limits(max_connections=self.concurrency))

    # ------------------------------------------------------------------ delivering
    def target(self, job: RowSnapshot) -> str | None:
        """The URL ``job`` is reported to: its own cell, else the run-wide one, else None."""
        if self.frame is not None and self.column in self.frame.columns and job.index < len(self.frame):
            cell = _plain(self.frame[self.column].iloc[job.index])
            if cell not in (None, ""):
                return str(cell).strip()
        return self.url

    def row(self, job: RowSnapshot) -> Mapping[str, Any]:
        """``job``'s input columns (its prompt, metadata and webhook_url cell)."""
        if self.frame is not None and job.index < len(self.frame):
            return {str(k): v for k, v in self.frame.iloc[job.index].items()}
        return {}

    async def _deliver(self, job: RowSnapshot, url: str, body: bytes, event: str, delivery: str) -> None:
        attempts = 0
        status = job.state.value

        async def post() -> None:
            nonlocal attempts
            attempts += 1
            await self._post(url, body, event, delivery, attempts)

        try:
            if _bad_url(url):
                raise _Undelivered(f"{url[:80]!r}: {_bad_url(url)}")
            refused = await self.url_check(url) if self.url_check is not None else None
            if refused:
                raise _Undelivered(f"{_host(url)} refused: {refused}")
            await self.attempt(post, retry_on=_worth_retrying)
        except asyncio.CancelledError:
            self.record(job, webhook_status="abandoned", webhook_attempts=attempts,
                        webhook_error="the run ended before the receiver answered")
            raise
        except _Undelivered as exc:
            log.warning("row %s: webhook to %s failed: %s", job.key, _host(url), exc)
            self.record(job, webhook_status="failed", webhook_attempts=attempts,
                        webhook_error=str(exc), webhook_event=status)
            return
        self.record(job, webhook_status="delivered", webhook_attempts=attempts,
                    webhook_error=None, webhook_event=status)

    async def _post(self, url: str, body: bytes, event: str, delivery: str, attempt: int) -> None:
        """One attempt; raises ``_Undelivered`` unless the receiver answered 2xx."""
        now = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": "videobatch-webhooks",
                   "X-Videobatch-Event": event, "X-Videobatch-Delivery": delivery,
                   "X-Videobatch-Attempt": str(attempt), TIMESTAMP_HEADER: str(now)}
        if self.__secret:
            headers[SIGNATURE_HEADER] = sign(self.__secret, body, now)
        try:
            response = await self.http().post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _Undelivered(f"{type(exc).__name__}: {exc or 'no answer'}", retryable=True) from None
        code = response.status_code
        if not 200 <= code < 300:
            raise _Undelivered(f"HTTP {code} {response.reason_phrase} from {_host(url)}",
                               retryable=code >= 500 or code in _RETRY_STATUS,
                               retry_after=parse_retry_after(response.headers.get("retry-after")))


def _host(url: str) -> str:
    """Scheme and host only: webhook URLs often carry tokens in their path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
