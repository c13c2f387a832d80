"""What a clip actually cost: Kling reports the units it deducted for a task (``final_unit_deduction``
on ``/v1``, ``billing[]`` in the newer design); the run records it as ``cost_actual`` and the budget
counts it instead of the estimate (``videobatch._spend``).

Against the Kling test server on loopback, whose ``deduction_scale`` makes Kling bill half the
published price: the estimates alone would stop the run at four of six rows, the actual costs let
all six through, and at the published price the same budget stops at four (so the difference is
the release down to the actual cost, nothing else). Real parquet checkpoints throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
import redis.asyncio as aioredis

import videobatch
from service_fixtures import needs_redis
from videobatch._jobs import Job, State
from videobatch._spend import Actuals, Ledger, money
from videobatch._store import load
from videobatch.cli.status import status_report
from videobatch.providers import get_provider
from videobatch.providers.local.provider import read_submissions
from videobatch.request import VideoRequest
from videobatch.service.batch_views import batch_counts
from videobatch.service.records import Keys, decode_hash, job_from_hash, new_job_fields, public_view
from videobatch.service.store import RedisStore
from videobatch.testing import SimConfig, running_server

FAST = {"first_poll": 0.1, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 100}
# (model, units Kling publishes for a 5 s clip of it with the catalogue's default settings)
DESIGNS = [("kling-v2-6", 2.5), ("kling-3.0", 3.0)]  # /v1 pro per clip; newer 720p 0.6/s


def run(server, rows, checkpoint, **options) -> pd.DataFrame:
    return videobatch.run(rows, "kling", checkpoint=checkpoint, base_url=server.url,
                          api_key=SimConfig.api_key, progress=False, concurrency=2,
                          **FAST, **options)


@pytest.mark.parametrize(("model", "units"), DESIGNS, ids=["legacy", "newer"])
def test_the_actual_cost_is_recorded_and_releases_the_budget(tmp_path, model, units):
    estimate = round(units * 0.14, 6)
    budget = round(4.3 * estimate, 6)  # four rows by their estimates, not five
    rows = [{"prompt": f"a paper boat on a canal, take {i}", "model": model} for i in range(6)]
    with running_server(latency=0.15, jitter=0.1, deduction_scale=0.5) as server:
        df = run(server, rows, tmp_path / "half.parquet", max_cost=budget)
        tasks = [t for t in server.tasks() if not t["foreign"]]

    assert (df["status"] == "completed").all(), df[["status", "error_kind", "error"]]
    assert {t["units"] for t in tasks} == {units / 2}
    assert df["cost_estimated"].tolist() == pytest.approx([estimate] * 6)
    assert df["cost_actual"].tolist() == pytest.approx([estimate / 2] * 6)
    assert df["cost_units"].tolist() == pytest.approx([units / 2] * 6)  # as Kling reported them
    assert df["cost_spent"].tolist() == pytest.approx([estimate / 2] * 6)
    loaded = load(tmp_path / "half.parquet")  # journaled and snapshotted: it survives the run
    assert [j.cost_actual for j in loaded.jobs] == pytest.approx([estimate / 2] * 6)
    figures = Ledger(loaded.jobs, budget).figures()
    assert figures.spent == pytest.approx(3 * estimate) and figures.reserved == 0
    assert Actuals.of(loaded.jobs) == Actuals(6, pytest.approx(3 * estimate),
                                              pytest.approx(6 * estimate))

    # `status` shows the same figures: spent / reserved / budget, and what Kling reported.
    shown = subprocess.run([sys.executable, "-m", "videobatch", "status", str(tmp_path / "half.parquet"),
                            "--no-check"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    spent, left = money(3 * estimate), money(figures.left)
    assert (f"Spend (USD; actual where the provider reported it): spent {spent} · reserved $0.00 · "
            f"budget {money(budget)} ({left} left)") in shown.stdout
    assert (f"estimated {money(6 * estimate)} for what was spent; actual cost reported for 6 "
            f"tasks: {spent} (estimated {money(6 * estimate)})") in shown.stdout

    # At the published price the actual equals the estimate: the same budget sends four rows.
    with running_server(latency=0.15, jitter=0.1) as server:
        full = run(server, rows, tmp_path / "full.parquet", max_cost=budget)
        accepted = server.counters()["accepted"]
    assert accepted == 4 and (full["status"] == "completed").sum() == 4
    left = full[full["status"] != "completed"]
    assert set(left["status"]) == {"pending"} and set(left["error_kind"]) == {"budget"}
    assert full["cost_actual"].dropna().tolist() == pytest.approx([estimate] * 4)


def test_an_actual_cost_above_the_estimate_counts_too(tmp_path):
    """Kling bills what it bills: a task dearer than its estimate leaves less of the budget."""
    estimate = round(2.5 * 0.14, 6)
    rows = [{"prompt": f"lanterns, take {i}", "model": "kling-v2-6"} for i in range(4)]
    with running_server(latency=0.1, jitter=0.0, deduction_scale=1.5) as server:
        df = videobatch.run(rows, "kling", checkpoint=tmp_path / "run.parquet",
                            base_url=server.url, api_key=SimConfig.api_key, progress=False,
                            concurrency=1, max_cost=3.2 * estimate, **FAST)
    # one at a time: 1.5 + 1.5 = 3 estimates spent, a third (1 more) would make 4 > 3.2
    assert (df["status"] == "completed").sum() == 2
    assert df["cost_actual"].dropna().tolist() == pytest.approx([1.5 * estimate] * 2)
    assert set(df.loc[df["status"] == "pending", "error_kind"]) == {"budget"}


def test_a_provider_that_does_not_say_leaves_cost_actual_empty(tmp_path):
    df = videobatch.run(["one", "two"], "local", checkpoint=tmp_path / "run.parquet",
                        progress=False, render=False, latency=0.01)
    assert (df["status"] == "completed").all()
    assert df["cost_actual"].isna().all() and df["cost_actual"].dtype == "float64"


V1 = Path(__file__).parent / "data" / "checkpoint_v1"  # written before cost columns existed
FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "kling"


def test_an_old_checkpoint_without_cost_columns_loads_and_resumes(tmp_path, monkeypatch):
    shutil.copytree(V1, tmp_path / "v1")
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "v1" / "provider"))
    path = tmp_path / "v1" / "run.parquet"
    before = videobatch.results(path)
    assert before["cost_actual"].isna().all() and before["cost_estimated"].isna().all()
    info = status_report(load(path))
    assert info["spend"]["budget"] is None and info["spend"]["actual"]["tasks"] == 0
    df = videobatch.run(str(tmp_path / "v1" / "prompts.csv"), "local", checkpoint=path,
                        progress=False, render=False, latency=0.05)
    assert (df["status"] == "completed").all() and df["cost_actual"].isna().all()
    subs = read_submissions()
    assert sum(s["outcome"] == "accepted" for s in subs) == 8  # nothing paid twice


def _reader_task(data: dict[str, Any], kind: str):
    provider = get_provider("kling", api_key=SimConfig.api_key, base_url="http://127.0.0.1:9")
    return provider._reader.task(data, kind)


def test_the_client_reads_what_kling_deducted_on_both_designs():
    legacy = json.loads((FIXTURES / "legacy_task_succeed.json").read_text())["data"]
    assert legacy["final_unit_deduction"] == "3"  # Kling documents it as a string
    assert _reader_task(legacy, "text2video").cost_actual == pytest.approx(3 * 0.14)
    assert _reader_task(legacy, "text2video").cost_units == 3
    newer = json.loads((FIXTURES / "new_tasks_by_external_id_succeeded.json").read_text())["data"][0]
    assert _reader_task(newer, "newer").cost_actual == pytest.approx(6.4 * 0.14)
    # a charge from a cash balance names no unit we can convert: the estimate stays
    cash = {**newer, "billing": [{"charge_type": "cash", "amount": "0.9", "list_price": "1.0"}]}
    assert _reader_task(cash, "newer").cost_actual is None
    # a task still running says nothing final, whatever the field holds
    running = {**legacy, "task_status": "processing", "task_result": {}}
    assert _reader_task(running, "text2video").cost_actual is None
    for absent in ({k: v for k, v in legacy.items() if k != "final_unit_deduction"},
                   {**legacy, "final_unit_deduction": "n/a"}):
        assert _reader_task(absent, "text2video").cost_actual is None


def test_the_dashboard_shows_spent_reserved_budget_and_the_actual_cost(tmp_path):
    from videobatch.ui.dashboard import Dashboard
    from videobatch.ui.dashboard_model import stats_html
    from videobatch.ui.static_view import static_html

    estimate = round(2.5 * 0.14, 6)
    rows = [{"prompt": f"kites over a dune, take {i}", "model": "kling-v2-6"} for i in range(3)]
    dash = Dashboard(display=False)
    with running_server(latency=0.1, jitter=0.0, deduction_scale=0.5) as server:
        batch = videobatch.Batch(rows, "kling", checkpoint=tmp_path / "run.parquet",
                                 base_url=server.url, api_key=SimConfig.api_key, progress=False,
                                 observers=[dash], max_cost=2.0, **FAST)
        dash.batch = batch
        batch.wait()
    snap = dash.model.snapshot()
    assert snap.figures is not None
    assert snap.figures.spent == pytest.approx(1.5 * estimate) and snap.figures.budget == 2.0
    line = stats_html(snap)
    spent = money(snap.figures.spent)
    assert f"<b>Spent</b> {spent} · reserved $0.00 · budget $2.00 ({money(snap.figures.left)} left)" in line
    assert (f"<b>Estimated</b> cost of the 3 submissions sent: <b>{money(3 * estimate)}</b>; "
            f"<b>actual</b> cost reported for 3: <b>{spent}</b>") in line
    assert "<b>Spent</b>" in static_html(snap, "run", "abc")  # what a saved notebook keeps


@needs_redis
def test_the_service_answers_cost_figures_as_numbers(redis_server):
    """A Redis hash holds text: the service reads its cost fields back as numbers of USD."""
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys("cost:")
    client.rpush(keys.batch_ids("b1"), "r1", "r2", "r3")
    jobs = {}
    for rid in ("r1", "r2", "r3"):
        client.hset(keys.job(rid), mapping=new_job_fields(rid, VideoRequest(prompt="x"), batch_id="b1"))
        jobs[rid] = Job(rid, 0, VideoRequest(prompt="x"))

    async def record() -> None:  # the runner's own records, through the worker's store
        async_client = aioredis.Redis.from_url(redis_server.url)
        store = RedisStore(async_client, keys, run_id="run")
        try:
            for job in jobs.values():
                store.append(job.transition(State.SUBMITTING, attempts=1, cost_estimated=0.35))
            for rid in ("r1", "r2"):
                store.append(jobs[rid].transition(State.GENERATING, task_id=f"t-{rid}"))
            store.append(jobs["r1"].transition(State.COMPLETED, video_url="https://v/1.mp4",
                                               cost_actual=0.175, cost_units=1.25))
            await store.durable()
        finally:
            await store.aclose()
            await async_client.aclose()

    try:
        asyncio.run(record())
        rows = [decode_hash(client.hgetall(keys.job(rid))) for rid in ("r1", "r2", "r3")]
        views = [public_view(row) for row in rows]
        assert [(v["cost_estimated"], v["cost_actual"], v["cost_spent"]) for v in views] == [
            (0.35, 0.175, 0.175), (0.35, None, 0.35), (0.35, None, None)]
        assert views[0]["cost_units"] == 1.25
        back = job_from_hash(rows[0])
        assert back.cost_actual == 0.175 and back.cost_estimated == 0.35  # floats, not text
        counts = batch_counts("b1", rows)
        assert counts.spent == pytest.approx(0.525) and counts.reserved == pytest.approx(0.35)
    finally:
        client.delete(*(keys.job(r) for r in jobs), keys.batch_ids("b1"))
        client.close()


def test_the_command_line_summary_says_spent_against_estimated_and_actual(tmp_path):
    csv = tmp_path / "p.csv"
    pd.DataFrame({"prompt": [f"a heron, take {i}" for i in range(3)],
                  "model": ["kling-v2-6"] * 3}).to_csv(csv, index=False)
    estimate = round(2.5 * 0.14, 6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env["KLING_API_KEY"] = str(SimConfig.api_key)
    with running_server(latency=0.1, jitter=0.0, deduction_scale=0.5) as server:
        flags = ["--provider", "kling", "--base-url", server.url, "-q", "--max-cost", "5"]
        for key, value in FAST.items():
            flags += ["-P", f"{key}={value}"]
        res = subprocess.run([sys.executable, "-m", "videobatch", str(csv), *flags],
                             capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    spent = Ledger(load(tmp_path / "p.checkpoint.parquet").jobs, 5.0).figures()
    assert spent.spent == pytest.approx(1.5 * estimate)
    assert (f"spend (USD; actual where the provider reported it): spent {money(spent.spent)} · "
            f"reserved $0.00 · budget $5.00 ({money(spent.left)} left)") in res.stdout
    assert (f"  estimated {money(3 * estimate)} for what was spent; actual cost reported for 3 "
            f"tasks: {money(spent.spent)} (estimated {money(3 * estimate)})") in res.stdout
