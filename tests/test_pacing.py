"""Pacing parts on their own: the token bucket's rate, adaptive slots, poll timing (retry waits: test_retry.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from fakes import ListProvider
from videobatch._pacing import RateLimiter, Slots
from videobatch._poll_schedule import PollSchedule
from videobatch.providers.base import PollHint


def test_rate_limiter_keeps_the_rate():
    async def measure():
        limiter = RateLimiter(rate=50.0, burst=1)
        start = time.monotonic()
        for _ in range(26):
            await limiter.acquire()
        return time.monotonic() - start

    took = asyncio.run(measure())
    assert took >= 0.45  # 25 intervals of 20 ms: never faster than the rate


def test_rate_limiter_penalty_delays_the_next_request():
    async def measure():
        limiter = RateLimiter(rate=100.0, burst=5)
        limiter.penalize(0.2)
        start = time.monotonic()
        await limiter.acquire()
        return time.monotonic() - start

    assert asyncio.run(measure()) >= 0.18


def test_rate_limiter_penalty_holds_after_an_idle_spell():
    # Tokens earned while idle used to pay the penalty off at once: a 1302 after a quiet minute
    # slowed nothing.
    async def measure():
        limiter = RateLimiter(rate=100.0, burst=5)
        limiter._stamp -= 60  # a minute without requests
        limiter.penalize(0.2)
        start = time.monotonic()
        await limiter.acquire()
        return time.monotonic() - start

    assert asyncio.run(measure()) >= 0.18


def test_rate_limiter_penalties_arriving_together_do_not_add_up():
    async def measure():
        limiter = RateLimiter(rate=100.0, burst=5)
        for _ in range(4):  # four requests in flight all hear "wait 0.2 s"
            limiter.penalize(0.2)
        start = time.monotonic()
        await limiter.acquire()
        return time.monotonic() - start

    assert 0.18 <= asyncio.run(measure()) < 0.5


def test_rate_limiter_serves_one_event_loop_after_another():
    limiter = RateLimiter(rate=200.0, burst=1)

    async def contend():
        await asyncio.gather(*(limiter.acquire() for _ in range(5)))

    asyncio.run(contend())
    asyncio.run(contend())  # a provider reused by a later run, on a new loop


def test_no_rate_means_no_waiting():
    async def measure():
        limiter = RateLimiter(rate=None)
        start = time.monotonic()
        for _ in range(10_000):
            await limiter.acquire()
        return time.monotonic() - start

    assert asyncio.run(measure()) < 0.5


def test_slots_shrink_on_busy_and_grow_back_when_quiet():
    async def scenario():
        slots = Slots(4)
        for _ in range(4):
            await slots.acquire()
        await slots.shrink()  # the provider says all busy while we hold 4: only 3 are really ours
        assert slots.limit == 3
        await slots.release()
        await slots.release()
        waiter = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        assert waiter.done()  # in_use 2 < limit 3
        blocked = asyncio.create_task(slots.acquire())
        await asyncio.sleep(0.01)
        assert not blocked.done()  # in_use 3 == limit
        await slots.grow(quiet_for=0.0)
        await asyncio.sleep(0.01)
        assert slots.limit == 4
        assert blocked.done()

    asyncio.run(scenario())


def test_slots_refuse_zero():
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


def test_poll_schedule_follows_the_hint_before_learning():
    s = PollSchedule(PollHint(first_poll=30, min_interval=5, max_interval=60, growth=2))
    assert s.next_delay(age=0, polls=0) == 30
    assert s.next_delay(age=30, polls=1) == 5
    assert s.next_delay(age=35, polls=2) == 10
    assert s.next_delay(age=500, polls=9) == 60


def test_poll_schedule_aims_at_learned_durations():
    s = PollSchedule(PollHint(first_poll=1, min_interval=1, max_interval=60))
    for d in [100, 110, 120, 130, 140, 150, 160, 170, 180, 190]:
        s.observe(d)
    first = s.next_delay(age=0, polls=0)
    assert 105 <= first <= 115  # near the fast end of what tasks took
    step = s.next_delay(age=first, polls=1)
    assert 20 <= step <= 30  # about a third of the spread: ~3 polls cover most tasks
    # Polls per task stay small for a task of typical length:
    age, polls = 0.0, 0
    while age < 150:
        age += s.next_delay(age, polls)
        polls += 1
    assert polls <= 4


def test_list_polling_lets_other_tasks_ride_along():
    from videobatch._polling import Poller

    async def scenario():
        provider = ListProvider()
        poller = Poller(provider, PollSchedule(provider.poll_hint), on_fatal=lambda e: None)
        now = time.time()
        old = asyncio.create_task(poller.wait("old", now - 100))  # due at once
        new = asyncio.create_task(poller.wait("new", now))  # its own first poll would be in 50 s
        done = await asyncio.wait_for(asyncio.gather(old, new), 5)
        await poller.aclose()
        return provider, done

    provider, done = asyncio.run(scenario())
    assert [s.task_id for s in done] == ["old", "new"]
    assert [(tasks, riders) for _, tasks, riders in provider.calls] == [(["old"], ["new"])]  # one for both


def test_slots_go_to_the_longest_waiting_row_and_a_cancelled_wait_takes_none():
    async def scenario():
        slots = Slots(1)
        await slots.acquire()
        got: list[str] = []

        async def row(name: str) -> None:
            await slots.acquire()
            got.append(name)

        first, second, third = (asyncio.create_task(row(n)) for n in ("first", "second", "third"))
        await asyncio.sleep(0)
        # Cancelled while waiting, and a slot freed before its task hears of it: it is passed by.
        first.cancel()
        await slots.release()
        await asyncio.sleep(0)
        assert got == ["second"] and second.done() and slots.in_use == 1
        with pytest.raises(asyncio.CancelledError):
            await first
        # Handed the slot, then cancelled before it ran: the slot goes on to the next in line.
        await slots.release()
        assert slots.in_use == 1 and not third.done()
        third.cancel()
        with pytest.raises(asyncio.CancelledError):
            await third
        assert slots.in_use == 0 and got == ["second"]
        await slots.acquire()  # free again, nobody waiting: taken at once
        assert slots.in_use == 1

    asyncio.run(scenario())
