"""End to end: ``videobatch.run`` and the CLI against the Google-compatible server on loopback.

Google keeps no key of ours and has no lookup or listing, so the invariants look like this: a
create whose answer was lost is never sent again (its row ends ``unknown``, and stays so on
resume), nothing is paid twice (the server counts same-input creates), a kill -9 loses no
completed row, and the parallel limit holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import videobatch
from videobatch.errors import ConfigError
from videobatch.testing.google_server import ServerHandle, SimConfig, running_server

KEY = SimConfig.api_key
FAST = {"first_poll": 0.1, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 100}


def options(server: ServerHandle, videos: Path, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.url, "api_key": KEY, "video_dir": str(videos), "progress": False,
            **FAST, **extra}


def cli_env(key: str | None = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GOOGLE_API_KEY")}
    return env | ({"GEMINI_API_KEY": key} if key else {})


def flags(server: ServerHandle, videos: Path, max_parallel: int) -> list[str]:
    out = ["--provider", "google", "--base-url", server.url, "-q", "-P", f"max_parallel={max_parallel}",
           "-P", f"video_dir={videos}"]
    for key, value in FAST.items():
        out += ["-P", f"{key}={value}"]
    return out


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "videobatch", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_thirty_rows_complete_under_harmless_faults(tmp_path):
    faults = ("rate_limit=0.05,rate_limit_bare=0.03,server_error@query=0.05,garbage@query=0.03,"
              "slow@query=0.02")
    rows = [f"scene {i}: a lighthouse at dusk" for i in range(30)]
    with running_server(latency=0.2, jitter=0.3, max_parallel=10, slow_seconds=0.5, seed=3,
                        retry_delay=0.2, faults=faults) as server:
        df = videobatch.run(rows, "google", checkpoint=tmp_path / "run.parquet",
                            download=tmp_path / "out", **options(server, tmp_path / "v", max_parallel=4))
        counters = server.counters()
    assert (df["status"] == "completed").all(), df["error"].dropna().tolist()
    assert df["video_url"].str.startswith("file://").all()
    assert df["local_path"].map(lambda p: Path(p).stat().st_size > 0).all()
    assert counters["accepted"] == 30 and counters["paid_duplicates"] == 0
    assert counters["peak_active"] <= 4
    assert sum(counters["faults_injected"].values()) >= 3
    assert counters["key_leaks"] == 0 and counters["key_in_query"] == 0


def test_lost_answers_are_never_paid_twice(tmp_path):
    rows = [f"take {i}: a paper boat on a pond" for i in range(12)]
    # two answers dropped and one 503 after the interaction was created; one 500 before creating
    faults = {"lost@create": 2, "lost_500@create": 1, "server_error@create": 1}
    with running_server(latency=0.2, max_parallel=5, faults=faults) as server:
        first = videobatch.run(rows, "google", checkpoint=tmp_path / "run.parquet",
                               **options(server, tmp_path / "v", max_parallel=3))
        again = videobatch.run(rows, "google", checkpoint=tmp_path / "run.parquet",
                               **options(server, tmp_path / "v", max_parallel=3))
        counters = server.counters()
    unknown = first[first["status"] == "unknown"]
    assert len(unknown) == 4  # the 500 before creating is unknown too: the client cannot tell
    assert (unknown["error_kind"] == "outcome_unknown").all()
    assert unknown["error"].str.contains("cannot look a task up").all()
    assert (first["status"].isin(["completed", "unknown"])).all()
    assert (again["status"] == first["status"]).all()  # resumed: still not sent again
    assert counters["accepted"] == 11  # 12 rows, one create refused before anything was made
    assert counters["paid_duplicates"] == 0


def test_a_refused_create_fails_only_its_row(tmp_path):
    rows = [f"orchard {i}" for i in range(8)]
    rows[2] += " [blocked]"
    rows[5] += " [fail]"
    with running_server(latency=0.2, faults={"policy@create": 1}) as server:
        df = videobatch.run(rows, "google", **options(server, tmp_path / "v"))
        counters = server.counters()
    failed = df[df["status"] == "failed"]
    assert set(df["status"]) == {"completed", "failed"}
    assert 2 in failed.index and 5 in failed.index and len(failed) == 3  # + the policy fault's row
    assert (failed.drop(index=5)["error_kind"] == "rejected").all()
    assert "usage policies" in failed.loc[2, "error"]
    assert "marked prompt" in failed.loc[5, "error"]
    assert counters["accepted"] == 6 and counters["paid_duplicates"] == 0


@pytest.mark.parametrize("over_limit", ["refuse", "queue"])
def test_the_parallel_limit_holds(tmp_path, over_limit):
    with running_server(latency=0.3, jitter=0.2, max_parallel=3, over_limit=over_limit,
                        retry_delay=0.2, get_delivery="uri") as server:
        df = videobatch.run([f"tide pool {i}" for i in range(15)], "google",
                            **options(server, tmp_path / "v",
                                      max_parallel=6 if over_limit == "refuse" else 3))
        counters = server.counters()
    assert (df["status"] == "completed").all(), df["error"].dropna().tolist()
    assert counters["accepted"] == 15 and counters["paid_duplicates"] == 0
    assert counters["peak_active"] <= 3
    assert counters["downloads"] == 15 and counters["key_leaks"] == 0


def test_cli_run_never_shows_the_key_and_needs_one(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(6)],
                  "prompt": [f"a kite, take {i}" for i in range(6)]}).to_csv(prompts, index=False)
    with running_server(latency=0.2) as server:
        missing = cli(str(prompts), *flags(server, tmp_path / "v", 3), env=cli_env(None))
        assert server.counters()["requests"] == 0
        done = cli(str(prompts), *flags(server, tmp_path / "v", 3), env=cli_env())
        counters = server.counters()
    assert missing.returncode == 2 and "GEMINI_API_KEY" in missing.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    results = pd.read_csv(tmp_path / "prompts.results.csv")
    assert (results["status"] == "completed").all()
    assert counters["accepted"] == 6
    for text in (done.stdout, done.stderr, (tmp_path / "prompts.results.csv").read_text()):
        assert KEY not in text
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        videobatch.run(["a"], "google", base_url=server.url, progress=False)


@pytest.mark.timeout(300)
def test_kill_minus_nine_then_resume_pays_nothing_twice(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": [f"river {i} at dawn" for i in range(30)]}).to_csv(prompts, index=False)
    checkpoint = tmp_path / "prompts.checkpoint.parquet"
    videos = tmp_path / "v"
    with running_server(process=True, latency=0.6, jitter=0.3, max_parallel=4,
                        faults={"slow@create": 0.1}, slow_seconds=0.4) as server:
        argv = [sys.executable, "-m", "videobatch", str(prompts), *flags(server, videos, 4)]
        client = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while server.counters()["succeeded"] < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        assert client.returncode == -signal.SIGKILL
        before = videobatch.results(checkpoint)
        assert (before["status"] != "completed").any()  # really killed mid-run
        kept = before[before["status"] == "completed"][["key", "task_id", "video_url"]]
        resumed = cli(str(prompts), *flags(server, videos, 4), env=cli_env())
        counters = server.counters()
        tasks = server.tasks()

    after = videobatch.results(checkpoint)
    assert set(after["status"]) <= {"completed", "unknown"}, resumed.stdout + resumed.stderr
    # unknown only for rows the kill caught while their create was on the wire
    assert (after["status"] == "unknown").sum() == (before["status"] == "submitting").sum()
    merged = kept.merge(after, on="key", suffixes=("_before", ""))
    assert len(merged) == len(kept)
    assert (merged["task_id_before"] == merged["task_id"]).all()
    assert (merged["video_url_before"] == merged["video_url"]).all()
    prompts_paid = [t["prompt"] for t in tasks]
    assert len(prompts_paid) == len(set(prompts_paid)) == counters["accepted"]
    assert counters["paid_duplicates"] == 0 and counters["peak_active"] <= 4
