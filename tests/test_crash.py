"""Crash safety for real: kill -9 a CLI run at several moments, resume, count paid submissions.

Invariants checked after every resume: zero rows submitted twice (counted by the provider, which
lives on disk and outlives the killed client), zero completed rows lost (a row completed before the
kill is still completed, with the same task and video), every row completed in the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import videobatch
from videobatch.providers.local.provider import read_submissions

N = 30


@pytest.fixture
def workdir(tmp_path):
    pd.DataFrame({"id": [f"r{i:02d}" for i in range(N)],
                  "prompt": [f"a paper lantern number {i} rising at dusk" for i in range(N)],
                  "campaign": "festival"}).to_csv(tmp_path / "prompts.csv", index=False)
    return tmp_path


def command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "videobatch", str(workdir / "prompts.csv"), "-q",
            "--checkpoint", str(workdir / "run.parquet"), "--out", str(workdir / "results.csv"),
            "-P", f"root={workdir / 'provider'}", "-P", "render=false", "-P", "max_parallel=6",
            *extra]


def submissions(workdir: Path) -> list[dict]:
    return read_submissions(workdir / "provider")


def journal_states(workdir: Path) -> dict[str, str]:
    last: dict[str, str] = {}
    for seg in sorted(workdir.glob("run.parquet.journal.*")):
        for line in seg.read_bytes().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "k" in rec and "s" in rec:  # a transition (not a segment's header record)
                last[rec["k"]] = rec["s"]
    return last


def wait_until(pred, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    raise AssertionError("condition not reached")


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def completed_rows(workdir: Path) -> dict[str, tuple[str, str]]:
    df = videobatch.results(workdir / "run.parquet")
    done = df[df["status"] == "completed"]
    return {k: (t, u) for k, t, u in zip(done["key"], done["task_id"], done["video_url"], strict=True)}


def assert_invariants(workdir: Path, before: dict[str, tuple[str, str]]) -> None:
    subs = submissions(workdir)
    reached = Counter(s["idempotency_key"] for s in subs if s["outcome"] in ("accepted", "duplicate"))
    assert all(n == 1 for n in reached.values()), f"row submitted twice: {reached.most_common(3)}"
    after = completed_rows(workdir)
    lost = {k for k in before if after.get(k) != before[k]}
    assert not lost, f"completed rows lost or changed: {lost}"


MOMENTS = {
    "first_accepts": lambda w: len(submissions(w)) >= 2,
    "mid_run": lambda w: len(submissions(w)) >= N // 2,
    "while_submitting": lambda w: any(s == "submitting" for s in journal_states(w).values()),
    "after_some_completed": lambda w: list(journal_states(w).values()).count("completed") >= 5,
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_then_resume_pays_once_and_loses_nothing(workdir, moment):
    extra = ["-P", "latency=0.4", "-P", "jitter=0.3"]
    if moment == "while_submitting":
        extra += ["-P", "submit_delay=0.2"]  # a slow network: rows sit in `submitting` for a while
    proc = subprocess.Popen(command(workdir, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: MOMENTS[moment](workdir))
    finally:
        kill9(proc)
    assert proc.returncode == -signal.SIGKILL
    if moment == "while_submitting":
        assert "submitting" in journal_states(workdir).values()
    before = completed_rows(workdir)
    assert_invariants(workdir, before)

    done = subprocess.run(command(workdir, "-P", "latency=0.05"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_invariants(workdir, before)
    assert len({s["idempotency_key"] for s in submissions(workdir) if s["outcome"] == "accepted"}) == N
    df = pd.read_csv(workdir / "results.csv")
    assert (df["status"] == "completed").all() and len(df) == N


def test_repeated_kills_during_one_run(workdir):
    before: dict[str, tuple[str, str]] = {}
    for target in (3, 10, 18, 25):
        proc = subprocess.Popen(command(workdir, "-P", "latency=0.3", "-P", "submit_delay=0.02"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda t=target: len(submissions(workdir)) >= t)
        finally:
            kill9(proc)
        assert_invariants(workdir, before)
        before = completed_rows(workdir)
    done = subprocess.run(command(workdir, "-P", "latency=0.02"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_invariants(workdir, before)
    assert len(completed_rows(workdir)) == N


def test_ctrl_c_leaves_a_resumable_checkpoint(workdir):
    # Slow clips, so rows are still waiting when the signal lands even on a loaded machine.
    proc = subprocess.Popen(command(workdir, "-P", "latency=2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_until(lambda: len(submissions(workdir)) >= 8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "resume" in out
    df = videobatch.results(workdir / "run.parquet")
    assert set(df["status"]) <= {"cancelled", "generating", "completed", "submitting"}
    assert (df["status"] == "cancelled").sum() > 0
    before = completed_rows(workdir)
    done = subprocess.run(command(workdir, "-P", "latency=0.05"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_invariants(workdir, before)
    assert len(completed_rows(workdir)) == N


def test_sigterm_environment_is_clean():
    # Guard: the tests above rely on signals reaching the child directly.
    assert os.name == "posix"
