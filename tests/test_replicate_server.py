"""The Replicate-compatible test server speaks the recorded contract (tests/fixtures/providers/replicate),
whatever client talks to it: paths, auth, bodies, statuses, the list, faults and counters."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from videobatch.testing.replicate_server import ServerHandle, running_server
from videobatch.testing.replicate_sim import Prediction, SimConfig

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "replicate"
AUTH = {"Authorization": f"Bearer {SimConfig.token}"}
KLING = "/v1/models/kwaivgi/kling-v2.6/predictions"
VERSION = "replicate/hello-world:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def client(server: ServerHandle) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=AUTH, timeout=10)


def create(http: httpx.Client, prompt: str = "a fox", path: str = KLING, **input_: Any) -> httpx.Response:
    return http.post(path, json={"input": {"prompt": prompt, **input_}})


def wait_for(http: httpx.Client, pid: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = http.get(f"/v1/predictions/{pid}").json()
        if body["status"] == status or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_auth_is_a_bearer_token_and_refusals_are_the_recorded_body():
    with running_server() as server:
        for headers in ({}, {"Authorization": "Bearer r8_wrong"}, {"Authorization": f"Token {SimConfig.token}"}):
            answer = httpx.post(f"{server.url}{KLING}", json={"input": {"prompt": "x"}}, headers=headers)
            assert answer.status_code == 401 and answer.json() == fixture("error_401")
        assert server.counters()["accepted"] == 0


def test_a_create_answers_201_starting_shaped_like_the_recorded_one():
    with running_server(latency=0.2) as server, client(server) as http:
        answer = create(http, duration=5)
        assert answer.status_code == 201
        body = answer.json()
        assert set(fixture("create_response")) - {"logs"} <= set(body)
        assert body["status"] == "starting" and body["version"] == "hidden" and body["output"] is None
        assert len(body["id"]) == 26 and body["id"].isalnum() and body["id"].islower()
        assert body["urls"]["get"] == f"{server.url}/v1/predictions/{body['id']}"
        assert body["input"] == {"prompt": "a fox", "duration": 5}
        done = wait_for(http, body["id"], "succeeded")
        assert done["output"] == f"{server.url}/files/{body['id']}.mp4"
        assert done["started_at"] and done["completed_at"] and done["metrics"]["predict_time"] >= 0
        video = http.get(done["output"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


def test_a_version_create_and_its_refusal():
    with running_server() as server, client(server) as http:
        refused = http.post("/v1/predictions", json={"version": VERSION, "input": {"text": "Alice"}})
        assert refused.status_code == 404  # hello-world is not a video model this server knows
        bad = http.post("/v1/predictions", json={"version": "nope", "input": {"prompt": "x"}})
        assert bad.status_code == 422 and bad.json()["status"] == 422
        ok = http.post("/v1/predictions", json={"version": "kwaivgi/kling-v2.6:" + "a" * 64,
                                                "input": {"prompt": "x"}})
        assert ok.status_code == 201 and ok.json()["version"] == "a" * 64


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"input": {"prompt": "x", "duration": 7}}, 422, "input.duration"),
    ({"input": {"prompt": "x", "image": "https://x.test/a.png"}}, 422, "unknown input"),
    ({"input": {"duration": 5}}, 422, "prompt is required"),
    ({"input": {"prompt": "x"}, "idempotency_key": "k"}, 422, "Additional properties"),
    ({"prompt": "x"}, 422, "Additional properties"),
    ({"webhook": "https://x.test/hook"}, 422, "input is required"),
])
def test_the_input_check_refuses_what_replicate_refuses(body, status, words):
    with running_server() as server, client(server) as http:
        answer = http.post(KLING, json=body)
        assert answer.status_code == status and words in answer.json()["detail"]
        unknown = http.post("/v1/models/nobody/nothing/predictions", json={"input": {"prompt": "x"}})
        assert unknown.status_code == 404 and set(unknown.json()) == set(fixture("error_404"))
        assert server.counters()["accepted"] == 0


def test_over_its_running_limit_the_account_queues_in_starting():
    with running_server(latency=0.4, jitter=0.0, boot=0.0, max_running=1) as server, client(server) as http:
        first, second = (create(http, f"clip {i}").json()["id"] for i in range(2))
        assert wait_for(http, first, "processing")["status"] == "processing"
        assert http.get(f"/v1/predictions/{second}").json()["status"] == "starting"
        assert wait_for(http, second, "succeeded")["status"] == "succeeded"
        assert server.counters()["peak_active"] == 2


def test_cancel_before_it_starts_and_the_deadline_statuses():
    with running_server(latency=5.0, boot=5.0) as server, client(server) as http:
        pid = create(http).json()["id"]
        canceled = http.post(f"/v1/predictions/{pid}/cancel")
        assert canceled.status_code == 200
        assert canceled.json()["status"] == "canceled" and "started_at" not in canceled.json()
        assert http.post("/v1/predictions/nope/cancel").status_code == 404
        assert http.get("/v1/predictions/nope").json() == {"detail": "Not found.", "status": 404}
        too_soon = http.post(KLING, json={"input": {"prompt": "x"}}, headers={"Cancel-After": "1s"})
        assert too_soon.status_code == 400  # the minimum is 5 s
        with_deadline = http.post(KLING, json={"input": {"prompt": "x"}}, headers={"Cancel-After": "1h30m"})
        assert with_deadline.status_code == 201 and with_deadline.json()["deadline"]
    # a deadline passing before the start is "aborted", while running "canceled"
    pred = Prediction("p" * 26, "m", "hidden", {}, created=0.0, start=10.0, end=20.0, deadline=5.0)
    assert [pred.status(t) for t in (1.0, 6.0)] == ["starting", "aborted"]
    pred = Prediction("p" * 26, "m", "hidden", {}, created=0.0, start=1.0, end=20.0, deadline=5.0)
    assert [pred.status(t) for t in (2.0, 6.0)] == ["processing", "canceled"]


def test_the_list_pages_newest_first_with_filters_and_deleted_inputs():
    with running_server(latency=0.1, page_size=2, foreign_predictions=3, retention=3600.0) as server, \
            client(server) as http:
        start = time.time()
        ids = [create(http, f"clip {i}").json()["id"] for i in range(3)]
        first = http.get("/v1/predictions", params={"created_after": _iso(start - 1)}).json()
        assert set(first) == {"next", "previous", "results"}
        assert [p["id"] for p in first["results"]] == ids[::-1][:2]  # newest first
        second = http.get(first["next"]).json()
        assert [p["id"] for p in second["results"]] == ids[:1] and second["next"] is None
        everything = http.get("/v1/predictions").json()
        seen = len(everything["results"])
        while everything["next"]:
            everything = http.get(everything["next"]).json()
            seen += len(everything["results"])
        assert seen == 6  # ours and the other systems'
    with running_server(latency=0.05, boot=0.0, retention=0.3) as server, client(server) as http:
        pid = create(http).json()["id"]
        time.sleep(0.4)
        gone = http.get(f"/v1/predictions/{pid}").json()
        assert gone["status"] == "succeeded" and gone["data_removed"] is True
        assert gone["input"] == {} and gone["output"] is None


def test_faults_answer_like_replicate():
    with running_server(latency=0.1) as server, client(server) as http:
        server.configure(faults={"rate_limit@create": 1, "server_error@create": 1, "policy": 1})
        throttled = create(http)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
        assert set(throttled.json()) == set(fixture("error_429"))
        assert create(http).status_code == 500
        flagged = create(http).json()
        assert wait_for(http, flagged["id"], "failed")["error"] == fixture("get_failed")["error"]
        assert create(http, "again").status_code == 201
        create(http, "again")
        counters = server.counters()
    assert counters["accepted"] == 3 and counters["paid_duplicates"] == 1
    assert counters["faults_injected"] == {"rate_limit": 1, "server_error": 1, "policy": 1}


def _iso(epoch: float) -> str:
    from videobatch.testing.replicate_sim import iso

    return iso(epoch)
