"""The fal client's wire mapping, checked against the fixture bodies (respx behind httpx's transport),
and its catalogue and options refusing bad rows before any request."""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import videobatch
from videobatch.errors import (
    AccountError,
    AuthError,
    ConfigError,
    InputError,
    NotFoundError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from videobatch.providers import TaskState, get_provider
from videobatch.providers.fal import FalProvider
from videobatch.providers.fal.wire import TaskRef
from videobatch.request import VideoRequest

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "fal"
KEY = "fal-test-key-0123:abcdef9876543210"
QUEUE = "https://queue.fal.run"
T2V = "fal-ai/kling-video/v2.5-turbo/pro/text-to-video"
BASE = f"{QUEUE}/fal-ai/kling-video/requests/80e732af-660e-45cd-bd63-580e4f2a94cc"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FAL_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)


def provider(**options: Any) -> FalProvider:
    return FalProvider(key=KEY, max_rps=None, **options)


def request(**fields: Any) -> VideoRequest:
    return VideoRequest.model_validate(fields, context={"rules": FalProvider(key=KEY).rules()})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------ bodies


@respx.mock
def test_submit_posts_the_bare_model_input_once_and_keeps_the_answers_urls():
    route = respx.post(f"{QUEUE}/{T2V}").respond(200, json=fixture("submit_response_full"))
    status = run(provider().submit(request(prompt="a mecha lands", negative_prompt="blur"), "key-1"))
    assert route.call_count == 1
    sent = route.calls[0].request
    assert sent.headers["Authorization"] == f"Key {KEY}"
    assert json.loads(sent.content) == {"prompt": "a mecha lands", "negative_prompt": "blur",
                                        "duration": "5", "aspect_ratio": "16:9"}
    assert status.state is TaskState.QUEUED
    assert status.task_id == BASE  # the answer's URLs, losslessly (status/cancel = base + suffix)
    assert TaskRef.decode(status.task_id).status_url == f"{BASE}/status"


def test_bodies_follow_each_endpoints_spelling():
    from videobatch.providers.fal import wire

    p = provider()
    i2v = request(prompt="cars", image="https://x/a.jpg", end_image="https://x/b.jpg",
                  model="fal-ai/kling-video/v2.5-turbo/pro/image-to-video", cfg_scale="0.4")
    assert wire.request_body(p.resolve(i2v)) == {
        "prompt": "cars", "duration": "5", "image_url": "https://x/a.jpg",
        "tail_image_url": "https://x/b.jpg", "cfg_scale": 0.4}
    veo = request(prompt="rain", model="veo-3.1", duration=6, audio="off", seed=7)
    assert wire.request_body(p.resolve(veo)) == {
        "prompt": "rain", "duration": "6s", "aspect_ratio": "16:9", "resolution": "720p", "seed": 7,
        "generate_audio": False}
    wan = request(prompt="sea", model="fal-ai/wan/v2.7/text-to-video", duration=3)
    assert wire.request_body(p.resolve(wan))["duration"] == 3
    v3 = request(prompt="x", image="https://x/a.jpg", model="fal-ai/kling-video/v3/pro/image-to-video")
    assert "start_image_url" in wire.request_body(p.resolve(v3))


def test_the_fixture_text_to_video_body_is_what_the_o3_endpoint_gets():
    from videobatch.providers.fal import wire

    given = fixture("submit_request_text_to_video")
    req = request(prompt=given["prompt"], model="fal-ai/kling-video/o3/pro/text-to-video")
    body = wire.request_body(provider().resolve(req))
    assert {k: v for k, v in given.items() if v is not None} == body


# ------------------------------------------------------------------ status


@respx.mock
@pytest.mark.parametrize(("name", "code", "state"), [
    ("status_in_queue", 202, TaskState.QUEUED), ("status_in_progress", 202, TaskState.RUNNING)])
def test_waiting_states(name, code, state):
    respx.get(f"{BASE}/status").respond(code, json=fixture(name))
    assert run(provider().status(BASE)).state is state


@respx.mock
def test_completed_fetches_the_result_at_once():
    respx.get(f"{BASE}/status").respond(200, json=fixture("status_completed"))
    respx.get(BASE).respond(200, json=fixture("result_video"))
    status = run(provider().status(BASE))
    assert status.state is TaskState.SUCCEEDED
    assert status.videos[0].url == fixture("result_video")["video"]["url"]
    assert status.expires_at is not None


