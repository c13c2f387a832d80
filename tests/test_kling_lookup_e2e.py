"""End to end, both of Kling's API designs, against the test server on loopback: lost create
answers (≥ 25 %) while other systems' tasks share the account, for each way the server may serve
the lookup by external id (answered, refused, ignored).

What must hold in every case: the run never stops, every row ends with its own task (the server's
audit of the checkpoint: the task each row recorded carries the row's idempotency key), nothing is
paid twice, and no other system's task is adopted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import videobatch
from videobatch._store import load
from videobatch.testing import ServerHandle, SimConfig, running_server

FAST = {"first_poll": 0.15, "poll_interval": 0.05, "max_poll_interval": 0.5, "max_rps": 200}
ROWS = 30


def audit(server: ServerHandle, checkpoint: Path) -> dict[str, Any]:
    """The server's verdict on which task each row of the checkpoint recorded."""
    loaded = load(checkpoint)
    run_id = str(loaded.meta["run_id"])
    rows = {job.idempotency_key(run_id): job.task_id for job in loaded.jobs if job.task_id}
    assert len(rows) == len(loaded.jobs)
    answer: dict[str, Any] = httpx.post(f"{server.url}/_test/audit", json={"rows": rows}).json()
    return answer


@pytest.mark.parametrize("lookup", ["answered", "refused", "ignored"])
@pytest.mark.parametrize("model", ["kling-3.0", "kling-v3"], ids=["newer", "legacy"])
def test_lost_answers_among_foreign_tasks_every_row_gets_its_own_task(tmp_path, lookup, model):
    checkpoint = tmp_path / "run.parquet"
    rows = [{"prompt": f"harbour at night, take {i}", "model": model} for i in range(ROWS)]
    with running_server(latency=0.3, jitter=0.3, max_parallel=10, foreign_tasks=40, lookup=lookup,
                        faults="lost@create=0.4", seed=3) as server:
        df = videobatch.run(rows, "kling", checkpoint=checkpoint, base_url=server.url,
                            api_key=SimConfig.api_key, progress=False, concurrency=10, **FAST)
        verdict = audit(server, checkpoint)
        counters = server.counters()
        tasks = server.tasks()

    assert counters["faults_injected"]["lost"] >= ROWS / 4  # ≥ 25 % of the creates lost their answer
    assert (df["status"] == "completed").all(), df[["status", "error"]]
    assert counters["accepted"] == ROWS and counters["paid_duplicates"] == 0
    assert verdict["wrong_adoptions"] == 0 and verdict["foreign_adopted"] == 0, verdict
    assert counters["foreign_polled"] == 0  # no other system's task was ever treated as a row's
    ours = [t for t in tasks if not t["foreign"]]
    assert {t["design"] for t in ours} == {"newer" if model == "kling-3.0" else "legacy"}
    assert sorted(df["video_url"]) == sorted(t["url"] for t in ours)
    if lookup == "ignored":
        assert counters["lookups_ignored"] > 0  # the server really answered with other tasks


def test_the_audit_counts_a_row_holding_another_systems_task(tmp_path):
    """The counter itself: a checkpoint doctored to hold a foreign task is caught."""
    checkpoint = tmp_path / "run.parquet"
    with running_server(latency=0.2, foreign_tasks=3) as server:
        videobatch.run([{"prompt": "one", "model": "kling-3.0"}], "kling", checkpoint=checkpoint,
                       base_url=server.url, api_key=SimConfig.api_key, progress=False, **FAST)
        loaded = load(checkpoint)
        key = loaded.jobs[0].idempotency_key(str(loaded.meta["run_id"]))
        foreign = next(t["task_id"] for t in server.tasks() if t["foreign"])
        verdict = httpx.post(f"{server.url}/_test/audit", json={"rows": {key: foreign}}).json()
        counters = server.counters()
    assert verdict["wrong"] == [key]
    assert (counters["wrong_adoptions"], counters["foreign_adopted"]) == (1, 1)


@pytest.mark.parametrize("model", ["kling-3.0", "kling-v3"], ids=["newer", "legacy"])
def test_slots_held_by_another_system_slow_the_run_but_never_stop_it(tmp_path, model):
    """The pack allows 5 parallel tasks, another system runs 2 all along, the client is told 5:
    1303 answers, backed off and adapted to; every row completes, each paid once."""
    rows = [{"prompt": f"lanterns {i}", "model": model} for i in range(20)]
    with running_server(latency=0.3, jitter=0.2, max_parallel=5, foreign_slots=2,
                        foreign_tasks=10, lookup="ignored") as server:
        df = videobatch.run(rows, "kling", checkpoint=tmp_path / "run.parquet", base_url=server.url,
                            api_key=SimConfig.api_key, progress=False, concurrency=5, **FAST)
        verdict = audit(server, tmp_path / "run.parquet")
        counters = server.counters()
    assert (df["status"] == "completed").all()
    assert counters["accepted"] == 20 and counters["paid_duplicates"] == 0
    assert counters["peak_parallel"] <= 3 and counters["rejected"].get("parallel_limit", 0) > 0
    assert verdict["wrong_adoptions"] == 0
