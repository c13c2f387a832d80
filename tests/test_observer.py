"""The background-observer base on its own: which rows start work, catch-up, bounded tries, drain.

No network and no wall-clock waits: the work is a toy coroutine, retries run in test mode or on a
clock that moves when told.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

import httpx
import pytest

from videobatch._events import Event, Progress
from videobatch._jobs import Job, RowSnapshot, State
from videobatch._retry import RetryPolicy, RetryState, set_testing
from videobatch.delivery._observer import BackgroundObserver, retry_policy
from videobatch.delivery.downloads import Downloader
from videobatch.delivery.webhooks import WebhookNotifier
from videobatch.errors import ConfigError, TransientError
from videobatch.request import VideoRequest

Work = Callable[["Toy", RowSnapshot], Awaitable[None]]


class Context:
    run_id = "run-1"

    def __init__(self, jobs: list[RowSnapshot] | None = None) -> None:
        self.jobs = jobs or []
        self.records: list[tuple[str, dict[str, Any]]] = []

    def rows(self, states: Any = None) -> list[RowSnapshot]:
        return [row for row in self.jobs if states is None or row.state in states]

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot:
        self.records.append((row.key, extras))
        return row.with_extras(**extras)


class Toy(BackgroundObserver[Context]):
    states: ClassVar[frozenset[State]] = frozenset({State.COMPLETED})
    noun: ClassVar[str] = "toy"

    def __init__(self, fn: Work, *, concurrency: int = 2, retry: RetryPolicy | None = None, **kw: Any) -> None:
        super().__init__(concurrency=concurrency, retry=retry or RetryPolicy(attempts=3), **kw)
        self.fn = fn
        self.crashes: list[tuple[str, str]] = []
        self.clients = 0

    def owed(self, job: RowSnapshot) -> bool:
        return "done" not in job.extras

    def work(self, job: RowSnapshot) -> Coroutine[Any, Any, None] | None:
        async def run() -> None:
            await self.fn(self, job)

        return run()

    def crashed(self, job: RowSnapshot, message: str) -> None:
        self.crashes.append((job.key, message))

    def new_client(self) -> httpx.AsyncClient:
        self.clients += 1
        return httpx.AsyncClient()


def job(key: str, state: State = State.COMPLETED, **extras: Any) -> RowSnapshot:
    row = Job(key=key, index=0, request=VideoRequest(prompt=key), state=state)
    row.extras.update(extras)
    return row.snapshot()


def moved(row: RowSnapshot, new: State) -> Event:
    return Event("transition", Progress(total=1), row=row, old=State.GENERATING, new=new)


async def record_done(observer: Toy, row: RowSnapshot) -> None:
    await asyncio.sleep(0)
    observer.record(row, done=True)


def test_rows_reaching_its_states_start_work_and_outcomes_are_recorded():
    ctx = Context()

    async def go() -> None:
        toy = Toy(record_done)
        toy.bind(ctx)
        toy(moved(job("a"), State.COMPLETED))
        toy(moved(job("b"), State.FAILED))  # not one of its states
        toy(Event("annotate", Progress(total=1), row=job("c")))  # not a transition
        await toy.drain(cancelled=False)

    asyncio.run(go())
    assert ctx.records == [("a", {"done": True})]


def test_bind_catches_up_only_on_owed_rows_in_its_states():
    rows = [job("owed"), job("told", done=True), job("running", State.GENERATING)]
    ctx = Context(rows)

    async def go() -> None:
        toy = Toy(record_done)
        toy.bind(ctx)
        await toy.drain(cancelled=False)

    asyncio.run(go())
    assert [key for key, _ in ctx.records] == ["owed"]


def test_a_crash_is_reported_and_the_others_go_on(caplog):
    async def work(observer: Toy, row: RowSnapshot) -> None:
        if row.key == "bad":
            raise RuntimeError("a bug")
        await record_done(observer, row)

    ctx = Context([job("bad"), job("good")])
    toy = Toy(work)

    async def go() -> None:
        toy.bind(ctx)
        await toy.drain(cancelled=False)

    with caplog.at_level(logging.ERROR, logger="videobatch"):
        asyncio.run(go())
    assert toy.crashes == [("bad", "toy crashed: RuntimeError('a bug')")]
    assert [key for key, _ in ctx.records] == ["good"]
    assert "row bad: toy crashed" in caplog.text


@pytest.mark.parametrize("cancelled", [False, True])
def test_drain_gives_up_work_past_its_timeout_or_at_once_when_cancelled(cancelled, caplog):
    ends: list[str] = []

    async def stuck(observer: Toy, row: RowSnapshot) -> None:
        try:
            await asyncio.Event().wait()  # never set
        except asyncio.CancelledError:
            ends.append(row.key)
            raise

    async def go() -> float:
        toy = Toy(stuck, drain_timeout=0.3)
        toy.bind(Context([job("a"), job("b")]))
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await toy.drain(cancelled=cancelled)
        assert toy.running(job("a")) is None and not toy._tasks
        return loop.time() - began

    with caplog.at_level(logging.WARNING, logger="videobatch"):
        took = asyncio.run(go())
    assert sorted(ends) == ["a", "b"]
    assert took < 0.25 if cancelled else 0.29 <= took < 5.0
    assert "2 toy task(s) abandoned" in caplog.text


def test_running_names_a_rows_newest_task_until_it_ends():
    async def go() -> None:
        gate = asyncio.Event()

        async def wait(observer: Toy, row: RowSnapshot) -> None:
            await gate.wait()

        toy = Toy(wait)
        toy.bind(Context())
        row = job("a")
        first, second = toy.schedule(row), toy.schedule(row)  # the base itself does not de-duplicate
        assert first is not None and second is not None and toy.running(row) is second
        gate.set()
        await toy.drain(cancelled=False)
        assert toy.running(row) is None

    asyncio.run(go())


class Clock:
    """A retry clock whose waits end when the test says so."""

    def __init__(self) -> None:
        self.go_on = asyncio.Event()
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return 0.0

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await self.go_on.wait()


def test_a_wait_between_tries_holds_no_place():
    """Concurrency 1: while row a waits to try again, row b's try runs."""
    order: list[str] = []
    clock = Clock()

    async def go() -> None:
        tries = {"a": 0}

        async def flaky(observer: Toy, row: RowSnapshot) -> None:
            async def once() -> None:
                order.append(row.key)
                if row.key == "a":
                    tries["a"] += 1
                    if tries["a"] == 1:
                        raise TransientError("503")
                else:
                    clock.go_on.set()  # only reachable while a is waiting, its place free

            state = RetryState(observer.retry, clock=clock)
            await observer.attempt(once, retry_on=TransientError, state=state)

        toy = Toy(flaky, concurrency=1, retry=RetryPolicy(attempts=3, base=5.0, jitter=0.0))
        toy.bind(Context([job("a"), job("b")]))
        await asyncio.wait_for(toy.drain(cancelled=False), timeout=5)

    asyncio.run(go())
    assert order == ["a", "b", "a"] and clock.waits == [5.0]


