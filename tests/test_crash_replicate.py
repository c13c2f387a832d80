"""Crash consistency against Replicate: kill -9 the CLI at 12 random moments, resume, count the bill.

Replicate keeps no key of ours, so this is the hard case for "never pay twice": a row whose create
answer was lost, or that a kill left ``submitting``, can only be settled by listing the account's
predictions and matching their inputs, among other systems' predictions. The Replicate-compatible
server runs in its own process (it outlives every killed client), loses some create answers after
making the prediction and answers some late. Checked from the server's side (``/_test/tasks``): each
row paid exactly once across all runs, every result is the prediction made for that row, and a
result once completed never changes or disappears.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

import videobatch
from videobatch.testing.replicate_server import ServerHandle, running_server
from videobatch.testing.replicate_sim import SimConfig

ROWS = 24
KILLS = 12
SEED = 20262
SERVER: dict[str, Any] = {"latency": 1.0, "jitter": 0.3, "slow_seconds": 0.4, "seed": 9,
                          "foreign_predictions": 30}
FAULTS: dict[str, Any] = {"lost@create": {"rate": 0.05, "next": 1}, "slow@create": 0.08}
CLIENT: dict[str, Any] = {"max_parallel": 2, "first_poll": 0.1, "poll_interval": 0.05,
                          "max_poll_interval": 0.3, "max_rps": 100, "http_timeout": 2}
KILL_AFTER = (0.0, 0.6)  # seconds after the run's first request to the server


def command(work: Path, url: str) -> list[str]:
    argv = [sys.executable, "-m", "videobatch", str(work / "prompts.csv"), "-q",
            "--provider", "replicate", "--base-url", url,
            "--checkpoint", str(work / "run.parquet"), "--out", str(work / "results.csv")]
    for key, value in CLIENT.items():
        argv += ["-P", f"{key}={value}"]
    return argv


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    return {**env, "REPLICATE_API_TOKEN": SimConfig.token}


def checkpoint(work: Path) -> tuple[Counter[str], dict[str, tuple[str, str]]]:
    if not (work / "run.parquet").exists():
        return Counter(), {}
    df = videobatch.results(work / "run.parquet")
    done = df[df["status"] == "completed"]
    return Counter(df["status"]), dict(zip(
        done["key"], zip(done["task_id"], done["video_url"], strict=True), strict=True))


def served(http: httpx.Client, server: ServerHandle) -> int:
    count: int = http.get(f"{server.url}/_test/counters").json()["requests"]
    return count


def run_until_killed(argv: list[str], server: ServerHandle, delay: float, log: Path) -> int | None:
    """Start the CLI, kill -9 it ``delay`` s after its first request (unless it ends first)."""
    with httpx.Client(timeout=10) as http, log.open("w") as out:
        before = served(http, server)
        proc = subprocess.Popen(argv, env=environment(), stdout=out, stderr=subprocess.STDOUT)
        started, first = time.monotonic(), None
        try:
            while proc.poll() is None and time.monotonic() - started < 30:
                if first is None and served(http, server) > before:
                    first = time.monotonic()
                if first is not None and time.monotonic() - first >= delay:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None and first is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode


@pytest.mark.timeout(600)
def test_twelve_kills_with_lost_answers_and_no_key_of_ours(tmp_path):
    prompts = [f"crash-row {i:02d}: a kite over the dunes, take {i}" for i in range(ROWS)]
    pd.DataFrame({"id": [f"r{i:02d}" for i in range(ROWS)], "prompt": prompts}).to_csv(
        tmp_path / "prompts.csv", index=False)
    rng = random.Random(SEED)
    kept: dict[str, tuple[str, str]] = {}
    changed: list[str] = []
    stopped: list[tuple[int, int | None]] = []
    phases: list[Counter[str]] = []
    with running_server(process=True, faults=FAULTS, **SERVER) as server:
        argv = command(tmp_path, server.api_url)
        for i in range(KILLS):
            rc = run_until_killed(argv, server, rng.uniform(*KILL_AFTER), tmp_path / f"run-{i:02d}.log")
            if rc not in (-signal.SIGKILL, 0):
                stopped.append((i, rc))
            counts, now = checkpoint(tmp_path)
            phases.append(counts)
            changed += [k for k, v in kept.items() if now.get(k) != v]
            kept.update(now)
        final = subprocess.run(argv, env=environment(), capture_output=True, text=True, timeout=120)
        tasks = server.tasks()
        counters = server.counters()

    report = (f"final: exit {final.returncode}\n{(final.stdout + final.stderr)[-2000:]}\n"
              f"statuses after each kill: {[dict(p) for p in phases]}\n"
              f"server: accepted={counters['accepted']} rejected={counters['rejected']} "
              f"faults={counters['faults_injected']}")
    assert not stopped and final.returncode == 0, f"stopped runs {stopped}\n{report}"
    assert sum(p["completed"] < ROWS for p in phases) >= KILLS * 3 // 4, report

    ours = [t for t in tasks if not t["foreign"]]
    paid = Counter(t["prompt"] for t in ours)
    assert set(paid) == set(prompts), report
    assert all(n == 1 for n in paid.values()), f"paid twice: {paid.most_common(3)}\n{report}"
    assert counters["accepted"] == ROWS and counters["paid_duplicates"] == 0, report
    assert sum(counters["faults_injected"].get(k, 0) for k in ("lost", "slow")) >= 1

    results = pd.read_csv(tmp_path / "results.csv", dtype={"task_id": str})
    assert set(results["status"]) == {"completed"}, results["status"].value_counts().to_dict()
    by_id = {t["id"]: t for t in tasks}
    for row in results.itertuples():
        task = by_id.get(row.task_id)
        assert task is not None and not task["foreign"], f"row {row.id}: task {row.task_id}"
        assert task["prompt"] == row.prompt, f"row {row.id} holds another row's prediction"
        assert row.video_url == task["url"]
    assert not changed, f"completed rows changed by a later run: {sorted(set(changed))}"
