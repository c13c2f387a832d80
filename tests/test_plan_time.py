"""A plan's time estimate: waves of each pool's slots times a task's length, the length learnt from
the checkpoint's own finished tasks (else the provider's first-poll time, said to be a lower bound),
pools side by side (the slowest decides)."""

from __future__ import annotations

import pandas as pd
import pytest

import videobatch
from videobatch._jobs import Job, State
from videobatch._plan_time import eta, task_lengths, total
from videobatch.providers import get_provider
from videobatch.request import VideoRequest

LOCAL = {"latency": 0.01, "render": False}


def finished(n: int, seconds: float, model: str = "local-v1") -> list[Job]:
    jobs = []
    for i in range(n):
        job = Job(key=f"k{i}", index=i, request=VideoRequest(prompt="x"))
        job.state, job.provider_used, job.model_used = State.COMPLETED, "local", model
        job.submitted_at, job.completed_at = 1000.0, 1000.0 + seconds * (i + 1) / n * 2 - seconds / n
        jobs.append(job)
    return jobs


def test_the_median_of_finished_tasks_times_the_waves():
    provider = get_provider("local", **LOCAL)
    jobs = finished(5, 60.0)  # lengths 12, 36, 60, 84, 108: median 60
    got = eta(25, 10, provider, "local-v1", task_lengths(jobs))
    assert got.seconds == pytest.approx(3 * 60.0) and not got.at_least
    assert "3 wave(s) of 10" in got.text() and "median of 5 finished tasks" in got.text()
    assert task_lengths(jobs)[("local", "local-v1")][2] == pytest.approx(60.0)


def test_without_finished_tasks_the_first_poll_time_is_a_lower_bound():
    provider = get_provider("local", **LOCAL)
    got = eta(11, 5, provider, "local-v1", task_lengths(finished(2, 60.0)))  # two are not enough to go by
    assert got.at_least and got.seconds == pytest.approx(3 * provider.poll_hint.first_poll)
    assert got.text().startswith("at least")


def test_pools_side_by_side_take_as_long_as_the_slowest():
    provider = get_provider("local", **LOCAL)
    slow = eta(30, 10, provider, "local-v1", task_lengths(finished(3, 100.0)))
    fast = eta(5, 10, provider, "local-v1", task_lengths(finished(3, 10.0)))
    assert total([fast, slow]).seconds == slow.seconds
    assert total([]).seconds == 0 and eta(0, 10, provider, "local-v1", task_lengths([])).seconds == 0


def test_a_plan_gives_the_time_on_the_slots_the_run_starts_with(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "account"))
    rows = pd.DataFrame({"prompt": [f"shot {i}" for i in range(8)]})
    ckpt = tmp_path / "run.parquet"
    videobatch.run(rows, "local", checkpoint=ckpt, progress=False, concurrency=4, **LOCAL)
    more = pd.DataFrame({"prompt": [f"shot {i}" for i in range(20)]})
    plan = videobatch.Batch(more, "local", checkpoint=ckpt, progress=False, concurrency=4,
                            force=True, **LOCAL).plan()
    assert plan.paid == 12 and not plan.time.at_least  # 8 finished tasks to go by
    assert "3 wave(s) of 4" in plan.time.text()
    assert plan.time.seconds is not None and plan.time.seconds < 5  # 0.01 s tasks, 3 waves
