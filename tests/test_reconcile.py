"""Outcome unknown: a submit that may have been paid is adopted, proven free, or left unknown — never
resubmitted on its own, never the cause of a stopped run (issue 10, defects 1, 2 and 4)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fakes import ScriptedProvider
from videobatch._gate import Gate
from videobatch._jobs import Job, State
from videobatch._retry import set_testing
from videobatch._runner import Runner, RunSettings
from videobatch._store import Store
from videobatch.providers.base import Capabilities
from videobatch.request import VideoRequest


def make_jobs(prompts: list[str]) -> list[Job]:
    return [Job(key=f"r{i}", index=i, request=VideoRequest(prompt=p)) for i, p in enumerate(prompts)]


def go(jobs, provider, store=None, observers=(), **settings):
    settings.setdefault("backoff_base", 0.01)
    settings.setdefault("backoff_cap", 0.05)
    runner = Runner(jobs, provider, store or Store(), RunSettings(**settings), observers)
    return runner, asyncio.run(runner.run())


def paid(provider: ScriptedProvider) -> int:
    return sum(provider.accepted.values())


@pytest.mark.parametrize("listing", ["complete", "incomplete"])
def test_refused_lookup_falls_back_to_the_listing_and_the_run_goes_on(listing):
    provider = ScriptedProvider(lookup="refused", listing=listing)
    jobs = make_jobs(["a [lost]", "b", "c [lost]", "d"])
    _, outcome = go(jobs, provider)
    assert outcome.stopped_by is None
    assert [j.state for j in jobs] == [State.COMPLETED] * 4  # found in the listing: adopted
    assert max(provider.accepted.values()) == 1 and paid(provider) == 4


def test_nobody_can_answer_makes_the_row_unknown_not_failed_and_not_fatal():
    provider = ScriptedProvider(lookup="refused", listing=None)
    jobs = make_jobs(["a [lost]", "b", "c"])
    runner, outcome = go(jobs, provider)
    assert outcome.stopped_by is None and not outcome.cancelled
    assert jobs[0].state is State.UNKNOWN
    assert [j.state for j in jobs[1:]] == [State.COMPLETED] * 2
    key = jobs[0].idempotency_key(runner.store.run_id)
    assert key in jobs[0].error and "req-lookup" in jobs[0].error and "retry --unknown" in jobs[0].error
    assert jobs[0].error_kind == "outcome_unknown"
    assert provider.submit_calls[key] == 1  # never sent again on its own
    assert paid(provider) == 3


def test_a_lookup_that_keeps_failing_is_bounded_by_attempts():
    provider = ScriptedProvider(lookup="transient", listing=None)
    jobs = make_jobs(["a [lost]"])
    started = time.monotonic()
    with set_testing(True):
        _, outcome = go(jobs, provider, max_attempts=3, timeout=0.5)
    assert time.monotonic() - started < 5
    assert provider.find_calls == 3  # today's loop made hundreds: it ignored max_attempts
    assert jobs[0].state is State.UNKNOWN and outcome.stopped_by is None


def test_a_lookup_that_keeps_failing_is_bounded_by_the_deadline():
    provider = ScriptedProvider(lookup="transient", listing="fails")
    jobs = make_jobs(["a [lost]"])
    started = time.monotonic()
    go(jobs, provider, max_attempts=1000, timeout=0.3, backoff_base=0.05, backoff_cap=0.05)
    assert time.monotonic() - started < 5
    assert jobs[0].state is State.UNKNOWN
    assert provider.find_calls < 100


def test_free_key_is_resubmitted_only_after_the_provider_says_so():
    provider = ScriptedProvider(lookup="answered")
    jobs = make_jobs(["a [vanish]"])
    go(jobs, provider)
    assert jobs[0].state is State.COMPLETED and paid(provider) == 1
    assert jobs[0].attempts == 2  # the lookup said "no such task", so sending again was safe


@pytest.mark.parametrize(("lookup", "listing", "expected"), [
    ("blind", None, State.UNKNOWN),  # lookup misses it and nothing can list: not failed, not re-paid
    ("refused", "complete", State.COMPLETED),  # the listing finds the task: adopted
    ("answered", None, State.COMPLETED),  # the lookup finds it
])
def test_key_already_used_is_never_a_failure(lookup, listing, expected):
    provider = ScriptedProvider(lookup=lookup, listing=listing, duplicate="refuse")
    jobs = make_jobs(["a [lostquiet]"])
    runner, _ = go(jobs, provider)
    assert jobs[0].state is expected
    assert paid(provider) == 1
    if expected is State.UNKNOWN:
        assert "req-dup" in jobs[0].error or "req" in jobs[0].error
        # retrying failed rows does not touch it: it is not failed
        assert runner.retry() is None or jobs[0].state is State.UNKNOWN


def test_unknown_rows_are_checked_again_on_resume_and_never_resent(tmp_path):
    provider = ScriptedProvider(lookup="refused", listing=None)
    jobs = make_jobs(["a [lost]", "b"])
    store = Store()
    go(jobs, provider, store=store)
    assert jobs[0].state is State.UNKNOWN
    calls = dict(provider.submit_calls)
    go(jobs, provider, store=store)  # still nobody can answer: stays unknown, nothing sent
    assert jobs[0].state is State.UNKNOWN and dict(provider.submit_calls) == calls
    provider.listing = "complete"  # now the account can be listed
    go(jobs, provider, store=store)
    assert jobs[0].state is State.COMPLETED and paid(provider) == 2
    assert dict(provider.submit_calls) == calls


def test_unknown_row_proven_free_on_resume_is_sent_under_the_same_key():
    provider = ScriptedProvider(lookup="refused", listing=None)
    jobs = make_jobs(["a [vanish]"])
    store = Store()
    go(jobs, provider, store=store)
    assert jobs[0].state is State.UNKNOWN and paid(provider) == 0
    key = jobs[0].idempotency_key(store.run_id)
    provider.lookup = "answered"
    go(jobs, provider, store=store)
    assert jobs[0].state is State.COMPLETED
    assert jobs[0].idempotency_key(store.run_id) == key and provider.accepted[key] == 1


def test_user_resubmits_unknown_rows_under_a_new_key():
    provider = ScriptedProvider(lookup="refused", listing=None)
    jobs = make_jobs(["a [lost]"])
    store = Store()
    go(jobs, provider, store=store)
    old_key = jobs[0].idempotency_key(store.run_id)
    store.append(jobs[0].retry())  # what Batch.retry(unknown=True) does between runs
    assert jobs[0].state is State.PENDING
    provider.lookup = "answered"  # (its new submit loses its answer too: found by the lookup)
    go(jobs, provider, store=store)
    assert jobs[0].state is State.COMPLETED
    new_key = jobs[0].idempotency_key(store.run_id)
    assert new_key != old_key and provider.accepted[old_key] == 1 and provider.accepted[new_key] == 1


class SlowDrain:
    """An observer whose drain takes a while, like a download finishing at the end of a run."""

    def __init__(self) -> None:
        self.draining = threading.Event()

    def __call__(self, event) -> None:
        pass

    async def drain(self, cancelled: bool) -> None:
        self.draining.set()
        await asyncio.sleep(0.3)


def test_retry_during_teardown_is_refused_and_pays_nothing():
    provider = ScriptedProvider()
    jobs = make_jobs(["a [reject]", "b [reject]", "c"])
    observer = SlowDrain()
    runner = Runner(jobs, provider, Store(), RunSettings(backoff_base=0.01), [observer])
    answers = []

    def retry_when_draining() -> None:
        observer.draining.wait(10)
        answers.append(runner.retry())

    helper = threading.Thread(target=retry_when_draining)
    helper.start()
    asyncio.run(runner.run())
    helper.join(10)
    assert answers == [None]  # refused: the run was finishing
    assert [j.state for j in jobs] == [State.FAILED, State.FAILED, State.COMPLETED]
    assert sum(provider.submit_calls.values()) == 3  # the old code paid twice more here


def test_retry_during_the_run_joins_it():
    provider = ScriptedProvider(latency=0.3)
    jobs = make_jobs(["a [reject]", "b", "c"])
    runner = Runner(jobs, provider, Store(), RunSettings(backoff_base=0.01))

    async def main():
        task = asyncio.create_task(runner.run())
        while jobs[0].state is not State.FAILED:
            await asyncio.sleep(0.01)
        assert runner.retry() == 1
        return await task

    asyncio.run(main())
    assert jobs[0].state is State.FAILED and jobs[0].generation == 1  # rejected again, new key
    assert sum(provider.submit_calls.values()) == 4


def test_a_row_left_submitting_is_looked_for_back_to_the_runs_beginning():
    """After a reload from a snapshot, a submitting row carries no send time: the listing must reach
    back to the run's beginning, or a task sent an hour ago would look free and be paid again."""
    # (a resent key is refused as a duplicate, as Kling does, so sending it again cannot hide a miss)
    provider = ScriptedProvider(lookup="refused", listing="complete", duplicate="refuse")
    store = Store(created_at=time.time() - 3600)
    jobs = make_jobs(["a"])
    key = jobs[0].idempotency_key(store.run_id)
    status = asyncio.run(provider.submit(jobs[0].request, key))  # paid before the crash...
    provider.tasks[status.task_id]["created"] = time.time() - 1800  # ...half an hour ago
    jobs[0].state = State.SUBMITTING  # what the snapshot says; updated_at is "now" after loading
    go(jobs, provider, store=store)
    assert jobs[0].state is State.COMPLETED and jobs[0].task_id == status.task_id
    assert provider.accepted[key] == 1


