"""The Runway client's wire mapping, checked against the researched fixture bodies
(tests/fixtures/providers/runway/) served by respx behind httpx's transport."""

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

from videobatch.errors import (
    AccountError,
    AuthError,
    ConfigError,
    NotFoundError,
    RateLimited,
    RejectedError,
    TransientError,
)
from videobatch.providers import TaskState, get_provider
from videobatch.providers.runway import RunwayProvider
from videobatch.providers.runway import client as runway_module
from videobatch.request import VideoRequest

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "runway"
BASE = "https://runway.test"
KEY = "key_0123456789abcdef0123456789abcdef"
T2V, I2V, TASKS = f"{BASE}/v1/text_to_video", f"{BASE}/v1/image_to_video", f"{BASE}/v1/tasks"
TASK_ID = "acf9ba3d-a513-42c9-a646-96e8bc97c691"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("RUNWAYML_API_SECRET", "RUNWAYML_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def router():
    return respx.MockRouter(assert_all_called=False)


def make(router: respx.MockRouter, **options: Any) -> RunwayProvider:
    options.setdefault("api_secret", KEY)
    return RunwayProvider(base_url=BASE, transport=httpx.MockTransport(router.async_handler), **options)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


# -- bodies: the fixtures are what the resolved request must become -----------------------------

@pytest.mark.parametrize(("name", "url", "request_fields"), [
    ("text_to_video_request", T2V, {"prompt": "A golden retriever running through wildflowers at sunset"}),
    ("text_to_video_request_all_params", T2V,
     {"prompt": "x", "duration": 2, "seed": 0, "options": {"public_figure_threshold": "auto"}}),
    ("text_to_video_request_veo31", T2V,
     {"prompt": "x", "model": "veo3.1", "duration": 4, "audio": True, "negative_prompt": "x"}),
    ("image_to_video_request", I2V, {"prompt": "A slow dolly-in shot", "image": "https://example.com/cover.jpg"}),
    ("image_to_video_request_keyframes", I2V,
     {"prompt": "x", "model": "veo3.1", "image": "https://example.com/first.jpg",
      "end_image": "https://example.com/last.jpg", "duration": 8, "audio": False}),
])
def test_bodies_match_the_fixtures(router, name, url, request_fields):
    route = router.post(url).respond(json=fixture("create_response"))
    status = run(make(router).submit(VideoRequest(**request_fields), "vb-key"))
    assert sent(route) == fixture(name)
    assert status.task_id == TASK_ID and status.state is TaskState.QUEUED
    headers = route.calls[-1].request.headers
    assert headers["authorization"] == f"Bearer {KEY}"
    assert headers["x-runway-version"] == "2024-11-06"
    assert "idempotency-key" not in {h.lower() for h in headers}


def test_gen4_turbo_always_gets_an_explicit_duration(router):
    """The fixture omits duration (Runway's default is unsure, so its price is): we send one."""
    route = router.post(I2V).respond(json=fixture("create_response_legacy"))
    request = VideoRequest(prompt="The bunny is eating a carrot", model="gen4_turbo",
                           image="https://example.com/assets/bunny.jpg")
    status = run(make(router).submit(request, "k"))
    assert sent(route) == {**fixture("image_to_video_request_gen4_turbo"), "duration": 5}
    assert status.task_id == "182bd5e5-6e1a-4fe4-a799-aa6d9a6ab26e"  # the old answer shape reads too


def test_aspect_ratio_and_resolution_become_pixel_sizes(router):
    route = router.post(T2V).respond(json=fixture("create_response"))
    provider = make(router)
    for fields, ratio in [({"aspect_ratio": "9:16"}, "720:1280"),
                          ({"model": "veo3.1", "aspect_ratio": "9:16", "resolution": "1080p"}, "1080:1920"),
                          ({"model": "seedance2", "aspect_ratio": "21:9", "resolution": "480p"}, "992:432"),
                          ({"model": "seedance2", "aspect_ratio": "1:1", "resolution": "4k"}, "3840:3840")]:
        run(provider.submit(VideoRequest(prompt="p", **fields), "k"))
        assert sent(route)["ratio"] == ratio, fields
    image = VideoRequest(prompt="p", image="https://example.com/a.png", aspect_ratio="21:9")
    route = router.post(I2V).respond(json=fixture("create_response"))
    run(provider.submit(image, "k"))
    assert sent(route)["ratio"] == "1584:672"


def test_local_images_go_as_data_uris(router, tmp_path):
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    route = router.post(I2V).respond(json=fixture("create_response"))
    run(make(router).submit(VideoRequest(prompt="p", image=str(png)), "k"))
    assert sent(route)["promptImage"].startswith("data:image/png;base64,iVBORw0KGgo")


def test_rows_runway_would_refuse_are_found_before_sending(tmp_path):
    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a" + b"\0" * 64)
    provider = RunwayProvider(api_secret=KEY, base_url=BASE)
    rows = [VideoRequest(prompt="p", aspect_ratio="4:3"),  # gen4.5 text-to-video: 16:9 / 9:16 only
            VideoRequest(prompt="p" * 1001),
            VideoRequest(prompt="p", image="http://example.com/a.jpg"),
            VideoRequest(prompt="p", image="https://10.0.0.1/a.jpg"),
            VideoRequest(prompt="p", image=str(gif)),
            VideoRequest(prompt="p", model="veo3.1", end_image="https://example.com/b.jpg"),
            VideoRequest(prompt="", image="https://example.com/a.jpg"),  # gen4.5 needs a prompt
            VideoRequest(prompt="p", model="seedance2", aspect_ratio="21:9", resolution="1080p"),
            VideoRequest(prompt="p", aspect_ratio="9:16", options={"ratio": "1280:720"}),
            VideoRequest(prompt="p", image="https://example.com/a.jpg", model="veo3.1")]
    problems = provider.check(rows)
    assert sorted({p.row for p in problems}) == list(range(1, 10)), problems
    assert any("2048" not in p.message and "https" in p.message for p in problems if p.row == 3)


# -- answers: every status spelling ---------------------------------------------------------------

@pytest.mark.parametrize(("name", "state"), [
    ("task_pending", TaskState.QUEUED), ("task_throttled", TaskState.QUEUED),
    ("task_running", TaskState.RUNNING), ("task_succeeded", TaskState.SUCCEEDED),
    ("task_failed", TaskState.FAILED), ("task_failed_internal", TaskState.FAILED),
    ("task_cancelled", TaskState.FAILED)])
def test_every_status_spelling(router, name, state):
    body = fixture(name)
    router.get(f"{TASKS}/{body['id']}").respond(json=body)
    status = run(make(router).status(body["id"]))
    assert status.state is state and status.task_id == body["id"]
    assert status.created_at is not None
    if name == "task_succeeded":
        assert status.videos[0].url == body["output"][0]
        assert status.expires_at is not None  # signed URLs expire: fetch the task again for fresh ones
    else:
        assert status.videos == ()
    if name == "task_failed":
        assert "SAFETY.INPUT.TEXT" in (status.message or "") and "do not resend" in (status.message or "")
    if name == "task_failed_internal":
        assert "INTERNAL.BAD_OUTPUT" in (status.message or "")
    if name == "task_cancelled":
        assert "cancelled" in (status.message or "")


def test_an_unknown_status_keeps_the_task_open(router):
    router.get(f"{TASKS}/t").respond(json={"id": "t", "status": "ARCHIVING", "createdAt": "x"})
    assert run(make(router).status("t")).state is TaskState.RUNNING


def test_status_knows_the_duration_it_asked_for(router):
    router.post(T2V).respond(json=fixture("create_response"))
    router.get(f"{TASKS}/{TASK_ID}").respond(json=fixture("task_succeeded"))
    provider = make(router)

    async def both() -> Any:
        await provider.submit(VideoRequest(prompt="p", duration=7), "k")
        return await provider.status(TASK_ID)

    assert run(both()).videos[0].duration == 7.0


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "name", "error", "maybe"), [
    (400, "error_400", RejectedError, None),
    (400, "error_400_empty_body", RejectedError, None),
    (400, "error_insufficient_credits", AccountError, None),
    (402, "error_insufficient_credits", AccountError, None),
    (401, None, AuthError, None),
    (403, "error_403_model", RejectedError, None),
    (429, "error_429", AccountError, None),  # the daily cap: stop submitting, not "slow down"
    (500, None, TransientError, True),
    (502, None, TransientError, True),
    (504, None, TransientError, True),
    (503, None, TransientError, False),  # load shed before creation
])
def test_create_errors(router, status, name, error, maybe):
    body = fixture(name) if name else {"error": "boom"}
    route = router.post(T2V).respond(status, json=body, headers={"x-request-id": "req-9"})
    with pytest.raises(error) as caught:
        run(make(router).submit(VideoRequest(prompt="p"), "k"))
    assert route.call_count == 1  # never resent here
    assert caught.value.status_code == status and caught.value.request_id == "req-9"
    if name:
        assert fixture(name)["error"] in caught.value.message
    if name == "error_400":
        assert "videoUri: Asset duration must be at most 30 seconds" in caught.value.message
    if error is AuthError:
        assert "RUNWAYML_API_SECRET" in caught.value.message
    if maybe is not None:
        assert caught.value.maybe_accepted is maybe  # type: ignore[attr-defined]


