"""The asyncio engine that drives every row from pending to completed/failed through a provider.

- One worker per parallel slot takes the next row, submits it and waits for its task to end, then
  takes the next: a slot is held from submit until the task ends, so slots stay full.
- Rows already in flight from an earlier (crashed) run go first: ``generating`` rows are polled,
  ``submitting`` rows are looked up by their idempotency key before anything is sent again.
- Every transition goes to the store *before* the side effect it announces (``submitting`` before the
  paid request leaves the process).
- Transient failures are retried with jittered backoff (honouring Retry-After); permanent ones fail
  the row; auth errors stop the run; account errors stop submitting while in-flight rows finish.
- ``cancel()`` stops everything promptly: rows in flight keep their state for the next run to
  reconcile, rows not started become ``cancelled`` (and ``pending`` again on resume).

The runner knows the provider only through ``videobatch.providers.base.Provider``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ._events import Event, EventKind, Observer, Progress, notify
from ._jobs import Job, State
from ._pacing import LocalSlots, RateLimiter, SlotPool, backoff
from ._polling import Poller, PollSchedule
from ._sources import JobSource, QueueSource
from ._store import Store
from .errors import (
    AccountError,
    AuthError,
    NotFoundError,
    ProviderError,
    RateLimited,
    SlotsBusy,
    TransientError,
)
from .providers.base import Provider, TaskState, TaskStatus

__all__ = ["RunContext", "RunOutcome", "RunSettings", "Runner"]

log = logging.getLogger("videobatch")


@dataclass(frozen=True)
class RunSettings:
    concurrency: int | None = None  # at most the provider's parallel-task limit
    max_attempts: int = 5  # submits per row that may fail transiently before the row fails
    timeout: float | None = 3600.0  # seconds a row may take from acceptance to its end
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    snapshot_every: float = 30.0  # seconds between checkpoint snapshots


@dataclass
class RunOutcome:
    counts: Counter[State]
    elapsed: float
    cancelled: bool = False
    stopped_by: ProviderError | None = None  # auth or account error that stopped the run
    polls: int = 0
    submits: int = 0


@dataclass
class _Stop:
    fatal: ProviderError | None = None  # stops everything
    no_submit: ProviderError | None = None  # stops new submissions only
    cancelled: bool = False
    crash: Exception | None = None  # a bug (not a provider answer): stop, flush, re-raise
    event: asyncio.Event = field(default_factory=asyncio.Event)


class RunContext:
    """What an observer may do during a run besides watching (see ``videobatch._events.Observer``)."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    @property
    def run_id(self) -> str:
        return self._runner.store.run_id

    @property
    def progress(self) -> Progress:
        return self._runner.progress

    @property
    def jobs(self) -> Sequence[Job]:
        """The batch's rows (empty in service mode, where rows arrive one by one)."""
        return self._runner.jobs

    def annotate(self, job: Job, **extras: Any) -> None:
        """Record extra result columns for ``job`` durably (e.g. ``local_path`` after a download)."""
        self._runner.store.append(job.annotate(**extras))
        self._runner._emit("annotate", job)

    def cancel(self) -> None:
        self._runner.cancel()


