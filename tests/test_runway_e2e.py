"""End to end: ``videobatch.run`` and the CLI against the Runway-compatible server on loopback.

Runway keeps no key of ours and lists no tasks, so the invariants read: a create whose answer was
lost is never sent again (its row ends ``unknown``, saying why), a refused create fails only its
row, the daily cap stops submitting, a kill -9 and a resume pay nothing twice and lose no result,
and the client keeps no more tasks open than it was told (Runway would queue the rest THROTTLED).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pandas as pd
import pytest

import videobatch
from videobatch.errors import AccountError
from videobatch.testing.runway_server import API_SECRET, ServerHandle, running_server

FAST = {"first_poll": 0.1, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 200}


def options(server: ServerHandle, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.url, "api_secret": API_SECRET, "progress": False, **FAST, **extra}


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNWAYML_")}
    return {**clean, "RUNWAYML_API_SECRET": API_SECRET}


def flags(server: ServerHandle, max_parallel: int) -> list[str]:
    out = ["--provider", "runway", "--base-url", server.url, "-q", "-P", f"max_parallel={max_parallel}"]
    for key, value in FAST.items():
        out += ["-P", f"{key}={value}"]
    return out


def paid(server: ServerHandle) -> Counter[str]:
    return Counter(str(t["prompt"]) for t in server.tasks())


def test_thirty_rows_complete_within_the_parallel_limit():
    rows = [f"scene {i}: a lighthouse at dusk" for i in range(30)]
    with running_server(latency=0.25, jitter=0.3, max_concurrent=3) as server:
        df = videobatch.run(rows, "runway", **options(server, max_parallel=3))
        counters = server.counters()
    assert (df["status"] == "completed").all(), df["error"].dropna().tolist()[:3]
    assert df["video_url"].str.startswith(server.url).all() and df["expires_at"].notna().all()
    assert counters["accepted"] == 30 and counters["paid_duplicates"] == 0
    assert counters["peak_active"] <= 3  # never more open than Runway runs: nothing THROTTLED
    assert counters["throttled"] == 0


def test_lost_answers_are_never_paid_twice():
    rows = [f"harbour {i} at noon" for i in range(30)]
    faults = {"lost@create": 2, "lost_500@create": 1, "garbage@create": 1, "slow@create": 1,
              "server_error@create": 2, "server_error@query": 0.05, "rate_limit@query": 0.05}
    with running_server(latency=0.2, max_concurrent=4, slow_seconds=5.0, faults=faults) as server:
        df = videobatch.run(rows, "runway", **options(server, max_parallel=4, http_timeout=2.5))
        counters = server.counters()
        tasks = paid(server)
    unknown = df[df["status"] == "unknown"]
    # lost, lost, 500, garbage, slow (more only if a loaded machine times a create out: also unknown)
    assert len(unknown) >= 5, df["status"].value_counts().to_dict()
    assert set(df["status"]) == {"completed", "unknown"}
    assert all(tasks[p] == 1 for p in unknown["prompt"])  # each was paid once, and never resent
    assert (unknown["error_kind"] == "outcome_unknown").all()
    assert unknown["error"].str.contains("never sent again on its own").all()
    assert unknown["error"].str.contains("cannot look a task up").all()
    assert counters["accepted"] == 30  # the 503s made nothing and were resent; the rest, once
    assert counters["paid_duplicates"] == 0 and max(tasks.values()) == 1


def test_a_refused_create_fails_only_its_row():
    rows: list[dict[str, Any]] = [{"prompt": f"meadow {i}"} for i in range(12)]
    rows[3] = {"prompt": "meadow veo", "model": "veo3.1"}  # not on this account: 403
    rows[7]["prompt"] += " [blocked]"  # input moderation: the task fails, and is charged
    with running_server(latency=0.2, max_concurrent=3, allowed_models=["gen4.5"]) as server:
        df = videobatch.run(rows, "runway", **options(server, max_parallel=3))
        counters = server.counters()
    assert df.loc[3, "status"] == "failed" and df.loc[3, "error_kind"] == "rejected"
    assert "veo3.1 is not available" in df.loc[3, "error"]
    assert df.loc[7, "status"] == "failed" and "SAFETY.INPUT.TEXT" in df.loc[7, "error"]
    assert (df.drop(index=[3, 7])["status"] == "completed").all()
    assert counters["accepted"] == 11 and counters["paid_duplicates"] == 0


def test_the_daily_cap_stops_submitting_and_keeps_the_rest_for_later(tmp_path):
    rows = [f"dune {i}" for i in range(8)]
    with running_server(latency=0.2, max_concurrent=2, max_daily=3) as server:
        with pytest.raises(AccountError, match="daily task limit") as caught:
            videobatch.run(rows, "runway", checkpoint=tmp_path / "run.parquet", **options(server, max_parallel=2))
        counters = server.counters()
    df = caught.value.results
    assert (df["status"] == "completed").sum() == 3 and (df["status"] == "pending").sum() == 5
    assert counters["accepted"] == 3 and counters["rejected"]["daily_limit"] >= 1


@pytest.mark.parametrize("deleted", ["cancelled", "not_found"])
def test_cancelling_a_run_stops_queued_tasks_at_runway(tmp_path, deleted):
    """Runway answers a cancelled task's GET with CANCELLED at no cost (the row ends cancelled, and
    a resume sends it again) or with 404, as in a live capture: then whether it was charged is not
    known, so the row ends failed, and is sent again only by the user's retry."""
    checkpoint = tmp_path / "r.parquet"
    prompts = [f"slow {i}" for i in range(3)]
    with running_server(latency=3.0, queue_share=1.0, max_concurrent=1, deleted=deleted) as server:
        batch = videobatch.Batch(prompts, "runway", checkpoint=checkpoint,
                                 **options(server, max_parallel=3))
        batch.start()
        deadline = time.monotonic() + 20
        # Until all three are open on both sides: a submit still in flight when Cancel comes is
        # left for the next run to reconcile (cancel stops promptly), not cancelled at Runway.
        while (server.counters()["accepted"] < 3 or batch.counts().get("generating", 0) < 3) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        batch.cancel()
        with contextlib.suppress(Exception):  # the outcome is read from the rows below
            batch.wait()
        counters = server.counters()
        df = batch.results()
        assert counters["cancelled"] == 3 and counters["credits_spent"] == 0  # queued: all refunded
        if deleted == "cancelled":
            assert (df["status"] == "cancelled").all(), df[["status", "error"]]
            return
        assert (df["status"] == "failed").all(), df[["status", "error"]]
        assert df["error"].str.contains("may have charged").all()
        again = videobatch.run(prompts, "runway", checkpoint=checkpoint, **options(server, max_parallel=3))
        assert server.counters()["accepted"] == 3  # nothing sent again on its own
    assert (again["status"] == "failed").all() and (again["error_kind"] == "cancelled").all()