def test_retries_follow_the_policy_and_are_instant_in_test_mode():
    calls: list[int] = []

    async def always_503(observer: Toy, row: RowSnapshot) -> None:
        async def once() -> None:
            calls.append(1)
            raise TransientError("503")

        try:
            await observer.attempt(once, retry_on=TransientError)
        except TransientError:
            observer.record(row, gave_up=len(calls))

    ctx = Context([job("a")])

    async def go() -> None:
        toy = Toy(always_503, retry=RetryPolicy(attempts=4, base=60.0))
        toy.bind(ctx)
        await toy.drain(cancelled=False)

    with set_testing(True):
        asyncio.run(asyncio.wait_for(go(), timeout=5))
    assert ctx.records == [("a", {"gave_up": 4})]


def test_the_client_it_made_is_closed_a_given_one_is_not():
    used: list[httpx.AsyncClient] = []

    async def use_client(observer: Toy, row: RowSnapshot) -> None:
        used.append(observer.http())

    async def go() -> tuple[Toy, httpx.AsyncClient, Toy, httpx.AsyncClient]:
        own = Toy(use_client)
        own.bind(Context([job("a"), job("b")]))
        await own.drain(cancelled=False)
        made = used[0]
        assert used == [made, made]
        given_client = httpx.AsyncClient()
        given = Toy(use_client, client=given_client)
        given.bind(Context([job("a")]))
        await given.drain(cancelled=False)
        return own, made, given, given_client

    own, made, given, given_client = asyncio.run(go())
    assert own.clients == 1 and made.is_closed
    assert given.clients == 0 and not given_client.is_closed


def test_attempt_before_bind_is_a_clear_error():
    async def go() -> None:
        async def nothing() -> None:
            return None

        await Toy(record_done).attempt(nothing, retry_on=TransientError)

    with pytest.raises(AssertionError, match=r"bind\(\) was not called"):
        asyncio.run(go())


def test_the_older_retry_options_build_the_policy_and_a_given_one_wins(tmp_path):
    assert retry_policy(None, attempts=3, base=0.5, cap=4.0, what="x") == RetryPolicy(attempts=3, base=0.5, cap=4.0)
    mine = RetryPolicy(attempts=2, base=0.0, jitter=0.0)
    assert retry_policy(mine, attempts=9, base=1.0, cap=1.0, what="x") is mine
    with pytest.raises(ConfigError, match="download max_attempts must be at least 1"):
        Downloader(tmp_path, max_attempts=0)
    with pytest.raises(ConfigError, match="webhook: retry backoff"):
        WebhookNotifier("https://example.invalid/h", backoff_base=-1.0)
    with pytest.raises(ConfigError, match="webhook concurrency must be at least 1"):
        WebhookNotifier("https://example.invalid/h", concurrency=0)
    assert Downloader(tmp_path, max_attempts=2, backoff_base=0.01).retry == RetryPolicy(attempts=2, base=0.01, cap=30.0)
    assert WebhookNotifier(None, retry=mine).retry is mine
    assert Downloader(tmp_path, retry=mine).retry is mine


def test_every_observer_hears_events_in_the_order_they_happened():
    """An observer that annotates a row when it completes causes an event while the others are
    still being told of the completion: they hear the completion first, then the annotation."""
    import videobatch
    from videobatch._events import RunContext

    class Stamper:
        def bind(self, context: RunContext) -> None:
            self.context = context

        def __call__(self, event: Event) -> None:
            if event.kind == "transition" and event.new is State.COMPLETED and event.row is not None:
                self.context.annotate(event.row, stamped=True)

    heard: list[tuple[str, str, str, bool]] = []

    def listener(event: Event) -> None:
        if event.row is not None and event.kind in ("transition", "annotate"):
            heard.append((event.row.key, event.kind, event.row.state.value,
                          bool(event.row.extras.get("stamped"))))

    df = videobatch.run(["a", "b", "c"], "local", render=False, progress=False,
                        observers=[Stamper(), listener])
    assert df["stamped"].all()
    for key in {k for k, *_ in heard}:
        mine = [(kind, state, stamped) for k, kind, state, stamped in heard if k == key]
        assert mine[-2:] == [("transition", "completed", False), ("annotate", "completed", True)], mine
