"""The Google client's wire mapping, checked against the researched fixture bodies
(``tests/fixtures/providers/google/``) served by respx behind httpx's transport."""

from __future__ import annotations

import asyncio
import base64
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
    TransientError,
)
from videobatch.providers import TaskState, get_provider
from videobatch.providers.google import GoogleProvider, wire
from videobatch.request import VideoRequest

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "google"
BASE = "https://gemini.test"
KEY = "AIza-test-key-0123456789abcdefghij"
CREATE = f"{BASE}/v1beta/interactions"
PNG = "data:image/png;base64,iVBORw0KGgo="


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "VIDEOBATCH_GOOGLE_VIDEO_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def router():
    return respx.MockRouter(assert_all_called=False)


@pytest.fixture
def make(router, tmp_path):
    def build(**options: Any) -> GoogleProvider:
        options.setdefault("api_key", KEY)
        return GoogleProvider(base_url=BASE, video_dir=tmp_path / "videos",
                              transport=httpx.MockTransport(router.async_handler), **options)
    return build


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


# -- the create body -------------------------------------------------------------------------------


def test_text_body_is_the_documented_one(router, make):
    route = router.post(CREATE).respond(json=fixture("interaction_in_progress"))
    prompt = ("In a single continuous shot, a red marble rolls down a wooden spiral track. "
              "No dialogue.")
    status = run(make().submit(VideoRequest(prompt=prompt), "row-42"))
    assert sent(route) == fixture("interaction_create_request")  # defaults: 8 s, 16:9, 720p
    assert status.task_id == "v1_ChdQbGFjZWhvbGRlcklkMTIz"
    assert status.state is TaskState.RUNNING
    assert route.calls[0].request.headers["x-goog-api-key"] == KEY
    assert KEY not in str(route.calls[0].request.url)


def test_image_body_puts_the_frames_first_and_tags_them(router, make):
    route = router.post(CREATE).respond(json=fixture("interaction_in_progress"))
    request = VideoRequest(prompt="the fish leaps out of the water. Use this image as the "
                           "starting frame.", image=PNG, duration=6, model="gemini-omni-1.1")
    run(make().submit(request, "k"))
    body, want = sent(route), fixture("interaction_create_request_image")
    assert body["input"] == want["input"]
    assert body["generation_config"] == want["generation_config"]
    assert body["response_format"]["duration"] == "6s" and body["model"] == "gemini-omni-1.1-flash"


def test_last_frame_labels_resolution_and_webhook(router, make):
    route = router.post(CREATE).respond(json=fixture("interaction_in_progress"))
    request = VideoRequest(prompt="bloom", image=PNG, end_image=PNG, resolution="1080p",
                           aspect_ratio="9:16", duration=3, model="gemini-omni-1.2-flash",
                           options={"labels": {"team": "promo"}})
    run(make(webhook_url="https://hooks.test/g").submit(request, "k-1"))
    body = sent(route)
    assert [p["type"] for p in body["input"]] == ["image", "image", "text"]
    assert body["input"][2]["text"] == "<FIRST_FRAME> <LAST_FRAME> bloom"
    assert body["response_format"] == {"type": "video", "aspect_ratio": "9:16", "resolution": "1080p",
                                       "duration": "3s", "delivery": "uri"}
    assert body["webhook_config"] == {"user_metadata": {"videobatch_row": "k-1"},
                                      "uris": ["https://hooks.test/g"]}
    assert body["labels"] == {"team": "promo"}


# -- statuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "state"), [
    ("queued", TaskState.QUEUED), ("in_progress", TaskState.RUNNING),
    ("failed", TaskState.FAILED), ("cancelled", TaskState.FAILED),
    ("incomplete", TaskState.FAILED), ("budget_exceeded", TaskState.FAILED),
    ("requires_action", TaskState.FAILED), ("something_new", TaskState.RUNNING)])