class NoLookup(ScriptedProvider):
    """A provider without a client-chosen id to look up (fal, Replicate, Runway, Google)."""

    capabilities = Capabilities(listing=False)


class ListingOnly(ScriptedProvider):
    capabilities = Capabilities(listing=True)


def test_without_a_lookup_a_lost_answer_is_unknown_and_never_resent():
    provider = NoLookup(listing=None)
    jobs = make_jobs(["a [lost]", "b"])
    runner, outcome = go(jobs, provider)
    assert outcome.stopped_by is None
    assert jobs[0].state is State.UNKNOWN and jobs[1].state is State.COMPLETED
    assert "cannot look a task up" in jobs[0].error
    assert provider.find_calls == 0  # not even asked: it declared it cannot answer
    assert provider.submit_calls[jobs[0].idempotency_key(runner.store.run_id)] == 1


def test_without_a_lookup_a_listing_still_finds_the_task():
    provider = ListingOnly(listing="complete")
    jobs = make_jobs(["a [lost]", "b"])
    go(jobs, provider)
    assert [j.state for j in jobs] == [State.COMPLETED] * 2
    assert provider.find_calls == 0 and paid(provider) == 2


def test_capabilities_are_credited_from_what_a_provider_implements():
    assert ScriptedProvider.capabilities.lookup and ScriptedProvider.capabilities.listing
    assert not ScriptedProvider.capabilities.cancel
    assert NoLookup.capabilities == Capabilities(listing=False)  # declared wins

    class Child(NoLookup):
        pass

    assert Child.capabilities == NoLookup.capabilities  # inherited, not guessed again


