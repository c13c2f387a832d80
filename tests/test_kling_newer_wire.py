"""Kling's newer API design: the client's wire mapping against the documented sample bodies in
tests/fixtures/providers/kling/new_*.json (respx behind httpx's transport), and the test server
held to the same samples (it must accept the documented requests and answer in their shape)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from videobatch.errors import AuthError, ConfigError, NotFoundError, ProviderError, RejectedError
from videobatch.providers import TaskState
from videobatch.providers.kling.client import KlingProvider
from videobatch.request import VideoRequest
from videobatch.testing import SimConfig, running_server

BASE = "https://kling.test"
API_KEY = "api-key-kling-unit-0123456789"
FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "kling"
T2V = f"{BASE}/v1/videos/text2video"
I2V = f"{BASE}/v1/videos/image2video"
TASKS = f"{BASE}/tasks"


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def envelope(data: Any = None, code: int = 0, message: str = "SUCCEED") -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": "r-1", "data": data}


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL",
                 "VIDEOBATCH_CATALOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent-videobatch-test")


@pytest.fixture
def router():
    return respx.MockRouter(assert_all_called=False)


def make(router: respx.MockRouter, **options: Any) -> KlingProvider:
    options.setdefault("api_key", API_KEY)
    return KlingProvider(base_url=BASE, transport=httpx.MockTransport(router.async_handler), **options)


def request(provider: KlingProvider, **values: Any) -> VideoRequest:
    """A row validated against the provider's rules, as the runner sees it."""
    return VideoRequest.model_validate(values, context={"rules": provider.rules()})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


def not_found_on_v1(router: respx.MockRouter, key: str) -> None:
    for url in (T2V, I2V):
        router.get(url, params={"external_task_id": key}).respond(404, json=envelope(code=1203))


# -- the create body, as documented --------------------------------------------------------------


def test_text_to_video_body_is_the_documented_sample(router):
    route = router.post(f"{BASE}/text-to-video/kling-3.0").respond(json=fixture("new_create_response.json"))
    provider = make(router)
    row = request(provider, prompt=fixture("new_text_to_video_kling_3_0_request.json")["prompt"],
                  model="kling-3.0", resolution="1080p", duration=8, aspect_ratio="16:9",
                  audio=False, watermark=False)
    status = run(provider.submit(row, "vb-demo-row-0004"))
    expected = fixture("new_text_to_video_kling_3_0_request.json")
    del expected["options"]["callback_url"]  # the sample sends an empty one; no callback, none sent
    assert sent(route) == expected
    assert route.calls[-1].request.headers["authorization"] == f"Bearer {API_KEY}"
    assert (status.task_id, status.state, status.idempotency_key) == (
        "901930004609634393", TaskState.QUEUED, "vb-demo-row-0004")


def test_image_to_video_body_is_the_documented_sample(router):
    route = router.post(f"{BASE}/image-to-video/kling-3.0").respond(json=fixture("new_create_response.json"))
    provider = make(router)
    sample = fixture("new_image_to_video_kling_3_0_request.json")
    frames = {c["type"]: c for c in sample["contents"]}
    row = request(provider, prompt=frames["prompt"]["text"], image=frames["first_frame"]["url"],
                  end_image=frames["last_frame"]["url"], model="kling-3.0", resolution="720p",
                  duration=5, audio=True, watermark=False)
    run(provider.submit(row, "vb-demo-row-0005"))
    body = sent(route)
    # Kling's default for multi_shot is true: it is always sent, false unless the row asks.
    assert body["settings"].pop("multi_shot") is False
    assert body == sample  # no aspect_ratio: the image decides it


def test_a_row_without_settings_gets_the_card_defaults_and_never_legacy_fields(router):
    route = router.post(f"{BASE}/text-to-video/kling-3.0").respond(json=fixture("new_create_response.json"))
    provider = make(router)
    run(provider.submit(request(provider, prompt="a fox", model="kling-3.0"), "k-1"))
    body = sent(route)
    assert body == {"prompt": "a fox",
                    "settings": {"resolution": "720p", "aspect_ratio": "16:9", "duration": 5,
                                 "multi_shot": False},
                    "options": {"external_task_id": "k-1"}}