def test_every_status_spelling(router, make, raw, state):
    router.get(f"{CREATE}/v1_x").respond(json={"id": "v1_x", "status": raw})
    status = run(make().status("v1_x"))
    assert status.state is state
    if state is TaskState.FAILED:
        assert raw in (status.message or "")


def test_failed_interaction_carries_its_errors(router, make):
    router.get(f"{CREATE}/v1_f").respond(json=fixture("interaction_failed"))
    status = run(make().status("v1_f"))
    assert status.state is TaskState.FAILED
    assert "reason the interaction failed" in (status.message or "")


def test_completed_inline_is_kept_locally(router, make, tmp_path):
    data = fixture("interaction_completed_inline")
    router.get(f"{CREATE}/{data['id']}").respond(json=data)
    status = run(make().status(data["id"]))
    assert status.state is TaskState.SUCCEEDED
    url = status.videos[0].url
    assert url.startswith("file://") and str(tmp_path / "videos") in url
    assert Path(url.removeprefix("file://")).read_bytes() == base64.b64decode("AAAAIGZ0eXBpc29t")


def test_completed_uri_waits_for_the_file_then_downloads_without_leaking_the_key(router, make):
    data = fixture("interaction_completed_uri")
    router.get(f"{CREATE}/{data['id']}").respond(json=data)
    files = router.get(f"{BASE}/v1beta/files/k8y2pm4nq1rt").mock(side_effect=[
        httpx.Response(200, json=fixture("file_processing")),
        httpx.Response(200, json=fixture("file_active"))])
    download = router.get(f"{BASE}/v1beta/files/k8y2pm4nq1rt:download").respond(
        302, headers={"Location": "https://storage.test/bucket/video.mp4?sig=abc"})
    storage = router.get("https://storage.test/bucket/video.mp4").respond(200, content=b"MP4BYTES")
    provider = make()
    assert run(provider.status(data["id"])).state is TaskState.RUNNING  # PROCESSING
    done = run(provider.status(data["id"]))
    assert done.state is TaskState.SUCCEEDED
    assert Path(done.videos[0].url.removeprefix("file://")).read_bytes() == b"MP4BYTES"
    assert download.calls[0].request.headers["x-goog-api-key"] == KEY
    assert download.calls[0].request.url.params["alt"] == "media"
    assert "x-goog-api-key" not in storage.calls[0].request.headers
    assert files.call_count == 2
    assert KEY not in done.videos[0].url


def test_a_kept_video_is_not_fetched_again(router, make):
    data = fixture("interaction_completed_uri")
    router.get(f"{CREATE}/{data['id']}").respond(json=data)
    provider = make()
    provider.videos.write(data["id"], b"already here")
    files = router.get(f"{BASE}/v1beta/files/k8y2pm4nq1rt")
    assert run(provider.status(data["id"])).state is TaskState.SUCCEEDED
    assert files.call_count == 0


def test_completed_without_a_video_fails_the_row(router, make):
    router.get(f"{CREATE}/v1_e").respond(json={"id": "v1_e", "status": "completed", "steps": [
        {"type": "model_output", "content": [{"type": "text", "text": "no"}]}]})
    status = run(make().status("v1_e"))
    assert status.state is TaskState.FAILED and "without a video" in (status.message or "")


def test_cancel_stops_only_a_queued_interaction(router, make):
    router.get(f"{CREATE}/v1_q").respond(json={"id": "v1_q", "status": "queued"})
    cancel = router.post(f"{CREATE}/v1_q/cancel").respond(json={"id": "v1_q", "status": "cancelled"})
    router.get(f"{CREATE}/v1_r").respond(json=fixture("interaction_in_progress") | {"id": "v1_r"})
    not_sent = router.post(f"{CREATE}/v1_r/cancel")
    provider = make()
    # Stopped, but whether Google bills a cancelled job is unsure: "stopped, perhaps charged" (None),
    # never "stopped unpaid" (True), so the runner does not send the row again on its own.
    assert run(provider.cancel("v1_q")) is None and cancel.call_count == 1
    assert run(provider.cancel("v1_r")) is False and not_sent.call_count == 0