@respx.mock
def test_completed_with_error_is_a_failure_in_fals_words():
    respx.get(f"{BASE}/status").respond(200, json=fixture("status_failed"))
    respx.get(BASE).respond(504, json=fixture("error_504_request_timeout"),
                            headers={"X-Fal-Error-Type": "request_timeout"})
    status = run(provider().status(BASE))
    assert status.state is TaskState.FAILED
    assert "request_timeout" in (status.message or "")


@respx.mock
def test_a_content_policy_refusal_says_so():
    respx.get(f"{BASE}/status").respond(200, json={**fixture("status_completed"),
                                                   "error": "Invalid status code: 422"})
    respx.get(BASE).respond(422, json=fixture("error_422_content_policy"))
    status = run(provider().status(BASE))
    assert status.state is TaskState.FAILED
    assert "content policy" in (status.message or "") and "sexual" in (status.message or "")


@respx.mock
def test_an_unknown_status_spelling_keeps_waiting():
    respx.get(f"{BASE}/status").respond(202, json={"status": "SOMETHING_NEW"})
    assert run(provider().status(BASE)).state is TaskState.RUNNING


def test_the_key_is_never_sent_to_another_host():
    with pytest.raises(NotFoundError, match="not sent there"):
        run(provider().status("https://evil.example/fal-ai/x/requests/1"))


# ------------------------------------------------------------------ errors


def answer(code: int, body: Any = None, **headers: str) -> httpx.Response:
    return httpx.Response(code, json=body if body is not None else {"detail": "x"}, headers=headers)


@respx.mock
@pytest.mark.parametrize(("response", "error", "maybe"), [
    (answer(401, {"detail": "Invalid key"}), AuthError, None),
    (answer(403, {"detail": "User is locked. Reason: Exhausted balance"}), AccountError, None),
    (answer(404, {"detail": "Application not found"}), RejectedError, None),
    (answer(422, fixture("error_422_validation")), RejectedError, None),
    (answer(422, fixture("error_422_content_policy")), RejectedError, None),
    (answer(429, fixture("error_429"), **{"X-Fal-Needs-Retry": "1"}), SlotsBusy, False),
    (answer(429, {"detail": "slow down"}, **{"Retry-After": "3"}), RateLimited, False),
    (answer(504, fixture("error_504_request_timeout")), TransientError, True),
    (httpx.Response(200, text="<html>"), TransientError, True),
])
def test_submit_errors_map(response, error, maybe):
    respx.post(f"{QUEUE}/{T2V}").mock(return_value=response)
    with pytest.raises(error) as caught:
        run(provider().submit(request(prompt="p"), "k"))
    if maybe is not None:
        assert caught.value.maybe_accepted is maybe  # type: ignore[attr-defined]
    assert KEY not in str(caught.value)


@respx.mock
def test_a_lost_answer_is_maybe_accepted_and_never_resent():
    route = respx.post(f"{QUEUE}/{T2V}").mock(side_effect=httpx.ReadError("reset"))
    with pytest.raises(TransientError) as caught:
        run(provider().submit(request(prompt="p"), "k"))
    assert caught.value.maybe_accepted and route.call_count == 1
    respx.post(f"{QUEUE}/{T2V}").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TransientError) as unsent:
        run(provider().submit(request(prompt="p"), "k"))
    assert not unsent.value.maybe_accepted


@respx.mock
def test_status_404_is_not_found():
    respx.get(f"{BASE}/status").respond(404, json={"detail": "Request not found"})
    with pytest.raises(NotFoundError):
        run(provider().status(BASE))


@respx.mock
@pytest.mark.parametrize(("code", "name", "stopped"), [
    (200, None, True), (202, "cancel_requested", False), (400, "cancel_already_completed", False),
    (404, "cancel_not_found", False)])
def test_cancel(code, name, stopped):
    respx.put(f"{BASE}/cancel").respond(code, json=fixture(name) if name else {"status": "OK"})
    assert run(provider().cancel(BASE)) is stopped


# ------------------------------------------------------------------ the listing


def listed(request_id: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"request_id": request_id, "endpoint_id": T2V, "sent_at": "2099-01-01T00:00:01Z",
            "started_at": "2099-01-01T00:00:05Z", "ended_at": "2099-01-01T00:00:08Z",
            "status_code": 200, "json_input": body,
            "json_output": {"video": {"url": f"https://v3.fal.media/{request_id}.mp4"}}, **extra}


