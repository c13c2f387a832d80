"""Kling's callbacks in service mode: a task's end moves its row at once (the worker polls it on the
callback's word, long before its own poll is due); a forged, unsigned or foreign callback
completes nothing. Real parts: redis-server, the API on uvicorn, a worker process, the Kling test
server posting signed callbacks (``SimConfig.callbacks``)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service_fixtures import (
    RedisServer,
    needs_redis,
    running_api,
    running_redis,
    wait_until,
    worker_argv,
    worker_env,
    workers,
)
from videobatch.service.callbacks import SECRET_ENV, task_ended, verify
from videobatch.testing import ServerHandle, running_server
from videobatch.testing.kling_callbacks import sign

SECRET = "whsec_" + base64.b64encode(b"kling-console-webhook-secret-0123").decode()
# Polls far apart: a row that ends within seconds ended on a callback, not on a poll.
SLOW_POLLS = ["-P", "first_poll=30", "-P", "poll_interval=30", "-P", "max_poll_interval=30"]


def test_signatures_are_standard_webhooks():
    body = b'{"task_id": "1", "task_status": "succeed"}'
    headers = sign(SECRET, body)
    assert verify(SECRET, headers, body)
    assert not verify(SECRET, headers, body.replace(b"succeed", b"failed"))  # body changed
    assert not verify("whsec_" + base64.b64encode(b"another secret").decode(), headers, body)
    assert not verify(SECRET, {**headers, "webhook-id": "msg_other"}, body)
    assert not verify(SECRET, {}, body)
    old = sign(SECRET, body, stamp=int(time.time()) - 3600)  # a replay an hour later
    assert not verify(SECRET, old, body)
    several = {**headers, "webhook-signature": "v1,bm90IGl0 " + headers["webhook-signature"]}
    assert verify(SECRET, several, body)  # key rotation: any one valid signature will do


def test_a_callback_names_an_ended_task_bare_or_in_its_envelope():
    assert task_ended(b'{"task_id": "7", "task_status": "succeed"}') == "7"
    assert task_ended(b'{"code": 0, "data": {"task_id": "8", "task_status": "failed"}}') == "8"
    assert task_ended(b'{"task_id": "9", "task_status": "processing"}') is None
    assert task_ended(b"not json") is None
    assert task_ended(b'["task_id"]') is None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def submit(client: httpx.Client, prompt: str) -> str:
    answer = client.post("/api/v1/videos", json={"prompt": prompt})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["request_id"])


def status(client: httpx.Client, rid: str) -> dict[str, object]:
    data: dict[str, object] = client.get(f"/api/v1/videos/{rid}").json()
    return data


def our_polls(kling: ServerHandle) -> int:
    c = kling.counters()
    return int(c["polls_single"] + c["polls_list"] + c["polls_external"])


@needs_redis
def test_a_signed_callback_completes_a_row_at_once_and_a_forged_one_nothing(
        redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with running_server(latency=4.0, jitter=0.0, callbacks=True, callback_secret=SECRET) as kling, \
            running_api(redis_server.url, provider="kling") as api:
        argv = worker_argv(redis_server.url, kling, account_limit=5,
                           extra=[*SLOW_POLLS, "-P", f"callback_url={api.url}/callbacks/kling"])
        with workers([argv], tmp_path, worker_env()) as started, api.client() as client:
            rid = submit(client, "a lighthouse in fog")
            task_id = wait_until(lambda: status(client, rid).get("task_id"), 20, "the task")
            assert wait_until(lambda: status(client, rid)["status"] == "generating", 10, "generating")
            polls = our_polls(kling)
            body = json.dumps({"task_id": task_id, "task_status": "succeed"}).encode()
            with httpx.Client(base_url=api.url) as public:  # no token: Kling has none
                # Unsigned, or signed with another key: refused, nothing asked of Kling.
                assert public.post("/callbacks/kling", content=body).status_code == 401
                forged = sign("whsec_" + base64.b64encode(b"not the secret").decode(), body)
                assert public.post("/callbacks/kling", content=body, headers=forged).status_code == 401
                # A task that is not ours: accepted (it tells nothing), ignored by every worker.
                foreign = json.dumps({"task_id": "999", "task_status": "succeed"}).encode()
                answer = public.post("/callbacks/kling", content=foreign, headers=sign(SECRET, foreign))
                assert answer.status_code == 204
                # Signed but false (the task is still running): the worker asks Kling, who says
                # "processing"; the row does not complete on the callback's word.
                answer = public.post("/callbacks/kling", content=body, headers=sign(SECRET, body))
                assert answer.status_code == 204
            wait_until(lambda: our_polls(kling) > polls, 5, "the worker to poll on the callback")
            time.sleep(0.5)
            assert status(client, rid)["status"] == "generating"
            assert our_polls(kling) == polls + 1  # one poll: the forged and foreign ones cost none
            # Kling's own callback at the task's end (4 s after create): completed at once, long
            # before the worker's first poll (30 s).
            accepted = float(status(client, rid)["submitted_at"])  # type: ignore[arg-type]
            wait_until(lambda: status(client, rid)["status"] == "completed", 15, "the callback")
            assert time.time() - accepted < 8.0
            assert status(client, rid)["video_url"]
            assert kling.counters()["paid_duplicates"] == 0
            assert "Traceback" not in started[0].log()