@pytest.mark.parametrize(("exc", "maybe"), [
    (httpx.ReadTimeout("read timed out"), True), (httpx.RemoteProtocolError("dropped"), True),
    (httpx.ConnectError("refused"), False), (httpx.ConnectTimeout("no"), False)])
def test_a_create_without_an_answer_may_have_made_a_task(router, exc, maybe):
    route = router.post(T2V).mock(side_effect=exc)
    with pytest.raises(TransientError) as caught:
        run(make(router).submit(VideoRequest(prompt="p"), "k"))
    assert caught.value.maybe_accepted is maybe
    assert route.call_count == 1


@pytest.mark.parametrize("content", [b"<html>ok</html>", b'{"estimatedCost": {"credits": 5}}', b'{"id": '])
def test_an_unreadable_create_answer_may_have_made_a_task(router, content):
    router.post(T2V).respond(200, content=content)
    with pytest.raises(TransientError) as caught:
        run(make(router).submit(VideoRequest(prompt="p"), "k"))
    assert caught.value.maybe_accepted is True


def test_query_errors(router):
    router.get(f"{TASKS}/gone").respond(404, json=fixture("error_404_task"))
    router.get(f"{TASKS}/busy").respond(429, json={"error": "Too many requests"}, headers={"Retry-After": "3"})
    router.get(f"{TASKS}/down").respond(502, json={"error": "Bad gateway"})
    provider = make(router)
    with pytest.raises(NotFoundError, match="Could not find Task"):
        run(provider.status("gone"))
    with pytest.raises(RateLimited) as limited:
        run(provider.status("busy"))
    assert limited.value.retry_after == 3.0
    with pytest.raises(TransientError) as down:
        run(provider.status("down"))
    assert down.value.maybe_accepted is False


