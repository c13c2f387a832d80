"""The one retry policy: when to try again, how long to wait, and when to give up.

- ``RetryPolicy``: frozen numbers (attempts, exponential backoff base/cap, jitter, a deadline, how a
  server's Retry-After counts) and ``delay(n)``, the wait after the n-th failure in a row.
- ``RetryState``: one operation's failures against its policy and clock. ``failed()`` answers both
  "may I try again?" and "how long to wait?" (``None``: give up); ``sleep()`` ends early on a stop.
- ``call()``: the whole loop for the simple cases (try, retry what may be retried, re-raise the last).
- ``parse_retry_after()``: the one reader of an HTTP ``Retry-After`` header.
- ``set_testing()``: every wait instant while failures are still counted (stamina's test mode);
  ``Clock``: the seam for a fake clock.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol, TypeVar

__all__ = ["SYSTEM_CLOCK", "Clock", "RetryPolicy", "RetryState", "call", "is_testing", "parse_retry_after",
           "set_testing"]

T = TypeVar("T")
RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]


class Clock(Protocol):
    """Where retries get the time and wait: ``SYSTEM_CLOCK``, or a fake one in tests."""

    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class _SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = _SystemClock()


@dataclass(frozen=True)
class RetryPolicy:
    """How one kind of operation is retried. Change a field with ``dataclasses.replace``."""

    attempts: int | None = 5  # tries in all, the first included; None: no limit
    base: float = 1.0  # bound of the first wait, doubled after each further failure...
    cap: float = 60.0  # ...up to this
    jitter: float = 0.5  # the wait is uniform in [bound * (1 - jitter), bound]; 0: exactly the bound
    deadline: float | None = None  # seconds from the first try; no wait may end after it
    honour_retry_after: bool = True  # a server's Retry-After is the floor of the wait...
    retry_after_cap: float | None = None  # ...counted as at most this many seconds

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"retry attempts must be at least 1 (or None), got {self.attempts}")
        if not (self.base >= 0 and self.cap >= 0 and 0 <= self.jitter <= 1):
            raise ValueError(f"retry backoff needs base >= 0, cap >= 0, 0 <= jitter <= 1: {self}")
        if (self.deadline is not None and not self.deadline >= 0) or \
                (self.retry_after_cap is not None and not self.retry_after_cap >= 0):
            raise ValueError(f"retry deadline and retry_after_cap must be >= 0 (or None): {self}")

    def delay(self, failures: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1-based)."""
        bound = min(self.cap, self.base * 2.0 ** min(max(0, failures - 1), 64))
        uniform = rng.uniform if rng is not None else random.uniform
        wait = uniform(bound * (1 - self.jitter), bound) if self.jitter else bound
        if retry_after is not None and self.honour_retry_after:
            if self.retry_after_cap is not None:
                retry_after = min(retry_after, self.retry_after_cap)
            wait = max(wait, retry_after)
        return wait


@dataclass(frozen=True)
class _Testing:
    attempts: int | None


_testing: _Testing | None = None


class _Restore:
    """What ``set_testing`` returns: as a context manager, it puts the previous mode back on exit."""

    def __init__(self, previous: _Testing | None) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        global _testing
        _testing = self._previous


def set_testing(on: bool, *, attempts: int | None = None) -> _Restore:
    """Test mode (process-wide, at once): every wait is 0 and nothing sleeps; failures still count.

    ``attempts`` replaces every policy's attempts (None keeps each policy's own). Use it as
    ``with set_testing(True): ...`` to restore the previous mode afterwards.
    """
    global _testing
    if attempts is not None and attempts < 1:
        raise ValueError(f"test-mode attempts must be at least 1, got {attempts}")
    previous = _testing
    _testing = _Testing(attempts) if on else None
    return _Restore(previous)


def is_testing() -> bool:
    return _testing is not None


class RetryState:
    """The retries of one operation: its failures in a row, since ``started`` on ``clock``."""

    def __init__(self, policy: RetryPolicy, *, clock: Clock | None = None,
                 rng: random.Random | None = None) -> None:
        self.policy = policy
        self.clock = clock or SYSTEM_CLOCK
        self.rng = rng
        self.failures = 0
        self.started = self.clock.monotonic()

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.started

    def failed(self, retry_after: float | None = None) -> float | None:
        """Count a failed try; the seconds to wait before the next one, or None to give up
        (the attempts are used up, or the wait would end past the deadline)."""
        self.failures += 1
        testing = _testing
        attempts = self.policy.attempts
        if testing is not None and testing.attempts is not None:
            attempts = testing.attempts
        if attempts is not None and self.failures >= attempts:
            return None
        wait = 0.0 if testing is not None else self.policy.delay(self.failures, retry_after, self.rng)
        deadline = self.policy.deadline
        if deadline is not None and self.elapsed + wait > deadline:
            return None
        return wait

    def reset(self) -> None:
        """A try succeeded: the next failure is the first of a new operation."""
        self.failures = 0
        self.started = self.clock.monotonic()

    async def sleep(self, delay: float, stop: asyncio.Event | None = None) -> bool:
        """Wait ``delay`` seconds; False (at once) when ``stop`` is or becomes set first."""
        if stop is not None and stop.is_set():
            return False
        if _testing is not None or delay <= 0:
            await asyncio.sleep(0)  # instant, but still a point where others run
        elif stop is None:
            await self.clock.sleep(delay)
        else:
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()
                await asyncio.wait({sleeper, stopper})
        return stop is None or not stop.is_set()


def _matcher(retry_on: RetryOn) -> Callable[[Exception], bool]:
    if isinstance(retry_on, type | tuple):
        return lambda exc: isinstance(exc, retry_on)
    return retry_on


def _retry_after_attribute(exc: Exception) -> float | None:
    value = getattr(exc, "retry_after", None)  # TransientError, DownloadError
    return float(value) if isinstance(value, int | float) else None


async def call(
    retry: RetryPolicy | RetryState,
    fn: Callable[[], Awaitable[T]],
    *,
    retry_on: RetryOn,
    retry_after: Callable[[Exception], float | None] = _retry_after_attribute,
    on_retry: Callable[[int, Exception, float], None] | None = None,
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
) -> T:
    """``await fn()`` until it returns, retrying the errors ``retry_on`` names (classes or a test).

    Gives up by re-raising the last error: when the policy says so, or when ``stop`` is set during a
    wait. Other errors are raised at once. ``retry_after(exc)``: the server's wait carried by an
    error (default: its ``retry_after`` attribute). ``on_retry(failures, exc, delay)`` hears of each
    retry before its wait. Pass a ``RetryState`` to read its count afterwards (then ``clock`` is
    its own).
    """
    state = retry if isinstance(retry, RetryState) else RetryState(retry, clock=clock)
    matches = _matcher(retry_on)
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not matches(exc):
                raise
            delay = state.failed(retry_after(exc))
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(state.failures, exc, delay)
            if not await state.sleep(delay, stop):
                raise


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for: delta-seconds, or an HTTP-date counted from
    ``now`` (epoch seconds; default the wall clock). Negative or past: 0. Missing or unreadable: None."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, origin unknown
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None
