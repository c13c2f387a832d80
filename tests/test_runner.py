"""The runner against a scripted in-memory provider: retries, permanent failures, slots, cancel."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from fakes import ScriptedProvider
from videobatch._jobs import Job, State
from videobatch._runner import Runner, RunSettings
from videobatch._store import Store
from videobatch.errors import AccountError, AuthError
from videobatch.request import VideoRequest


def make_jobs(prompts: list[str]) -> list[Job]:
    return [Job(key=f"r{i}", index=i, request=VideoRequest(prompt=p)) for i, p in enumerate(prompts)]


def go(jobs, provider, **settings):
    runner = Runner(jobs, provider, Store(), RunSettings(backoff_base=0.01, backoff_cap=0.05, **settings))
    return asyncio.run(runner.run())


def test_all_rows_complete_and_slots_never_exceed_limit():
    provider = ScriptedProvider(max_parallel=3)
    jobs = make_jobs([f"clip {i}" for i in range(20)])
    outcome = go(jobs, provider)
    assert outcome.counts[State.COMPLETED] == 20
    assert all(j.video_url and j.task_id and j.attempts == 1 for j in jobs)
    assert provider.active_peak <= 3
    assert max(provider.accepted.values()) == 1


def test_transient_errors_are_retried_then_succeed():
    provider = ScriptedProvider()
    jobs = make_jobs(["a [transient:2]"])
    go(jobs, provider)
    assert jobs[0].state is State.COMPLETED
    assert jobs[0].attempts == 3
    assert sum(provider.accepted.values()) == 1


def test_transient_errors_give_up_after_max_attempts():
    provider = ScriptedProvider()
    jobs = make_jobs(["a [transient:9]"])
    go(jobs, provider, max_attempts=3)
    assert jobs[0].state is State.FAILED
    assert jobs[0].error_kind == "transient"
    assert "3 attempts" in (jobs[0].error or "")
    assert sum(provider.accepted.values()) == 0


def test_permanent_rejection_is_not_retried():
    provider = ScriptedProvider()
    jobs = make_jobs(["a [reject]", "fine"])
    go(jobs, provider)
    assert jobs[0].state is State.FAILED and jobs[0].error_kind == "rejected"
    assert jobs[0].error == "content policy"
    assert sum(provider.submit_calls.values()) == 2  # one each: the rejected row was not retried
    assert jobs[1].state is State.COMPLETED


def test_generation_failure_fails_the_row_with_the_reason():
    jobs = make_jobs(["a [genfail]"])
    go(jobs, ScriptedProvider())
    assert jobs[0].state is State.FAILED
    assert jobs[0].error_kind == "generation_failed" and jobs[0].error == "generation failed"


def test_lost_answer_is_reconciled_not_resubmitted():
    provider = ScriptedProvider()
    jobs = make_jobs(["a [lost]", "b [lost]"])
    go(jobs, provider)
    assert [j.state for j in jobs] == [State.COMPLETED, State.COMPLETED]
    assert all(n == 1 for n in provider.submit_calls.values())  # found by key, never sent again
    assert all(n == 1 for n in provider.accepted.values())


def test_slots_busy_and_rate_limits_back_off_without_failing():
    provider = ScriptedProvider(max_parallel=4)
    jobs = make_jobs(["a [slots:3]", "b [rate:3]", "c"])
    go(jobs, provider, max_attempts=2)  # pushback does not count against max_attempts
    assert all(j.state is State.COMPLETED for j in jobs)
    assert jobs[0].attempts == 4


def test_flaky_polls_do_not_fail_the_row():
    jobs = make_jobs(["a [pollflaky:3]"])
    go(jobs, ScriptedProvider(latency=0.0))
    assert jobs[0].state is State.COMPLETED


def test_auth_error_stops_the_run_and_leaves_rows_pending():
    provider = ScriptedProvider(max_parallel=1)
    jobs = make_jobs(["a [auth]", "b", "c"])
    outcome = go(jobs, provider)
    assert isinstance(outcome.stopped_by, AuthError)
    assert jobs[0].state is State.PENDING
    assert sum(provider.accepted.values()) == 0


def test_account_error_stops_submitting_but_in_flight_rows_finish():
    provider = ScriptedProvider(max_parallel=2, latency=0.1)
    jobs = make_jobs(["a", "b [account]", "c", "d"])
    outcome = go(jobs, provider)
    assert isinstance(outcome.stopped_by, AccountError)
    assert jobs[0].state is State.COMPLETED
    assert jobs[1].state is State.PENDING and jobs[1].error_kind == "account"
    assert {jobs[2].state, jobs[3].state} <= {State.PENDING, State.COMPLETED}


def test_timeout_fails_a_row_that_never_finishes():
    jobs = make_jobs(["slow"])
    go(jobs, ScriptedProvider(latency=5.0), timeout=0.2)
    assert jobs[0].state is State.FAILED and jobs[0].error_kind == "timeout"
    assert jobs[0].task_id in (jobs[0].error or "")


def test_cancel_leaves_in_flight_rows_resumable_and_pending_rows_cancelled():
    provider = ScriptedProvider(max_parallel=2, latency=10.0)
    jobs = make_jobs([f"clip {i}" for i in range(6)])
    runner = Runner(jobs, provider, Store(), RunSettings())

    async def scenario():
        task = asyncio.create_task(runner.run())
        while sum(provider.accepted.values()) < 2:
            await asyncio.sleep(0.01)
        runner.cancel()
        return await asyncio.wait_for(task, 5)

    outcome = asyncio.run(scenario())
    assert outcome.cancelled
    states = [j.state for j in jobs]
    assert states.count(State.GENERATING) == 2
    assert states.count(State.CANCELLED) == 4

    # Resume with the same jobs: in-flight tasks are polled (not resubmitted), cancelled rows run.
    provider.latency = 0.0
    provider.poll_hint = ScriptedProvider(latency=0.0).poll_hint
    for t in provider.tasks.values():
        t["ready"] = time.monotonic()
    go(jobs, provider)
    assert all(j.state is State.COMPLETED for j in jobs)
    assert max(provider.accepted.values()) == 1 and len(provider.accepted) == 6


def test_submitting_rows_are_reconciled_by_idempotency_key():
    provider = ScriptedProvider()
    jobs = make_jobs(["a", "b"])
    store = Store(run_id="run1")
    # Row a: the submit reached the provider before the crash; row b: it never left the process.
    asyncio.run(provider.submit(jobs[0].request, jobs[0].idempotency_key("run1")))
    for j in jobs:
        j.transition(State.SUBMITTING, attempts=1)
    asyncio.run(Runner(jobs, provider, store, RunSettings()).run())
    assert all(j.state is State.COMPLETED for j in jobs)
    assert provider.submit_calls[jobs[0].idempotency_key("run1")] == 1
    assert provider.submit_calls[jobs[1].idempotency_key("run1")] == 1
    assert jobs[0].attempts == 1


class SlotWatcher(ScriptedProvider):
    """Counts the slots the runner holds: tasks it submitted and has not yet seen end.

    That is what the account charges against its parallel limit from the runner's side, and it is
    measurable even when tasks take no time at all (latency 0: a task is done before its first poll,
    but the runner's slot stays taken until it polls).
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self.held: set[str] = set()
        self.held_peak = 0
        self.held_at_submit: list[int] = []  # slots held just after each submit

    async def submit(self, request, idempotency_key):
        answer = await super().submit(request, idempotency_key)
        self.held.add(answer.task_id)
        self.held_peak = max(self.held_peak, len(self.held))
        self.held_at_submit.append(len(self.held))
        return answer

    async def status(self, task_id):
        answer = await super().status(task_id)
        if answer.state.done:
            self.held.discard(task_id)
        return answer


@pytest.mark.parametrize("latency", [0.0, 0.02])
def test_runner_keeps_all_slots_busy(latency):
    provider = SlotWatcher(max_parallel=5, latency=latency)
    jobs = make_jobs([f"clip {i}" for i in range(40)])
    go(jobs, provider)
    assert all(j.state is State.COMPLETED for j in jobs)
    assert provider.held_peak == 5  # every slot was used, none beyond the account's limit
    # Freed slots were refilled up to the limit again and again, not only at the start: 40 rows on
    # 5 slots are 8 waves, each refilled to 5 (tasks of one latency end together, in one poll);
    # half of them leaves room for a loaded machine interleaving a poll with the refills.
    refilled = sum(n == 5 for n in provider.held_at_submit)
    assert refilled >= 4, provider.held_at_submit
    assert not provider.held  # and every slot was given back
    if latency:
        assert provider.active_peak == 5


def test_acting_observers_annotate_rows_durably_and_are_drained(tmp_path):
    from videobatch._inputs import load_prompts
    from videobatch._results import results
    from videobatch._store import Checkpoint

    class Downloader:
        def __init__(self):
            self.pending = []
            self.drained = None

        def bind(self, context):
            self.context = context

        def __call__(self, event):
            if event.kind == "transition" and event.new is State.COMPLETED:
                self.pending.append(asyncio.get_running_loop().create_task(self.fetch(event.job)))

        async def fetch(self, job):
            await asyncio.sleep(0.01)
            self.context.annotate(job, local_path=f"/videos/{job.key}.mp4", bytes=123)

        async def drain(self, cancelled):
            await asyncio.gather(*self.pending)
            self.drained = cancelled

    path = tmp_path / "run.parquet"
    store, jobs = Checkpoint.open(path, load_prompts(["a", "b"]), settings={})
    observer = Downloader()
    asyncio.run(Runner(jobs, ScriptedProvider(latency=0.0), store, RunSettings(), [observer]).run())
    assert observer.drained is False
    df = results(path)
    assert list(df.columns[-2:]) == ["local_path", "bytes"]
    assert list(df["bytes"]) == [123, 123]
    assert df["local_path"].str.startswith("/videos/").all()


def test_failed_rows_can_be_retried_while_the_run_goes_on():
    provider = ScriptedProvider(max_parallel=2, latency=0.05)
    jobs = make_jobs(["a [genfail]", "b", "c", "d"])
    runner = Runner(jobs, provider, Store(), RunSettings())

    async def scenario():
        task = asyncio.create_task(runner.run())
        while jobs[0].state is not State.FAILED:
            await asyncio.sleep(0.005)
        runner.retry()
        return await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert jobs[0].generation == 1  # a new submission with its own idempotency key
    assert len(provider.accepted) == 5
    assert jobs[0].state is State.FAILED  # the script fails it again: it is still marked [genfail]
    assert all(j.state is State.COMPLETED for j in jobs[1:])


@pytest.mark.parametrize("where", ["submit", "status"])
def test_a_crash_is_raised_not_swallowed_and_rows_stay_resumable(tmp_path, where):
    from videobatch._inputs import load_prompts
    from videobatch._store import Checkpoint, load

    class Broken(ScriptedProvider):
        async def submit(self, request, idempotency_key):
            if where == "submit" and request.prompt == "b":
                raise KeyError("a bug in a provider")
            return await super().submit(request, idempotency_key)

        async def status(self, task_id):
            if where == "status":
                raise KeyError("a bug in a provider")
            return await super().status(task_id)

    path = tmp_path / "run.parquet"
    store, jobs = Checkpoint.open(path, load_prompts(["a", "b", "c", "d"]), settings={})
    runner = Runner(jobs, Broken(max_parallel=2, latency=0.01), store, RunSettings())
    with pytest.raises(KeyError, match="a bug"):
        asyncio.run(asyncio.wait_for(runner.run(), 10))
    states = {j.state for j in load(path).jobs}
    assert states <= {State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED}


def test_a_shared_queue_is_not_drained_once_the_account_refuses_work():
    class Endless:
        """A service-like source: unknown backlog, always another request."""

        def __init__(self):
            self.handed = 0

        async def next(self):
            self.handed += 1
            prompt = "b [account]" if self.handed == 3 else f"row {self.handed}"
            return Job(key=f"r{self.handed}", index=0, request=VideoRequest(prompt=prompt))

        async def done(self, job):
            return None

        def backlog(self):
            return None

    source = Endless()
    provider = ScriptedProvider(max_parallel=2, latency=0.05)
    runner = Runner([], provider, Store(), RunSettings(), source=source)
    outcome = asyncio.run(asyncio.wait_for(runner.run(), 10))
    assert isinstance(outcome.stopped_by, AccountError)
    assert source.handed <= 5  # stopped asking for work soon after the refusal


def test_retrying_a_timed_out_row_waits_for_the_same_task_instead_of_paying_again():
    provider = ScriptedProvider(latency=0.6)
    jobs = make_jobs(["slow"])
    go(jobs, provider, timeout=0.1)
    job = jobs[0]
    assert job.state is State.FAILED and job.error_kind == "timeout"
    task_id = job.task_id
    job.retry()
    assert job.state is State.GENERATING and job.task_id == task_id
    go(jobs, provider, timeout=5.0)
    assert job.state is State.COMPLETED and job.task_id == task_id
    assert sum(provider.accepted.values()) == 1  # paid once


def test_retrying_any_other_failure_is_a_new_submission():
    provider = ScriptedProvider()
    jobs = make_jobs(["a [genfail]"])
    go(jobs, provider)
    jobs[0].retry()
    assert jobs[0].state is State.PENDING and jobs[0].generation == 1 and jobs[0].task_id is None


def test_observers_get_frozen_snapshots_of_rows_and_progress_never_the_live_rows():
    """An observer that keeps what it was told sees each row as it stood at that event, and the
    counters of that moment: the runner's later changes do not reach back into them."""
    seen = []

    class Keeper:
        def bind(self, context):
            self.context = context
            self.rows_at_bind = context.rows()

        def __call__(self, event):
            seen.append(event)

    jobs = make_jobs([f"clip {i}" for i in range(4)])
    keeper = Keeper()
    asyncio.run(Runner(jobs, ScriptedProvider(latency=0.0, max_parallel=2), Store(), RunSettings(),
                       [keeper]).run())
    assert [row.state for row in keeper.rows_at_bind] == [State.PENDING] * 4
    transitions = [e for e in seen if e.kind == "transition"]
    assert len(transitions) == 12  # submitting, generating, completed per row
    for event in transitions:
        assert event.row.state is event.new  # not the row's final state
    assert [e.row.state for e in transitions if e.row.key == "r0"] == [
        State.SUBMITTING, State.GENERATING, State.COMPLETED]
    done = [e.progress.done for e in transitions]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 4  # each event kept its own count
    with pytest.raises(AttributeError):
        transitions[0].row.state = State.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        transitions[0].progress.counts[State.FAILED] = 1  # type: ignore[index]
    assert not any(isinstance(e.row, Job) for e in seen if e.row is not None)


def test_an_annotation_through_the_context_is_durable_and_seen_in_the_next_snapshot(tmp_path):
    from videobatch._inputs import load_prompts
    from videobatch._results import results
    from videobatch._store import Checkpoint

    annotated = []

    class Tagger:
        def bind(self, context):
            self.context = context

        def __call__(self, event):
            if event.kind == "transition" and event.new is State.COMPLETED:
                annotated.append(self.context.annotate(event.row, reviewed="yes"))
            elif event.kind == "annotate":
                annotated.append(event.row)

    path = tmp_path / "run.parquet"
    store, jobs = Checkpoint.open(path, load_prompts(["a"]), settings={})
    asyncio.run(Runner(jobs, ScriptedProvider(latency=0.0), store, RunSettings(), [Tagger()]).run())
    assert [dict(row.extras) for row in annotated] == [{"reviewed": "yes"}] * 2
    assert list(results(path)["reviewed"]) == ["yes"]


class Cancellable(ScriptedProvider):
    """Stops a task on request while it is queued (``[queued]`` in its prompt), not once running."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.cancel_calls: list[str] = []

    async def cancel(self, task_id: str) -> bool | None:
        self.cancel_calls.append(task_id)
        if "[charged]" in self.tasks[task_id]["prompt"]:
            return None  # stopped, but it may have cost money
        return "[queued]" in self.tasks[task_id]["prompt"]


def cancel_once_two_are_open(jobs, provider):
    """Run ``jobs`` and cancel the run once the provider has accepted two tasks."""
    runner = Runner(jobs, provider, Store(), RunSettings())

    async def scenario():
        task = asyncio.create_task(runner.run())
        while sum(provider.accepted.values()) < 2:
            await asyncio.sleep(0.01)
        runner.cancel()
        return await asyncio.wait_for(task, 5)

    return asyncio.run(scenario())


def test_a_task_stopped_but_perhaps_charged_fails_its_row_and_is_never_sent_again_on_its_own():
    provider = Cancellable(max_parallel=2, latency=10.0)
    jobs = make_jobs(["clip 0 [charged]", "clip 1 [queued]"])
    assert cancel_once_two_are_open(jobs, provider).cancelled
    assert [j.state for j in jobs] == [State.FAILED, State.CANCELLED]
    assert jobs[0].error_kind == "cancelled" and "may have charged" in (jobs[0].error or "")
    assert jobs[0].may_have_paid()  # counted as spent
    provider.latency = 0.0
    provider.poll_hint = ScriptedProvider(latency=0.0).poll_hint
    go(jobs, provider)  # a resume sends the cancelled row again, never the failed one
    assert [j.state for j in jobs] == [State.FAILED, State.COMPLETED]
    assert sum(provider.accepted.values()) == 3


def test_cancel_stops_queued_tasks_at_the_provider_and_leaves_running_ones_in_flight():
    provider = Cancellable(max_parallel=2, latency=10.0)
    assert provider.capabilities.cancel  # credited: it implements cancel
    jobs = make_jobs(["clip 0 [queued]", "clip 1", "clip 2", "clip 3"])
    assert cancel_once_two_are_open(jobs, provider).cancelled
    assert len(provider.cancel_calls) == 2  # both open tasks asked
    assert [j.state for j in jobs] == [State.CANCELLED, State.GENERATING, State.CANCELLED, State.CANCELLED]
    assert "new, separately paid request" in jobs[0].error
    first_key = jobs[0].idempotency_key("run")

    # Resume: the row the provider stopped is a new submission under a new key; the running one is
    # collected, not paid again.
    provider.latency = 0.0
    provider.poll_hint = ScriptedProvider(latency=0.0).poll_hint
    for t in provider.tasks.values():
        t["ready"] = time.monotonic()
    go(jobs, provider)
    assert all(j.state is State.COMPLETED for j in jobs)
    assert jobs[0].generation == 1 and jobs[0].idempotency_key("run") != first_key
    assert sum(provider.accepted.values()) == 5  # 4 rows, one of them paid again on the user's word


class FreezeWatching(ScriptedProvider):
    """Notes, at each submit, how many objects the cycle collector is told not to walk."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.frozen: list[int] = []

    async def submit(self, request, idempotency_key):
        self.frozen.append(gc.get_freeze_count())
        return await super().submit(request, idempotency_key)


def test_the_rows_are_kept_from_the_cycle_collectors_walks_while_runs_go_on():
    # A full collection walks every object alive; the rows live all run long. They are frozen
    # (gc.freeze) while runs go on, and given back when the last run of the process ends.
    if gc.get_freeze_count():
        gc.unfreeze()
    first, second = FreezeWatching(latency=0.01), FreezeWatching(latency=0.05, max_parallel=1)

    async def both():
        one = Runner(make_jobs(["a"]), first, Store(), RunSettings())
        other = Runner(make_jobs([f"clip {i}" for i in range(4)]), second, Store(), RunSettings())
        return await asyncio.gather(one.run(), other.run())

    outcomes = asyncio.run(both())
    assert [o.counts[State.COMPLETED] for o in outcomes] == [1, 4]
    rows_alive = 4 + 1  # the jobs, at the least
    assert min(first.frozen) >= rows_alive
    # the second run's last submit came after the first run had ended: still frozen
    assert len(second.frozen) == 4 and min(second.frozen) >= rows_alive
    assert gc.get_freeze_count() == 0  # given back with the last run


def test_a_freeze_somebody_else_made_outlives_the_run():
    # The command line freezes its whole process before its run: the run leaves that as it is.
    gc.freeze()
    try:
        made = gc.get_freeze_count()
        go(make_jobs(["a", "b"]), ScriptedProvider())
        assert gc.get_freeze_count() == made
    finally:
        gc.unfreeze()