@pytest.mark.timeout(300)
def test_kill_minus_nine_then_resume_pays_nothing_twice(tmp_path):
    """Killed while a create's answer is still on its way (a slow answer): that row was paid but
    its task id never reached us, so the resume marks it unknown and never sends it again."""
    prompts = [f"river {i:02d} at dawn" for i in range(30)]
    pd.DataFrame({"id": [f"r{i:02d}" for i in range(30)], "prompt": prompts}).to_csv(
        tmp_path / "prompts.csv", index=False)
    checkpoint = tmp_path / "prompts.checkpoint.parquet"
    with running_server(process=True, latency=0.6, jitter=0.3, max_concurrent=4,
                        faults="slow@create=0.25", slow_seconds=3.0) as server:
        argv = [sys.executable, "-m", "videobatch", str(tmp_path / "prompts.csv"), *flags(server, 4)]
        client = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        slow = 0
        while time.monotonic() < deadline:
            counters = server.counters()
            now_slow = counters["faults_injected"].get("slow", 0)
            if counters["succeeded"] >= 6 and now_slow > slow:
                break  # a create was just accepted and its answer is 3 s away: kill now
            slow = now_slow
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        before = videobatch.results(checkpoint)
        assert (before["status"] == "submitting").any(), before["status"].value_counts()
        kept = before[before["status"] == "completed"][["key", "task_id", "video_url"]]
        resumed = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=180)
        counters = server.counters()
        tasks = server.tasks()
    after = videobatch.results(checkpoint)
    merged = kept.merge(after, on="key", suffixes=("_before", ""))
    assert len(merged) == len(kept) and (merged["status"] == "completed").all()  # no result lost
    assert (merged["task_id_before"] == merged["task_id"]).all()  # ... nor redone
    assert counters["paid_duplicates"] == 0
    per_prompt = Counter(str(t["prompt"]) for t in tasks)
    assert max(per_prompt.values()) == 1  # every row paid at most once
    unknown = after[after["status"] == "unknown"]
    assert len(unknown) >= 1 and set(after["status"]) == {"completed", "unknown"}
    # Not resent: the slow answer's row was paid once; a row the kill caught before its request
    # left (a loaded machine) was not paid at all, and is unknown all the same.
    assert all(per_prompt[p] <= 1 for p in unknown["prompt"])
    assert any(per_prompt[p] == 1 for p in unknown["prompt"])
    assert unknown["error"].str.contains("never sent again on its own").all()
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # not all completed: say so
    by_id = {t["id"]: t for t in tasks}
    for row in after[after["status"] == "completed"].itertuples():
        assert by_id[row.task_id]["prompt"] == row.prompt  # its own task's video
    unpaid = sum(per_prompt[p] == 0 for p in unknown["prompt"])
    assert counters["accepted"] == len(tasks) == 30 - unpaid