class Runner:
    def __init__(
        self,
        jobs: Sequence[Job],
        provider: Provider,
        store: Store,
        settings: RunSettings | None = None,
        observers: Sequence[Observer] = (),
        *,
        source: JobSource | None = None,
        slots: SlotPool | None = None,
    ) -> None:
        """Drive ``jobs`` (a batch) — or, with ``source``/``slots``, whatever the source hands out
        under a shared slot pool (service mode; ``jobs`` may then be empty)."""
        self.jobs = list(jobs)
        self.provider = provider
        self.store = store
        self.settings = settings or RunSettings()
        self.observers = list(observers)
        ceiling = provider.limits.max_parallel
        if self.settings.concurrency:
            ceiling = min(ceiling, self.settings.concurrency)
        self.progress = Progress(total=len(self.jobs), slots_limit=ceiling)
        self.progress.counts.update(j.state for j in self.jobs)
        self._ceiling = ceiling
        self._source_arg = source
        self._slots_arg = slots
        self._submits = 0
        self._stop: _Stop | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Stop the run soon; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._cancel_now()
        else:
            loop.call_soon_threadsafe(self._cancel_now)

    def _cancel_now(self) -> None:
        if self._stop is not None and not self._stop.cancelled:
            self._stop.cancelled = True
            self._stop.event.set()
            for worker in self._workers:
                worker.cancel()

    # ------------------------------------------------------------------ main
    async def run(self) -> RunOutcome:
        self._loop = asyncio.get_running_loop()
        self._started_wall = time.time()
        self._stop = stop = _Stop()
        self._slots: SlotPool = self._slots_arg or LocalSlots(self._ceiling)
        self._limiter = RateLimiter(self.provider.limits.max_rps)
        self._poller = Poller(self.provider, self._limiter, PollSchedule(self.provider.poll_hint),
                              on_fatal=self._fatal)
        for job in self.jobs:  # resume: rows cancelled last time are wanted again
            if job.state is State.CANCELLED:
                self._move(job, State.PENDING)
        in_flight = [j for j in self.jobs if j.state in (State.SUBMITTING, State.GENERATING)]
        pending = [j for j in self.jobs if j.state is State.PENDING]
        self._source: JobSource = self._source_arg or QueueSource(in_flight + pending)
        context = RunContext(self)
        for observer in self.observers:
            bind = getattr(observer, "bind", None)
            if bind is not None:
                bind(context)
        self._emit("start")
        snapshots = asyncio.create_task(self._snapshot_loop(), name="videobatch-snapshots")
        self._spawn_workers()
        try:
            await self._all_workers_done()
        except asyncio.CancelledError:
            # Our caller was cancelled (Ctrl-C): stop the workers and leave a resumable state.
            self._cancel_now()
            await asyncio.gather(*self._workers, return_exceptions=True)
            await self._finish(snapshots)
            raise
        await self._finish(snapshots)
        if stop.crash is not None:
            raise stop.crash
        return RunOutcome(
            counts=Counter(j.state for j in self.jobs),
            elapsed=self.progress.elapsed,
            cancelled=stop.cancelled,
            stopped_by=stop.fatal or stop.no_submit,
            polls=self._poller.polls,
            submits=self._submits,
        )

    def _spawn_workers(self) -> None:
        """Enough workers for the queued rows, up to the slot ceiling."""
        alive = [w for w in self._workers if not w.done()]
        backlog = self._source.backlog()
        wanted = self._ceiling - len(alive)
        for _ in range(wanted if backlog is None else min(wanted, backlog)):
            alive.append(asyncio.create_task(self._worker(), name="videobatch-worker"))
        self._workers = alive

    async def _all_workers_done(self) -> None:
        # Workers may be added while we wait (retry during the run), so wait until none is left.
        while any(not w.done() for w in self._workers):
            await asyncio.gather(*self._workers, return_exceptions=True)

    def retry(self, keys: Sequence[str] | None = None) -> None:
        """Queue failed rows again while the run goes on (all failed rows, or those ``keys``).

        Each retried row is a new, separately paid submission. Safe to call from any thread.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the run is not active; use Batch.retry_failed() and start again")
        wanted = None if keys is None else set(keys)
        source = self._source
        if not isinstance(source, QueueSource):
            raise RuntimeError("this run takes its rows from a shared queue; retry through it")

        def requeue() -> None:
            stop = self._stop
            if stop is None or stop.cancelled or stop.fatal:
                return
            for job in self.jobs:
                if job.state is State.FAILED and (wanted is None or job.key in wanted):
                    self._record_change(job, State.FAILED, job.retry())
                    source.add(job)
            self._spawn_workers()

        loop.call_soon_threadsafe(requeue)

    async def _finish(self, snapshots: asyncio.Task[None]) -> None:
        snapshots.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await snapshots
        await self._poller.aclose()
        assert self._stop is not None
        if self._stop.cancelled:
            for job in self.jobs:
                if job.state is State.PENDING:
                    self._move(job, State.CANCELLED)
        for observer in self.observers:
            drain = getattr(observer, "drain", None)
            if drain is not None:
                try:
                    await drain(self._stop.cancelled)
                except Exception:
                    log.exception("observer %r failed while finishing; continuing", observer)
        self._emit("finish")
        await self.store.close(self.jobs)

    async def _snapshot_loop(self) -> None:
        """fsync the journal every second; fold it into a snapshot every ``snapshot_every`` s."""
        every = self.settings.snapshot_every
        last = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, every))
            self.store.sync()
            if time.monotonic() - last >= every:
                await self.store.snapshot(self.jobs)
                last = time.monotonic()

    # ------------------------------------------------------------------ one worker
    async def _worker(self) -> None:
        try:
            await self._work()
        except Exception as exc:
            # Not a provider answer but a bug or a broken part: never let capacity shrink
            # silently. Stop every worker, keep the checkpoint resumable, re-raise from run().
            log.exception("a videobatch worker crashed; stopping the run")
            stop = self._stop
            assert stop is not None
            if stop.crash is None:
                stop.crash = exc
            self._halt()

    async def _work(self) -> None:
        stop = self._stop
        assert stop is not None
        while not stop.fatal and not stop.cancelled and not stop.crash:
            if stop.no_submit and self._source.backlog() is None:
                # A shared queue (service mode) and an account that takes no more work: stop
                # taking requests rather than take them only to hand them back; the rows in flight
                # finish and run() reports the account error.
                return
            job = await self._source.next()
            if job is None:
                return
            try:
                if job.state is State.PENDING and stop.no_submit:
                    continue
                await self._slots.acquire(job)
                self._emit("slots")
                try:
                    await self._drive(job)
                except ProviderError as exc:
                    self._fatal(exc)
                finally:
                    await self._slots.release(job)
                    self._emit("slots")
            finally:
                await self._source.done(job)

    async def _drive(self, job: Job) -> None:
        if job.state is State.SUBMITTING:
            await self._reconcile(job)
        if job.state is State.PENDING:
            await self._submit(job)
        if job.state is State.GENERATING:
            await self._await_result(job)

    # ------------------------------------------------------------------ submit
    async def _submit(self, job: Job) -> None:
        stop = self._stop
        assert stop is not None
        transient = 0  # failures that count against max_attempts
        pushback = 0  # rate-limit / slots-busy answers in a row
        key = job.idempotency_key(self.store.run_id)
        while job.state is State.PENDING:
            if stop.no_submit or stop.fatal or stop.cancelled:
                return
            await self._limiter.acquire()
            self._move(job, State.SUBMITTING, attempts=job.attempts + 1)  # durable before sending
            self._submits += 1
            try:
                status = await self.provider.submit(job.request, key)
            except (RateLimited, SlotsBusy) as exc:
                exc.for_row(job.key)
                pushback += 1
                self._move(job, State.PENDING, error_kind=exc.kind, error=str(exc))
                if isinstance(exc, SlotsBusy):
                    await self._slots.shrink()
                else:
                    self._limiter.penalize(exc.retry_after or 1.0)
                delay = backoff(pushback, base=max(1.0, self.settings.backoff_base),
                                cap=self.settings.backoff_cap, retry_after=exc.retry_after)
                self._emit("retry", job, error=exc, delay=delay)
                await self._sleep_unless_stopped(delay)
                continue
            except TransientError as exc:
                exc.for_row(job.key)
                if exc.maybe_accepted:
                    found = await self._lookup(job, key)
                    if found is not None:
                        self._adopt(job, found)
                        return
                transient += 1
                if transient >= self.settings.max_attempts:
                    self._move(job, State.FAILED, error_kind=exc.kind,
                               error=f"gave up after {transient} attempts: {exc}")
                    return
                self._move(job, State.PENDING, error_kind=exc.kind, error=str(exc))
                delay = backoff(transient, base=self.settings.backoff_base,
                                cap=self.settings.backoff_cap, retry_after=exc.retry_after)
                self._emit("retry", job, error=exc, delay=delay)
                await self._sleep_unless_stopped(delay)
                continue
            except AccountError as exc:
                # Nothing was created; the row waits for a resumed run once the account is fixed.
                self._move(job, State.PENDING, error_kind=exc.kind, error=str(exc.for_row(job.key)))
                stop.no_submit = stop.no_submit or exc
                return
            except AuthError:
                self._move(job, State.PENDING)
                raise
            except ProviderError as exc:  # rejected: this row, for good
                self._move(job, State.FAILED, error_kind=exc.kind, error=exc.message)
                return
            self._adopt(job, status)

    async def _lookup(self, job: Job, key: str) -> TaskStatus | None:
        """Ask the provider whether a submit under ``key`` created a task (retrying transients)."""
        failures = 0
        while True:
            await self._limiter.acquire()
            try:
                return await self.provider.find(key)
            except NotFoundError:
                return None
            except TransientError as exc:
                failures += 1
                delay = backoff(failures, base=self.settings.backoff_base,
                                cap=self.settings.backoff_cap, retry_after=exc.retry_after)
                self._emit("retry", job, error=exc.for_row(job.key), delay=delay)
                await asyncio.sleep(delay)

    async def _reconcile(self, job: Job) -> None:
        """A row left ``submitting`` by a crash: adopt its task if the provider has one."""
        found = await self._lookup(job, job.idempotency_key(self.store.run_id))
        if found is None:
            self._move(job, State.PENDING)
        else:
            self._adopt(job, found)

    def _adopt(self, job: Job, status: TaskStatus) -> None:
        accepted = status.created_at or time.time()
        if job.state is not State.GENERATING:
            self._move(job, State.GENERATING, task_id=status.task_id, submitted_at=accepted,
                       error_kind=None, error=None)
        if status.state.done:
            self._finish_job(job, status)

    # ------------------------------------------------------------------ wait for the result
    async def _await_result(self, job: Job) -> None:
        assert job.task_id is not None
        accepted = job.submitted_at or time.time()
        timeout = self.settings.timeout
        # The wait is counted from acceptance, or from this run's start for a row that was already
        # waiting before (resumed after a crash, or re-attached after a timeout).
        waiting_since = max(accepted, self._started_wall)
        remaining = None if timeout is None else max(0.0, waiting_since + timeout - time.time())
        try:
            status = await asyncio.wait_for(self._poller.wait(job.task_id, accepted), remaining)
        except TimeoutError:
            self._move(job, State.FAILED, error_kind="timeout",
                       error=f"no result {timeout:.0f}s after the provider accepted task "
                             f"{job.task_id}; it may still finish at the provider")
            return
        except NotFoundError as exc:
            self._move(job, State.FAILED, error_kind=exc.kind,
                       error=f"the provider no longer knows task {job.task_id}: {exc.message}")
            return
        except AuthError:
            raise
        except ProviderError as exc:
            self._move(job, State.FAILED, error_kind=exc.kind, error=exc.message)
            return
        self._finish_job(job, status)

    def _finish_job(self, job: Job, status: TaskStatus) -> None:
        done_at = status.finished_at or time.time()
        if status.state is TaskState.SUCCEEDED and status.videos:
            video = status.videos[0]
            self._move(job, State.COMPLETED, completed_at=done_at, video_url=video.url,
                       video_id=video.id, video_duration=video.duration,
                       expires_at=status.expires_at, error_kind=None, error=None)
            self._grow_slots()
        elif status.state is TaskState.SUCCEEDED:
            self._move(job, State.FAILED, completed_at=done_at, error_kind="no_video",
                       error=f"task {status.task_id} succeeded without a video")
        else:
            self._move(job, State.FAILED, completed_at=done_at, error_kind="generation_failed",
                       error=status.message or "the provider reports the task failed")

    def _grow_slots(self) -> None:
        if self._slots.limit < self._slots.ceiling:
            asyncio.get_running_loop().create_task(self._slots.grow())

    # ------------------------------------------------------------------ helpers
    def _fatal(self, exc: ProviderError) -> None:
        stop = self._stop
        assert stop is not None
        if stop.fatal is None:
            stop.fatal = exc
            self._halt()

    def _halt(self) -> None:
        """Stop every other worker now (their rows keep their state for the next run)."""
        stop = self._stop
        assert stop is not None
        stop.event.set()
        for worker in self._workers:
            if worker is not asyncio.current_task():
                worker.cancel()

    async def _sleep_unless_stopped(self, delay: float) -> None:
        stop = self._stop
        assert stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.event.wait(), delay)

    def _move(self, job: Job, new: State, **fields: Any) -> None:
        old = job.state
        self._record_change(job, old, job.transition(new, **fields))

    def _record_change(self, job: Job, old: State, record: dict[str, Any]) -> None:
        """Store a transition ``job`` has made from ``old`` and tell the observers."""
        self.store.append(record)
        new = job.state
        counts = self.progress.counts
        counts[old] -= 1
        counts[new] += 1
        if job.terminal:
            self.progress.done_this_run += 1
            if job.completed_at and job.submitted_at:
                self.progress.finished_durations.append(job.completed_at - job.submitted_at)
        self._emit("transition", job, old=old, new=new)

    def _emit(self, kind: EventKind, job: Job | None = None, **extra: Any) -> None:
        if not self.observers:
            return
        if kind == "slots":
            self.progress.slots_in_use = self._slots.in_use
            self.progress.slots_limit = self._slots.limit
        notify(self.observers, Event(kind, self.progress, job, **extra))