def test_a_daily_cap_does_not_slow_the_request_rate(router):
    router.post(T2V).respond(429, json=fixture("error_429"), headers={"Retry-After": "30"})
    provider = make(router)
    with pytest.raises(AccountError):
        run(provider.submit(VideoRequest(prompt="p"), "k"))
    assert provider.limiter()._tokens >= 0  # not penalized: waiting seconds would not help
    request = httpx.Request("POST", T2V)
    assert provider.too_fast(httpx.Response(429, json=fixture("error_429"), request=request)) is None
    poll = httpx.Request("GET", f"{TASKS}/t")
    assert provider.too_fast(httpx.Response(429, headers={"Retry-After": "4"}, request=poll)) == 4.0


# -- cancel ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "deletes"), [
    ("task_pending", True), ("task_throttled", True), ("task_running", False),
    ("task_succeeded", False), ("task_failed", False), ("task_cancelled", False)])
def test_cancel_only_stops_queued_tasks(router, name, deletes):
    body = fixture(name)
    unpaid = {**fixture("task_cancelled"), "id": body["id"], "cost": {"credits": 0}}
    router.get(f"{TASKS}/{body['id']}").mock(side_effect=[
        httpx.Response(200, json=body), httpx.Response(200, json=unpaid)])
    delete = router.delete(f"{TASKS}/{body['id']}").respond(204)
    assert run(make(router).cancel(body["id"])) is deletes
    assert delete.called is deletes  # a finished task's DELETE would delete its output