def test_kling_2_6_native_audio_at_1080p_and_turbo_sends_no_audio(router):
    r26 = router.post(f"{BASE}/text-to-video/kling-2.6").respond(json=fixture("new_create_response.json"))
    turbo = router.post(f"{BASE}/text-to-video/kling-3.0-turbo").respond(json=fixture("new_create_response.json"))
    provider = make(router)
    run(provider.submit(request(provider, prompt="rain", model="kling-2.6", resolution="1080p",
                                audio=True, duration=10), "k-26"))
    run(provider.submit(request(provider, prompt="rain", model="kling-3.0-turbo"), "k-turbo"))
    assert sent(r26)["settings"] == {"resolution": "1080p", "aspect_ratio": "16:9", "duration": 10,
                                     "audio": "native"}
    assert "audio" not in sent(turbo)["settings"]


@pytest.mark.parametrize(("values", "field"), [
    ({"negative_prompt": "blur"}, "negative_prompt"),  # the newer design has no such field
    ({"resolution": "4k", "model": "kling-2.6"}, "resolution"),
    ({"audio": True, "model": "kling-2.6"}, "audio"),  # native audio only at 1080p
    ({"duration": 7, "model": "kling-2.6"}, "duration"),
    ({"mode": "pro"}, "mode"),  # a /v1 option
    ({"image": "https://example.invalid/a.png", "model": "kling-2.6"}, "image"),  # text only (unsure)
])
def test_rows_the_newer_design_would_refuse_are_input_errors(values, field):
    provider = KlingProvider(api_key=API_KEY)
    with pytest.raises(ValueError, match=field):
        request(provider, **{"prompt": "p", "model": "kling-3.0", **values})


def test_check_rows_says_what_the_chosen_design_cannot_take():
    forced = KlingProvider(api_key=API_KEY, api="legacy")
    rows = [request(forced, prompt="a", model="kling-3.0"), request(forced, prompt="b", model="kling-v3")]
    problems = forced.check_rows(rows)
    assert [(p.row, p.column) for p in problems] == [(1, "model")]
    assert "api=legacy" in problems[0].message and "kling-v3" in (problems[0].allowed or "")
    auto = KlingProvider(api_key=API_KEY)
    last_only = request(auto, prompt="c", model="kling-3.0", end_image="https://example.invalid/e.png")
    assert [p.column for p in auto.check_rows([last_only])] == ["end_image"]
    with pytest.raises(ConfigError, match="api"):
        KlingProvider(api_key=API_KEY, api="v2")


# -- reading tasks back -----------------------------------------------------------------------------


def test_lookup_by_external_id_reads_the_documented_answer(router):
    router.get(TASKS, params={"external_task_ids": "vb-demo-row-0004"}).respond(
        json=fixture("new_tasks_by_external_id_succeeded.json"))
    not_found_on_v1(router, "vb-demo-row-0004")
    found = run(make(router, api="newer").find("vb-demo-row-0004"))
    assert found is not None
    assert (found.task_id, found.state, found.idempotency_key) == (
        "901930004609634393", TaskState.SUCCEEDED, "vb-demo-row-0004")
    assert found.videos[0].url.endswith("901930004609634393.mp4")
    assert found.videos[0].duration == pytest.approx(8.041)
    assert found.finished_at == pytest.approx(1783065533.120)


def test_an_empty_lookup_answer_is_none_on_every_design(router):
    router.get(TASKS, params={"external_task_ids": "k"}).respond(
        json=fixture("new_tasks_by_external_id_empty.json"))
    not_found_on_v1(router, "k")
    assert run(make(router, api="newer").find("k")) is None


@pytest.mark.parametrize("answer", [
    (400, envelope(code=1201, message="Invalid parameters: external_task_ids")),
    (404, envelope(code=1203)),  # no documented "none" but an empty array: a refusal proves nothing
    (200, envelope([{"id": "x1", "status": "succeeded", "external_id": ""},
                    {"id": "x2", "status": "succeeded", "external_id": "order-7"}])),  # ignored
])
def test_a_lookup_that_cannot_answer_is_not_not_found(router, answer):
    status, body = answer
    router.get(TASKS, params={"external_task_ids": "k"}).respond(status, json=body)
    not_found_on_v1(router, "k")
    with pytest.raises(ProviderError, match="cannot look") as caught:
        run(make(router, api="newer").find("k"))
    assert not isinstance(caught.value, NotFoundError | RejectedError)


def test_a_failed_task_reads_its_reason(router):
    router.get(TASKS, params={"task_ids": "task123"}).respond(json=fixture("new_tasks_failed.json"))
    provider = make(router, api="newer")
    provider._kinds["task123"] = "newer"
    status = run(provider.status("task123"))
    assert (status.state, status.message) == (TaskState.FAILED, "NSFW content detected")


