"""The poll scheduler: durations learned per kind of task, polls where one list request answers for
every task timed by the task ends expected (about one request per task), and a freed slot refilled
at once (the Kling test server measures both)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pandas as pd

import videobatch
from fakes import ListProvider
from videobatch import _polling as polling
from videobatch._poll_schedule import PollSchedule, kind_of
from videobatch._polling import Poller, nudge
from videobatch.providers.base import PollHint, TaskState, TaskStatus, Video
from videobatch.request import VideoRequest
from videobatch.testing import SimConfig, running_server


def test_durations_are_learned_per_kind():
    s = PollSchedule(PollHint(first_poll=1, min_interval=1, max_interval=60))
    for d in (100, 105, 110, 115, 120):
        s.observe(d, kind="10s")
    # A kind with nothing of its own borrows the pool's durations ...
    assert 100 <= s.next_delay(0, 0, kind="5s") <= 110
    for d in (50, 52, 54, 56):
        s.observe(d, kind="5s")
    # ... and follows its own once it has them; the other kind keeps its own.
    assert 48 <= s.next_delay(0, 0, kind="5s") <= 53
    assert 100 <= s.next_delay(0, 0, kind="10s") <= 106
    assert s.cdf(40, "5s") == 0.0 and s.cdf(200, "5s") == 1.0
    assert 0.3 < (s.cdf(53, "5s") or 0) < 0.7


def test_kind_of_a_request_is_its_clip_length_resolution_sound_and_mode():
    a = VideoRequest(prompt="a", duration=5, options={"mode": "pro"})
    assert kind_of(a) == kind_of(VideoRequest(prompt="b", duration=5, options={"mode": "pro"}))
    assert kind_of(a) != kind_of(VideoRequest(prompt="a", duration=10, options={"mode": "pro"}))
    assert kind_of(a) != kind_of(VideoRequest(prompt="a", duration=5, options={"mode": "std"}))


def test_polls_follow_the_task_ends_expected_about_one_request_per_task():
    """Learned durations of 0.8-1.2 s; 20 tasks accepted over a second: the poller asks about when
    each end is expected, not on its first-poll hint (50 s), sees each end soon after it happens and
    spends no more than about one request per task."""

    async def scenario() -> tuple[ListProvider, list[float]]:
        now = time.time()
        starts = {f"t{i}": now + i * 0.05 for i in range(20)}
        lengths = {t: 0.8 + 0.4 * ((i * 7) % 20) / 19 for i, t in enumerate(starts)}
        provider = ListProvider({t: starts[t] + lengths[t] for t in starts})
        schedule = PollSchedule(provider.poll_hint)
        for d in (0.8, 0.9, 1.0, 1.1, 1.2):
            schedule.observe(d)
        poller = Poller(provider, schedule, on_fatal=lambda e: None)

        async def one(t: str) -> float:
            await asyncio.sleep(max(0.0, starts[t] - time.time()))
            await poller.wait(t, starts[t])
            return time.time() - provider.ends[t]

        lags = await asyncio.wait_for(asyncio.gather(*(one(t) for t in starts)), 10)
        await poller.aclose()
        return provider, lags

    provider, lags = asyncio.run(scenario())
    assert len(provider.calls) <= 22  # ~ one request per task (20), all of them list requests
    assert max(lags) < 0.6  # every end seen soon after (the hint alone: 50 s)
    assert sum(lags) / len(lags) < 0.2


def test_a_wait_that_runs_out_of_time_or_is_cancelled_stops_its_polls():
    """``within`` seconds pass (or the waiter is cancelled): TimeoutError (CancelledError) for that
    waiter only, and its task is no longer polled, while a task that ends is still answered."""

    async def scenario() -> None:
        now = time.time()
        provider = ListProvider({"slow": now + 3600, "gone": now + 3600, "quick": now + 0.2})
        schedule = PollSchedule(dataclasses.replace(provider.poll_hint, first_poll=0.05,
                                                    min_interval=0.05))
        poller = Poller(provider, schedule, on_fatal=lambda e: None)
        gone = asyncio.create_task(poller.wait("gone", now))
        quick = asyncio.create_task(poller.wait("quick", now, within=5.0))
        try:
            await poller.wait("slow", now, within=0.1)
        except TimeoutError:
            pass
        else:
            raise AssertionError("no TimeoutError")
        gone.cancel()
        await asyncio.sleep(0)
        assert (await quick).state is TaskState.SUCCEEDED
        assert gone.cancelled() and poller._watches == {}
        asked = len(provider.calls)
        await asyncio.sleep(0.2)
        assert len(provider.calls) == asked  # nothing left to poll
        await poller.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 10))


class OneByOne(ListProvider):
    """One GET per task. "heavy" answers its first poll after ``slow`` seconds (a status that
    fetches its clip, say); a task in ``running`` is unfinished, any other has ended."""

    batch_polling = False

    def __init__(self, slow: float, running: set[str]) -> None:
        super().__init__()
        self.slow, self.running = slow, running
        self.asked: list[str] = []

    async def status(self, task_id: str) -> TaskStatus:
        self.asked.append(task_id)
        ended = task_id not in self.running  # as it stood when asked
        if task_id == "heavy" and self.asked.count("heavy") == 1:
            await asyncio.sleep(self.slow)
        if not ended:
            return TaskStatus(task_id, TaskState.RUNNING)
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(Video("u"),))


def _one_by_one_poller(provider: OneByOne, interval: float) -> Poller:
    hint = PollHint(first_poll=0.0, min_interval=interval, max_interval=interval)
    poller = Poller(provider, PollSchedule(hint), on_fatal=lambda e: None)
    poller.coalesce = 0.5  # the tasks are asked about in one round
    return poller


def test_a_slow_status_answer_holds_up_no_other_task():
    """One GET per task (no list request): a status that takes 2 s to answer must not hold back
    the end of a task answered at once, nor the polls of the others meanwhile."""

    async def scenario() -> None:
        provider = OneByOne(slow=2.0, running={"late"})
        poller = _one_by_one_poller(provider, 0.05)
        started, now = time.monotonic(), time.time()
        heavy = asyncio.create_task(poller.wait("heavy", now))
        late = asyncio.create_task(poller.wait("late", now))
        assert (await poller.wait("quick", now)).state is TaskState.SUCCEEDED
        assert time.monotonic() - started < 1.0  # not after the heavy answer (2 s)
        await asyncio.sleep(0.4)
        assert provider.asked.count("late") >= 3 and not heavy.done()  # polled on meanwhile
        assert (await heavy).state is TaskState.SUCCEEDED
        provider.running.clear()
        assert (await late).state is TaskState.SUCCEEDED
        await poller.aclose()

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_a_nudge_while_the_tasks_answer_is_on_its_way_asks_again_after_it(monkeypatch):
    """The answer on its way may have been read before the task ended: a nudge meanwhile is kept,
    and the task is asked again as soon as that answer is in (not at its next poll, 30 s on)."""
    monkeypatch.setattr(polling, "NUDGE_GAP", 0.0)  # two nudges within a second

    async def scenario() -> float:
        provider = OneByOne(slow=0.5, running={"heavy"})
        poller = _one_by_one_poller(provider, 30.0)  # its own polls: 30 s apart
        now = time.time()
        heavy = asyncio.create_task(poller.wait("heavy", now))
        await asyncio.sleep(0.05)
        assert nudge("heavy")  # asked now; its answer (still running) takes 0.5 s
        while not provider.asked:
            await asyncio.sleep(0.01)
        provider.running.clear()  # it ends, and its provider calls back
        assert nudge("heavy")
        assert (await heavy).state is TaskState.SUCCEEDED
        await poller.aclose()
        return time.time() - now

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) < 5.0


def test_a_straggler_is_left_to_its_own_backoff():
    provider = ListProvider({})
    schedule = PollSchedule(provider.poll_hint)
    for d in (1.0, 1.1, 1.2):
        schedule.observe(d)

    async def scenario() -> tuple[float, float] | None:
        poller = Poller(provider, schedule, on_fatal=lambda e: None)
        loop = asyncio.get_running_loop()
        from videobatch._polling import _Watch

        poller._watches["old"] = _Watch("old", time.time() - 30, loop.create_future(), seen_age=29)
        ends = poller._expected_ends()
        poller._watches["new"] = _Watch("new", time.time(), loop.create_future())
        later = poller._expected_ends()
        assert later is not None and later[1].task_id == "new"
        return (None if ends is None else ends[0]), schedule.backstop_delay(30, 3)

    no_ends, backstop = asyncio.run(scenario())
    assert no_ends is None  # past every learned duration: not the run's poll clock
    assert 1.0 <= backstop <= 60  # but polled on its own, backing off with its age


def test_kling_run_polls_about_once_per_task_and_refills_freed_slots_at_once(tmp_path):
    """Default options against the Kling test server (tasks of 0.6 s ± 20 %, limit 6): every row
    completes, with at most about one status request per task, and a slot freed by a task's end
    is taken again soon after (the next accept follows the end by well under a task's length)."""
    with running_server(latency=0.6, jitter=0.2, max_parallel=6, seed=3) as server:
        df = videobatch.run([f"row {i}: a quiet harbour" for i in range(48)], "kling",
                            base_url=server.url, api_key=SimConfig.api_key, progress=False,
                            max_parallel=6, checkpoint=tmp_path / "run.parquet")
        c = server.counters()
    assert (df["status"] == "completed").all()
    status_requests = c["polls_single"] + c["polls_list"] + c["polls_external"]
    assert status_requests <= 1.2 * len(df)
    assert c["peak_parallel"] == 6 and not c["rejected"]
    # From the fourth wave on: a task's end to the next accept, per freed slot.
    ends = sorted(pd.to_datetime(df["completed_at"]).map(pd.Timestamp.timestamp))
    starts = sorted(pd.to_datetime(df["submitted_at"]).map(pd.Timestamp.timestamp))
    gaps = [min(s for s in starts if s >= e) - e for e in ends[18:36]]
    assert sum(gaps) / len(gaps) < 0.35


def test_rows_refused_for_busy_slots_take_a_freed_slot_at_once(tmp_path):
    """Another system holds 4 of the account's 10 slots all along; the run is told 10. Rows Kling
    refuses with 1303 wait (here a back-off of 10-20 s), but a task of ours that ends hands its
    slot to one of them at once: the run stays near the ideal for the 6 left."""
    with running_server(latency=0.5, jitter=0.2, max_parallel=10, foreign_slots=4, seed=5) as server:
        batch = videobatch.Batch([f"row {i}: a windy pier" for i in range(36)], "kling",
                                 base_url=server.url, api_key=SimConfig.api_key, progress=False,
                                 max_parallel=10, checkpoint=tmp_path / "run.parquet")
        batch.settings = dataclasses.replace(batch.settings, backoff_base=20.0)
        started = time.monotonic()
        df = batch.wait()
        elapsed = time.monotonic() - started
        c = server.counters()
    assert (df["status"] == "completed").all()
    assert c["rejected"].get("parallel_limit", 0) >= 4  # the refused rows did wait
    ideal = c["task_seconds"] / 6
    assert elapsed < ideal + 6.0  # waiting out the back-off: 10 s and more