@pytest.mark.parametrize(("after", "answer"), [
    (httpx.Response(404, json={"error": "Could not find Task"}), None),  # what a live capture got
    (httpx.Response(200, json={**fixture("task_cancelled"), "cost": {"credits": 60}}), None),  # it ran
    (httpx.Response(200, json={**fixture("task_cancelled"), "cost": {}}), None),  # no cost shown
    (httpx.Response(200, json=fixture("task_running")), False),  # the DELETE did not take (yet)
])
def test_a_cancel_counts_as_unpaid_only_when_runway_shows_it_cancelled_at_no_cost(router, after, answer):
    """A queued task can start between the look and the DELETE, and Runway then keeps the credits:
    stopped but perhaps charged is None (the row fails; only a retry pays again); a task still open
    is False (left to end on its own)."""
    body = fixture("task_pending")
    router.get(f"{TASKS}/{body['id']}").mock(side_effect=[httpx.Response(200, json=body), after])
    router.delete(f"{TASKS}/{body['id']}").respond(204)
    assert run(make(router).cancel(body["id"])) is answer


def test_cancel_of_a_task_gone_meanwhile(router):
    body = fixture("task_pending")
    router.get(f"{TASKS}/{body['id']}").respond(json=body)
    router.delete(f"{TASKS}/{body['id']}").respond(404, json=fixture("error_404_task"))
    assert run(make(router).cancel(body["id"])) is False


# -- the key --------------------------------------------------------------------------------------

def test_the_key_is_never_shown(router, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make(router)
    router.post(T2V).respond(401, json={"error": "Invalid API key"})
    with pytest.raises(AuthError) as caught:
        run(provider.submit(VideoRequest(prompt="p"), "k"))
    for text in (repr(provider), str(provider.describe()), str(caught.value), caplog.text,
                 repr(vars(provider))):
        assert KEY not in text
    with pytest.raises(TypeError):
        pickle.dumps(provider._key)


def test_key_from_the_environment_and_missing_key(monkeypatch):
    with pytest.raises(ConfigError, match="RUNWAYML_API_SECRET"):
        RunwayProvider().check([VideoRequest(prompt="p")])
    with pytest.raises(ConfigError, match="malformed"):
        RunwayProvider(api_secret='"abc"').check([])
    monkeypatch.setenv("RUNWAYML_API_SECRET", KEY)
    monkeypatch.setenv("RUNWAYML_BASE_URL", "http://127.0.0.1:9")
    provider = get_provider("runway")
    assert provider.check([VideoRequest(prompt="p")]) == []
    assert provider.base_url == "http://127.0.0.1:9"


def test_capabilities_say_what_runway_lacks():
    caps = RunwayProvider.capabilities
    assert (caps.idempotency_key, caps.lookup, caps.listing, caps.webhooks, caps.batch_status) == (False,) * 5
    assert caps.cancel is True
    assert RunwayProvider(api_secret=KEY).poll_hint.min_interval >= 5.0
    assert runway_module.DEFAULT_BASE_URL == "https://api.dev.runwayml.com"