def test_status_many_asks_for_newer_tasks_in_one_batch(router):
    route = router.get(TASKS).respond(json=envelope([
        {"id": "a", "status": "processing", "external_id": "ka"},
        {"id": "b", "status": "succeeded", "external_id": "kb",
         "outputs": [{"type": "video", "id": "v", "url": "https://example.invalid/b.mp4"}]}]))
    provider = make(router)
    for task_id in ("a", "b", "c"):
        provider._kinds[task_id] = "newer"
    answers = run(provider.status_many(["a", "b", "c"]))
    assert route.call_count == 1
    assert route.calls[0].request.url.params["task_ids"] == "a,b,c"
    assert answers["a"].state is TaskState.RUNNING  # type: ignore[union-attr]
    assert answers["b"].videos[0].url == "https://example.invalid/b.mp4"  # type: ignore[union-attr]
    assert isinstance(answers["c"], NotFoundError)


def test_the_cursor_scan_takes_only_exact_keys_and_reads_to_the_end(router):
    page = fixture("new_tasks_cursor_page.json")
    last = envelope({"result": [], "count": 0, "next_cursor": "", "has_more": False})
    route = router.post(TASKS).mock(side_effect=[httpx.Response(200, json=page), httpx.Response(200, json=last)])
    for url in (T2V, I2V):
        router.get(url).respond(json=envelope([]))
    provider = make(router, api="newer")
    result = run(provider.scan({"vb-demo-row-0004": None, "vb-other": None}, since=1783065000.0))
    assert set(result.found) == {"vb-demo-row-0004"}  # the task without an external id is skipped
    assert result.complete
    first, second = sent(route, 0), sent(route, 1)
    assert first["limit"] == 500 and int(first["start_time"]) < 1783065000000 < int(first["end_time"])
    assert second["cursor"] == "opaque-cursor-token"


def test_a_scan_that_runs_out_of_pages_proves_nothing(router):
    router.post(TASKS).respond(json=fixture("new_tasks_cursor_page.json"))
    for url in (T2V, I2V):
        router.get(url).respond(json=envelope([]))
    result = run(make(router, api="newer", scan_pages=1).scan(["vb-missing"], since=1783065000.0))
    assert not result.complete and not result.found


# -- the test server holds to the same samples ----------------------------------------------------


def test_the_test_server_accepts_the_documented_bodies_and_answers_in_their_shape():
    headers = {"Authorization": f"Bearer {SimConfig.api_key}"}
    with running_server(latency=0.2, jitter=0.0) as server, httpx.Client(base_url=server.url,
                                                                          headers=headers) as http:
        created = {}
        for path, name in (("/text-to-video/kling-3.0", "new_text_to_video_kling_3_0_request.json"),
                           ("/image-to-video/kling-3.0", "new_image_to_video_kling_3_0_request.json")):
            answer = http.post(path, json=fixture(name)).json()
            assert answer["code"] == 0, answer
            assert set(answer["data"]) == set(fixture("new_create_response.json")["data"])
            created[answer["data"]["external_id"]] = answer["data"]["id"]
        again = http.post("/text-to-video/kling-3.0", json=fixture("new_text_to_video_kling_3_0_request.json"))
        assert again.status_code == 400 and "external_task_id" in again.json()["message"]
        mixed = {**fixture("new_text_to_video_kling_3_0_request.json"), "model_name": "kling-v3"}
        assert http.post("/text-to-video/kling-3.0", json=mixed).json()["code"] == 1201
        time.sleep(0.3)
        ids = ",".join(created)
        found = http.get("/tasks", params={"external_task_ids": ids}).json()["data"]
        sample = fixture("new_tasks_by_external_id_succeeded.json")["data"][0]
        assert {t["external_id"] for t in found} == set(created)
        assert all(set(t) == set(sample) and t["status"] == "succeeded" for t in found)
        assert set(found[0]["outputs"][0]) == set(sample["outputs"][0])
        assert http.get("/tasks", params={"external_task_ids": "nobody"}).json()["data"] == []
        listing = http.post("/tasks", json=fixture("new_tasks_cursor_request.json")
                            | {"start_time": "0", "end_time": str(2**60)}).json()["data"]
        assert set(listing) == set(fixture("new_tasks_cursor_page.json")["data"])
        audit = http.post("/_test/audit", json={"rows": {"vb-demo-row-0004": created["vb-demo-row-0004"],
                                                          "vb-demo-row-0005": created["vb-demo-row-0004"]}})
        assert audit.json()["wrong"] == ["vb-demo-row-0005"]
        assert server.counters()["wrong_adoptions"] == 1


