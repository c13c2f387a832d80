"""A dry run that tells the truth: the plan (``videobatch.plan``, ``Batch.plan()``, ``--dry-run``)
says how many paid requests the same call would make, and then the call makes exactly that many.

A matrix of situations against the offline ``local`` provider, which logs every submission that
reaches its simulated account (``read_submissions``): a fresh table; a resumed one (all done, or
stopped by the budget); prompts edited in a table with and without an ``id`` column, with and
without ``force``; rows added and removed; failed rows retried; cancelled rows resumed (or left, by
a retry); a budget; rows taken from the result cache (``reuse``) alone, with a budget, on a resume
and after edits. Each plans, checks the plan wrote nothing, runs, and compares. Real parquet
checkpoints; the real command line for the case that was reported.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import videobatch
from videobatch._jobs import State
from videobatch._store import Checkpoint
from videobatch.errors import CheckpointError
from videobatch.providers.local.provider import read_submissions

LOCAL: dict[str, Any] = {"latency": 0.01, "render": False}


def paid() -> int:
    return sum(1 for e in read_submissions() if e.get("outcome") == "accepted")


def table(prompts: list[str], *, ids: bool = True) -> pd.DataFrame:
    frame = pd.DataFrame({"prompt": prompts})
    if ids:
        frame.insert(0, "id", [f"shot-{i}" for i in range(len(prompts))])
    return frame


def files(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name.startswith("run.")}


def run(rows: pd.DataFrame, checkpoint: Path, **kwargs: Any) -> pd.DataFrame:
    return videobatch.run(rows, "local", checkpoint=checkpoint, progress=False, **LOCAL, **kwargs)


FIVE = [f"shot {i}: a harbour at dawn" for i in range(5)]


def fresh(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    return table(FIVE), {}


def all_done(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    run(table(FIVE), ck)
    return table(FIVE), {}


def stopped_by_the_budget(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    run(table(FIVE), ck, max_cost=0.10)  # $0.05 a row: two sent, three left pending
    return table(FIVE), {}


def edited(ids: bool) -> Callable[[Path], tuple[pd.DataFrame, dict[str, Any]]]:
    def setup(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
        run(table(FIVE, ids=ids), ck)
        changed = [p + (" at night" if i in (1, 3) else "") for i, p in enumerate(FIVE)]
        return table(changed, ids=ids), {"force": True}
    return setup


def added_and_removed(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    run(table(FIVE), ck)
    rows = table(FIVE).drop(index=[0, 4])
    more = pd.DataFrame({"id": ["shot-new"], "prompt": ["a lighthouse in fog"]})
    return pd.concat([rows, more], ignore_index=True), {"force": True}


def forced_without_changes(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    run(table(FIVE), ck)
    return table(FIVE), {"force": True}


def with_a_budget(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    return table(FIVE), {"max_cost": 0.17, "mode": "std"}


def with_cancelled_rows(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    batch = videobatch.Batch(table(FIVE), "local", checkpoint=ck, progress=False, **LOCAL)
    store = batch.store
    assert isinstance(store, Checkpoint)
    for job in batch.jobs[:2]:  # a run cancelled before these rows were sent
        store.append(job.transition(State.CANCELLED))
    store.sync()
    store.release()
    return table(FIVE), {}


def made_elsewhere(prompts: list[str], kept: Callable[[Path], Any] | None = None,
                   **kwargs: Any) -> Callable[[Path], tuple[pd.DataFrame, dict[str, Any]]]:
    """``prompts`` were made by a run into another checkpoint (the result cache remembers them);
    ``kept``: what the checkpoint itself went through first."""
    def setup(ck: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
        rows, more = kept(ck) if kept is not None else (table(FIVE), {})
        run(table(prompts), ck.with_name("elsewhere.parquet"), reuse=True)
        return rows, {**more, **kwargs, "reuse": True}
    setup.__name__ = f"reused_{len(prompts)}" + (f"_after_{kept.__name__}" if kept else "") + (
        "_" + "_".join(kwargs) if kwargs else "")
    return setup


NIGHT = [p + (" at night" if i in (1, 3) else "") for i, p in enumerate(FIVE)]


@pytest.mark.parametrize(("setup", "expected"), [
    (fresh, 5),
    (all_done, 0),
    (stopped_by_the_budget, 3),
    (edited(ids=True), 2),  # the case reported: the old dry run said 0, --force paid 2
    (edited(ids=False), 2),  # the edited rows get new keys: two new rows, two dropped
    (added_and_removed, 1),
    (forced_without_changes, 0),
    (with_a_budget, 3),
    (with_cancelled_rows, 5),  # a resume sends the cancelled rows too
    (made_elsewhere(FIVE), 0),  # every row reused: nothing paid
    (made_elsewhere(FIVE[:3]), 2),
    (made_elsewhere(FIVE[:2], max_cost=0.10), 2),  # reused rows cost nothing: two more fit
    (made_elsewhere(FIVE, kept=stopped_by_the_budget), 0),  # 2 kept, 3 reused
    (made_elsewhere(NIGHT, kept=edited(ids=True)), 0),  # the edited rows were made elsewhere
    (made_elsewhere(FIVE[:4], kept=with_cancelled_rows), 1),  # resumed cancelled rows reused too
], ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_plan_says_how_many_paid_requests_the_run_makes(tmp_path, setup, expected):
    ck = tmp_path / "run.parquet"
    rows, kwargs = setup(ck)
    before_files, before_paid = files(tmp_path), paid()
    plan = videobatch.plan(rows, "local", checkpoint=ck, **LOCAL, **kwargs)
    assert files(tmp_path) == before_files and paid() == before_paid  # the plan wrote nothing
    assert plan.paid == expected
    assert plan.paid + len(plan.kept) + len(plan.reused) + len(plan.refused) \
        + sum(map(len, plan.left.values())) == len(rows) == plan.rows
    assert sum(g.rows for g in plan.groups) == plan.paid
    assert plan.estimated == pytest.approx(0.05 * plan.paid)
    df = run(rows, ck, **kwargs)
    assert paid() - before_paid == plan.paid
    assert (df["status"] == "completed").sum() == len(plan.kept) + len(plan.reused) + plan.paid
    reused = df["reused_from"].notna() if "reused_from" in df.columns else df["key"].isna()
    assert df.loc[reused, "key"].tolist() == plan.reused
    assert (df["error_kind"] == "budget").sum() == len(plan.refused)


def test_edited_rows_without_force_are_refused_by_the_plan_as_by_the_run(tmp_path):
    ck = tmp_path / "run.parquet"
    run(table(FIVE), ck)
    changed = table([p + " at night" for p in FIVE])
    before = paid()
    with pytest.raises(CheckpointError, match="5 row\\(s\\) changed"):
        videobatch.plan(changed, "local", checkpoint=ck, **LOCAL)
    with pytest.raises(CheckpointError, match="5 row\\(s\\) changed"):
        run(changed, ck)
    assert paid() == before


def test_retrying_failed_rows_pays_for_what_the_retry_plan_says(tmp_path):
    ck = tmp_path / "run.parquet"
    rows = table([f"scene {i}" for i in range(10)])
    first = run(rows, ck, failure_rate=0.5)
    failed = int((first["status"] == "failed").sum())
    assert failed, "failure_rate=0.5 over 10 rows should fail some"
    dry = videobatch.Batch.from_checkpoint(ck, "local", progress=False, dry_run=True, **LOCAL)
    assert dry.retry() == failed
    plan = dry.plan()
    assert plan.paid == failed and len(plan.kept) == 10 - failed
    before = paid()
    batch = videobatch.Batch.from_checkpoint(ck, "local", progress=False, **LOCAL)
    batch.retry()
    batch.wait()
    assert paid() - before == plan.paid


def test_a_retry_leaves_cancelled_rows_and_its_plan_says_so(tmp_path):
    ck = tmp_path / "run.parquet"
    with_cancelled_rows(ck)
    dry = videobatch.Batch.from_checkpoint(ck, "local", progress=False, dry_run=True, **LOCAL)
    dry.retry()  # nothing failed; the cancelled rows stay cancelled on a retry
    plan = dry.plan()
    assert plan.paid == 3 and len(plan.left["cancelled"]) == 2
    with pytest.raises(Exception, match="dry run"):
        dry.wait()


def test_the_reported_case_on_the_command_line(tmp_path):
    """Prompts edited in a CSV with an id column: --dry-run --force says what --force pays."""
    csv = tmp_path / "p.csv"
    table(FIVE).to_csv(csv, index=False)
    fast = ["-P", "latency=0.01", "-P", "render=false", "-q"]
    cli = [sys.executable, "-m", "videobatch", str(csv), *fast]
    assert subprocess.run(cli, capture_output=True, timeout=120).returncode == 0
    table([p + (" at night" if i < 3 else "") for i, p in enumerate(FIVE)]).to_csv(csv, index=False)
    before = paid()
    dry = subprocess.run([*cli, "--dry-run", "--force"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "5 rows valid; 3 would be submitted to 'local'" in dry.stdout
    assert "3 row(s) changed since" in dry.stdout and "2 already completed" in dry.stdout
    assert "estimated cost: about $0.15" in dry.stdout and paid() == before
    done = subprocess.run([*cli, "--force"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert paid() - before == 3


# ---------------------------------------------------------------------- asking first
def in_terminal(args: list[str], answer: bytes | None, env: dict[str, str]) -> tuple[int, str]:
    """Run the command with stdin and stdout on a terminal (a pty); answer its question."""
    import os
    import select

    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "videobatch", *args], stdin=slave, stdout=slave,
                            stderr=subprocess.PIPE, env=env)
    os.close(slave)
    out = b""
    answered = answer is None
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError(f"no answer from the command: {out!r}")
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"[y/N]" in out:
            os.write(master, answer + b"\n")
            answered = True
    os.close(master)
    proc.wait(60)
    return proc.returncode, out.decode(errors="replace")


def test_a_run_above_the_threshold_asks_first_in_a_terminal(tmp_path):
    import os

    csv = tmp_path / "p.csv"
    table(FIVE).to_csv(csv, index=False)
    args = [str(csv), "-q", "-P", "latency=0.01", "-P", "render=false"]
    env = {**os.environ, "VIDEOBATCH_CONFIRM_ABOVE": "0.10"}
    code, out = in_terminal(args, b"n", env)
    assert code == 130 and "Send 5 paid request(s), about $0.25" in out, out
    assert "5 × local-v1 std 5s" in out and paid() == 0
    code, out = in_terminal(args, b"y", env)
    assert code == 0 and "5/5 completed" in out and paid() == 5
    # Under the threshold, with --yes, or in a script (no terminal): no question.
    table([*FIVE, "one more"]).to_csv(csv, index=False)
    code, out = in_terminal([*args, "--force"], None, env)  # $0.05 left to send: under $0.10
    assert code == 0 and "[y/N]" not in out and paid() == 6
    piped = subprocess.run([sys.executable, "-m", "videobatch", *args, "--checkpoint",
                            str(tmp_path / "other.parquet")], capture_output=True, text=True,
                           env=env, timeout=120)
    assert piped.returncode == 0 and "[y/N]" not in piped.stdout and paid() == 12
    code, out = in_terminal([*args, "--yes", "--checkpoint", str(tmp_path / "third.parquet")],
                            None, env)
    assert code == 0 and "[y/N]" not in out and paid() == 18
