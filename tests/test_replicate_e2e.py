"""End to end: ``videobatch.run`` and the CLI against the Replicate-compatible server on loopback.

The invariants under test: never pay twice (Replicate keeps no key of ours, so a lost create answer
is settled only through the listing, matched on inputs, or left ``unknown``), never lose a completed
row (kill -9 of the client, then resume), stay under the parallel limit, and fail before submitting
anything when the token is missing.
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
from videobatch.testing.replicate_server import ServerHandle, running_server
from videobatch.testing.replicate_sim import SimConfig

TOKEN = SimConfig.token
FAST = {"first_poll": 0.15, "poll_interval": 0.05, "max_poll_interval": 0.5, "max_rps": 200}
FAULT_MIX = ("rate_limit=0.03,rate_limit_bare=0.02,server_error=0.03,garbage=0.03,slow=0.02,"
             "lost=0.05,lost_500=0.03,fail=0.03")


def options(server: ServerHandle, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.api_url, "api_token": TOKEN, "progress": False, **FAST, **extra}


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "videobatch", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ.copy())


def cli_env(token: str | None = TOKEN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    if token is not None:
        env["REPLICATE_API_TOKEN"] = token
    return env


def flags(server: ServerHandle, max_parallel: int) -> list[str]:
    out = ["--provider", "replicate", "--base-url", server.api_url, "-q", "-P", f"max_parallel={max_parallel}"]
    for key, value in FAST.items():
        out += ["-P", f"{key}={value}"]
    return out


def test_thirty_rows_under_a_fault_mix_each_paid_once(tmp_path):
    rows = [f"scene {i}: a lighthouse at dusk" for i in range(30)]
    rows[7] += " [blocked]"  # Replicate moderates inside the prediction: it ends failed (E005)
    rows[11] += " [refuse]"  # refused at create (422): nothing paid, only this row fails
    rows[19] += " [fail]"
    with running_server(latency=0.2, jitter=0.3, max_running=3, slow_seconds=1.0, faults=FAULT_MIX,
                        seed=5, foreign_predictions=20) as server:
        df = videobatch.run(rows, "replicate", checkpoint=tmp_path / "run.parquet",
                            **options(server, max_parallel=5, http_timeout=0.5))
        counters = server.counters()

    assert set(df["status"]) <= {"completed", "failed"}, df[["status", "error"]].to_string()
    failed = df[df["status"] == "failed"]
    assert {7, 11, 19} <= set(failed.index)
    assert "(E005)" in failed.loc[7, "error"]
    assert failed.loc[11, "error_kind"] == "rejected" and "Input validation failed" in failed.loc[11, "error"]
    assert "simulated failure" in failed.loc[19, "error"]
    done = df[df["status"] == "completed"]
    assert done["video_url"].str.startswith(server.url).all()
    assert done["expires_at"].notna().all()
    assert counters["accepted"] == 29  # every row but the refused one, exactly once
    assert counters["paid_duplicates"] == 0
    assert counters["peak_active"] <= 5
    assert sum(counters["faults_injected"].values()) >= 5, counters["faults_injected"]


def test_lost_answers_are_adopted_through_the_listing_never_resent():
    rows = [f"harbour {i} at noon" for i in range(8)]
    with running_server(latency=0.3, foreign_predictions=150, page_size=20,
                        faults={"lost@create": 2, "lost_500@create": 1, "garbage@create": 1}) as server:
        df = videobatch.run(rows, "replicate", **options(server, max_parallel=4))
        counters = server.counters()
        tasks = server.tasks()
    assert (df["status"] == "completed").all(), df[["status", "error"]].to_string()
    assert counters["faults_injected"] == {"lost": 2, "lost_500": 1, "garbage": 1}
    assert counters["accepted"] == 8 and counters["paid_duplicates"] == 0
    by_id = {t["id"]: t for t in tasks}
    for row, task_id in zip(rows, df["task_id"], strict=True):
        assert by_id[task_id]["prompt"] == row and not by_id[task_id]["foreign"]  # its own prediction


def test_when_the_listing_cannot_tell_a_lost_answer_stays_unknown(tmp_path):
    """The list is down: a row whose create answer was lost is neither adopted nor sent again, but
    ``unknown``, said clearly (the same as when its input was deleted after an hour)."""
    with running_server(latency=0.2, list_outage=True, faults={"lost@create": 1}) as server:
        df = videobatch.run([f"dune {i}" for i in range(4)], "replicate", checkpoint=tmp_path / "run.parquet",
                            **options(server, max_parallel=2))
        counters = server.counters()
    assert counters["accepted"] == 4 and counters["paid_duplicates"] == 0
    assert (df["status"] == "completed").sum() == 3
    unknown = df[df["status"] == "unknown"]
    assert len(unknown) == 1
    error = unknown.iloc[0]["error"]
    assert "cannot look a task up" in error and "listing the account's tasks failed" in error
    assert "never sent again on its own" in error


def test_identical_rows_whose_answers_were_lost_are_not_guessed():
    """Two rows with the same inputs: a listed prediction could be either's (a tie adopts nothing)."""
    with running_server(latency=0.2, faults={"lost@create": 2}) as server:
        df = videobatch.run(["the same clip", "the same clip"], "replicate", **options(server, max_parallel=2))
        counters = server.counters()
    assert counters["accepted"] == 2 and counters["paid_duplicates"] == 1  # both rows' own, sent once each
    assert set(df["status"]) == {"unknown"}


