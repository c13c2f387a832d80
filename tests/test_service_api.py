"""The service's HTTP API against a real redis-server: auth, validation, idempotency, batches.

Every refusal is checked for side effects with Redis's own dataset digest (``DEBUG DIGEST``): a
request without a valid token, or with a malformed body, leaves Redis exactly as it was.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from typing import Any

import httpx
import pandas as pd
import pytest

from service_fixtures import (
    TOKEN,
    RedisServer,
    free_port,
    needs_redis,
    running_api,
    serving,
    wait_until,
    worker_argv,
    worker_env,
    workers,
)
from videobatch.service.api import create_app
from videobatch.testing import running_server

pytestmark = needs_redis


def queue_length(server: RedisServer) -> int:
    r = server.client()
    try:
        return int(r.xlen("vb:queue")) if r.exists("vb:queue") else 0
    finally:
        r.close()


SOME_ID = "0" * 32
ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/videos", {"json": {"prompt": "a red fox"}}),
    ("POST", "/api/v1/videos", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("GET", f"/api/v1/videos/{SOME_ID}", {}),
    ("POST", "/api/v1/batches", {"json": {"rows": [{"prompt": "a"}]}}),
    ("POST", "/api/v1/batches/csv", {"files": {"file": ("p.csv", b"prompt\na red fox\n", "text/csv")}}),
    ("GET", f"/api/v1/batches/{SOME_ID}", {}),
    ("GET", f"/api/v1/batches/{SOME_ID}/results?format=parquet", {}),
    ("GET", "/api/v1/nothing-here", {}),
]
BAD_AUTH = {
    "no header": {},
    "wrong token": {"Authorization": "Bearer not-the-token"},
    "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "other scheme": {"Authorization": f"Basic {TOKEN}"},
    "empty bearer": {"Authorization": "Bearer"},
}


# ------------------------------------------------------------------------------------------ auth
@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
def test_every_endpoint_refuses_a_missing_or_wrong_token_and_touches_nothing(api, redis_server, auth):
    before = redis_server.digest()
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        for method, path, kwargs in ENDPOINTS:
            headers = {**kwargs.get("headers", {}), **BAD_AUTH[auth]}
            response = anonymous.request(method, path, **{**kwargs, "headers": headers})
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "request_id" not in response.text
    assert redis_server.digest() == before


def test_tokens_come_from_the_environment_and_none_means_closed(redis_server, monkeypatch):
    monkeypatch.setenv("VIDEOBATCH_API_TOKENS", " alpha , beta ,")
    with serving(create_app(redis_server.url)) as handle:
        for token, status in (("alpha", 404), ("beta", 404), ("", 401), ("gamma", 401)):
            with handle.client(token or None) as c:
                assert c.get(f"/api/v1/videos/{SOME_ID}").status_code == status, token
    monkeypatch.setenv("VIDEOBATCH_API_TOKENS", "")
    with serving(create_app(redis_server.url)) as handle, handle.client("") as c:
        assert c.get(f"/api/v1/videos/{SOME_ID}", headers={"Authorization": "Bearer"}).status_code == 401


def test_openapi_spec_is_served_with_bearer_auth(api):
    spec = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    paths = spec["paths"]
    for path in ("/api/v1/videos", "/api/v1/videos/{request_id}", "/api/v1/batches",
                 "/api/v1/batches/csv", "/api/v1/batches/{batch_id}",
                 "/api/v1/batches/{batch_id}/results"):
        assert path in paths, path
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    create = paths["/api/v1/videos"]["post"]
    assert {"202", "401", "422"} <= set(create["responses"])
    fields = spec["components"]["schemas"]["VideoCreate"]["properties"]
    assert {"prompt", "duration", "model", "webhook_url", "metadata"} <= set(fields)
    assert httpx.get(f"{api.url}/docs", timeout=10).status_code == 200


# ------------------------------------------------------------------------------------------ videos
def test_seed_fields_round_trip(client):
    body = {"prompt": "A cat playing piano in a jazz club", "duration": 8, "model": "local-hd",
            "webhook_url": "https://example.invalid/hooks/videos",
            "metadata": {"customer": "acme", "n": 3, "tags": ["a", "b"], "nested": {"x": 1.5}}}
    created = client.post("/api/v1/videos", json=body)
    assert created.status_code == 202, created.text
    answer = created.json()
    assert answer["status"] == "pending" and len(answer["request_id"]) == 32
    assert answer["message"]

    seen = client.get(f"/api/v1/videos/{answer['request_id']}").json()
    assert seen["request_id"] == answer["request_id"]
    assert seen["status"] == "pending"
    assert seen["video_url"] is None and seen["error"] is None
    assert seen["request"]["prompt"] == body["prompt"]
    assert seen["request"]["duration"] == 8
    assert seen["request"]["model"] == "local-v2"  # the alias, resolved as the library does
    assert seen["webhook_url"] == body["webhook_url"]
    assert seen["metadata"] == body["metadata"]


def test_a_request_holds_what_was_given_the_provider_fills_in_the_rest(client):
    seen = client.get(f"/api/v1/videos/{client.post('/api/v1/videos', json={'prompt': 'x'}).json()['request_id']}")
    assert seen.json()["request"] == {"prompt": "x"}  # the model's defaults apply when it is sent


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "not json": ({"content": b'{"prompt": "x",', "headers": {"Content-Type": "application/json"}}, "JSON"),
    "no body": ({}, "Field required"),
    "empty prompt": ({"json": {"prompt": "  "}}, "prompt is empty"),
    "missing prompt": ({"json": {"duration": 5}}, "prompt is empty"),
    "duration 30": ({"json": {"prompt": "x", "duration": 30}}, "duration 30 is not allowed"),
    "duration text": ({"json": {"prompt": "x", "duration": "long"}}, "integer"),
    "unknown model": ({"json": {"prompt": "x", "model": "sora-9"}}, "local has no model 'sora-9'"),
    "an option it lacks": ({"json": {"prompt": "x", "cfg_scale": 2}}, "local has no option 'cfg_scale'"),
    "bad option value": ({"json": {"prompt": "x", "options": {"mode": "max"}}}, "mode 'max' is not one of"),
    "unknown field": ({"json": {"prompt": "x", "colour": "red"}}, "Extra inputs"),
    "bad webhook": ({"json": {"prompt": "x", "webhook_url": "ftp://host/x"}}, "http:// or https://"),
    "metadata list": ({"json": {"prompt": "x", "metadata": [1, 2]}}, "dictionary"),
    "prompt too long": ({"json": {"prompt": "x" * 2501}}, "2500"),
    "duration on local-hd": ({"json": {"prompt": "x", "model": "local-hd", "duration": 5}}, "4, 6, 8"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_bodies_are_422_with_reasons_and_enqueue_nothing(client, redis_server, case):
    kwargs, reason = MALFORMED[case]
    before = redis_server.digest()
    response = client.post("/api/v1/videos", **kwargs)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    assert reason in response.text, detail
    assert redis_server.digest() == before


def test_a_422_lists_every_problem_of_the_request(client, redis_server):
    before = redis_server.digest()
    response = client.post("/api/v1/videos", json={"prompt": "", "duration": 30, "aspect_ratio": "4:3",
                                                    "mode": "ultra"})
    assert response.status_code == 422, response.text
    text = response.text
    assert all(word in text for word in ("prompt is empty", "duration 30", "'4:3'", "'ultra'")), text
    assert redis_server.digest() == before


def test_unknown_ids_are_404(client):
    for path in (f"/api/v1/videos/{SOME_ID}", f"/api/v1/batches/{SOME_ID}",
                 f"/api/v1/batches/{SOME_ID}/results", "/api/v1/videos/..%2F..%2Fmeta"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)


def test_idempotency_key_returns_the_same_request_and_enqueues_once(client, api, redis_server):
    body = {"prompt": "a lighthouse at dusk", "metadata": {"order": 17}}
    before = queue_length(redis_server)
    first = client.post("/api/v1/videos", json=body, headers={"Idempotency-Key": "order-17"})
    again = client.post("/api/v1/videos", json=body, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == again.status_code == 202
    assert first.json()["request_id"] == again.json()["request_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert queue_length(redis_server) == before + 1

    # The same key with another body is a client bug: refused, nothing enqueued.
    digest = redis_server.digest()
    other = client.post("/api/v1/videos", json={**body, "prompt": "another"},
                        headers={"Idempotency-Key": "order-17"})
    assert other.status_code == 409, other.text
    assert redis_server.digest() == digest

    # Concurrent retries of one request: one request, one queue entry.
    answers: list[str] = []

    def post() -> None:
        with api.client() as c:
            answers.append(c.post("/api/v1/videos", json=body,
                                  headers={"Idempotency-Key": "burst"}).json()["request_id"])

    threads = [threading.Thread(target=post) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 12 and len(set(answers)) == 1
    assert queue_length(redis_server) == before + 2


def test_idempotency_keys_are_per_token(redis_server):
    with serving(create_app(redis_server.url, tokens=["tok-a", "tok-b"])) as handle, \
            handle.client("tok-a") as a, handle.client("tok-b") as b:
        one = a.post("/api/v1/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "k1"})
        two = b.post("/api/v1/videos", json={"prompt": "x"}, headers={"Idempotency-Key": "k1"})
        assert one.json()["request_id"] != two.json()["request_id"]


# ------------------------------------------------------------------------------------------ batches
def test_batch_of_json_rows(client):
    rows = [{"id": "r1", "prompt": "a red fox", "duration": 10, "client": "acme", "score": 0.5},
            {"id": "r2", "prompt": "a blue whale", "client": "zen", "tags": ["x"],
             "webhook_url": "https://example.invalid/own"},
            {"id": "r3", "prompt": "a paper boat"}]
    created = client.post("/api/v1/batches", json={"rows": rows, "defaults": {"model": "local-v1"},
                                                   "webhook_url": "https://example.invalid/all"})
    assert created.status_code == 202, created.text
    batch = created.json()
    assert batch["total"] == 3 and len(set(batch["request_ids"])) == 3

    counts = client.get(f"/api/v1/batches/{batch['batch_id']}").json()
    assert counts["total"] == 3 and counts["counts"]["pending"] == 3 and counts["done"] is False

    views = [client.get(f"/api/v1/videos/{rid}").json() for rid in batch["request_ids"]]
    assert [v["row_key"] for v in views] == ["r1", "r2", "r3"]
    assert {v["batch_id"] for v in views} == {batch["batch_id"]}
    assert [v["request"]["model"] for v in views] == ["local-v1"] * 3
    assert views[0]["request"]["duration"] == 10 and "duration" not in views[1]["request"]
    assert views[0]["metadata"] == {"id": "r1", "client": "acme", "score": 0.5}
    assert views[1]["metadata"] == {"id": "r2", "client": "zen", "tags": ["x"]}
    assert [v["webhook_url"] for v in views] == ["https://example.invalid/all",
                                                 "https://example.invalid/own",
                                                 "https://example.invalid/all"]


def test_batch_csv_upload(client, redis_server):
    csv = "id,prompt,duration,client\nc1,a red fox,5,acme\nc2,\"a boat, at sea\",10,zen\n"
    before = queue_length(redis_server)
    created = client.post("/api/v1/batches/csv", files={"file": ("prompts.csv", csv.encode(), "text/csv")},
                          data={"webhook_url": "https://example.invalid/csv"})
    assert created.status_code == 202, created.text
    batch = created.json()
    assert batch["total"] == 2
    assert queue_length(redis_server) == before + 2
    second = client.get(f"/api/v1/videos/{batch['request_ids'][1]}").json()
    assert second["request"]["prompt"] == "a boat, at sea" and second["request"]["duration"] == 10
    assert second["metadata"] == {"id": "c2", "client": "zen"}
    assert second["webhook_url"] == "https://example.invalid/csv"

    again = client.post("/api/v1/batches/csv", files={"file": ("prompts.csv", csv.encode(), "text/csv")},
                        data={"webhook_url": "https://example.invalid/csv"},
                        headers={"Idempotency-Key": "upload-1"})
    replay = client.post("/api/v1/batches/csv", files={"file": ("prompts.csv", csv.encode(), "text/csv")},
                         data={"webhook_url": "https://example.invalid/csv"},
                         headers={"Idempotency-Key": "upload-1"})
    assert again.json() == replay.json() and replay.headers["idempotent-replayed"] == "true"
    assert queue_length(redis_server) == before + 4


def test_bad_batch_rows_are_all_listed_and_nothing_is_enqueued(client, redis_server):
    csv = ("prompt,duration,model,webhook_url\n"
           "a red fox,8,local-hd,\n"            # row 1: fine
           ",8,local-hd,\n"                     # row 2: empty prompt
           "a boat,7,local-hd,\n"               # row 3: duration
           "a whale,8,sora-9,\n"                # row 4: model
           "a cat,8,local-hd,ftp://x/y\n")      # row 5: webhook URL
    before = redis_server.digest()
    response = client.post("/api/v1/batches/csv", files={"file": ("p.csv", csv.encode(), "text/csv")})
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    where = {(p["row"], p["column"]) for p in problems}
    assert {(2, "prompt"), (3, "duration"), (4, "model"), (5, "webhook_url")} <= where, problems
    assert all(p["row"] != 1 for p in problems)
    assert {p["line"] for p in problems if p["row"] == 3} == {4}  # CSV line numbers, header = 1

    rows = [{"prompt": "ok"}, {"prompt": ""}, {"prompt": "x", "mode": "max"},
            {"prompt": "y", "webhook_url": "nope"}]
    response = client.post("/api/v1/batches", json={"rows": rows})
    assert response.status_code == 422
    where = {(p["row"], p["column"]) for p in response.json()["detail"]}
    assert {(2, "prompt"), (3, "mode"), (4, "webhook_url")} <= where

    for body in ({"rows": []}, {"rows": [{"prompt": "x"}], "defaults": {"colour": "red"}},
                 {"rows": [{"prompt": "x"}], "webhook_url": "mailto:a@b"}, {"rows": "x"}):
        assert client.post("/api/v1/batches", json=body).status_code == 422, body
    for data in (b"", b"\xff\xfe\x00garbage", b"prompt,duration\n\"unterminated,5\n"):
        answer = client.post("/api/v1/batches/csv", files={"file": ("p.csv", data, "text/csv")})
        assert answer.status_code == 422, (data, answer.text)
    assert redis_server.digest() == before


def test_batch_results_as_csv_parquet_and_json(client, redis_server, tmp_path):
    rows = [{"id": f"k{i}", "prompt": f"scene {i}", "client": "acme"} for i in range(6)]
    rows[4]["prompt"] += " [fail]"  # the Kling-compatible server fails this task
    batch = client.post("/api/v1/batches", json={"rows": rows}).json()
    with running_server(latency=0.1, max_parallel=4) as kling, \
            workers([worker_argv(redis_server.url, kling, account_limit=4)], tmp_path, worker_env()):
        wait_until(lambda: client.get(f"/api/v1/batches/{batch['batch_id']}").json()["done"], 60,
                   "the batch to finish", every=0.1)
    counts = client.get(f"/api/v1/batches/{batch['batch_id']}").json()["counts"]
    assert counts["completed"] == 5 and counts["failed"] == 1

    path = f"/api/v1/batches/{batch['batch_id']}/results"
    csv = client.get(path)
    assert csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(csv.text))
    parquet = pd.read_parquet(io.BytesIO(client.get(path, params={"format": "parquet"}).content))
    as_json = pd.DataFrame(client.get(path, params={"format": "json"}).json())
    for frame in (table, parquet, as_json):
        assert list(frame["row_key"]) == [f"k{i}" for i in range(6)]  # input order
        assert list(frame["status"]) == ["completed"] * 4 + ["failed", "completed"]
        assert set(frame["client"]) == {"acme"}
        assert frame.loc[4, "error"] and "failed" in str(frame.loc[4, "error"]).lower()
        assert frame.loc[0, "video_url"].startswith("http://127.0.0.1")
        assert frame.loc[0, "prompt"] == "scene 0"
    assert client.get(path, params={"format": "xlsx"}).status_code == 422


# ------------------------------------------------------------------------------------------ outages
def test_redis_outage_is_503_and_recovers(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with running_api(server.url) as handle, handle.client() as c:
            assert c.post("/api/v1/videos", json={"prompt": "before"}).status_code == 202
            server.kill()
            down = c.post("/api/v1/videos", json={"prompt": "during"})
            assert down.status_code == 503 and down.headers["retry-after"] == "1"
            assert c.get(f"/api/v1/videos/{SOME_ID}").status_code == 503
            server.start()
            assert c.post("/api/v1/videos", json={"prompt": "after"}).status_code == 202
            r = server.client()
            assert r.xlen("vb:queue") == 2  # the accepted ones, nothing for the refused one
            r.close()
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ the CLI
def test_serve_command_runs_the_api(redis_server):
    port = free_port()
    env = {**os.environ, "VIDEOBATCH_API_TOKENS": "cli-token"}
    argv = [sys.executable, "-m", "videobatch", "serve", "--port", str(port),
            "--redis-url", redis_server.url]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 30, "python -m videobatch serve", every=0.1)
        assert httpx.post(f"{base}/api/v1/videos", json={"prompt": "x"}, timeout=5).status_code == 401
        answer = httpx.post(f"{base}/api/v1/videos", json={"prompt": "x"}, timeout=5,
                            headers={"Authorization": "Bearer cli-token"})
        assert answer.status_code == 202
    finally:
        proc.terminate()
        proc.wait(10)
    refused = subprocess.run(argv, env={**os.environ, "VIDEOBATCH_API_TOKENS": ""},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "VIDEOBATCH_API_TOKENS" in refused.stderr
