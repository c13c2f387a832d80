"""End to end: ``videobatch.run`` and the CLI against the Kling-compatible server on loopback.

The invariants under test: never pay twice (the server counts accepted tasks and same-content
repeats), never lose a completed row (kill -9 of the client, then resume), stay under the parallel
limit, and fail before submitting anything when the credentials are missing or wrong.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pandas as pd
import pytest

import videobatch
from videobatch.errors import AuthError, ConfigError
from videobatch.testing import ServerHandle, SimConfig, running_server

AK, SK = SimConfig.access_key, SimConfig.secret_key
FAULT_MIX = ("rate_limit=0.03,rate_limit_bare=0.02,server_error=0.03,garbage=0.03,slow=0.02,"
             "lost=0.04,lost_500=0.03,fail=0.04")
FAST = {"first_poll": 0.15, "poll_interval": 0.05, "max_poll_interval": 0.5, "max_rps": 100}


def kling_options(server: ServerHandle, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.url, "access_key": AK, "secret_key": SK, "progress": False,
            **FAST, **extra}


def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "videobatch", *args], capture_output=True,
                          text=True, timeout=timeout, env=env or os.environ.copy())


def cli_env(**keys: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env.update({k: v for k, v in keys.items() if v is not None})
    return env


def fast_flags(server: ServerHandle, max_parallel: int) -> list[str]:
    flags = ["--provider", "kling", "--base-url", server.url, "-q",
             "-P", f"max_parallel={max_parallel}"]
    for key, value in FAST.items():
        flags += ["-P", f"{key}={value}"]
    return flags


def test_hundred_rows_under_a_fault_mix(tmp_path):
    rows = [f"scene {i}: a lighthouse at dusk" for i in range(100)]
    blocked = {7, 41, 88}
    marked = {13, 64}
    for i in blocked:
        rows[i] += " [blocked]"
    for i in marked:
        rows[i] += " [fail]"
    with running_server(latency=0.2, jitter=0.3, max_parallel=10, slow_seconds=1.0,
                        faults=FAULT_MIX, seed=4) as server:
        df = videobatch.run(rows, "kling", checkpoint=tmp_path / "run.parquet",
                            **kling_options(server, max_parallel=5, http_timeout=0.5))
        counters = server.counters()

    assert set(df["status"]) <= {"completed", "failed"}
    failed = df[df["status"] == "failed"]
    for i, row in failed.iterrows():
        if i in blocked:
            assert row["error_kind"] == "rejected"
            assert "content policy" in row["error"]
        else:  # the task ended failed, in the server's words
            assert "Video generation failed" in row["error"], row["error"]
    assert blocked | marked <= set(failed.index)
    done = df[df["status"] == "completed"]
    assert done["video_url"].str.startswith(server.url).all()
    assert done["expires_at"].notna().all()

    # Never paid twice: each non-blocked row became exactly one task.
    assert counters["accepted"] == 100 - len(blocked)
    assert counters["paid_duplicates"] == 0
    assert counters["peak_parallel"] <= 5  # the client's limit (the server would allow 10)
    assert sum(counters["faults_injected"].values()) > 10  # the mix really happened


def test_cli_run_against_the_server(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(12)],
                  "prompt": [f"a paper boat, take {i}" for i in range(12)],
                  "duration": ["5"] * 6 + ["10"] * 6}).to_csv(prompts, index=False)
    with running_server(latency=0.2, jitter=0.2, max_parallel=3) as server:
        done = cli(str(prompts), *fast_flags(server, 3),
                   env=cli_env(KLING_ACCESS_KEY=AK, KLING_SECRET_KEY=SK))
        counters = server.counters()
    assert done.returncode == 0, done.stdout + done.stderr
    results = pd.read_csv(tmp_path / "prompts.results.csv")
    assert (results["status"] == "completed").all()
    assert set(results["video_duration"]) == {5.0, 10.0}
    assert counters["accepted"] == 12
    assert counters["peak_parallel"] <= 3
    for text in (done.stdout, done.stderr, (tmp_path / "prompts.results.csv").read_text()):
        assert AK not in text
        assert SK not in text


def test_kill_minus_nine_then_resume(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": [f"river {i} at dawn" for i in range(40)]}).to_csv(prompts,
                                                                               index=False)
    checkpoint = tmp_path / "prompts.checkpoint.parquet"
    env = cli_env(KLING_ACCESS_KEY=AK, KLING_SECRET_KEY=SK)
    with running_server(process=True, latency=0.6, jitter=0.3, max_parallel=5,
                        faults="lost=0.1,garbage=0.05") as server:
        argv = [sys.executable, "-m", "videobatch", str(prompts), *fast_flags(server, 5)]
        client = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while server.counters()["succeeded"] < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        assert client.returncode == -signal.SIGKILL
        before = videobatch.results(checkpoint)
        assert before["status"].isin(["completed", "generating", "submitting"]).any()
        assert (before["status"] != "completed").any()  # really killed mid-run
        kept = before[before["status"] == "completed"][["key", "task_id", "video_url"]]

        resumed = cli(str(prompts), *fast_flags(server, 5), env=env)
        counters = server.counters()

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = videobatch.results(checkpoint)
    assert (after["status"] == "completed").all()
    merged = kept.merge(after, on="key", suffixes=("_before", ""))
    assert len(merged) == len(kept)  # no completed row lost ...
    assert (merged["task_id_before"] == merged["task_id"]).all()  # ... nor redone
    assert (merged["video_url_before"] == merged["video_url"]).all()
    assert counters["accepted"] == 40  # every row exactly one paid task
    assert counters["paid_duplicates"] == 0
    assert counters["peak_parallel"] <= 5


def test_missing_keys_fail_before_anything_is_sent(monkeypatch, tmp_path):
    monkeypatch.delenv("KLING_ACCESS_KEY", raising=False)
    monkeypatch.delenv("KLING_SECRET_KEY", raising=False)
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": ["a", "b"]}).to_csv(prompts, index=False)
    with running_server() as server:
        with pytest.raises(ConfigError, match="KLING_ACCESS_KEY"):
            videobatch.run(["a", "b"], "kling", base_url=server.url, progress=False)
        with pytest.raises(ConfigError, match="KLING_SECRET_KEY"):
            videobatch.run(["a", "b"], "kling", base_url=server.url, access_key=AK,
                           progress=False)
        missing = cli(str(prompts), "--provider", "kling", "--base-url", server.url,
                      env=cli_env(KLING_ACCESS_KEY=AK))
        counters = server.counters()
    assert missing.returncode == 2
    assert "KLING_SECRET_KEY" in missing.stderr
    assert counters["requests"] == 0


def test_wrong_keys_stop_the_run_and_nothing_is_paid(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": [f"p{i}" for i in range(6)]}).to_csv(prompts, index=False)
    wrong = "a-wrong-secret-key-0123456789abcdef"
    with running_server(latency=0.2) as server:
        with pytest.raises(AuthError, match="KLING_SECRET_KEY") as caught:
            videobatch.run([f"p{i}" for i in range(6)], "kling",
                           **kling_options(server, secret_key=wrong))
        partial = caught.value.results  # type: ignore[attr-defined]
        refused = cli(str(prompts), *fast_flags(server, 5),
                      env=cli_env(KLING_ACCESS_KEY=AK, KLING_SECRET_KEY=wrong))
        counters = server.counters()
    assert not (partial["status"] == "completed").any()
    assert refused.returncode == 2
    assert "KLING_SECRET_KEY" in refused.stdout + refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    assert counters["accepted"] == 0


def test_a_smaller_account_limit_is_learned_not_hammered():
    """The account allows 3 parallel tasks and 15 requests/s, the client was told 6 and 100."""
    with running_server(latency=0.3, jitter=0.2, max_parallel=3, rps=15) as server:
        df = videobatch.run([f"tide pool {i}" for i in range(30)], "kling",
                            **kling_options(server, max_parallel=6))
        counters = server.counters()
    assert (df["status"] == "completed").all()
    assert counters["accepted"] == 30
    assert counters["paid_duplicates"] == 0
    assert counters["rejected"].get("parallel_limit", 0) <= 10  # backs off and adapts


def test_polls_per_end_trades_status_requests_for_fuller_slots():
    """One list page answers for every task: by default about one per task end, with
    polls_per_end=3 several (each end seen sooner), and the run ends all the same."""
    pages = {}
    for per_end in (1, 3):
        with running_server(latency=2.0, jitter=0.2, max_parallel=3, seed=3) as server:
            # (a first wave polled as the defaults do, so the pages counted are the learned ones)
            df = videobatch.run([f"reef {i}" for i in range(15)], "kling",
                                **kling_options(server, max_parallel=3, polls_per_end=per_end,
                                                first_poll=1.6, poll_interval=0.5))
            counters = server.counters()
        assert (df["status"] == "completed").all() and counters["paid_duplicates"] == 0
        pages[per_end] = counters["polls_list"]
    assert pages[3] >= 1.5 * pages[1], pages  # (about 1.8: the first wave and the tail are alike)
    with pytest.raises(ConfigError, match="polls_per_end"):
        videobatch.Batch(["x"], "kling", api_key="k", polls_per_end="nan")


def test_a_model_the_catalogue_still_lists_but_kling_retired_stops_early_not_row_by_row(tmp_path):
    """The catalogue is stale: Kling answers 1203 for kling-v2-6. After 3 refusals in a row its rows
    are not sent any more (pending, unpaid, with Kling's words); the other model's rows finish."""
    rows = [{"prompt": f"shot {i}", "model": "kling-v2-6" if i % 2 else "kling-v3"} for i in range(16)]
    with running_server(latency=0.2, max_parallel=2,
                        retired=(*SimConfig().retired, "kling-v2-6")) as server:
        with pytest.raises(videobatch.ProviderError) as caught:
            videobatch.run(rows, "kling", checkpoint=tmp_path / "run.parquet", concurrency=2,
                           **kling_options(server))
        counters = server.counters()
    df = caught.value.results
    assert isinstance(caught.value, videobatch.ModelRefused)
    assert "kling-v2-6" in str(caught.value) and "does not exist" in str(caught.value)
    v3 = df[df["model"] == "kling-v3"]
    v26 = df[df["model"] == "kling-v2-6"]
    assert (v3["status"] == "completed").all()
    assert (v26["status"] == "pending").all()  # unpaid, to resume once the model is fixed
    tried = v26["attempts"].fillna(0)
    assert tried.sum() <= 3 + 1  # 3 in a row block it (one more may have been on its way)
    assert (v26["error_kind"][tried > 0] == "model_refused").all()
    assert counters["accepted"] == 8 and counters["paid_duplicates"] == 0
    # the CLI says so and exits 1
    csv = tmp_path / "p.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    with running_server(latency=0.2, retired=(*SimConfig().retired, "kling-v2-6")) as server:
        res = cli(str(csv), *fast_flags(server, 2), env=cli_env(KLING_ACCESS_KEY=AK, KLING_SECRET_KEY=SK))
    assert res.returncode == 1, res.stderr
    assert "kling-v2-6" in res.stdout and "not submitted" in res.stdout


def test_concurrency_states_the_account_limit_and_is_honoured_above_the_default(tmp_path):
    """A pack of 10 parallel tasks: --concurrency 10 keeps 10 in flight (the provider's default
    guess is 5), and the server never sees more than it allows."""
    rows = [f"clip {i}" for i in range(30)]
    with running_server(latency=0.6, jitter=0.0, max_parallel=10) as server:
        df = videobatch.run(rows, "kling", concurrency=10, **kling_options(server))
        counters = server.counters()
    assert (df["status"] == "completed").all()
    assert counters["peak_parallel"] == 10 and counters["paid_duplicates"] == 0