def test_a_key_pair_refused_on_the_newer_design_says_to_use_an_api_key(router):
    router.post(f"{BASE}/text-to-video/kling-3.0").respond(
        401, json=envelope(code=1000, message="Authentication failed"))
    provider = make(router, api_key=None, access_key="ak-test-0123456789abcdef",
                    secret_key="sk-test-0123456789abcdef0123456789abcdef")
    with pytest.raises(AuthError, match="KLING_API_KEY") as caught:
        run(provider.submit(request(provider, prompt="p", model="kling-3.0"), "k"))
    assert "newer API design" in str(caught.value) and caught.value.provider_code == 1000
    assert "sk-test" not in str(caught.value)


# -- tasks this process has not seen (after a restart; status, repair, a service worker) ---------


def v1_task(task_id: str, key: str) -> dict[str, Any]:
    return {"task_id": task_id, "task_status": "succeed", "task_info": {"external_task_id": key},
            "created_at": 1_700_000_000_000, "updated_at": 1_700_000_060_000}


def test_unseen_rows_are_looked_up_on_both_designs_with_an_api_key(router):
    newer_route = router.get(TASKS, params={"external_task_ids": "k"}).respond(json=envelope([]))
    not_found_on_v1(router, "k")
    provider = make(router)
    provider.check([])  # status / repair / a worker: the rows are not shown
    assert run(provider.find("k")) is None
    assert newer_route.call_count == 1


def test_unseen_rows_with_a_key_pair_stay_on_v1(router):
    """Kling documents the newer design with API keys only: a key-pair account that never sent a
    newer-design row is not asked there (a refusal of its JWT must not stop its runs)."""
    newer_route = router.get(TASKS).respond(401, json=envelope(code=1000))
    not_found_on_v1(router, "k")
    provider = make(router, api_key=None, access_key="ak-test-0123456789abcdef",
                    secret_key="sk-test-0123456789abcdef0123456789abcdef")
    provider.check([])
    assert run(provider.find("k")) is None
    assert newer_route.call_count == 0
    provider.check_rows([request(provider, prompt="p", model="kling-3.0")])  # now it has one
    with pytest.raises(AuthError, match="KLING_API_KEY"):
        run(provider.find("k"))


def test_an_unknown_task_refused_by_one_design_is_found_on_the_other(router):
    router.get(TASKS, params={"task_ids": "t9"}).respond(400, json=envelope(code=1201))
    router.get(f"{T2V}/t9").respond(json=envelope(v1_task("t9", "k9")))
    provider = make(router, api="newer")
    status = run(provider.status("t9"))
    assert (status.task_id, status.idempotency_key) == ("t9", "k9")
    router.get(TASKS, params={"task_ids": "t8"}).respond(400, json=envelope(code=1201))
    for url in (T2V, I2V):
        router.get(f"{url}/t8").respond(404, json=envelope(code=1203))
    with pytest.raises(RejectedError):  # one design could not say: never "no such task"
        run(provider.status("t8"))


def test_the_cli_dry_run_refuses_a_row_of_the_other_design_before_anything_is_sent(tmp_path, capsys):
    from videobatch.cli.main import main

    table = tmp_path / "prompts.csv"
    table.write_text("prompt,model\na heron,kling-3.0\na crane,kling-v3\n")
    assert main([str(table), "--provider", "kling", "--dry-run", "-P", "api=legacy"]) == 2
    err = capsys.readouterr().err
    assert "row 1" in err and "api=legacy" in err and "kling-v3" in err
    assert main([str(table), "--provider", "kling", "--dry-run"]) == 0  # each card picks its design
    assert "kling-3.0" in capsys.readouterr().out


def test_status_many_of_unseen_tasks_asks_the_newer_design_in_one_batch_then_v1(router):
    """`status --verify-tasks` after a restart: nothing is known of the ids; one /tasks query
    answers for the newer-design ones, the others are read on /v1 as before."""
    tasks = router.get(TASKS).respond(json=envelope([{"id": "n1", "status": "succeeded", "external_id": "kn"}]))
    router.get(f"{T2V}/v1").respond(json=envelope(v1_task("v1", "kv")))
    provider = make(router)
    provider.check([])
    answers = run(provider.status_many(["n1", "v1"]))
    assert tasks.call_count == 1 and tasks.calls[0].request.url.params["task_ids"] == "n1,v1"
    assert answers["n1"].idempotency_key == "kn"  # type: ignore[union-attr]
    assert answers["v1"].idempotency_key == "kv"  # type: ignore[union-attr]
    assert provider._kinds == {"n1": "newer", "v1": "text2video"}
