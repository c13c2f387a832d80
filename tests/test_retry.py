"""The one retry policy on its own: delays, giving up, Retry-After, stop events, test mode, ``call``.

Deterministic: a seeded rng and a fake clock; the only wall-clock waits are bounded by a stop event.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from videobatch import _retry
from videobatch._retry import RetryPolicy, RetryState, call, is_testing, parse_retry_after, set_testing
from videobatch.errors import DownloadError, RejectedError, TransientError


class FakeClock:
    """Time moves only when someone sleeps on it; every sleep is recorded."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Flaky:
    """An async callable failing with ``errors`` in turn, then returning ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.fixture(autouse=True)
def _no_test_mode_leaks():
    assert not is_testing()
    yield
    assert not is_testing(), "a test left retry test mode on"


# ---------------------------------------------------------------------- the policy's delays
def test_delay_doubles_with_jitter_up_to_the_cap():
    policy, rng = RetryPolicy(base=1.0, cap=30.0), random.Random(1)
    for failures, bound in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (10, 30.0)]:
        delays = [policy.delay(failures, rng=rng) for _ in range(200)]
        assert all(bound / 2 <= d <= bound for d in delays)  # the default jitter is today's
        assert max(delays) - min(delays) > bound / 4  # jittered, not fixed


def test_jitter_sets_the_spread():
    rng = random.Random(2)
    assert RetryPolicy(base=2.0, jitter=0.0).delay(3, rng=rng) == 8.0
    full = [RetryPolicy(base=2.0, jitter=1.0).delay(3, rng=rng) for _ in range(500)]
    assert min(full) < 1.0 and max(full) > 7.0 and all(0 <= d <= 8.0 for d in full)


def test_delay_is_reproducible_with_a_seed():
    policy = RetryPolicy()
    assert [policy.delay(n, rng=random.Random(7)) for n in range(1, 6)] == \
           [policy.delay(n, rng=random.Random(7)) for n in range(1, 6)]


def test_endless_failures_stay_at_the_cap():
    assert RetryPolicy(cap=60.0, jitter=0.0).delay(100_000) == 60.0  # no OverflowError


def test_retry_after_is_the_floor_and_may_be_capped():
    policy = RetryPolicy(base=0.1, cap=1.0)
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.delay(1, retry_after=0.0) <= 0.1  # a smaller Retry-After does not shorten it
    assert replace(policy, retry_after_cap=3.0).delay(1, retry_after=3600.0) == 3.0
    assert replace(policy, honour_retry_after=False).delay(1, retry_after=7.0) <= 0.1


@pytest.mark.parametrize("fields", [
    {"attempts": 0}, {"base": -1.0}, {"cap": -1.0}, {"jitter": 1.5}, {"jitter": -0.1},
    {"deadline": -1.0}, {"retry_after_cap": -1.0}, {"base": float("nan")},
])
def test_policy_refuses_impossible_numbers(fields):
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy(**fields)


def test_policy_is_frozen():
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.attempts = 3  # type: ignore[misc]
    assert replace(policy, attempts=None).attempts is None


# ---------------------------------------------------------------------- one operation's state
def test_state_gives_up_when_the_attempts_are_used():
    state = RetryState(RetryPolicy(attempts=3, base=1.0, jitter=0.0), clock=FakeClock())
    assert [state.failed(), state.failed(), state.failed()] == [1.0, 2.0, None]
    assert state.failures == 3


def test_one_attempt_never_retries_and_none_never_gives_up():
    assert RetryState(RetryPolicy(attempts=1), clock=FakeClock()).failed() is None
    endless = RetryState(RetryPolicy(attempts=None, cap=5.0), clock=FakeClock(), rng=random.Random(3))
    assert all(endless.failed() is not None for _ in range(1000))


def test_state_gives_up_when_the_wait_would_pass_the_deadline():
    clock = FakeClock()
    state = RetryState(RetryPolicy(attempts=None, base=4.0, cap=4.0, jitter=0.0, deadline=10.0), clock=clock)

    async def go() -> list[float | None]:
        waits: list[float | None] = []
        while (delay := state.failed()) is not None:
            waits.append(delay)
            await state.sleep(delay)
        return [*waits, delay]

    assert asyncio.run(go()) == [4.0, 4.0, None]  # a third wait would end at 12 s > 10 s
    assert state.elapsed == 8.0 and state.failures == 3


def test_a_retry_after_past_the_deadline_gives_up_now():
    state = RetryState(RetryPolicy(base=0.1, deadline=30.0), clock=FakeClock())
    assert state.failed(retry_after=60.0) is None


def test_reset_starts_a_new_operation():
    clock = FakeClock()
    state = RetryState(RetryPolicy(attempts=2, deadline=5.0, jitter=0.0), clock=clock)
    assert state.failed() == 1.0
    clock.now += 100
    state.reset()
    assert state.failures == 0 and state.elapsed == 0.0
    assert state.failed() == 1.0  # without the reset: the 2nd of 2 attempts, 100 s past the deadline


def test_sleep_uses_the_injected_clock():
    clock = FakeClock()
    state = RetryState(RetryPolicy(), clock=clock)
    assert asyncio.run(state.sleep(12.5)) is True
    assert clock.sleeps == [12.5] and state.elapsed == 12.5


def test_a_stop_event_ends_a_sleep_early():
    state = RetryState(RetryPolicy())  # the real clock: a 60 s wait must end as soon as stop is set

    async def go() -> tuple[bool, float]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        began = time.monotonic()
        slept = await state.sleep(60.0, stop)
        return slept, time.monotonic() - began

    slept, took = asyncio.run(go())
    assert slept is False and took < 5.0


def test_a_stop_already_set_means_no_sleep_at_all():
    clock = FakeClock()
    state = RetryState(RetryPolicy(), clock=clock)

    async def go() -> bool:
        stop = asyncio.Event()
        stop.set()
        return await state.sleep(30.0, stop)

    assert asyncio.run(go()) is False and clock.sleeps == []


def test_a_sleep_that_ends_before_the_stop_returns_true():
    clock = FakeClock()

    async def go() -> bool:
        return await RetryState(RetryPolicy(), clock=clock).sleep(3.0, asyncio.Event())

    assert asyncio.run(go()) is True and clock.sleeps == [3.0]


def test_cancelling_a_sleep_leaves_no_task_behind():
    async def go() -> set[asyncio.Task[object]]:
        sleeper = asyncio.create_task(RetryState(RetryPolicy()).sleep(60.0, asyncio.Event()))
        await asyncio.sleep(0.01)
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(go()) == set()


# ---------------------------------------------------------------------- Retry-After
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0), (" 5 ", 5.0), ("1.5", 1.5), ("0", 0.0), ("-3", 0.0),
    ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),  # IMF-fixdate
    ("Saturday, 01-Mar-25 12:01:00 GMT", 60.0),  # RFC 850
    ("Sat Mar  1 12:00:10 2025", 10.0),  # asctime
    ("Sat, 01 Mar 2025 12:00:45 -0000", 45.0),
    ("Sat, 01 Mar 2025 13:00:05 +0100", 5.0),
    ("Fri, 28 Feb 2025 12:00:00 GMT", 0.0),  # in the past: go now
])
def test_retry_after_seconds_and_http_dates(value, seconds):
    assert parse_retry_after(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "   ", "soon", "nan", "inf", "12s", "Sat, 99 Foo 2025"])
def test_unreadable_retry_after_is_none(value):
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_dates_default_to_the_wall_clock():
    in_a_minute = format_datetime(datetime.fromtimestamp(time.time() + 60, UTC), usegmt=True)
    assert 55.0 <= (parse_retry_after(in_a_minute) or 0.0) <= 60.0


# ---------------------------------------------------------------------- test mode
def test_test_mode_makes_waits_instant_but_keeps_counting():
    clock = FakeClock()
    state = RetryState(RetryPolicy(attempts=3, base=30.0, deadline=3600.0), clock=clock)
    with set_testing(True):
        assert is_testing()
        assert state.failed(retry_after=600.0) == 0.0
        assert asyncio.run(state.sleep(600.0)) is True
        assert state.failed() == 0.0
        assert state.failed() is None  # still three attempts
    assert clock.sleeps == [] and state.elapsed == 0.0


def test_test_mode_zeroes_a_policy_used_without_a_state():
    policy = RetryPolicy(base=30.0)  # the poller schedules with delay() and sleeps on its own
    with set_testing(True):
        assert policy.delay(5, retry_after=600.0) == 0.0
    assert policy.delay(5, retry_after=600.0) == 600.0


def test_test_mode_can_set_the_attempts_and_is_restored():
    policy = RetryPolicy(attempts=10)
    set_testing(True, attempts=2)
    try:
        state = RetryState(policy, clock=FakeClock())
        assert [state.failed(), state.failed()] == [0.0, None]
        with set_testing(True, attempts=None):  # nested: each policy's own count
            assert RetryState(policy, clock=FakeClock()).failed() == 0.0
        assert _retry._testing is not None and _retry._testing.attempts == 2
    finally:
        set_testing(False)
    assert not is_testing()


def test_test_mode_runs_a_slow_policy_in_no_time():
    flaky = Flaky(TransientError("5xx"), TransientError("5xx"), TransientError("5xx"))
    began = time.monotonic()
    with set_testing(True):
        assert asyncio.run(call(RetryPolicy(attempts=5, base=60.0), flaky, retry_on=TransientError)) == "done"
    assert flaky.calls == 4 and time.monotonic() - began < 1.0


# ---------------------------------------------------------------------- call()
def test_call_retries_until_it_works_and_reports_each_retry():
    clock, seen = FakeClock(), []
    flaky = Flaky(TransientError("a"), TransientError("b", retry_after=7.0))
    policy = RetryPolicy(attempts=3, base=1.0, jitter=0.0)
    result = asyncio.run(call(policy, flaky, retry_on=TransientError, clock=clock,
                              on_retry=lambda n, exc, delay: seen.append((n, str(exc), delay))))
    assert result == "done" and flaky.calls == 3
    assert seen == [(1, "a", 1.0), (2, "b", 7.0)]  # the error's retry_after is the floor
    assert clock.sleeps == [1.0, 7.0]


def test_call_reraises_the_last_error_when_the_attempts_are_used():
    errors = [TransientError(f"try {n}") for n in range(1, 4)]
    flaky = Flaky(*errors)
    with pytest.raises(TransientError) as caught:
        asyncio.run(call(RetryPolicy(attempts=3), flaky, retry_on=TransientError, clock=FakeClock()))
    assert caught.value is errors[-1] and flaky.calls == 3


def test_call_reraises_when_the_deadline_would_pass():
    clock = FakeClock()
    flaky = Flaky(*[TransientError("5xx") for _ in range(10)])
    policy = RetryPolicy(attempts=None, base=4.0, cap=4.0, jitter=0.0, deadline=10.0)
    with pytest.raises(TransientError):
        asyncio.run(call(policy, flaky, retry_on=TransientError, clock=clock))
    assert flaky.calls == 3 and clock.sleeps == [4.0, 4.0]


def test_call_does_not_retry_other_errors():
    flaky = Flaky(RejectedError("content policy"))
    with pytest.raises(RejectedError):
        asyncio.run(call(RetryPolicy(), flaky, retry_on=TransientError, clock=FakeClock()))
    assert flaky.calls == 1


def test_call_takes_a_tuple_or_a_test():
    clock = FakeClock()
    flaky = Flaky(OSError("reset"), TransientError("5xx"))
    assert asyncio.run(call(RetryPolicy(), flaky, retry_on=(OSError, TransientError), clock=clock)) == "done"
    permanent = Flaky(DownloadError("gone", permanent=True))
    passing = Flaky(DownloadError("cut short", retry_after=2.0))

    def retryable(exc: Exception) -> bool:
        return isinstance(exc, DownloadError) and not exc.permanent

    with pytest.raises(DownloadError, match="gone"):
        asyncio.run(call(RetryPolicy(), permanent, retry_on=retryable, clock=clock))
    assert asyncio.run(call(RetryPolicy(base=0.1), passing, retry_on=retryable, clock=clock)) == "done"
    assert permanent.calls == 1 and clock.sleeps[-1] == 2.0


def test_call_with_a_state_shows_the_count_and_a_custom_retry_after():
    state = RetryState(RetryPolicy(attempts=4, base=1.0, jitter=0.0), clock=FakeClock())
    flaky = Flaky(ValueError("x"), ValueError("y"))
    assert asyncio.run(call(state, flaky, retry_on=ValueError, retry_after=lambda exc: 5.0)) == "done"
    assert state.failures == 2 and state.elapsed == 10.0


def test_call_gives_up_with_the_last_error_when_stopped():
    async def go() -> None:
        stop = asyncio.Event()
        flaky = Flaky(TransientError("first"), TransientError("second"))
        asyncio.get_running_loop().call_later(0.05, stop.set)
        with pytest.raises(TransientError, match="first"):
            await call(RetryPolicy(base=60.0), flaky, retry_on=TransientError, stop=stop)
        assert flaky.calls == 1

    began = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - began < 5.0


def test_call_never_swallows_a_cancellation():
    async def go() -> None:
        async def slow() -> str:
            await asyncio.sleep(60)
            return "never"

        task = asyncio.create_task(call(RetryPolicy(), slow, retry_on=Exception))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
