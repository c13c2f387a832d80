"""The Replicate client's wire mapping, checked against the recorded bodies in
tests/fixtures/providers/replicate (respx behind httpx's transport)."""

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
from videobatch.catalog import CATALOG_DIR_ENV
from videobatch.errors import (
    AccountError,
    AuthError,
    ConfigError,
    InputError,
    NotFoundError,
    ProviderError,
    RateLimited,
    RejectedError,
    TransientError,
)
from videobatch.providers import TaskState, get_provider
from videobatch.providers.replicate import ReplicateProvider, wire
from videobatch.request import VideoRequest

FIXTURES = Path(__file__).parent / "fixtures" / "providers" / "replicate"
BASE = "https://replicate.test/v1"
TOKEN = "r8_unit_test_token_0123456789abcdef"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch):
    for name in ("REPLICATE_API_TOKEN", "REPLICATE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def router():
    return respx.MockRouter(assert_all_called=False)


def make(router: respx.MockRouter, **options: Any) -> ReplicateProvider:
    options.setdefault("api_token", TOKEN)
    return ReplicateProvider(base_url=BASE, transport=httpx.MockTransport(router.async_handler), **options)


def request(provider: ReplicateProvider, **fields: Any) -> VideoRequest:
    return VideoRequest.model_validate(fields, context={"rules": provider.rules()})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sent(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


# ---------------------------------------------------------------------------- create bodies
def test_a_kling_row_becomes_the_recorded_example_input(router):
    example = fixture("video_example_kling-v2.6_input")
    route = router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions").respond(201, json=fixture("create_response"))
    provider = make(router)
    row = request(provider, prompt=example["prompt"], duration=5, aspect_ratio="16:9", audio=True)
    status = run(provider.submit(row, "key-1"))
    assert status.task_id == "hdwst0bb05rgp0cf0p29mzk2am" and status.state is TaskState.QUEUED
    body = sent(route)
    assert set(body) == {"input"}  # no version, no key: Replicate keeps none
    assert body["input"] == {k: v for k, v in example.items() if k != "negative_prompt"}
    call = route.calls[0].request
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["content-type"] == "application/json"
    assert "prefer" not in call.headers and "cancel-after" not in call.headers


def test_a_row_without_a_model_sends_the_catalogue_default_and_every_default(router):
    route = router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions").respond(201, json=fixture("create_response"))
    provider = make(router)
    run(provider.submit(request(provider, prompt="a fox"), "k"))
    assert sent(route)["input"] == {"prompt": "a fox", "aspect_ratio": "16:9", "duration": 5, "generate_audio": False}


def test_veo_first_and_last_frame_become_the_recorded_example_input(router):
    example = fixture("video_example_veo-3.1-fast_input")
    route = router.post(f"{BASE}/models/google/veo-3.1-fast/predictions").respond(201, json=fixture("create_response"))
    provider = make(router)
    row = request(provider, model="veo-3.1-fast", prompt=example["prompt"], image=example["image"],
                  end_image=example["last_frame"], duration=8)
    run(provider.submit(row, "k"))
    assert sent(route)["input"] == example


def test_each_model_gets_its_own_input_names(router):
    sora = router.post(f"{BASE}/models/openai/sora-2/predictions").respond(201, json=fixture("create_response"))
    hailuo = router.post(f"{BASE}/models/minimax/hailuo-02/predictions").respond(201, json=fixture("create_response"))
    pix = router.post(f"{BASE}/models/pixverse/pixverse-v5/predictions").respond(201, json=fixture("create_response"))
    v3 = router.post(f"{BASE}/models/kwaivgi/kling-v3-video/predictions").respond(201, json=fixture("create_response"))
    provider = make(router)
    run(provider.submit(request(provider, model="sora-2", prompt="p", aspect_ratio="16:9", duration=8,
                                image="https://x.test/a.png"), "k1"))
    assert sent(sora)["input"] == {"prompt": "p", "aspect_ratio": "landscape", "seconds": 8,
                                   "input_reference": "https://x.test/a.png"}
    run(provider.submit(request(provider, model="hailuo-02", prompt="p", image="https://x.test/a.png",
                                end_image="https://x.test/b.png", prompt_optimizer="false"), "k2"))
    assert sent(hailuo)["input"] == {"prompt": "p", "duration": 6, "resolution": "1080p", "prompt_optimizer": False,
                                     "first_frame_image": "https://x.test/a.png",
                                     "last_frame_image": "https://x.test/b.png"}
    run(provider.submit(request(provider, model="pixverse-v5", prompt="p", resolution="540p", seed=7), "k3"))
    assert sent(pix)["input"] == {"prompt": "p", "seed": 7, "quality": "540p", "duration": 5}
    run(provider.submit(request(provider, model="kling-v3", prompt="p", mode="standard",
                                multi_prompt='[{"prompt": "a", "duration": 5}]'), "k4"))
    assert sent(v3)["input"] == {"prompt": "p", "aspect_ratio": "16:9", "duration": 5, "generate_audio": False,
                                 "mode": "standard", "multi_prompt": '[{"prompt": "a", "duration": 5}]'}


def test_a_version_pinned_model_is_created_with_version_as_recorded(router, tmp_path, monkeypatch):
    example = fixture("create_request_version")
    home = tmp_path / "mine"
    home.mkdir()
    (home / "replicate.toml").write_text(f'[models."{example["version"]}"]\ninputs = ["text"]\n'
                                         'durations = [5]\n')
    monkeypatch.setenv(CATALOG_DIR_ENV, str(home))
    route = router.post(f"{BASE}/predictions").respond(201, json=fixture("create_response"))
    provider = make(router)
    run(provider.submit(request(provider, model=example["version"], prompt="Alice", duration=5), "k"))
    assert sent(route) == {"version": example["version"], "input": {"prompt": "Alice", "duration": 5}}


def test_a_small_local_image_goes_as_a_data_url_and_a_large_one_is_refused_before_paying(router, tmp_path):
    small, large = tmp_path / "a.png", tmp_path / "b.png"
    small.write_bytes(b"\x89PNG" + b"0" * 100)
    large.write_bytes(b"0" * (wire.DATA_URL_LIMIT + 1))
    route = router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions").respond(201, json=fixture("create_response"))
    provider = make(router)
    run(provider.submit(request(provider, prompt="p", image=str(small)), "k"))
    assert sent(route)["input"]["start_image"].startswith("data:image/png;base64,")
    problems = provider.check([request(provider, prompt="p", image=str(large)),
                               request(provider, prompt="", image="https://x.test/a.png"),
                               request(provider, model="hailuo-02", prompt="p", duration=10),
                               request(provider, model="veo-3.1", prompt="p", end_image="https://x.test/b.png"),
                               request(provider, model="hailuo-02", prompt="p", aspect_ratio="16:9")])
    assert [(p.row, p.column) for p in problems] == [(1, "image"), (2, "prompt"), (3, "duration"), (4, "end_image"),
                                                     (5, "aspect_ratio")]
    assert len(route.calls) == 1


def test_cancel_after_is_sent_when_asked(router):
    route = router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions").respond(201, json=fixture("create_response"))
    provider = make(router, cancel_after="30m")
    run(provider.submit(request(provider, prompt="p"), "k"))
    assert route.calls[0].request.headers["cancel-after"] == "30m"


# ---------------------------------------------------------------------------- statuses
@pytest.mark.parametrize(("name", "state"), [
    ("create_response", TaskState.QUEUED),
    ("create_response_official_model", TaskState.QUEUED),
    ("get_starting", TaskState.QUEUED),
    ("get_processing", TaskState.RUNNING),
    ("create_response_prefer_wait_processing", TaskState.RUNNING),
    ("get_succeeded", TaskState.SUCCEEDED),
    ("get_succeeded_file_list", TaskState.SUCCEEDED),
    ("get_failed", TaskState.FAILED),
    ("cancel_response", TaskState.FAILED),
])
def test_every_recorded_status_maps(router, name, state):
    body = fixture(name)
    if name == "get_succeeded":  # hello-world's text output; a video model's is a URL (recorded too)
        assert wire.parse_prediction(body).state is TaskState.FAILED  # text is not a video
        body["output"] = fixture("video_example_kling-v2.6_output")
    router.get(f"{BASE}/predictions/{body['id']}").respond(200, json=body)
    status = run(make(router).status(body["id"]))
    assert status.state is state
    assert status.task_id == body["id"]
    if state is TaskState.SUCCEEDED:
        output = body["output"]
        assert status.videos[0].url == (output if isinstance(output, str) else output[0])
        assert status.finished_at == pytest.approx(wire.parse_time(body["completed_at"]))
        assert status.expires_at == pytest.approx(wire.parse_time(body["created_at"]) + 3600)
    if name == "get_failed":
        assert "(E005)" in (status.message or "")
    if name == "cancel_response":
        assert "canceled" in (status.message or "")


def test_aborted_is_terminal_and_unknown_statuses_are_still_running(router):
    body = {**fixture("get_starting"), "status": "aborted", "completed_at": "2024-04-22T11:15:20Z"}
    assert wire.parse_prediction(body).state is TaskState.FAILED
    assert "aborted" in (wire.parse_prediction(body).message or "")
    assert wire.parse_prediction({**body, "status": "warming"}).state is TaskState.RUNNING


def test_a_success_whose_output_was_deleted_says_so():
    body = {**fixture("get_succeeded"), "output": None, "data_removed": True}
    status = wire.parse_prediction(body)
    assert status.state is TaskState.FAILED and "one hour" in (status.message or "")


def test_times_with_nanoseconds_parse():
    assert wire.parse_time("2023-11-27T13:35:45.99397566Z") == pytest.approx(1701092145.993975)
    assert wire.parse_time("garbage") is None


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("status", "body", "submitting", "expected"), [
    (401, fixture("error_401"), False, AuthError),
    (401, fixture("error_401"), True, AuthError),
    (402, {"detail": "You have insufficient credit"}, True, AccountError),
    (403, {"detail": "Forbidden"}, True, AccountError),
    (404, fixture("error_404"), False, NotFoundError),
    (404, fixture("error_404"), True, RejectedError),
    (400, {"title": "Bad request", "detail": "nope", "status": 400}, True, RejectedError),
    (422, {"title": "Input validation failed", "detail": "- duration: 7", "status": 422}, True, RejectedError),
    (429, fixture("error_429"), True, RateLimited),
    (500, {"detail": "oops"}, True, TransientError),
    (503, "<html>bad gateway</html>", False, TransientError),
])
def test_every_documented_error_maps(router, status, body, submitting, expected):
    kwargs = {"json": body} if isinstance(body, dict) else {"text": body}
    router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions").respond(status, **kwargs)
    router.get(f"{BASE}/predictions/abc").respond(status, **kwargs)
    provider = make(router)
    call = provider.submit(request(provider, prompt="p"), "k") if submitting else provider.status("abc")
    with pytest.raises(expected) as caught:
        run(call)
    error = caught.value
    assert type(error) is expected and error.status_code == status
    if isinstance(error, TransientError):
        assert error.maybe_accepted is (submitting and status >= 500)
    if expected is AuthError:
        assert "REPLICATE_API_TOKEN" in str(error) and "did not pass a valid" in str(error)
    if isinstance(body, dict) and body.get("detail"):
        assert body["detail"] in str(error)


def test_429_waits_what_the_body_or_the_header_says(router):
    route = router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions")
    route.side_effect = [httpx.Response(429, json=fixture("error_429")),
                         httpx.Response(429, json=fixture("error_429"), headers={"Retry-After": "2"})]
    for wait in (30.0, 2.0):
        provider = make(router)  # each its own limiter: the first 429 pauses its one for 30 s
        with pytest.raises(RateLimited) as caught:
            run(provider.submit(request(provider, prompt="p"), "k"))
        assert caught.value.retry_after == wait and caught.value.maybe_accepted is False
    assert provider.too_fast(httpx.Response(429, json=fixture("error_429"))) == 30.0
    assert provider.too_fast(httpx.Response(429, text="")) == 1.0
    assert provider.too_fast(httpx.Response(402, json={})) is None


@pytest.mark.parametrize(("answer", "maybe"), [
    (httpx.Response(201, text='{"id": "'), True),
    (httpx.Response(201, json={"status": "starting"}), True),
    (httpx.ReadTimeout("read timed out"), True),
    (httpx.RemoteProtocolError("peer closed"), True),
    (httpx.ConnectError("refused"), False),
    (httpx.ConnectTimeout("connect timed out"), False),
])
def test_a_create_whose_answer_may_be_lost_is_never_resent(router, answer, maybe):
    route = router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions")
    route.side_effect = [answer]
    provider = make(router)
    with pytest.raises(TransientError) as caught:
        run(provider.submit(request(provider, prompt="p"), "k"))
    assert caught.value.maybe_accepted is maybe
    assert len(route.calls) == 1  # sent once; the runner decides what happens next


def test_a_failed_poll_never_claims_acceptance(router):
    router.get(f"{BASE}/predictions/abc").side_effect = [httpx.ReadTimeout("slow")]
    with pytest.raises(TransientError) as caught:
        run(make(router).status("abc"))
    assert caught.value.maybe_accepted is False


# ---------------------------------------------------------------------------- cancel
def test_cancel_stops_only_a_prediction_that_never_started(router):
    started = fixture("cancel_response")
    unstarted = {k: v for k, v in started.items() if k not in ("started_at", "metrics")}
    waiting = {**unstarted, "status": "starting"}
    running = {**started, "status": "processing"}
    for name, now in (("a", waiting), ("b", running), ("c", fixture("get_succeeded")), ("e", waiting)):
        router.get(f"{BASE}/predictions/{name}").respond(200, json=now)
    router.get(f"{BASE}/predictions/d").respond(404, json=fixture("error_404"))
    router.post(f"{BASE}/predictions/a/cancel").respond(200, json=unstarted)
    stopped_running = router.post(f"{BASE}/predictions/b/cancel").respond(200, json=started)
    router.post(f"{BASE}/predictions/e/cancel").respond(200, json=started)  # it started meanwhile
    provider = make(router)
    assert run(provider.cancel("a")) is True
    assert run(provider.cancel("b")) is False  # running: left to finish (a cancel bills the time run)
    assert not stopped_running.called
    assert run(provider.cancel("c")) is False
    assert run(provider.cancel("e")) is None  # stopped after it started: perhaps charged
    with pytest.raises(NotFoundError):
        run(provider.cancel("d"))


# ---------------------------------------------------------------------------- credentials
def test_a_missing_token_names_the_variable_and_sends_nothing(router):
    route = router.route().respond(200, json={})
    provider = make(router, api_token="")
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        provider.check([])
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        run(provider.status("abc"))
    assert not route.calls
    with pytest.raises(ConfigError, match="REPLICATE_API_TOKEN"):
        make(router, api_token="r8_with a space").check([])


def test_token_and_base_url_come_from_the_environment(router, monkeypatch):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    monkeypatch.setenv("REPLICATE_BASE_URL", "https://elsewhere.test/v1/")
    provider = ReplicateProvider(transport=httpx.MockTransport(router.async_handler))
    route = router.get("https://elsewhere.test/v1/predictions/abc").respond(200, json=fixture("get_starting"))
    run(provider.status("abc"))
    assert route.calls[0].request.headers["authorization"] == f"Bearer {TOKEN}"
    assert provider.describe() == {"provider": "replicate", "base_url": "https://elsewhere.test/v1"}


def test_options_arrive_as_strings():
    provider = get_provider("replicate", api_token=TOKEN, max_parallel="3", max_rps="none",
                            http_timeout="2.5", first_poll="0.5", poll_interval="1", scan_pages="4")
    assert provider.limits.max_parallel == 3 and provider.limits.max_rps is None
    assert provider.poll_hint.first_poll == 0.5
    with pytest.raises(ConfigError, match="max_parallel"):
        get_provider("replicate", max_parallel="zero")
    with pytest.raises(ConfigError, match="base_url"):
        get_provider("replicate", base_url="ftp://x")


def test_the_token_is_never_shown(router, caplog):
    caplog.set_level(logging.DEBUG)
    router.get(f"{BASE}/predictions/abc").respond(401, json=fixture("error_401"))
    router.post(f"{BASE}/models/kwaivgi/kling-v2.6/predictions").side_effect = [httpx.ReadTimeout("t")]
    provider = make(router)
    texts = [repr(provider), str(provider.describe()), repr(provider.__dict__)]
    for call in (provider.status("abc"), provider.submit(request(provider, prompt="p"), "k")):
        with pytest.raises(ProviderError) as caught:
            run(call)
        texts += [str(caught.value), repr(caught.value), repr(caught.value.__cause__),
                  repr(caught.value.__context__)]
    texts.append(caplog.text)
    assert not [t for t in texts if TOKEN in t]
    with pytest.raises(TypeError):
        pickle.dumps(provider)


def test_declared_capabilities_follow_the_doc():
    caps = ReplicateProvider.capabilities
    assert (caps.idempotency_key, caps.lookup, caps.listing, caps.cancel, caps.webhooks, caps.batch_status) == (
        False, False, True, True, True, False)


# ---------------------------------------------------------------------------- rows refused before paying
def test_bad_rows_are_refused_before_any_request(monkeypatch, router):
    monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
    rows = [{"prompt": "ok"},
            {"prompt": "a", "duration": 7},  # kling-v2.6 takes 5 or 10
            {"prompt": "b", "model": "sora-2", "resolution": "high"},  # only sora-2-pro has one
            {"prompt": "c", "model": "wan-2.5-i2v"},  # image-to-video only
            {"prompt": "d", "model": "veo-3.1", "reference_images": '["https://x.test/r.png"]', "duration": 4},
            {"prompt": "e", "loop": "maybe"},
            {"prompt": "f", "model": "no/such-model"}]
    with pytest.raises(InputError) as caught:
        videobatch.load_prompts(rows, rules=ReplicateProvider.rules(ReplicateProvider(api_token=TOKEN)))
    bad = sorted({p.row for p in caught.value.problems})
    assert bad == [2, 3, 4, 5, 6, 7], [str(p) for p in caught.value.problems]
    route = router.route().respond(500)
    with pytest.raises(InputError):
        videobatch.run([{"prompt": "p", "model": "hailuo-02", "duration": 10}], "replicate",
                       base_url=BASE, progress=False)
    assert not route.calls


def test_the_catalogue_prices_kling_per_second_of_output():
    provider = ReplicateProvider()
    assert provider.estimate_cost(VideoRequest(prompt="p", duration=10)) == pytest.approx(0.7)
    assert provider.estimate_cost(VideoRequest(prompt="p", audio=True)) == pytest.approx(0.7)
    assert provider.estimate_cost(VideoRequest(prompt="p", model="kwaivgi/kling-v2.5-turbo-pro")) == pytest.approx(0.35)
    assert provider.estimate_cost(VideoRequest(prompt="p", model="openai/sora-2")) is None  # unpublished



# ---------------------------------------------------------------------------- scan: the listing
SINCE = 1_800_000_000.0


def listed(pid: str, prompt: str | None, *, model: str = "kwaivgi/kling-v2.6", age: float = -10,
           removed: bool = False, **extra: Any) -> dict[str, Any]:
    """A list entry shaped like the recorded page's (``list_page.json``), made ``age`` s after SINCE."""
    item = dict(fixture("list_page")["results"][0])
    item.update(id=pid, model=model, version="hidden", data_removed=removed, output=None,
                status="processing", created_at=wire_time(SINCE - age))
    item["input"] = {} if removed or prompt is None else {
        "prompt": prompt, "aspect_ratio": "16:9", "duration": 5, "generate_audio": False, **extra}
    return item


def wire_time(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def page(*items: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    return {"next": next_url, "previous": None, "results": list(items)}


def test_scan_adopts_one_to_one_matches_and_skips_other_systems(router):
    route = router.get(f"{BASE}/predictions").respond(200, json=page(
        listed("ours", "a fox", age=-30, negative_prompt=""),  # Replicate may echo defaults of its own
        listed("foreign-1", "someone else's clip"),
        listed("foreign-2", "a fox", model="google/veo-3.1"),  # same prompt, other model
        fixture("list_page")["results"][0]))
    provider = make(router)
    result = run(provider.scan({"k1": request(provider, prompt="a fox"), "k2": request(provider, prompt="a hen")},
                               SINCE))
    assert set(result.found) == {"k1"} and result.found["k1"].task_id == "ours"
    assert result.complete  # the whole window was read: k2 certainly has no prediction
    assert route.calls[0].request.url.params["created_after"] == wire_time(SINCE)


def test_a_tie_adopts_nothing_and_proves_nothing(router):
    router.get(f"{BASE}/predictions").respond(200, json=page(listed("x", "twin"), listed("y", "twin")))
    provider = make(router)
    result = run(provider.scan({"k1": request(provider, prompt="twin")}, SINCE))
    assert result.found == {} and not result.complete
    router.get(f"{BASE}/predictions").respond(200, json=page(listed("x", "twin")))
    two_rows = {"k1": request(provider, prompt="twin"), "k2": request(provider, prompt="twin")}
    result = run(provider.scan(two_rows, SINCE))
    assert result.found == {} and not result.complete


def test_deleted_inputs_of_the_same_model_leave_the_scan_incomplete(router):
    provider = make(router)
    router.get(f"{BASE}/predictions").respond(200, json=page(listed("old", None, removed=True)))
    assert not run(provider.scan({"k": request(provider, prompt="p")}, SINCE)).complete
    router.get(f"{BASE}/predictions").respond(200, json=page(listed("old", None, model="openai/sora-2",
                                                                   removed=True)))
    assert run(provider.scan({"k": request(provider, prompt="p")}, SINCE)).complete
    router.get(f"{BASE}/predictions").respond(200, json=page())
    assert not run(provider.scan({"k": None}, SINCE)).complete  # a request it was not told


def test_scan_follows_next_pages_on_its_own_api_only(router):
    provider = make(router, scan_pages=3)
    second = f"{BASE}/predictions?cursor=abc"
    router.get(second).respond(200, json=page(listed("ours", "deep")))
    router.get(f"{BASE}/predictions", params={"created_after": wire_time(SINCE)}).respond(
        200, json=page(listed("f", "other"), next_url=second))
    result = run(provider.scan({"k": request(provider, prompt="deep")}, SINCE))
    assert result.found["k"].task_id == "ours" and result.complete
    router.get(f"{BASE}/predictions", params={"created_after": wire_time(SINCE)}).respond(
        200, json=page(listed("f", "other"), next_url="https://evil.test/v1/predictions?cursor=1"))
    assert not run(provider.scan({"k": request(provider, prompt="deep")}, SINCE)).complete
    router.get(f"{BASE}/predictions", params={"created_after": wire_time(SINCE)}).respond(
        200, json=page(listed("f", "other"), next_url=f"{BASE}/predictions?cursor=loop"))
    router.get(f"{BASE}/predictions?cursor=loop").respond(
        200, json=page(listed("g", "other"), next_url=f"{BASE}/predictions?cursor=loop"))
    assert not run(provider.scan({"k": request(provider, prompt="deep")}, SINCE)).complete  # budget


def test_scan_stops_at_predictions_older_than_asked(router):
    provider = make(router, scan_pages=2)
    router.get(f"{BASE}/predictions").respond(200, json=page(
        listed("new", "x"), listed("old", "deep", age=100), next_url=f"{BASE}/predictions?cursor=2"))
    result = run(provider.scan({"k": request(provider, prompt="deep")}, SINCE))
    assert result.found == {} and result.complete  # older than the row: not its prediction


def test_a_refused_list_is_an_error_not_an_empty_account(router):
    router.get(f"{BASE}/predictions").respond(500, json={"detail": "oops"})
    provider = make(router)
    with pytest.raises(TransientError):
        run(provider.scan({"k": request(provider, prompt="p")}, SINCE))


def test_a_prediction_shown_on_two_pages_is_one_not_a_tie(router):
    provider = make(router)
    second = f"{BASE}/predictions?cursor=2"
    router.get(second).respond(200, json=page(listed("ours", "shifted"), listed("f", "other")))
    router.get(f"{BASE}/predictions", params={"created_after": wire_time(SINCE)}).respond(
        200, json=page(listed("new", "newer"), listed("ours", "shifted"), next_url=second))
    result = run(provider.scan({"k": request(provider, prompt="shifted")}, SINCE))
    assert result.found["k"].task_id == "ours" and result.complete
