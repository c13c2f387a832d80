"""The state machine: legal moves, illegal moves refused, retries get a new idempotency key."""

from __future__ import annotations

import pytest

from videobatch._jobs import Job, State, idempotency_key
from videobatch.errors import IllegalTransition
from videobatch.request import VideoRequest

LEGAL = [
    (State.PENDING, State.PENDING),  # not sent, and why: the budget (error_kind "budget")
    (State.PENDING, State.SUBMITTING),
    (State.PENDING, State.CANCELLED),
    (State.PENDING, State.COMPLETED),  # reused from the result cache: nothing sent
    (State.SUBMITTING, State.GENERATING),
    (State.SUBMITTING, State.PENDING),
    (State.SUBMITTING, State.FAILED),
    (State.SUBMITTING, State.COMPLETED),
    (State.SUBMITTING, State.UNKNOWN),
    (State.UNKNOWN, State.GENERATING),
    (State.UNKNOWN, State.COMPLETED),
    (State.UNKNOWN, State.FAILED),
    (State.UNKNOWN, State.PENDING),
    (State.GENERATING, State.COMPLETED),
    (State.GENERATING, State.FAILED),
    (State.GENERATING, State.CANCELLED),  # the provider stopped its task on our word
    (State.FAILED, State.PENDING),
    (State.FAILED, State.GENERATING),
    (State.CANCELLED, State.PENDING),
]
ALL = [(a, b) for a in State for b in State]


def job_in(state: State) -> Job:
    job = Job(key="k", index=0, request=VideoRequest(prompt="a fox"))
    job.state = state
    return job


@pytest.mark.parametrize(("old", "new"), LEGAL)
def test_legal_transitions(old, new):
    job = job_in(old)
    record = job.transition(new)
    assert job.state is new
    assert record["k"] == "k" and record["s"] == new.value


@pytest.mark.parametrize(("old", "new"), [p for p in ALL if p not in LEGAL and p != (State.PENDING, State.FAILED)])
def test_illegal_transitions_raise_and_change_nothing(old, new):
    job = job_in(old)
    with pytest.raises(IllegalTransition, match=f"from {old.value} to {new.value}"):
        job.transition(new, attempts=7)
    assert job.state is old and job.attempts == 0


def test_completed_is_final():
    job = job_in(State.COMPLETED)
    for new in State:
        with pytest.raises(IllegalTransition):
            job.transition(new)


def test_retry_of_failed_row_clears_result_and_changes_idempotency_key():
    job = job_in(State.GENERATING)
    job.task_id = "t1"
    job.transition(State.FAILED, error_kind="generation_failed", error="boom")
    before = job.idempotency_key("run")
    job.transition(State.PENDING)
    assert job.generation == 1 and job.task_id is None and job.error is None
    assert job.idempotency_key("run") != before


def test_idempotency_key_is_stable_and_short():
    a = idempotency_key("run-1", "row-1", 0)
    assert a == idempotency_key("run-1", "row-1", 0)
    assert a != idempotency_key("run-2", "row-1", 0)
    assert a != idempotency_key("run-1", "row-2", 0)
    assert len(a) <= 40 and a.replace("-", "").isalnum()


def test_replaying_records_reproduces_the_job():
    job = job_in(State.PENDING)
    records = [job.transition(State.SUBMITTING, attempts=1),
               job.transition(State.GENERATING, task_id="t9", submitted_at=1.0),
               job.transition(State.COMPLETED, video_url="file:///x.mp4", completed_at=2.0)]
    copy = job_in(State.PENDING)
    for r in records:
        copy.apply(r)
    assert (copy.state, copy.attempts, copy.task_id, copy.video_url) == (State.COMPLETED, 1, "t9", "file:///x.mp4")


def test_unknown_field_is_refused():
    with pytest.raises(TypeError):
        job_in(State.PENDING).transition(State.SUBMITTING, colour="red")
