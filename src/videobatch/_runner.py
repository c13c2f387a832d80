"""The asyncio engine that drives every row from pending to completed/failed through a provider.

- One worker per parallel slot takes the next row, submits it and waits for its task to end, then
  takes the next: a slot is held from submit until the task ends, so slots stay full.
- Rows already in flight from an earlier (crashed) run go first: ``generating`` rows are polled;
  ``submitting`` and ``unknown`` rows are reconciled by their idempotency key (``_reconcile``)
  before anything is sent again, and sent again only when the provider says the key is free.
- Every transition goes to the store *before* the side effect it announces (``submitting`` before
  the paid request leaves, which the run's ``_gate`` may still refuse).
- Transient failures are retried under the run's retry policy (``_retry``); permanent ones fail
  the row; auth errors stop the run; account errors stop submitting while in-flight rows finish.
  A submit whose answer was lost is reconciled; if nobody can say whether it created a task, the
  row's outcome is ``unknown``: never resubmitted on its own, re-checked on every resume.
- ``cancel()`` stops everything promptly: rows in flight keep their state for the next run to
  reconcile, rows not started become ``cancelled`` (and ``pending`` again on resume).

A mixed table's (provider, model) pools each have their own slots, poll schedule, lookups, queue
and workers (``_pools``), in one checkpoint and one set of counts. The runner knows the providers
only through ``videobatch.providers.base.Provider``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Collection, Sequence
from operator import attrgetter
from typing import Any

from ._events import Event, EventKind, Notifier, Observer, Progress, RunContext, Tally
from ._fleet import PoolKey, Providers
from ._gate import OPEN, Gate
from ._gc import frozen_for_runs
from ._jobs import GENERATING, PENDING, SUBMITTING, TERMINAL, UNKNOWN, Job, RowSnapshot, State, annotation
from ._loops import call_in_loop
from ._pacing import SlotPool
from ._plan import starting
from ._pools import Pool, Pools, slot_range
from ._rows import Rows
from ._settings import RunOutcome, RunSettings, Stop
from ._sources import JobSource, QueueSource
from ._spend import Ledger, charge
from ._store import Store
from .errors import ProviderError
from .providers.base import Provider

__all__ = ["RunContext", "RunOutcome", "RunSettings", "Runner"]  # settings re-exported for callers

log = logging.getLogger("videobatch")


class Runner:
    def __init__(
        self,
        jobs: Sequence[Job],
        provider: Provider | Providers,
        store: Store,
        settings: RunSettings | None = None,
        observers: Sequence[Observer] = (),
        *,
        source: JobSource | None = None,
        slots: SlotPool | None = None,
        gate: Gate = OPEN,
    ) -> None:
        """Drive ``jobs`` through ``provider`` (or the ``Providers`` a mixed table's rows name),
        or with ``source``/``slots`` what the source hands out under a shared slot pool (service
        mode; ``jobs`` may be empty). ``gate``: asked before every paid request (``_gate``)."""
        self.jobs = list(jobs)
        self.providers = Providers.of(provider)
        self.provider = self.providers.default
        self.store = store
        self.settings = settings or RunSettings()
        self.observers = list(observers)
        self._notify = Notifier(self.observers)  # in order, also when an observer causes an event
        self._tally = Tally(total=len(self.jobs), slots_limit=self._ceiling(self.provider)[0])
        self._tally.counts.update(map(attrgetter("state"), self.jobs))
        self._by_key: dict[str, Job] | None = None  # built on the first annotation
        self._source_arg = source
        self._slots_arg = slots
        self._gate = gate
        self._stop: Stop | None = None
        self._pools: Pools | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ledger = Ledger(())  # spent/reserved/budget of the rows: counted when the run starts

    def _ceiling(self, provider: Provider) -> tuple[int, int]:
        """A pool's parallel slots: where they start, and the most they may grow to."""
        return slot_range(provider, self.provider, self.settings.concurrency)

    # ------------------------------------------------------------------ what observers may use
    @property
    def run_id(self) -> str:
        return self.store.run_id

    def snapshot(self) -> Progress:
        """The run's counters now, frozen."""
        return self._tally.snapshot()

    def rows(self, states: Collection[State] | None = None) -> list[RowSnapshot]:
        """Snapshots of the batch's rows, all or those in ``states``."""
        wanted = frozenset(State if states is None else states)
        return [job.snapshot() for job in self.jobs if job.state in wanted]

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot:
        """Record extra result columns for ``row`` durably; returns its snapshot with them."""
        if self._by_key is None:
            self._by_key = {job.key: job for job in self.jobs}
        job = self._by_key.get(row.key)
        if job is not None:
            self.store.append(job.annotate(**extras))
            after = job.snapshot()
        else:  # service mode: the row has left this worker; the record is keyed by row alone
            self.store.append(annotation(row.key, extras))
            after = row.with_extras(**extras)
        self._emit_row("annotate", after)
        return after

    # ------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Stop the run soon; safe to call from any thread."""
        call_in_loop(self._loop, self._cancel_now, wait=None)

    def _cancel_now(self) -> None:
        if self._stop is not None and not self._stop.cancelled:
            self._stop.cancelled = True
            self._stop.event.set()
            for worker in self._workers():
                worker.cancel()

    # ------------------------------------------------------------------ main
    async def run(self) -> RunOutcome:
        with frozen_for_runs():  # the rows, alive all run long, are not walked by every collection
            return await self._run()

    async def _run(self) -> RunOutcome:
        self._loop = asyncio.get_running_loop()
        self._started_wall = time.time()
        self._stop = stop = Stop()
        self._closing = False
        self.ledger = Ledger(self.jobs, self.settings.max_cost, self.providers.estimate_cost,
                             dropped=self.store.cost_dropped)
        # Which rows it drives: the rule a plan follows too. Rows cancelled last time are wanted
        # again on a resume; in doubt first (their slots may be taken at the provider), then rows
        # already accepted, then the rest.
        resumed, in_doubt, accepted, pending = starting(self.jobs, self.settings)
        for job in resumed:
            self._move(job, State.PENDING)
        in_flight = in_doubt + accepted
        self._pools = pools = Pools(
            self.providers, settings=self.settings, stop=stop, ceiling=self._ceiling,
            slots=self._slots_arg, on_fatal=self._fatal, gate=self._gate,
            make_rows=functools.partial(Rows, settings=self.settings, stop=stop,
                                        run_id=self.store.run_id, run_began=self.store.created_at,
                                        started_wall=self._started_wall, move=self._move,
                                        emit=self._emit, durable=self.store.durable,
                                        ledger=self.ledger, gate=self._gate))
        if self._source_arg is not None:  # service mode: one pool, fed by the shared queue
            pools.open((self.provider.name, None), self.provider, self._source_arg)
        elif len(self.providers) == 1 and not self.provider.limits.per_model:
            pools.open((self.provider.name, None), self.provider, QueueSource(in_flight + pending))
        else:
            for job in in_flight + pending:
                pools.queue(job)
        self._tally.slots_limit = pools.slots_limit
        context = RunContext(self)
        for observer in self.observers:
            bind = getattr(observer, "bind", None)
            if bind is not None:
                bind(context)
        self._emit("start")
        snapshots = asyncio.create_task(self._snapshot_loop(), name="videobatch-snapshots")
        for pool in pools:
            self._spawn_workers(pool)
        try:
            await self._all_workers_done()
        except asyncio.CancelledError:
            # Our caller was cancelled (Ctrl-C): stop the workers and leave a resumable state.
            self._cancel_now()
            await asyncio.gather(*self._workers(), return_exceptions=True)
            await self._finish(snapshots)
            raise
        await self._finish(snapshots)
        if stop.crash is not None:
            raise stop.crash
        return RunOutcome(
            counts=Counter(j.state for j in self.jobs),
            elapsed=time.monotonic() - self._tally.started,
            cancelled=stop.cancelled,
            # (a shared queue's rows are not ours to look at: any refusal stopped this worker)
            stopped_by=stop.fatal or (self.providers.left_waiting(stop, self.jobs)
                                      if self._source_arg is None
                                      else stop.no_submit or stop.blocked_error()),
            polls=pools.polls,
            submits=pools.submits,
            slots_found=pools.found_limits(),
        )

    # ------------------------------------------------------------------ pools
    def _workers(self) -> list[asyncio.Task[None]]:
        return self._pools.workers() if self._pools is not None else []

    def _spawn_workers(self, pool: Pool) -> None:
        """Enough workers for the pool's queued rows, up to its slot ceiling."""
        alive = pool.alive()
        backlog = pool.source.backlog()
        wanted = pool.ceiling - len(alive)
        for _ in range(wanted if backlog is None else min(wanted, backlog)):
            alive.append(asyncio.create_task(self._worker(pool), name=f"videobatch-{pool.name}"))

    async def _all_workers_done(self) -> None:
        # Workers may be added while we wait (retry during the run), so wait until none is left.
        while any(not w.done() for w in self._workers()):
            await asyncio.gather(*self._workers(), return_exceptions=True)

    def retry(self, keys: Sequence[str] | None = None, *, unknown: bool = False) -> int | None:
        """Queue failed rows again while the run goes on (all failed rows, or those ``keys``);
        with ``unknown``, rows whose outcome is unknown too. Safe to call from any thread.

        Each retried row is a new, separately paid submission (an unknown row may then be paid
        twice: the user asked for it). Returns how many rows joined the run, or None when the run
        is not taking rows any more (not started, stopping, or finishing): nothing was changed and
        nothing will be sent, so the caller may queue them for the next run instead.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        if self._source_arg is not None:
            raise RuntimeError("this run takes its rows from a shared queue; retry through it")
        wanted = None if keys is None else set(keys)
        states = {State.FAILED, State.UNKNOWN} if unknown else {State.FAILED}

        def requeue() -> int | None:
            stop = self._stop
            if stop is None or stop.cancelled or stop.fatal or stop.crash or self._closing:
                return None  # teardown began: a row sent now would be paid and never polled
            moved = 0
            touched: dict[PoolKey, Pool] = {}
            assert self._pools is not None
            for job in self.jobs:
                if job.state in states and (wanted is None or job.key in wanted):
                    old, before = job.state, charge(job)
                    record = job.retry()
                    self.ledger.change(before, job)  # (a retry keeps what the row cost so far)
                    self._record_change(job, old, record)
                    pool = self._pools.queue(job)
                    touched[pool.key] = pool
                    moved += 1
            for pool in touched.values():
                self._spawn_workers(pool)
            return moved

        return call_in_loop(loop, requeue)

    async def _finish(self, snapshots: asyncio.Task[None]) -> None:
        self._closing = True  # from here on, retry() is refused: nobody would poll what it sends
        snapshots.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await snapshots
        assert self._pools is not None and self._stop is not None
        await self._pools.aclose()
        if self._stop.cancelled:
            if self._source_arg is None:  # service mode: a worker's cancel is a hand-over
                await self._pools.cancel_open(self.jobs)
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
            await self.store.durable()  # fsync in a thread: the loop goes on meanwhile
            if time.monotonic() - last >= every:
                await self.store.snapshot(self.jobs)
                last = time.monotonic()

    # ------------------------------------------------------------------ one worker
    async def _worker(self, pool: Pool) -> None:
        try:
            await self._work(pool)
        except Exception as exc:
            # Not a provider answer but a bug or a broken part: never let capacity shrink
            # silently. Stop every worker, keep the checkpoint resumable, re-raise from run().
            log.exception("a videobatch worker crashed; stopping the run")
            stop = self._stop
            assert stop is not None
            if stop.crash is None:
                stop.crash = exc
            self._halt()

    async def _work(self, pool: Pool) -> None:
        stop = self._stop
        assert stop is not None
        source, slots, name = pool.source, pool.slots, pool.provider.name
        while not stop.fatal and not stop.cancelled and not stop.crash:
            if stop.closed(name) and source.backlog() is None:
                # A shared queue (service mode) and an account that takes no more work: stop
                # taking requests rather than take them only to hand them back; the rows in flight
                # finish and run() reports the account error.
                return
            job = await source.next()
            if job is None:
                return
            try:
                if job.state is PENDING and stop.closed(name):
                    self._fail_over(job)
                    continue
                await slots.acquire(job)
                self._emit("slots")
                try:
                    await self._drive(pool, job)
                except ProviderError as exc:  # auth (or a provider breaking its contract)
                    self._fatal(exc.for_row(job.key))
                finally:
                    await slots.release(job)
                    self._emit("slots")
            finally:
                await source.done(job)

    async def _drive(self, pool: Pool, job: Job) -> None:
        rows, request = pool.rows, self.providers.request_of(job)
        if job.state in (SUBMITTING, UNKNOWN):
            await rows.reconcile(job, request)
        if job.state is PENDING and await rows.submit(job, request):
            self._fail_over(job)  # refused, unpaid: on to its fallback, if it has one
        if job.state is GENERATING:
            await rows.await_result(job)

    def _fail_over(self, job: Job) -> bool:
        """An unpaid row its provider refused for account or model reasons goes on to its next
        fallback (``videobatch.fallback``), if it has one; True when it moved."""
        if self._pools is None or not self.providers.fail_over(job):
            return False
        self._spawn_workers(self._pools.queue(job))
        return True

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
        for worker in self._workers():
            if worker is not asyncio.current_task():
                worker.cancel()

    def _move(self, job: Job, new: State, **fields: Any) -> None:
        old, before = job.state, charge(job)
        record = job.transition(new, **fields)
        self.ledger.change(before, job)  # before observers hear of it: their figures are current
        self._record_change(job, old, record)

    def _record_change(self, job: Job, old: State, record: dict[str, Any]) -> None:
        """Store a transition ``job`` has made from ``old`` and tell the observers."""
        self.store.append(record)
        new = job.state
        counts = self._tally.counts
        counts[old] -= 1
        counts[new] += 1
        if new in TERMINAL:
            self._tally.done_this_run += 1
        self._emit("transition", job, old=old, new=new)

    def _emit(self, kind: EventKind, job: Job | None = None, **extra: Any) -> None:
        if self.observers:
            self._emit_row(kind, None if job is None else job.snapshot(), **extra)

    def _emit_row(self, kind: EventKind, row: RowSnapshot | None, **extra: Any) -> None:
        if not self.observers:
            return
        if kind == "slots" and self._pools is not None:
            self._tally.slots_in_use = self._pools.slots_in_use
            self._tally.slots_limit = self._pools.slots_limit
        self._notify(Event(kind, self._tally.snapshot(), row, **extra))