# -- errors ----------------------------------------------------------------------------------------


def test_429_reads_retry_delay(router, make):
    router.post(CREATE).respond(429, json=fixture("error_429"))
    with pytest.raises(RateLimited) as caught:
        run(make().submit(VideoRequest(prompt="x"), "k"))
    assert caught.value.retry_after == 27.0 and caught.value.maybe_accepted is False
    assert wire.too_fast(httpx.Response(429, json=fixture("error_429"))) == 27.0
    assert wire.too_fast(httpx.Response(429, json={"error": {"code": 429}})) == 1.0
    assert wire.too_fast(httpx.Response(500)) is None


@pytest.mark.parametrize(("name", "kind"), [
    ("error_400_interactions_only", RejectedError), ("error_400_person_generation", RejectedError),
    ("error_404_model_retired", RejectedError), ("error_404_model_not_found", RejectedError)])
def test_documented_create_errors(router, make, name, kind):
    body = fixture(name)
    router.post(CREATE).respond(body["error"]["code"], json=body)
    with pytest.raises(kind) as caught:
        run(make().submit(VideoRequest(prompt="x"), "k"))
    assert caught.value.provider_code == body["error"]["status"]
    assert body["error"]["message"][:30] in caught.value.message


@pytest.mark.parametrize(("code", "status", "kind"), [
    (401, "UNAUTHENTICATED", AuthError), (403, "PERMISSION_DENIED", AuthError),
    (400, "FAILED_PRECONDITION", AccountError), (500, "INTERNAL", TransientError),
    (503, "UNAVAILABLE", TransientError), (504, "DEADLINE_EXCEEDED", TransientError)])
def test_status_codes(router, make, code, status, kind):
    message = "Billing is not enabled" if status == "FAILED_PRECONDITION" else "no"
    router.post(CREATE).respond(code, json={"error": {"code": code, "message": message, "status": status}})
    with pytest.raises(kind) as caught:
        run(make().submit(VideoRequest(prompt="x"), "k"))
    if kind is TransientError:
        assert caught.value.maybe_accepted is True  # a create that may have been accepted
    assert KEY not in str(caught.value)


def test_unknown_interaction_is_not_found_and_a_failing_poll_is_not_a_submit(router, make):
    router.get(f"{CREATE}/v1_gone").respond(404, json={"error": {
        "code": 404, "message": "not found", "status": "NOT_FOUND"}})
    router.get(f"{CREATE}/v1_busy").respond(503, json={"error": {
        "code": 503, "message": "busy", "status": "UNAVAILABLE"}})
    with pytest.raises(NotFoundError):
        run(make().status("v1_gone"))
    with pytest.raises(TransientError) as caught:
        run(make().status("v1_busy"))
    assert caught.value.maybe_accepted is False


@pytest.mark.parametrize(("error", "maybe"), [
    (httpx.ConnectError("refused"), False), (httpx.ReadTimeout("slow"), True),
    (httpx.RemoteProtocolError("cut"), True)])
def test_lost_create_answers_may_have_been_accepted(router, make, error, maybe):
    router.post(CREATE).mock(side_effect=error)
    with pytest.raises(TransientError) as caught:
        run(make().submit(VideoRequest(prompt="x"), "k"))
    assert caught.value.maybe_accepted is maybe


def test_garbage_create_answer_may_have_been_accepted(router, make):
    router.post(CREATE).respond(200, content=b'{"id": "v1_')
    with pytest.raises(TransientError) as caught:
        run(make().submit(VideoRequest(prompt="x"), "k"))
    assert caught.value.maybe_accepted is True


# -- the key ---------------------------------------------------------------------------------------


