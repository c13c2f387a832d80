"""The Runway-compatible test server speaks the researched contract (docs/providers/runway.md):
it accepts the fixture bodies, refuses what Runway refuses, queues over the concurrency limit,
caps the day, cancels and deletes like Runway, and injects faults where they belong."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from videobatch.testing.runway_server import API_SECRET, running_server

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "runway"
HEADERS = {"Authorization": f"Bearer {API_SECRET}", "X-Runway-Version": "2024-11-06"}
T2V = {"model": "gen4.5", "promptText": "a lighthouse", "ratio": "1280:720", "duration": 5}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def wait_for(http: httpx.Client, task_id: str, *states: str, limit: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        body: dict[str, Any] = http.get(f"/v1/tasks/{task_id}").json()
        if body.get("status") in states or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


@pytest.fixture
def server():
    with running_server(latency=0.3, jitter=0.0, max_concurrent=1) as handle:
        yield handle


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as client:
        yield client


@pytest.mark.parametrize("name", ["text_to_video_request", "text_to_video_request_all_params",
                                  "text_to_video_request_veo31", "image_to_video_request",
                                  "image_to_video_request_gen4_turbo", "image_to_video_request_keyframes"])
def test_the_fixture_bodies_are_accepted(http, name):
    endpoint = "image_to_video" if name.startswith("image") else "text_to_video"
    answer = http.post(f"/v1/{endpoint}", json=fixture(name))
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"id", "estimatedCost"}
    task = http.get(f"/v1/tasks/{answer.json()['id']}").json()
    assert set(fixture("task_pending")) <= set(task) and task["status"] == "PENDING"


def test_a_task_runs_to_a_downloadable_video(http):
    task_id = http.post("/v1/text_to_video", json=T2V).json()["id"]
    seen = set()
    deadline = time.monotonic() + 10
    while (body := http.get(f"/v1/tasks/{task_id}").json())["status"] != "SUCCEEDED":
        seen.add(body["status"])
        assert time.monotonic() < deadline
        if body["status"] == "RUNNING":
            assert 0 <= body["progress"] <= 1
        time.sleep(0.02)
    assert seen <= {"PENDING", "RUNNING"}
    assert set(body) == set(fixture("task_succeeded")) and body["cost"] == {"credits": 60}
    video = httpx.get(body["output"][0], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def test_auth_and_version_headers(server):
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/v1/text_to_video", json=T2V).status_code == 401
        wrong = http.post("/v1/text_to_video", json=T2V, headers={**HEADERS, "Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "error" in wrong.json()
        old = http.post("/v1/text_to_video", json=T2V, headers={"Authorization": HEADERS["Authorization"]})
        assert old.status_code == 400
    assert server.counters()["accepted"] == 0


@pytest.mark.parametrize(("endpoint", "changes", "path"), [
    ("text_to_video", {"model": "gen3a_turbo"}, "model"),
    ("text_to_video", {"model": "gen5"}, "model"),
    ("text_to_video", {"ratio": "16:9"}, "ratio"),
    ("text_to_video", {"ratio": "1104:832"}, "ratio"),  # an image-to-video size
    ("text_to_video", {"duration": 11}, "duration"),
    ("text_to_video", {"duration": None}, "duration"),  # required on gen4.5
    ("text_to_video", {"promptText": "x" * 1001}, "promptText"),
    ("text_to_video", {"audio": True}, "audio"),  # gen4.5 takes no audio
    ("text_to_video", {"model": "gen4_turbo"}, "model"),  # image-to-video only
    ("image_to_video", {"promptImage": "http://example.com/a.jpg"}, "promptImage"),
    ("image_to_video", {"promptImage": "https://10.1.2.3/a.jpg"}, "promptImage"),
    ("image_to_video", {"promptImage": "data:image/gif;base64,R0lGOD"}, "promptImage"),
    ("image_to_video", {"promptImage": [{"uri": "https://e.com/a.jpg", "position": "last"}]}, "promptImage"),
    ("image_to_video", {"promptImage": [{"uri": "https://e.com/a.jpg", "position": "first"},
                                        {"uri": "https://e.com/b.jpg", "position": "last"}]}, "promptImage"),
])
def test_bodies_runway_refuses(http, server, endpoint, changes, path):
    body = {**T2V, **({"promptImage": "https://example.com/a.jpg"} if endpoint == "image_to_video" else {}),
            **changes}
    body = {k: v for k, v in body.items() if v is not None}
    answer = http.post(f"/v1/{endpoint}", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert set(error) == set(fixture("error_400")) and error["issues"][0]["path"] == [path]
    assert server.counters()["accepted"] == 0


def test_over_the_concurrency_limit_tasks_wait_throttled(http, server):
    ids = [http.post("/v1/text_to_video", json={**T2V, "promptText": f"p{i}"}).json()["id"] for i in range(3)]
    assert wait_for(http, ids[2], "THROTTLED")["status"] == "THROTTLED"
    assert wait_for(http, ids[2], "SUCCEEDED")["status"] == "SUCCEEDED"
    counters = server.counters()
    assert counters["peak_running"] == 1 and counters["throttled"] >= 1
    assert counters["peak_active"] == 3 and counters["accepted"] == 3


def test_the_daily_cap_credits_and_model_access(http, server):
    server.configure(max_daily=1, credits=100, allowed_models=["gen4.5", "veo3.1"])
    assert http.post("/v1/text_to_video", json=T2V).status_code == 200  # 60 credits
    capped = http.post("/v1/text_to_video", json={**T2V, "promptText": "again"})
    assert capped.status_code == 429 and capped.json() == fixture("error_429")
    assert capped.headers["Retry-After"]
    veo = {"model": "veo3.1", "promptText": "x", "ratio": "1280:720", "duration": 8, "audio": True}
    poor = http.post("/v1/text_to_video", json=veo)  # 320 credits
    assert poor.status_code == 400 and poor.json() == fixture("error_insufficient_credits")
    denied = http.post("/v1/text_to_video", json={**veo, "model": "veo3.1_fast"})
    assert denied.status_code == 403 and "veo3.1_fast is not available" in denied.json()["error"]
    assert server.counters()["accepted"] == 1


def test_delete_cancels_open_tasks_and_deletes_finished_ones(http, server):
    server.configure(latency=60.0)  # the first two stay queued however slow this machine is
    queued = http.post("/v1/text_to_video", json=T2V).json()["id"]
    assert http.delete(f"/v1/tasks/{queued}").status_code == 204
    assert http.get(f"/v1/tasks/{queued}").json() == fixture("error_404_task")
    server.configure(deleted="cancelled")
    other = http.post("/v1/text_to_video", json={**T2V, "promptText": "b"}).json()["id"]
    http.delete(f"/v1/tasks/{other}")
    cancelled = http.get(f"/v1/tasks/{other}").json()
    assert cancelled["status"] == "CANCELLED" and cancelled["cost"] == {"credits": 0}
    server.configure(latency=0.3)
    done = http.post("/v1/text_to_video", json={**T2V, "promptText": "c"}).json()["id"]
    wait_for(http, done, "SUCCEEDED")
    assert http.delete(f"/v1/tasks/{done}").status_code == 204
    assert http.get(f"/v1/tasks/{done}").status_code == 404
    assert server.counters()["cancelled"] == 2


def test_a_task_cancelled_before_it_ran_is_not_paid_so_sending_it_again_is_no_duplicate(http, server):
    server.configure(latency=60.0)  # queued however slow this machine is
    queued = http.post("/v1/text_to_video", json=T2V).json()["id"]
    http.delete(f"/v1/tasks/{queued}")
    again = http.post("/v1/text_to_video", json=T2V).json()["id"]  # the only one paid
    assert server.counters()["paid_duplicates"] == 0
    http.delete(f"/v1/tasks/{again}")  # out of the queue, for the next one
    server.configure(latency=0.3)
    running = http.post("/v1/text_to_video", json={**T2V, "promptText": "ran"}).json()["id"]
    wait_for(http, running, "RUNNING")
    http.delete(f"/v1/tasks/{running}")  # stopped while running: charged in full
    http.post("/v1/text_to_video", json={**T2V, "promptText": "ran"})
    assert server.counters()["paid_duplicates"] == 1


def test_moderation_and_failures_end_in_the_task(http, server):
    blocked = http.post("/v1/text_to_video", json={**T2V, "promptText": "a [blocked] thing"}).json()["id"]
    marked = http.post("/v1/text_to_video", json={**T2V, "promptText": "a [fail] thing"}).json()["id"]
    server.configure(policy="next:1")
    policy = http.post("/v1/text_to_video", json={**T2V, "promptText": "fine words"}).json()["id"]
    first = wait_for(http, blocked, "FAILED")
    assert first["failureCode"] == "SAFETY.INPUT.TEXT" and first["cost"] == {"credits": 60}
    assert set(first) == set(fixture("task_failed"))
    assert wait_for(http, marked, "FAILED")["failureCode"] == "INTERNAL.BAD_OUTPUT"
    assert wait_for(http, policy, "FAILED", limit=15)["failureCode"] == "SAFETY.INPUT.TEXT"


def test_lost_answers_come_after_the_task_was_made(http, server):
    server.configure(faults={"lost@create": 1, "lost_500@create": 1, "garbage@create": 1,
                             "server_error@create": 1})
    outcomes = []
    for i in range(4):
        try:
            answer = http.post("/v1/text_to_video", json={**T2V, "promptText": f"lost {i}"})
            outcomes.append(answer.status_code)
        except httpx.RemoteProtocolError:
            outcomes.append("dropped")
    assert outcomes == [503, "dropped", 500, 200]  # the 200's body is not JSON
    assert server.counters()["accepted"] == 3  # the 503 made nothing; the others did
    assert http.post("/v1/text_to_video", json={**T2V, "promptText": "lost 0"}).status_code == 200
    assert server.counters()["paid_duplicates"] == 0  # resending after a 503 is safe
    assert http.post("/v1/text_to_video", json={**T2V, "promptText": "lost 1"}).status_code == 200
    assert server.counters()["paid_duplicates"] == 1  # resending a lost answer pays twice


def test_rate_limit_faults_on_queries_say_when_to_come_back(http, server):
    task_id = http.post("/v1/text_to_video", json=T2V).json()["id"]
    server.configure(faults={"rate_limit@query": 1, "rate_limit_bare@query": 1})
    answers = [http.get(f"/v1/tasks/{task_id}") for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert sum("Retry-After" in a.headers for a in answers[:2]) == 1


def test_the_command_line_server_in_a_child_process():
    with running_server(process=True, latency=0.1) as server:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as http:
            task_id = http.post("/v1/text_to_video", json=T2V).json()["id"]
            assert wait_for(http, task_id, "SUCCEEDED")["status"] == "SUCCEEDED"
            org = http.get("/v1/organization").json()
        assert org["tier"]["models"]["gen4.5"]["maxConcurrentGenerations"] == 2
        assert server.tasks()[0]["id"] == task_id
        assert API_SECRET not in json.dumps(server.configure())