@respx.mock
def test_scan_adopts_one_to_one_matches_only():
    p = provider()
    alone, twin_a, twin_b = (request(prompt="alone"), request(prompt="twin"), request(prompt="twin"))
    body = {"prompt": "alone", "duration": "5", "aspect_ratio": "16:9"}
    twin = {**body, "prompt": "twin"}
    page = fixture("list_requests_by_endpoint") | {"items": [
        listed("r1", {**body, "extra_default": 1}), listed("r2", twin), listed("r3", twin)],
        "has_more": False}
    route = respx.get("https://api.fal.ai/v1/models/requests/by-endpoint").respond(200, json=page)
    result = run(p.scan({"k1": alone, "k2": twin_a, "k3": twin_b}, since=1_000_000_000))
    assert set(result.found) == {"k1"} and not result.complete
    assert result.found["k1"].state is TaskState.SUCCEEDED
    assert result.found["k1"].task_id == f"{QUEUE}/fal-ai/kling-video/requests/r1"
    params = route.calls[0].request.url.params
    assert params["endpoint_id"] == T2V and params["expand"] == "payloads"


@respx.mock
def test_scan_follows_the_cursor():
    body = {"prompt": "late", "duration": "5", "aspect_ratio": "16:9"}
    route = respx.get("https://api.fal.ai/v1/models/requests/by-endpoint").mock(side_effect=[
        httpx.Response(200, json={"items": [], "next_cursor": "Mg==", "has_more": True}),
        httpx.Response(200, json={"items": [listed("r9", body)], "has_more": False})])
    found = run(provider().scan({"k": request(prompt="late")}, since=1_000_000_000)).found
    assert set(found) == {"k"} and route.call_count == 2
    assert route.calls[1].request.url.params["cursor"] == "Mg=="


# ------------------------------------------------------------------ key, options, catalogue


def test_the_key_is_never_shown(caplog):
    p = provider()
    text = f"{p!r} {p.describe()} {vars(p)}"
    assert KEY not in text
    with pytest.raises(TypeError):
        pickle.dumps(p._key)
    with caplog.at_level(logging.DEBUG), respx.mock:
        respx.post(f"{QUEUE}/{T2V}").respond(401, json={"detail": "no"})
        with pytest.raises(AuthError) as caught:
            run(p.submit(request(prompt="p"), "k"))
    assert KEY not in str(caught.value) and KEY not in caplog.text


def test_missing_key_names_the_variable(monkeypatch):
    with pytest.raises(ConfigError, match="FAL_KEY"):
        FalProvider().check([request(prompt="p")])
    monkeypatch.setenv("FAL_KEY_ID", "id")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret")
    assert FalProvider()._auth() == {"Authorization": "Key id:secret"}


def test_the_listing_host_follows_base_url():
    assert provider().api_base_url == "https://api.fal.ai/v1"
    assert provider(base_url="http://127.0.0.1:9").api_base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("row", [
    {"prompt": "p", "duration": 7},                                   # 5 or 10 only
    {"prompt": "p", "model": "fal-ai/sora-2/text-to-video"},          # retired
    {"prompt": "p", "image": "https://x/a.jpg"},                      # a text-only endpoint
    {"prompt": "p", "model": "veo-3.1", "resolution": "8k"},
    {"prompt": "p", "model": "veo-3.1", "safety_tolerance": 9},
    {"prompt": "p", "cfg_scale": 2},
    {"prompt": "p", "model": "kling-3-pro", "shot_type": "wide"},
    {"prompt": "p", "model": "fal-ai/no-such/model"},
])
def test_bad_rows_are_refused_before_any_request(row):
    with pytest.raises(InputError):
        videobatch.load_prompts([row], rules=FalProvider.rules(FalProvider(key=KEY)))


def test_local_images_and_stray_aspect_ratios_are_caught_by_check(tmp_path):
    p = provider()
    rows = [request(prompt="p", image=str(tmp_path / "a.png"),
                    model="fal-ai/kling-video/v2.5-turbo/pro/image-to-video"),
            request(prompt="p", image="https://x/a.jpg", aspect_ratio="16:9",
                    model="fal-ai/kling-video/v2.5-turbo/pro/image-to-video")]
    problems = p.check(rows)
    assert [(x.row, x.column) for x in problems] == [(1, "image"), (2, "aspect_ratio")]


def test_catalogue_prices_and_registry():
    p = get_provider("fal", key=KEY)
    assert isinstance(p, FalProvider)
    assert p.capabilities.lookup is False and p.capabilities.listing and p.capabilities.cancel
    assert p.estimate_cost(request(prompt="p", duration=10)) == pytest.approx(0.70)
    assert p.estimate_cost(request(prompt="p", model="veo-3.1")) == pytest.approx(3.2)
    catalog = p.catalog()
    assert catalog is not None and catalog.resolve("sora-2") is not None
    assert catalog.resolve("sora-2").retired  # type: ignore[union-attr]
