"""End to end: ``videobatch.run`` and the CLI against the fal-compatible server on loopback.

The invariants: never pay twice (fal has no idempotency key and no lookup: a lost submit is never
resent; it ends ``unknown`` and is adopted through the request listing once it shows there), never
lose a completed row (kill -9 of the client, then resume), keep the client's parallel cap while fal
queues what is over the account's limit, and fail before sending anything without a key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pandas as pd
import pytest

import videobatch
from videobatch.errors import ConfigError
from videobatch.testing.fal_server import ServerHandle, running_server
from videobatch.testing.fal_sim import SimConfig

KEY = SimConfig.key
FAST = {"first_poll": 0.1, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 200}


def options(server: ServerHandle, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.url, "key": KEY, "progress": False, **FAST, **extra}


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    return {**env, "FAL_KEY": KEY}


def cli_argv(prompts: str, server: ServerHandle, max_parallel: int) -> list[str]:
    argv = [sys.executable, "-m", "videobatch", prompts, "-q", "--provider", "fal",
            "--base-url", server.url, "-P", f"max_parallel={max_parallel}"]
    for key, value in FAST.items():
        argv += ["-P", f"{key}={value}"]
    return argv


def test_thirty_rows_complete_under_the_cap_while_fal_queues(tmp_path):
    rows = [f"scene {i}: a lighthouse at dusk" for i in range(30)]
    with running_server(latency=0.3, jitter=0.3, max_parallel=2) as server:
        df = videobatch.run(rows, "fal", checkpoint=tmp_path / "run.parquet",
                            **options(server, max_parallel=4))
        counters = server.counters()
    assert (df["status"] == "completed").all(), df["error"].dropna().head()
    assert df["video_url"].str.startswith(f"{server.url}/files/").all()
    assert counters["accepted"] == 30 and counters["paid_duplicates"] == 0
    assert counters["peak_active"] <= 4  # the client's cap (fal queued the ones over its limit)
    assert counters["peak_running"] <= 2
    assert counters["listings"] == 0 and not counters["rejected"]


def test_a_refused_create_fails_only_its_row(tmp_path):
    rows = [f"harbour {i}" for i in range(6)] + ["harbour [blocked]", "harbour [fail]"]
    with running_server(latency=0.2, max_parallel=3) as server:
        df = videobatch.run(rows, "fal", **options(server, max_parallel=3))
        counters = server.counters()
    assert list(df["status"]) == ["completed"] * 6 + ["failed", "failed"]
    assert "content policy" in df["error"].iloc[6]
    assert "request_timeout" in df["error"].iloc[7]
    assert counters["accepted"] == 8 and counters["paid_duplicates"] == 0


def test_lost_answers_are_never_paid_twice_and_are_adopted_from_the_listing(tmp_path):
    rows = [f"desert road {i}" for i in range(10)]
    checkpoint = tmp_path / "run.parquet"
    faults = {"lost@create": {"next": 2}, "lost_500@create": {"next": 1}, "garbage@create": {"next": 1},
              "server_error@create": {"next": 1}}
    with running_server(latency=0.3, max_parallel=3, foreign_tasks=20, faults=faults) as server:
        first = videobatch.run(rows, "fal", checkpoint=checkpoint, **options(server, max_parallel=3))
        after_first = server.counters()
        unknown = first[first["status"] == "unknown"]
        # The 4 creates whose answers were lost ran at fal, and 1 was refused before creating:
        # none was resent; the lost ones (still in fal's queue) cannot be told apart from the
        # refused one by a listing of finished requests, so all 5 wait as "unknown".
        assert len(unknown) == 5, first[["status", "error"]]
        assert unknown["error"].str.contains("never sent again on its own").all()
        assert after_first["accepted"] == 9 and after_first["paid_duplicates"] == 0
        time.sleep(1.0)  # the lost requests finish, so the listing shows them
        second = videobatch.run(rows, "fal", checkpoint=checkpoint, **options(server, max_parallel=3))
        counters = server.counters()
        tasks = server.tasks()
    assert (second["status"] == "completed").sum() == 9
    left = second[second["status"] != "completed"]
    assert list(left["status"]) == ["unknown"]  # the one fal refused (503) before creating it
    ours = [t for t in tasks if not t["foreign"]]
    assert left["prompt"].iloc[0] not in {t["prompt"] for t in ours}
    assert counters["accepted"] == 9 and counters["paid_duplicates"] == 0
    assert counters["listings"] >= 2
    by_id = {t["request_id"]: t for t in ours}
    for row in second[second["status"] == "completed"].itertuples():
        request_id = str(row.task_id).rsplit("/", 1)[-1]
        assert by_id[request_id]["prompt"] == row.prompt  # its own request, not a foreign one


def test_cli_kill_minus_nine_then_resume(tmp_path):
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": [f"river {i} at dawn" for i in range(24)]}).to_csv(prompts, index=False)
    checkpoint = tmp_path / "prompts.checkpoint.parquet"
    with running_server(process=True, latency=0.6, jitter=0.3, max_parallel=2,
                        faults="lost@create=0.1") as server:
        client = subprocess.Popen(cli_argv(str(prompts), server, 4), env=cli_env(),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while server.counters()["succeeded"] < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        before = videobatch.results(checkpoint)
        assert (before["status"] != "completed").any()  # really killed mid-run
        kept = before[before["status"] == "completed"][["key", "task_id", "video_url"]]
        for _ in range(3):  # lost or in-doubt requests are adopted once fal lists them
            time.sleep(1.0)
            resumed = subprocess.run(cli_argv(str(prompts), server, 4), env=cli_env(),
                                     capture_output=True, text=True, timeout=120)
            after = videobatch.results(checkpoint)
            if (after["status"] == "completed").all():
                break
        counters = server.counters()
        tasks = [t for t in server.tasks() if not t["foreign"]]
    assert resumed.returncode in (0, 1), resumed.stdout + resumed.stderr
    merged = kept.merge(after, on="key", suffixes=("_before", ""))
    assert len(merged) == len(kept)  # no completed row lost, nor redone
    assert (merged["task_id_before"] == merged["task_id"]).all()
    assert (merged["video_url_before"] == merged["video_url"]).all()
    assert counters["paid_duplicates"] == 0
    assert counters["accepted"] == len(tasks) == len({t["prompt"] for t in tasks})
    # Every row completed, or (killed between its record and its POST) unknown with no request.
    assert set(after["status"]) <= {"completed", "unknown"}
    created = {t["prompt"] for t in tasks}
    assert not set(after[after["status"] == "unknown"]["prompt"]) & created
    assert set(after[after["status"] == "completed"]["prompt"]) <= created
    assert counters["peak_running"] <= 2


def test_no_key_fails_before_anything_is_sent(monkeypatch, tmp_path):
    monkeypatch.delenv("FAL_KEY", raising=False)
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame({"prompt": ["a", "b"]}).to_csv(prompts, index=False)
    with running_server() as server:
        with pytest.raises(ConfigError, match="FAL_KEY"):
            videobatch.run(["a", "b"], "fal", base_url=server.url, progress=False)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
        missing = subprocess.run([sys.executable, "-m", "videobatch", str(prompts), "--provider", "fal",
                                  "--base-url", server.url], capture_output=True, text=True, env=env,
                                 timeout=120)
        counters = server.counters()
    assert missing.returncode == 2 and "FAL_KEY" in missing.stderr
    assert counters["requests"] == 0


# ------------------------------------------------------------------ the server's own contract


def test_server_queues_over_the_limit_and_lists_finished_requests_only():
    def settled(url: str) -> httpx.Response:  # a request's status once it has ended (busy machines)
        deadline = time.monotonic() + 20
        while True:
            answer = http.get(url)
            if answer.json()["status"] == "COMPLETED" or time.monotonic() > deadline:
                return answer
            time.sleep(0.05)

    # (latency: long enough that the first request is still running when it is cancelled)
    with running_server(latency=1.5, jitter=0.0, max_parallel=1) as server:
        auth = {"Authorization": f"Key {KEY}"}
        endpoint = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
        with httpx.Client(headers=auth, timeout=10) as http:
            answers = [http.post(f"{server.url}/{endpoint}", json={"prompt": f"p{i}"}).json()
                       for i in range(3)]
            assert all(a["status"] == "IN_QUEUE" for a in answers)  # never refused
            assert answers[0]["status_url"].startswith(f"{server.url}/fal-ai/kling-video/requests/")
            deadline = time.monotonic() + 10  # the first starts; the others wait for its slot
            while http.get(answers[0]["status_url"]).json()["status"] == "IN_QUEUE" \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            states = [http.get(a["status_url"]) for a in answers]
            assert [s.status_code for s in states] == [202, 202, 202]
            assert [s.json()["status"] for s in states] == ["IN_PROGRESS", "IN_QUEUE", "IN_QUEUE"]
            assert http.put(answers[2]["cancel_url"]).json() == {"status": "OK"}
            running = http.put(answers[0]["cancel_url"])
            assert (running.status_code, running.json()["status"]) == (202, "CANCELLATION_REQUESTED")
            listing = f"{server.url}/v1/models/requests/by-endpoint"
            listed = http.get(listing, params={"endpoint_id": endpoint, "expand": "payloads"}).json()
            assert [i["request_id"] for i in listed["items"]] == [answers[2]["request_id"]]
            done = settled(answers[0]["status_url"])
            assert (done.status_code, done.json()["status"]) == (200, "COMPLETED")
            assert http.get(answers[0]["response_url"]).json()["video"]["url"].endswith(".mp4")
            assert http.put(answers[0]["cancel_url"]).status_code == 400
            assert http.get(f"{server.url}/fal-ai/kling-video/requests/nope/status").status_code == 404
            bad = http.post(f"{server.url}/{endpoint}", json={"prompt": "x", "duration": 5}).json()
            failed = settled(bad["status_url"]).json()
            assert failed["status"] == "COMPLETED" and failed["error"]
            assert http.get(bad["response_url"]).status_code == 422
            assert http.post(f"{server.url}/fal-ai/sora-2/text-to-video", json={}).status_code == 404
            assert httpx.post(f"{server.url}/{endpoint}", json={},
                              headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
        counters = server.counters()
    assert counters["peak_running"] == 1 and counters["peak_active"] >= 3
