"""The life of one row in a run: submit it (the intent durable first), settle a submit in doubt,
wait for its task, and record how it ended.

``Rows`` holds what that takes — the provider, the run's retry policies, its slots,
poller and reconciler — and changes rows only through the runner's ``move`` (journal first, then
observers). The runner (``_runner``) decides *which* row a worker drives and *when* the run ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ._gate import OPEN, Gate
from ._jobs import CANCELLED, COMPLETED, FAILED, GENERATING, PENDING, SUBMITTING, UNKNOWN, Job, State
from ._pacing import SlotPool
from ._poll_schedule import kind_of
from ._polling import Poller
from ._reconcile import Found, Free, Reconciler, Unknown
from ._retry import RetryState
from ._settings import RunSettings, Stop
from ._spend import BUDGET, Ledger
from .errors import (
    AccountError,
    AuthError,
    KeyAlreadyUsed,
    ModelRefused,
    NotFoundError,
    ProviderError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from .providers.base import Provider, TaskState, TaskStatus
from .request import VideoRequest

log = logging.getLogger("videobatch")

__all__ = ["Rows"]

Move = Callable[..., None]
Emit = Callable[..., None]


class Rows:
    """Drives single rows for one run (see the module docstring)."""

    def __init__(self, *, provider: Provider, settings: RunSettings, stop: Stop,
                 slots: SlotPool, poller: Poller, reconciler: Reconciler, run_id: str,
                 run_began: float,
                 started_wall: float, move: Move, emit: Emit,
                 durable: Callable[[], Awaitable[None]], ledger: Ledger, gate: Gate = OPEN) -> None:
        self.provider = provider
        self.settings = settings
        self._policies = settings.submit_policy(), settings.pushback_policy()  # built once
        self.stop = stop
        self.slots = slots
        self.poller = poller
        self.reconciler = reconciler
        self.run_id = run_id
        self.run_began = run_began
        self.started_wall = started_wall
        self._move = move
        self.emit = emit
        self.durable = durable  # the store's: the intent to pay survives power loss before paying
        self.ledger = ledger  # the run's spend and budget, shared by every pool
        self.gate = gate  # asked right before every paid request
        self.submits = 0
        # Rows whose task this pool opened in this run: how many the provider took at once is
        # read from them (shown when the run looked for an unstated limit).
        self._opened: dict[str, Job] = {}
        # Rows Kling-style "every slot busy" refused, waiting: each task of ours that ends wakes
        # one of them at once (its slot at the provider is free now), not at its back-off's end.
        self._freed: deque[asyncio.Future[None]] = deque()

    def move(self, job: Job, new: State, **fields: Any) -> None:
        """The runner's ``move`` (journal first, then observers), noting the tasks it opens."""
        was = job.state
        self._move(job, new, **fields)
        if new is GENERATING and was is not GENERATING:
            self._opened[job.key] = job
        elif was is GENERATING and new is not GENERATING:
            while self._freed:
                waiter = self._freed.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    break

    async def _until_freed(self, delay: float, pushback: RetryState) -> None:
        """After "every slot busy": wait ``delay`` seconds (another system's task may end), or
        less when a task of ours ends first, or until the run stops."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._freed.append(waiter)

        async def back_off() -> None:
            await pushback.sleep(delay, self.stop.event)

        sleeper: asyncio.Future[None] = asyncio.ensure_future(back_off())
        either: list[asyncio.Future[None]] = [waiter, sleeper]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            if not waiter.done():
                waiter.cancel()

    @property
    def most_open(self) -> int:
        """The most tasks of this pool the provider had at once in this run, by each task's own
        times (accepted at ``submitted_at``, ended at ``completed_at``, the provider's clock where
        it says): a task that ended before it was polled counts only until it ended."""
        edges = []
        for job in self._opened.values():
            if job.submitted_at is None:
                continue
            edges.append((job.submitted_at, 1))
            ended = job.completed_at if job.completed_at is not None else (
                job.updated_at if job.state is not GENERATING else None)
            if ended is not None:
                edges.append((max(ended, job.submitted_at), -1))  # ends sort before starts
        most = now = 0
        for _, step in sorted(edges):
            now += step
            most = max(most, now)
        return most

    # ------------------------------------------------------------------ submit
    async def submit(self, job: Job, request: VideoRequest | None = None) -> bool:
        """Send ``job``'s ``request`` (its own unless it moved to a fallback) until it is accepted,
        refused for good, or the run stops submitting. True when the row is left unpaid because
        the provider refuses the account or the model (a fallback may take it)."""
        request = request or job.request
        stop = self.stop
        transient = RetryState(self._policies[0])  # counts against max_attempts
        pushback = RetryState(self._policies[1])  # "too fast" / "slots busy"
        key = job.idempotency_key(self.run_id)
        provider = self.provider.name
        model = self.provider.model_id(request) or ""
        pool = (provider, model)
        cost = self.provider.estimate_cost(request)
        while job.state is PENDING:
            if stop.closed(provider) or pool in stop.blocked:
                return True
            if stop.fatal or stop.cancelled:
                return False
            # Reserve, then record the intent, in one step (no await between): atomic with
            # respect to every other worker. A refusal that created nothing releases it.
            if not self.ledger.admits(cost):
                self.move(job, PENDING, error_kind=BUDGET,
                          error=self.ledger.refusal(cost, f"{provider} {model}".strip()))
                return False
            self.move(job, SUBMITTING, attempts=job.attempts + 1, provider_used=provider,
                      model_used=model or None, cost_estimated=cost)
            await self.durable()  # fsync'ed before the request leaves (shared with other rows)
            refused = await self.gate.refusal(job, request)
            if refused:  # nothing leaves: the row fails, unpaid
                self.move(job, FAILED, error_kind=RejectedError.kind, error=refused)
                return False
            sent_at = job.updated_at
            self.submits += 1
            try:
                status = await self.provider.submit(request, key)
            except (RateLimited, SlotsBusy) as exc:
                exc.for_row(job.key)
                self.move(job, PENDING, error_kind=exc.kind, error=str(exc))
                if isinstance(exc, SlotsBusy):
                    await self.slots.shrink()
                # (a "too fast" answer already slowed the run's limiter on the wire: _http)
                delay = pushback.failed(exc.retry_after) or 0.0
                self.emit("retry", job, error=exc, delay=delay)
                if isinstance(exc, SlotsBusy):
                    await self._until_freed(delay, pushback)
                else:
                    await pushback.sleep(delay, stop.event)
                continue
            except KeyAlreadyUsed as exc:
                # Paid earlier (a lost answer, a crash): adopt that task, never pay again on our own.
                await self._settle(job, request, key, sent_at, exc.for_row(job.key), key_used=True)
                return False
            except TransientError as exc:
                exc.for_row(job.key)
                if exc.maybe_accepted and not await self._settle(job, request, key, sent_at, exc):
                    return False  # adopted, or unknown
                wait = transient.failed(exc.retry_after)
                if wait is None:
                    self.move(job, FAILED, error_kind=exc.kind,
                               error=f"gave up after {transient.failures} attempts: {exc}")
                    return False
                self.move(job, PENDING, error_kind=exc.kind, error=str(exc))
                self.emit("retry", job, error=exc, delay=wait)
                await transient.sleep(wait, stop.event)
                continue
            except ModelRefused as exc:
                # Not this row's fault and nothing was created: it waits, unpaid, for a resumed run
                # once the model is fixed; enough of these in a row and the model is not tried again.
                self.move(job, PENDING, error_kind=exc.kind, error=str(exc.for_row(job.key)))
                stop.refused(provider, exc.model or model, exc)
                return True
            except AccountError as exc:
                # Nothing was created; the row waits for a resumed run once the account is fixed.
                self.move(job, PENDING, error_kind=exc.kind, error=str(exc.for_row(job.key)))
                stop.close(provider, exc)
                return True
            except AuthError:
                self.move(job, PENDING)
                raise
            except ProviderError as exc:  # rejected: this row, for good
                self.move(job, FAILED, error_kind=exc.kind, error=exc.message)
                return False
            stop.refusals.pop(pool, None)  # accepted: its earlier refusals were not in a row
            self.adopt(job, status)
            if self.slots.in_use >= self.slots.limit:
                self._grow_slots()  # every slot taken and accepted: there may be more (probing)
        return False

    async def _settle(self, job: Job, request: VideoRequest, key: str, sent_at: float,
                      cause: ProviderError, *,
                      key_used: bool = False) -> bool:
        """A submit of ``job`` may have created a task: find out. True when the key is free (the
        row may be sent again); otherwise the row has adopted its task or is ``unknown``."""

        def on_retry(failures: int, exc: Exception, delay: float) -> None:
            if isinstance(exc, ProviderError):
                self.emit("retry", job, error=exc.for_row(job.key), delay=delay)

        verdict = await self.reconciler.check(key, sent_at, key_used=key_used, on_retry=on_retry,
                                              request=request)
        if isinstance(verdict, Found):
            self.adopt(job, verdict.status)
            return False
        if isinstance(verdict, Free):
            return True
        self._unknown(job, key, sent_at, verdict, cause)
        return False

    def _unknown(self, job: Job, key: str, sent_at: float, verdict: Unknown,
                 cause: ProviderError | None) -> None:
        request_id = verdict.request_id or (cause.request_id if cause is not None else None)
        said = f" after: {cause.message}" if cause is not None else ""
        self.move(job, UNKNOWN, submitted_at=sent_at, error_kind="outcome_unknown",
                   error=f"a paid request may exist{said}; {verdict.reason}. It is checked again "
                         f"on every resume and never sent again on its own. Check idempotency key "
                         f"{key}" + (f" (provider request id {request_id})" if request_id else "")
                         + " in the provider's console; to send it again anyway (it may be paid "
                         "twice): retry --unknown")

    async def reconcile(self, job: Job, request: VideoRequest | None = None) -> None:
        """A row left ``submitting`` by a crash, or ``unknown`` since an earlier run: adopt its
        task if the provider has one; send it again only if the provider says the key is free."""
        key = job.idempotency_key(self.run_id)
        # When it was sent: kept in submitted_at for an unknown row. For a row left submitting by a
        # crash, its record's time if it was replayed from the journal (or a service's job hash),
        # but a snapshot keeps no send time: never later than the run's beginning, to be safe.
        sent_at = (job.submitted_at if job.state is UNKNOWN else None) \
            or min(job.updated_at, self.run_began)

        def on_retry(failures: int, exc: Exception, delay: float) -> None:
            if isinstance(exc, ProviderError):
                self.emit("retry", job, error=exc.for_row(job.key), delay=delay)

        verdict = await self.reconciler.check(key, sent_at, on_retry=on_retry,
                                              request=request or job.request)
        if isinstance(verdict, Found):
            self.adopt(job, verdict.status)
        elif isinstance(verdict, Free):
            self.move(job, PENDING, error_kind=None, error=None)
        elif job.state is SUBMITTING:
            self._unknown(job, key, sent_at, verdict, None)

    def adopt(self, job: Job, status: TaskStatus) -> None:
        accepted = status.created_at or time.time()
        if job.state is not GENERATING:
            self.move(job, GENERATING, task_id=status.task_id, submitted_at=accepted,
                       error_kind=None, error=None)
        if status.state.done:
            self._finish_job(job, status)

    # ------------------------------------------------------------------ wait for the result
    async def await_result(self, job: Job) -> None:
        assert job.task_id is not None
        accepted = job.submitted_at or time.time()
        timeout = self.settings.timeout
        # The wait is counted from acceptance, or from this run's start for a row that was already
        # waiting before (resumed after a crash, or re-attached after a timeout).
        waiting_since = max(accepted, self.started_wall)
        remaining = None if timeout is None else max(0.0, waiting_since + timeout - time.time())
        try:
            if remaining is not None and remaining <= 0:
                raise TimeoutError  # as wait_for(..., 0): out of time before waiting at all
            status = await self.poller.wait(job.task_id, accepted, kind_of(job.request), remaining)
        except TimeoutError:
            self.move(job, FAILED, error_kind="timeout",
                       error=f"no result {timeout:.0f}s after the provider accepted task "
                             f"{job.task_id}; it may still finish at the provider")
            return
        except NotFoundError as exc:
            self.move(job, FAILED, error_kind=exc.kind,
                       error=f"the provider no longer knows task {job.task_id}: {exc.message}")
            return
        except AuthError:
            raise
        except ProviderError as exc:
            self.move(job, FAILED, error_kind=exc.kind, error=exc.message)
            return
        self._finish_job(job, status)

    def _finish_job(self, job: Job, status: TaskStatus) -> None:
        done_at = status.finished_at or time.time()
        # what the provider says the task cost, journaled with its end (the ledger follows: _spend)
        cost = {name: value for name, value in (("cost_actual", status.cost_actual),
                                                ("cost_units", status.cost_units)) if value is not None}
        if status.state is TaskState.SUCCEEDED and status.videos:
            video = status.videos[0]
            self.move(job, COMPLETED, completed_at=done_at, video_url=video.url,
                       video_id=video.id, video_duration=video.duration,
                       expires_at=status.expires_at, error_kind=None, error=None, **cost)
            self._grow_slots()
        elif status.state is TaskState.SUCCEEDED:
            self.move(job, FAILED, completed_at=done_at, error_kind="no_video",
                       error=f"task {status.task_id} succeeded without a video", **cost)
        else:
            self.move(job, FAILED, completed_at=done_at, error_kind="generation_failed",
                       error=status.message or "the provider reports the task failed", **cost)

    def _grow_slots(self) -> None:
        if self.slots.limit < self.slots.ceiling:
            asyncio.get_running_loop().create_task(self.slots.grow())

    async def cancel_open(self, jobs: Sequence[Job], deadline: float = 15.0) -> None:
        """A cancelled run asks the provider to stop the tasks it has open, where it can: a task
        it shows stopped before it ran (nothing charged) ends ``cancelled``, and a resume sends it
        again; one it stopped but may have charged ends ``failed`` (only a retry pays again); one it
        cannot stop (already running) stays in flight, to be collected by the next run. Bounded by
        ``deadline``."""
        if not self.provider.capabilities.cancel:
            return
        open_tasks = [j for j in jobs if j.state is GENERATING and j.task_id]

        async def one(job: Job) -> None:
            assert job.task_id is not None
            try:
                stopped = await self.provider.cancel(job.task_id)
            except ProviderError as exc:
                log.warning("row %s: could not cancel task %s at %s: %s", job.key, job.task_id,
                            self.provider.name, exc)
                return
            if stopped is False or job.state is not GENERATING:
                return
            if stopped:
                self.move(job, CANCELLED, error_kind="cancelled",
                          error=f"cancelled at {self.provider.name} before it ran; running it "
                                "again is a new, separately paid request")
            else:  # stopped, but the provider does not show it unpaid: never sent again on its own
                self.move(job, FAILED, error_kind="cancelled",
                          error=f"cancelled at {self.provider.name} (task {job.task_id}), which "
                                "may have charged for it; retry sends it again as a new, "
                                "separately paid request")

        if open_tasks:
            _, late = await asyncio.wait([asyncio.ensure_future(one(j)) for j in open_tasks],
                                         timeout=deadline)
            for task in late:
                task.cancel()