def test_google_api_key_wins_like_the_sdk(monkeypatch, router, tmp_path, caplog):
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-value-123456")
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key-value-654321")
    route = router.get(f"{CREATE}/v1_x").respond(json={"id": "v1_x", "status": "queued"})
    with caplog.at_level(logging.WARNING):
        provider = GoogleProvider(base_url=BASE, video_dir=tmp_path,
                                  transport=httpx.MockTransport(router.async_handler))
        run(provider.status("v1_x"))
    assert route.calls[0].request.headers["x-goog-api-key"] == "google-key-value-654321"
    assert "GOOGLE_API_KEY" in caplog.text and "key-value" not in caplog.text
    monkeypatch.delenv("GOOGLE_API_KEY")
    assert GoogleProvider(base_url=BASE)._header() == {"x-goog-api-key": "gemini-key-value-123456"}


def test_missing_key_names_the_variable():
    provider = GoogleProvider()
    with pytest.raises(ConfigError, match="GEMINI_API_KEY"):
        provider.check([VideoRequest(prompt="x")])


def test_the_key_is_never_shown(make, caplog):
    provider = make()
    assert KEY not in repr(provider) and KEY not in json.dumps(provider.describe())
    assert KEY not in repr(provider.__dict__)
    with pytest.raises(TypeError):
        pickle.dumps(provider)
    assert get_provider("google", api_key=KEY).capabilities.lookup is False


# -- rows refused before anything is sent ----------------------------------------------------------


@pytest.mark.parametrize(("row", "column"), [
    ({"prompt": "x", "model": "veo-3.1-generate-preview"}, "model"),
    ({"prompt": "x", "model": "veo-3.0-generate-001"}, "model"),
    ({"prompt": "x", "model": "veo-3.1-generate-001"}, "model"),  # Vertex only
    ({"prompt": "x", "duration": 12}, "duration"),
    ({"prompt": "x", "duration": 2}, "duration"),
    ({"prompt": "x", "aspect_ratio": "1:1"}, "aspect_ratio"),
    ({"prompt": "x", "resolution": "480p"}, "resolution"),
    ({"prompt": "x", "negative_prompt": "blur"}, "negative_prompt"),
    ({"prompt": "x", "seed": 3}, "seed"),
    ({"prompt": "x", "labels": "not json"}, "labels"),
])
def test_bad_rows_are_refused_by_the_rules(row, column):
    with pytest.raises(InputError) as caught:
        videobatch.load_prompts([row], rules=GoogleProvider.rules(GoogleProvider(api_key=KEY)))
    assert any(p.column == column for p in caught.value.problems), caught.value.problems


def test_rows_the_api_would_refuse_fail_the_run_before_a_request(router, tmp_path):
    rows = [{"prompt": "a", "audio": "off"}, {"prompt": "b", "end_image": PNG},
            {"prompt": "c", "image": str(tmp_path / "missing.png")}]
    with pytest.raises(InputError) as caught:
        videobatch.run(rows, "google", api_key=KEY, base_url=BASE, progress=False)
    assert [p.column for p in caught.value.problems] == ["audio", "end_image", "image"]


def test_catalogue_prices_and_retirements():
    provider = GoogleProvider(api_key=KEY)
    assert provider.estimate_cost(VideoRequest(prompt="x")) == pytest.approx(0.8)  # 8 s at 720p
    assert provider.estimate_cost(VideoRequest(prompt="x", duration=5, resolution="4k")) == \
        pytest.approx(1.5)
    catalog = provider.catalog()
    assert catalog is not None
    assert {c.id for c in catalog.current()} == {"gemini-omni-1.1-flash", "gemini-omni-1.2-flash"}
    retired = catalog.resolve("veo-3.1-fast-generate-preview")
    assert retired is not None and retired.retired and retired.replacement == "gemini-omni-1.1-flash"


def test_a_relative_video_dir_still_gives_file_urls(tmp_path, monkeypatch):
    """``-P video_dir=clips`` from a shell: the results carry absolute file:// URLs."""
    monkeypatch.chdir(tmp_path)
    provider = GoogleProvider(base_url=BASE, video_dir="clips", api_key="gemini-key-value-123456")
    assert provider.videos.directory == tmp_path / "clips"
    assert provider.videos.path("v1_x").as_uri().startswith("file:///")