class SecretGate(Gate):
    """Refuses rows whose prompt names a secret; lets the reconciler read no such request."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def refusal(self, job: Job, request: VideoRequest) -> str | None:
        self.asked.append(job.key)
        return "names a secret" if "[secret]" in request.prompt else None

    async def readable(self, request: VideoRequest) -> bool:
        return "[secret]" not in request.prompt


def test_a_gate_refuses_a_row_before_its_paid_request_and_hides_it_from_matching():
    provider = ScriptedProvider(lookup="refused", listing="complete")
    jobs = make_jobs(["a", "b [secret]", "c"])
    gate = SecretGate()
    runner = Runner(jobs, provider, Store(), RunSettings(backoff_base=0.01), gate=gate)
    asyncio.run(runner.run())
    assert [j.state for j in jobs] == [State.COMPLETED, State.FAILED, State.COMPLETED]
    assert jobs[1].error_kind == "rejected" and jobs[1].error == "names a secret"
    assert jobs[1].attempts == 1 and jobs[1].task_id is None  # its intent was recorded, then refused
    assert sorted(gate.asked) == ["r0", "r1", "r2"]
    assert sum(provider.submit_calls.values()) == 2  # nothing of the refused row left

    # A row in doubt is matched against the listing without what the gate hides.
    seen: list[dict] = []
    scan = provider.scan

    async def recording_scan(keys, since):
        seen.append(dict(keys))
        return await scan(keys, since)

    provider.scan = recording_scan  # type: ignore[method-assign]
    in_doubt = make_jobs(["d [secret]"])
    in_doubt[0].state = State.SUBMITTING
    asyncio.run(Runner(in_doubt, provider, Store(), RunSettings(backoff_base=0.01), gate=gate).run())
    assert seen and all(request is None for keys in seen for request in keys.values())