def test_the_parallel_limit_holds_when_the_account_would_queue_more():
    with running_server(latency=0.3, jitter=0.2, max_running=2) as server:
        df = videobatch.run([f"tide pool {i}" for i in range(20)], "replicate", **options(server, max_parallel=4))
        counters = server.counters()
    assert (df["status"] == "completed").all()
    assert counters["accepted"] == 20 and counters["paid_duplicates"] == 0
    assert 2 <= counters["peak_active"] <= 4


def test_cli_run_and_the_token_never_shown(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"id": [f"r{i}" for i in range(8)], "prompt": [f"a paper boat, take {i}" for i in range(8)],
                  "model": ["veo-3.1-fast"] * 4 + ["kling-v2.6"] * 4,
                  "duration": [4, 6, 8, 8, 5, 10, 5, 10]}).to_csv(prompts, index=False)
    with running_server(latency=0.2) as server:
        done = cli(str(prompts), *flags(server, 3), env=cli_env())
        counters = server.counters()
    assert done.returncode == 0, done.stdout + done.stderr
    results = pd.read_csv(tmp_path / "prompts.results.csv")
    assert (results["status"] == "completed").all()
    assert counters["accepted"] == 8 and counters["peak_active"] <= 3
    for text in (done.stdout, done.stderr, (tmp_path / "prompts.results.csv").read_text()):
        assert TOKEN not in text


def test_kill_minus_nine_then_resume_pays_each_row_once(tmp_path):
    prompts = tmp_path / "prompts.csv"
    rows = [f"river {i} at dawn" for i in range(30)]
    pd.DataFrame({"prompt": rows}).to_csv(prompts, index=False)
    checkpoint = tmp_path / "prompts.checkpoint.parquet"
    with running_server(process=True, latency=0.6, jitter=0.3, faults="lost=0.1,slow=0.05",
                        slow_seconds=0.5) as server:
        argv = [sys.executable, "-m", "videobatch", str(prompts), *flags(server, 5)]
        client = subprocess.Popen(argv, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while server.counters()["succeeded"] < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        assert client.returncode == -signal.SIGKILL
        before = videobatch.results(checkpoint)
        assert (before["status"] != "completed").any()  # really killed mid-run
        kept = before[before["status"] == "completed"][["key", "task_id", "video_url"]]

        resumed = cli(str(prompts), *flags(server, 5), env=cli_env())
        counters = server.counters()
        tasks = server.tasks()

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = videobatch.results(checkpoint)
    assert (after["status"] == "completed").all(), after[["status", "error"]].to_string()
    merged = kept.merge(after, on="key", suffixes=("_before", ""))
    assert len(merged) == len(kept)
    assert (merged["task_id_before"] == merged["task_id"]).all()
    assert counters["accepted"] == 30 and counters["paid_duplicates"] == 0
    assert sorted(t["prompt"] for t in tasks) == sorted(rows)
    assert counters["peak_active"] <= 5


def test_a_missing_or_wrong_token_costs_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": ["a", "b"]}).to_csv(prompts, index=False)
    with running_server() as server:
        with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
            videobatch.run(["a", "b"], "replicate", base_url=server.api_url, progress=False)
        missing = cli(str(prompts), "--provider", "replicate", "--base-url", server.api_url, env=cli_env(None))
        assert server.counters()["requests"] == 0
        with pytest.raises(AuthError, match="REPLICATE_API_TOKEN"):
            videobatch.run(["a", "b"], "replicate", **options(server, api_token="r8_wrong"))
        counters = server.counters()
    assert missing.returncode == 2 and "REPLICATE_API_TOKEN" in missing.stderr
    assert counters["accepted"] == 0


def test_every_catalogue_model_with_its_defaults_is_accepted_by_the_server():
    """The catalogue and input names (client) against the doc's schemas (server), built apart."""
    from videobatch.providers import catalog_of

    cards = catalog_of("replicate").current()
    rows = [{"prompt": f"a clip for {card.id}", "model": card.id,
             **({} if "text" in card.inputs else {"image": "https://example.test/first.png"})} for card in cards]
    rows.append({"prompt": "first and last", "model": "veo-3.1", "image": "https://example.test/a.png",
                 "end_image": "https://example.test/b.png", "seed": 3, "negative_prompt": "blur"})
    rows.append({"prompt": "hailuo frames", "model": "hailuo-02", "image": "https://example.test/a.png",
                 "end_image": "https://example.test/b.png", "duration": 10, "resolution": "768p"})
    rows.append({"prompt": "sora wide", "model": "sora-2-pro", "aspect_ratio": "16:9", "resolution": "high"})
    with running_server(latency=0.1) as server:
        # (the image URLs are made up: the test server takes them as they are, nothing fetches them)
        df = videobatch.run(rows, "replicate", **options(server, max_parallel=8), check_images=False)
        counters = server.counters()
    assert counters["rejected"] == {}, counters["rejected"]
    assert (df["status"] == "completed").all(), df[["model", "status", "error"]].to_string()
