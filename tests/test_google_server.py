"""The Google-compatible test server keeps the documented contract (docs/providers/google.md),
checked with plain HTTP: auth, refusals, statuses, files, the keyless storage link, old paths."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from videobatch.testing.google_server import SimConfig, running_server

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "google"
KEY = {"x-goog-api-key": SimConfig.api_key}


def body() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "interaction_create_request.json").read_text())
    return data


@pytest.fixture(scope="module")
def server():
    with running_server(latency=0.2, jitter=0.0, max_parallel=2, file_processing=0.1) as handle:
        yield handle


@pytest.fixture
def http(server):
    server.reset()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_auth_missing_and_wrong(http):
    missing = http.post("/v1beta/interactions", json=body())
    wrong = http.post("/v1beta/interactions", json=body(), headers={"x-goog-api-key": "nope"})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    assert wrong.status_code == 401 and wrong.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(("change", "code", "words"), [
    ({"model": "veo-3.1-generate-preview"}, 404, "no longer available"),
    ({"model": "veo-3.1-lite-generate-001"}, 404, "not found for API version v1beta"),
    ({"negative_prompt": "blur"}, 400, 'Unknown name "negative_prompt"'),
    ({"response_format": {"type": "video", "duration": "8"}}, 400, "invalid value"),
    ({"response_format": {"type": "video", "duration": "12s"}}, 400, "between 3s and 10s"),
    ({"response_format": {"type": "video", "aspect_ratio": "1:1"}}, 400, "aspect_ratio"),
    ({"input": ""}, 400, "empty"),
    ({"input": "x [blocked]"}, 400, "usage policies"),
])
def test_refusals_are_rpc_status_bodies(http, server, change, code, words):
    answer = http.post("/v1beta/interactions", json=body() | change, headers=KEY)
    error = answer.json()["error"]
    assert answer.status_code == code == error["code"] and words in error["message"]
    assert server.counters()["accepted"] == 0


def test_lifecycle_files_and_a_keyless_storage_link(http, server):
    created = http.post("/v1beta/interactions", json=body(), headers=KEY).json()
    assert created["id"].startswith("v1_") and created["status"] in ("queued", "in_progress")
    time.sleep(0.25)
    done = http.get(f"/v1beta/interactions/{created['id']}", headers=KEY).json()
    assert done["status"] == "completed"
    video = done["steps"][-1]["content"][0]
    assert video["type"] == "video" and video["data"]  # GET gives inline base64 (the caveat)
    server.configure(get_delivery="uri")
    uri = http.get(f"/v1beta/interactions/{created['id']}", headers=KEY).json()["steps"][-1][
        "content"][0]["uri"]
    file_id = uri.split("/files/")[1].split(":")[0]
    time.sleep(0.1)
    assert http.get(f"/v1beta/files/{file_id}", headers=KEY).json()["state"] == "ACTIVE"
    redirect = http.get(f"/v1beta/files/{file_id}:download?alt=media", headers=KEY)
    assert redirect.status_code == 302
    assert http.get(f"/v1beta/files/{file_id}:download?alt=media").status_code == 403  # needs key
    stored = httpx.get(redirect.headers["location"], timeout=10)
    assert stored.status_code == 200 and stored.content[4:8] == b"ftyp"
    counters = server.counters()
    assert counters["key_leaks"] == 0 and counters["downloads"] == 1
    server.configure(get_delivery="inline")


def test_over_the_limit_is_a_429_with_retry_delay_and_cancel_stops_a_queued_one(http, server):
    ids = [http.post("/v1beta/interactions", json=body() | {"input": f"clip {i}"}, headers=KEY)
           for i in range(3)]
    assert [r.status_code for r in ids] == [200, 200, 429]
    details = ids[2].json()["error"]["details"]
    assert any(d.get("retryDelay") == "1s" for d in details)
    server.configure(over_limit="queue")
    queued = http.post("/v1beta/interactions", json=body() | {"input": "clip q"}, headers=KEY).json()
    assert queued["status"] == "queued"
    cancelled = http.post(f"/v1beta/interactions/{queued['id']}/cancel", headers=KEY).json()
    assert cancelled["status"] == "cancelled"
    server.configure(over_limit="refuse")


def test_same_inputs_twice_is_a_paid_duplicate_and_old_paths_answer_as_google_does(http, server):
    first = copy.deepcopy(body())
    second = first | {"webhook_config": {"user_metadata": {"videobatch_row": "other"}}}
    for payload in (first, second):
        assert http.post("/v1beta/interactions", json=payload, headers=KEY).status_code == 200
    assert server.counters()["paid_duplicates"] == 1
    old = http.post("/v1beta/models/gemini-omni-1.1-flash:generateContent", json={}, headers=KEY)
    assert old.status_code == 400 and "only supports Interactions API" in old.json()["error"]["message"]
    veo = http.post("/v1beta/models/veo-3.1-generate-preview:predictLongRunning", json={}, headers=KEY)
    assert veo.status_code == 404


def test_kling_fault_codes_are_refused(server):
    answer = httpx.post(f"{server.url}/_test/config", json={"faults": "code_1102=next:1"}, timeout=10)
    assert answer.status_code == 400
