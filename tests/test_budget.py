"""A budget that is never exceeded (``max_cost=`` / ``--max-cost``, ``videobatch._spend``).

Against a scripted provider that prices each row (``[price:CENTS]``, ``[noprice]``) and watches,
at every submit that reaches it, what may have been paid so far plus what is being sent: that never
goes over the budget — under concurrency and retries, with answers lost (maybe paid counts as
paid), across a crash and resume (the checkpoint's spend counts), and over the providers of a mixed
table. Real parquet checkpoints throughout; the offline ``local`` provider and the real command
line where users meet them.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest

import videobatch
from fakes import ScriptedProvider
from videobatch._jobs import State
from videobatch._spend import Ledger, charge, micro
from videobatch._store import Checkpoint, load
from videobatch.errors import ConfigError
from videobatch.providers.local.provider import read_submissions


def price_of(prompt: str) -> float | None:
    if "[noprice]" in prompt:
        return None
    found = re.search(r"\[price:(\d+)\]", prompt)
    return int(found.group(1)) / 100 if found else 0.10


class Priced(ScriptedProvider):
    """Prices each row; records the most that was ever possibly paid plus being sent at once."""

    name = "priced"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sending = 0  # micro-USD of submits in flight at the provider
        self.created = 0  # micro-USD of tasks created (maybe paid)
        self.peak = 0

    def estimate_cost(self, request):
        return price_of(request.prompt)

    async def submit(self, request, idempotency_key):
        price = micro(price_of(request.prompt))
        before = self.accepted[idempotency_key]
        self.sending += price
        self.peak = max(self.peak, self.created + self.sending)
        try:
            return await super().submit(request, idempotency_key)
        finally:
            self.sending -= price
            if self.accepted[idempotency_key] > before:
                self.created += price


class Other(Priced):
    name = "other"


def spent_by_rows(df: pd.DataFrame) -> float:
    return float(df["cost_spent"].fillna(0).sum())


def test_the_budget_is_never_exceeded_under_concurrency_and_retries(tmp_path):
    prices = [10, 20, 30, 5]
    rows = [f"shot {i} [price:{prices[i % 4]}]" + (" [transient:1]" if i % 5 == 0 else "")
            + (" [slots:1]" if i % 7 == 0 else "") for i in range(40)]
    provider = Priced(max_parallel=8, latency=0.02)
    df = videobatch.run(rows, provider, checkpoint=tmp_path / "run.parquet", progress=False,
                        max_cost=2.00, max_attempts=3)
    assert provider.peak <= micro(2.00)
    assert usd_created(provider) <= 2.00
    waiting = df[df["status"] == "pending"]
    assert len(waiting) and (waiting["error_kind"] == "budget").all()
    assert waiting["error"].str.contains("would take the spend over the budget of \\$2.00").all()
    sent = df[df["status"] == "completed"]
    assert (sent["cost_estimated"] == sent["prompt"].map(price_of)).all()
    assert spent_by_rows(df) == pytest.approx(usd_created(provider))
    assert spent_by_rows(df) > 2.00 - 0.30  # the budget was used, not left idle
    # Resumable with a higher budget: only the rows left over are sent, nothing is paid twice.
    again = videobatch.run(rows, provider, checkpoint=tmp_path / "run.parquet", progress=False,
                           max_cost=10.0)
    assert (again["status"] == "completed").all()
    assert max(provider.accepted.values()) == 1


def usd_created(provider: Priced) -> float:
    return provider.created / 1_000_000


def test_a_lost_answer_counts_as_spent_and_its_row_is_never_sent_again(tmp_path):
    # Lost answers and a provider that can neither look up nor list: outcome unknown, maybe paid.
    rows = ["a [lost]", "b [lost]", "c", "d", "e"]
    checkpoint = tmp_path / "run.parquet"
    provider = Priced(max_parallel=1, lookup="refused", listing=None)
    df = videobatch.run(rows, provider, checkpoint=checkpoint, progress=False, max_cost=0.30)
    assert list(df["status"]) == ["unknown", "unknown", "completed", "pending", "pending"]
    assert list(df["error_kind"])[3:] == ["budget", "budget"]
    assert list(df["cost_spent"].fillna(0)) == pytest.approx([0.10, 0.10, 0.10, 0, 0])
    assert provider.peak <= micro(0.30) and sum(provider.accepted.values()) == 3
    # A resume with the same budget: the unknown rows are checked again, nothing more is sent.
    again = videobatch.run(rows, provider, checkpoint=checkpoint, progress=False, max_cost=0.30)
    assert list(again["status"]) == list(df["status"]) and sum(provider.accepted.values()) == 3
    # A retry of the unknown rows (the user's word: they may be paid twice) still keeps the budget,
    # and their first submissions stay counted.
    batch = videobatch.Batch.from_checkpoint(checkpoint, provider, progress=False, max_cost=0.45)
    assert batch.retry(failed=False, unknown=True) == 2
    batch.wait()
    # "a" is sent again (and its answer lost again), then "b", "d", "e" would exceed $0.45.
    jobs = load(checkpoint).jobs
    assert [j.state.value for j in jobs] == ["unknown", "pending", "completed", "pending", "pending"]
    assert sum(j.error_kind == "budget" for j in jobs) == 3
    assert jobs[0].cost_earlier == pytest.approx(0.10) and charge(jobs[0])[0] == micro(0.20)
    assert Ledger(jobs).figures().spent == pytest.approx(0.40)
    assert provider.created == micro(0.40) and provider.peak <= micro(0.45)


def test_a_crash_mid_submit_resumes_with_its_spend_counted(tmp_path):
    checkpoint = tmp_path / "run.parquet"
    rows = ["a", "b", "c"]
    # A run crashed right after journalling row "b"'s submit (the request may have left): the
    # checkpoint holds one completed row ("a") and one row in doubt.
    batch = videobatch.Batch(rows, Priced(), checkpoint=checkpoint, progress=False)
    # (the batch holds the checkpoint's lock: write as its run would)
    store = batch.store
    assert isinstance(store, Checkpoint)
    a, b, _ = batch.jobs
    for record in (a.transition(State.SUBMITTING, attempts=1, provider_used="priced",
                                cost_estimated=0.10),
                   a.transition(State.GENERATING, task_id="t-old", submitted_at=1.0),
                   a.transition(State.COMPLETED, video_url="https://cdn.test/old.mp4"),
                   b.transition(State.SUBMITTING, attempts=1, provider_used="priced",
                                cost_estimated=0.10)):
        store.append(record)
    store.sync()
    store.release()  # killed here: no final snapshot
    loaded = load(checkpoint).jobs
    assert [charge(j) for j in loaded] == [(micro(0.10), 0), (0, micro(0.10)), (0, 0)]
    # Resumed with a budget of $0.25: $0.10 spent and $0.10 in doubt leave room for no new row.
    plan = videobatch.plan(rows, Priced(), checkpoint=checkpoint, max_cost=0.25)
    assert plan.in_doubt == [b.key] and plan.send == [] and list(plan.refused) == [batch.jobs[2].key]
    assert plan.before.spent == pytest.approx(0.10) and plan.before.reserved == pytest.approx(0.10)
    provider = Priced(max_parallel=1)
    df = videobatch.run(rows, provider, checkpoint=checkpoint, progress=False, max_cost=0.25)
    # "b" was never received: its key is free, so it is sent (its reservation held all along);
    # "c" would exceed the budget.
    assert list(df["status"]) == ["completed", "completed", "pending"]
    assert df["error_kind"].iloc[2] == "budget"
    assert sum(provider.accepted.values()) == 1 and provider.peak <= micro(0.15)


def test_one_budget_over_every_provider_of_a_mixed_table():
    rows = [{"prompt": f"a {i} [price:20]", "provider": "priced"} for i in range(6)]
    rows += [{"prompt": f"b {i} [price:30]", "provider": "other"} for i in range(6)]
    priced, other = Priced(max_parallel=3), Other(max_parallel=3)
    df = videobatch.run(rows, priced, providers={"other": other}, progress=False, max_cost=1.50)
    assert priced.created + other.created <= micro(1.50)
    assert spent_by_rows(df) == pytest.approx((priced.created + other.created) / 1e6)
    assert (df["status"] == "pending").sum() >= 1
    assert set(df.loc[df["status"] == "pending", "error_kind"]) == {"budget"}


def test_a_row_without_a_price_is_not_sent_under_a_budget():
    provider = Priced()
    df = videobatch.run(["a", "b [noprice]"], provider, progress=False, max_cost=5)
    assert list(df["status"]) == ["completed", "pending"]
    assert "price of priced" in df["error"].iloc[1] and "is unknown" in df["error"].iloc[1]
    assert len(provider.accepted) == 1
    free = videobatch.run(["b [noprice]"], Priced(), progress=False)  # no budget: sent
    assert list(free["status"]) == ["completed"] and free["cost_estimated"].isna().all()


def test_a_budget_must_be_a_sum_of_money():
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="max_cost"):
            videobatch.Batch(["a"], "local", progress=False, max_cost=bad)


def test_the_command_line_keeps_the_budget_and_says_so(tmp_path):
    csv = tmp_path / "p.csv"
    pd.DataFrame({"prompt": [f"shot {i}" for i in range(5)]}).to_csv(csv, index=False)
    fast = ["-P", "latency=0.02", "-P", "render=false", "-q"]
    res = subprocess.run([sys.executable, "-m", "videobatch", str(csv), *fast, "--max-cost",
                          "0.12"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr  # rows left pending
    assert "2/5 completed" in res.stdout
    assert "spend (USD estimates): spent $0.10 · reserved $0.00 · budget $0.12 ($0.02 left)" in res.stdout
    assert "3 row(s) not sent because of the budget" in res.stdout
    accepted = [e for e in read_submissions() if e.get("outcome") == "accepted"]
    assert len(accepted) == 2
    status = subprocess.run([sys.executable, "-m", "videobatch", "status",
                             str(tmp_path / "p.checkpoint.parquet")],
                            capture_output=True, text=True, timeout=120)
    assert "Spend (USD estimates): spent $0.10 · reserved $0.00 · budget $0.12" in status.stdout
    assert "3 row(s) not sent because of the budget" in status.stdout
    more = subprocess.run([sys.executable, "-m", "videobatch", str(csv), *fast, "--max-cost", "1"],
                          capture_output=True, text=True, timeout=120)
    assert more.returncode == 0 and "5/5 completed" in more.stdout
    assert len([e for e in read_submissions() if e.get("outcome") == "accepted"]) == 5
    bad = subprocess.run([sys.executable, "-m", "videobatch", str(csv), "--max-cost", "-2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--max-cost must be a number of USD" in bad.stderr


def test_a_run_killed_mid_way_and_resumed_keeps_one_budget(tmp_path):
    """kill -9 while requests are in flight, then the same command again: the resumed run counts
    what the killed one spent (and may have spent), so the budget holds over both."""
    import os
    import signal
    import time

    csv = tmp_path / "p.csv"
    pd.DataFrame({"prompt": [f"shot {i}" for i in range(20)]}).to_csv(csv, index=False)
    args = [sys.executable, "-m", "videobatch", str(csv), "-q", "-P", "render=false",
            "--concurrency", "4", "--max-cost", "0.50"]  # $0.05 a row: ten rows at most
    proc = subprocess.Popen([*args, "-P", "latency=2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(accepted()) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    killed_after = len(accepted())
    assert 3 <= killed_after <= 4
    res = subprocess.run([*args, "-P", "latency=0.05"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stderr  # ten rows left pending by the budget
    assert len(accepted()) == 10  # the killed run's requests were adopted, not paid again
    assert "10/20 completed" in res.stdout and "10 row(s) not sent because of the budget" in res.stdout
    assert "spent $0.50 · reserved $0.00 · budget $0.50 ($0.00 left)" in res.stdout


def accepted() -> list[dict]:
    return [e for e in read_submissions() if e.get("outcome") == "accepted"]
