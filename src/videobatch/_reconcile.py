"""Reconciliation: does a paid task exist for this idempotency key? Found, free, or unknown.

Asked whenever a submit may have reached the provider without its answer reaching us (a lost
answer, a crash between the intent record and the answer, a "key already used" refusal) and for rows
whose outcome was unknown in an earlier run. Only two answers make a key *free* (the row may be
submitted under it): the provider's lookup said it has no task with that key, or a complete listing
of the account's tasks back past the row's submit time did not show it. Anything else — a refused or
failing lookup, no listing, an incomplete listing, a provider that says the key is taken but shows
no task — is *unknown*: a paid request may exist, so the row is never sent again on its own.

Lookups retry transient errors under the run's retry policy (bounded in attempts and time). Listings
are shared: rows that need one while a listing is under way join the next, so a resume with many
rows in doubt reads the account's pages a few times, not once per row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from ._gate import OPEN, Gate
from ._retry import RetryPolicy, call
from .errors import AuthError, NotFoundError, ProviderError, TransientError
from .providers.base import Provider, ScanResult, TaskStatus
from .request import VideoRequest

__all__ = ["Found", "Free", "Reconciler", "Unknown", "Verdict"]

# Listings reach back this much before a row's submit time: clocks differ between us and them.
CLOCK_MARGIN = 600.0


@dataclass(frozen=True)
class Found:
    """The provider has the task created with this key (adopt it)."""

    status: TaskStatus


@dataclass(frozen=True)
class Free:
    """The provider says no task carries this key: submitting under it cannot pay twice."""

    how: str  # "lookup" or "listing"


@dataclass(frozen=True)
class Unknown:
    """Nobody could say whether a task exists for this key: a paid request may exist."""

    reason: str
    request_id: str | None = None


Verdict = Found | Free | Unknown
OnRetry = Callable[[int, Exception, float], None]


class Reconciler:
    """Answers "is there a task for this key?" for one run, with its retry policy and stop event."""

    def __init__(self, provider: Provider, policy: RetryPolicy, *, stop: asyncio.Event,
                 gate: Gate = OPEN) -> None:
        self.provider = provider
        self.policy = policy
        self.stop = stop
        self.gate = gate  # whether a request's images may be read to match a listed task
        self.lookups = 0  # provider calls spent (lookups and listings), for the run's figures
        self._waiting: dict[str, tuple[float, VideoRequest | None,
                                       asyncio.Future[ScanResult | ProviderError | None]]] = {}
        self._scanner: asyncio.Task[None] | None = None

    async def check(self, key: str, since: float | None, *, key_used: bool = False,
                    on_retry: OnRetry | None = None, request: VideoRequest | None = None) -> Verdict:
        """What the provider knows of ``key``, sent no earlier than ``since`` (epoch seconds).
        ``request``: what was sent under it (a listing without our keys matches on it).

        ``key_used``: the provider refused a create because the key already has a task, so "no
        such task" from a lookup is not believed. Raises AuthError (the run stops); never any other
        provider error.
        """
        refused: ProviderError | None = None
        status: TaskStatus | None = None
        can_look_up = self.provider.capabilities.lookup
        if can_look_up:
            try:
                status = await self._lookup(key, on_retry)
            except AuthError:
                raise
            except NotFoundError:
                pass
            except ProviderError as exc:  # refused, or transient past the policy: cannot answer
                refused = exc
        if status is not None:
            return Found(status)
        if can_look_up and refused is None and not key_used:
            return Free("lookup")
        listing = await self._scan(key, since, request)
        if isinstance(listing, AuthError):
            raise listing
        if isinstance(listing, ScanResult):
            found = listing.found.get(key)
            if found is not None:
                return Found(found)
            if listing.complete and not key_used:
                return Free("listing")
        return Unknown(self._reason(refused, listing, key_used, can_look_up),
                       request_id=_request_id(refused, listing))

    async def _lookup(self, key: str, on_retry: OnRetry | None) -> TaskStatus | None:
        async def once() -> TaskStatus | None:
            self.lookups += 1
            return await self.provider.find(key)

        return await call(self.policy, once, retry_on=_transient, on_retry=on_retry, stop=self.stop)

    async def _scan(self, key: str, since: float | None,
                    request: VideoRequest | None) -> ScanResult | ProviderError | None:
        if request is not None and not await self.gate.readable(request):
            request = None  # searched by key only
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ScanResult | ProviderError | None] = loop.create_future()
        self._waiting[key] = (since if since is not None else 0.0, request, future)
        if self._scanner is None or self._scanner.done():
            self._scanner = asyncio.create_task(self._scan_rounds(), name="videobatch-listing")
        return await asyncio.shield(future)

    async def _scan_rounds(self) -> None:
        while self._waiting:
            await asyncio.sleep(0)  # rows arriving in the same instant share this round
            batch, self._waiting = self._waiting, {}
            since = min(s for s, _, _ in batch.values()) - CLOCK_MARGIN
            answer: ScanResult | ProviderError | None
            try:
                answer = await self._list({key: request for key, (_, request, _) in batch.items()}, since)
            except ProviderError as exc:
                answer = exc
            except BaseException as exc:  # a bug, or the run is stopping: every waiter hears it
                for _, _, future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                raise
            for _, _, future in batch.values():
                if not future.done():
                    future.set_result(answer)

    async def _list(self, keys: dict[str, VideoRequest | None], since: float) -> ScanResult | None:
        async def once() -> ScanResult | None:
            self.lookups += 1
            return await self.provider.scan(keys, since)

        return await call(self.policy, once, retry_on=_transient, stop=self.stop)

    async def aclose(self) -> None:
        if self._scanner is not None and not self._scanner.done():
            self._scanner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._scanner

    @staticmethod
    def _reason(refused: ProviderError | None, listing: ScanResult | ProviderError | None,
                key_used: bool, can_look_up: bool) -> str:
        if not can_look_up:
            first = "this provider cannot look a task up by a key of ours"
        elif key_used:
            first = "the provider says this idempotency key already has a task"
        elif refused is not None:
            first = f"the lookup by idempotency key could not answer ({refused.message})"
        else:
            first = "the lookup by idempotency key could not answer"
        if listing is None:
            second = "and this provider cannot list its tasks"
        elif isinstance(listing, ProviderError):
            second = f"and listing the account's tasks failed ({listing.message})"
        elif listing.complete:
            second = "but a complete listing of the account's tasks does not show it"
        else:
            second = "and the listing of the account's tasks did not reach back far enough"
        return f"{first}, {second}"


def _transient(exc: Exception) -> bool:
    return isinstance(exc, TransientError)


def _request_id(*errors: object) -> str | None:
    for error in errors:
        if isinstance(error, ProviderError) and error.request_id:
            return error.request_id
    return None
