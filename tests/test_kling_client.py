"""The Kling client's wire mapping, checked against mocked answers (respx behind httpx's transport)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import pickle
import time
from typing import Any

import httpx
import jwt
import pytest
import respx

from videobatch._pacing import RateLimiter
from videobatch.errors import (
    AccountError,
    AuthError,
    ConfigError,
    KeyAlreadyUsed,
    ModelRefused,
    NotFoundError,
    ProviderError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from videobatch.providers import TaskState, get_provider
from videobatch.providers.kling import client as kling_module
from videobatch.providers.kling import wire
from videobatch.providers.kling.client import KlingProvider
from videobatch.request import VideoRequest

BASE = "https://kling.test"
AK = "ak-test-0123456789abcdef"
SK = "sk-test-0123456789abcdef0123456789abcdef"
T2V = f"{BASE}/v1/videos/text2video"
I2V = f"{BASE}/v1/videos/image2video"


def envelope(data: Any = None, code: int = 0, message: str = "SUCCEED") -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": "r-1", "data": data}


def task(task_id: str = "t1", status: str = "submitted", key: str | None = "key-1",
         **extra: Any) -> dict[str, Any]:
    return {"task_id": task_id, "task_status": status, "task_status_msg": "",
            "task_info": {"external_task_id": key} if key else {},
            "created_at": 1_700_000_000_000, "updated_at": 1_700_000_060_000, **extra}


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch):
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def router():
    return respx.MockRouter(assert_all_called=False)


def make(router: respx.MockRouter, **options: Any) -> KlingProvider:
    options.setdefault("access_key", AK)
    options.setdefault("secret_key", SK)
    return KlingProvider(base_url=BASE, transport=httpx.MockTransport(router.async_handler),
                         **options)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def sent_body(route: respx.Route, index: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(route.calls[index].request.content)
    return body


# -- request mapping -------------------------------------------------------------------------------


def test_text2video_body(router):
    route = router.post(T2V).respond(json=envelope(task()))
    status = run(make(router).submit(VideoRequest(prompt="a cat", model="kling-v2.6"), "key-1"))
    assert status.task_id == "t1"
    assert status.state is TaskState.QUEUED
    assert status.idempotency_key == "key-1"
    # the model's defaults from the catalogue (kling-v2-6: pro, 5 s, 16:9), spelled as Kling reads them
    assert sent_body(route) == {"model_name": "kling-v2-6", "mode": "pro", "duration": "5",
                                "aspect_ratio": "16:9", "prompt": "a cat",
                                "external_task_id": "key-1"}


def test_a_row_without_a_model_names_the_catalogue_default_never_kling_s():
    """Kling's own default for a missing model_name is kling-v1, retired: always send one."""
    provider = KlingProvider(access_key=AK, secret_key=SK, base_url=BASE)
    body = run(wire.request_body(VideoRequest(prompt="x"), provider.resolve(VideoRequest(prompt="x")), "k", None))[1]
    assert body["model_name"] == "kling-v2-6"


def test_audio_voices_watermark_and_end_image_reach_the_wire(router):
    route = router.post(I2V).respond(json=envelope(task()))
    request = VideoRequest(prompt="sing", model="kling-v3", duration=8, audio=True, image="https://img.test/a.jpg",
                           end_image="https://img.test/b.jpg",
                           options={"mode": "pro", "voice_list": [{"voice_id": "v1"}], "watermark": False})
    run(make(router).submit(request, "k"))
    body = sent_body(route)
    assert body["model_name"] == "kling-v3" and body["duration"] == "8" and body["mode"] == "pro"
    assert body["sound"] == "on" and body["voice_list"] == [{"voice_id": "v1"}]
    assert body["watermark_info"] == {"enabled": False}
    assert body["image"] == "https://img.test/a.jpg" and body["image_tail"] == "https://img.test/b.jpg"
    assert "aspect_ratio" not in body  # image-to-video: the image decides


def test_optional_fields_only_when_set(router):
    route = router.post(T2V).respond(json=envelope(task()))
    request = VideoRequest(prompt="p", model="kling-v1", duration=10, mode="pro",
                           aspect_ratio="9:16", negative_prompt="blur", cfg_scale=0.3,
                           camera_control={"type": "simple", "config": {"zoom": 5}})
    run(make(router, callback_url="https://me.test/hook").submit(request, "k"))
    body = sent_body(route)
    assert body["duration"] == "10"
    assert isinstance(body["duration"], str)
    assert body["mode"] == "pro"
    assert body["aspect_ratio"] == "9:16"
    assert body["negative_prompt"] == "blur"
    assert body["cfg_scale"] == 0.3
    assert body["camera_control"] == {"type": "simple", "config": {"zoom": 5}}
    assert body["callback_url"] == "https://me.test/hook"


def test_image2video_with_urls(router):
    route = router.post(I2V).respond(json=envelope(task()))
    request = VideoRequest(prompt="move", image="https://img.test/a.jpg",
                           image_tail="https://img.test/b.jpg")
    run(make(router).submit(request, "k"))
    body = sent_body(route)
    assert body["image"] == "https://img.test/a.jpg"
    assert body["image_tail"] == "https://img.test/b.jpg"
    assert "aspect_ratio" not in body  # the image decides it


def test_image2video_with_local_file_sends_bare_base64(router, tmp_path):
    picture = tmp_path / "cat.png"
    payload = png(640, 480) + b"rest-of-image"
    picture.write_bytes(payload)
    route = router.post(I2V).respond(json=envelope(task()))
    run(make(router).submit(VideoRequest(image=str(picture)), "k"))
    body = sent_body(route)
    assert body["image"] == base64.b64encode(payload).decode()
    assert not body["image"].startswith("data:")
    assert "prompt" not in body


def test_data_url_loses_its_prefix(router):
    route = router.post(I2V).respond(json=envelope(task()))
    raw = base64.b64encode(b"x" * 100).decode()
    run(make(router).submit(VideoRequest(image=f"data:image/png;base64,{raw}"), "k"))
    assert sent_body(route)["image"] == raw


# -- JWT -------------------------------------------------------------------------------------------


def bearer(call: Any) -> str:
    header: str = call.request.headers["Authorization"]
    assert header.startswith("Bearer ")
    return header.removeprefix("Bearer ")


def test_jwt_claims(router):
    route = router.get(f"{T2V}/t1").respond(json=envelope(task()))
    run(make(router).status("t1"))
    token = bearer(route.calls[0])
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, SK, algorithms=["HS256"])
    now = time.time()
    assert claims["iss"] == AK
    assert abs(claims["exp"] - now - 1800) < 5
    assert claims["nbf"] <= now


def test_token_is_reused_then_renewed_before_expiry(router, monkeypatch):
    clock = [1_000_000.0]
    monkeypatch.setattr(kling_module, "_now", lambda: clock[0])
    route = router.get(f"{T2V}/t1").respond(json=envelope(task()))
    provider = make(router)

    async def three_polls() -> None:
        await provider.status("t1")
        clock[0] += 1000  # 800 s of validity left: reuse
        await provider.status("t1")
        clock[0] += 600  # 200 s left, under the 5-minute margin: renew
        await provider.status("t1")

    run(three_polls())
    tokens = [bearer(c) for c in route.calls]
    assert tokens[0] == tokens[1] != tokens[2]
    claims = jwt.decode(tokens[2], SK, algorithms=["HS256"], options={"verify_exp": False,
                                                                      "verify_nbf": False})
    assert claims["exp"] == int(clock[0]) + 1800


def test_expired_token_is_renewed_once_and_retried(router, monkeypatch):
    clock = [2_000_000.0]
    monkeypatch.setattr(kling_module, "_now", lambda: clock[0])
    route = router.post(T2V)
    route.side_effect = [httpx.Response(401, json=envelope(code=1004, message="expired")),
                         httpx.Response(200, json=envelope(task()))]
    provider = make(router)

    async def go() -> Any:
        provider._bearer()  # cache a token
        clock[0] += 1  # same second would produce the same token; move on
        return await provider.submit(VideoRequest(prompt="p"), "k")

    assert run(go()).task_id == "t1"
    assert route.call_count == 2
    assert bearer(route.calls[0]) != bearer(route.calls[1])


def test_expired_twice_is_an_auth_error(router):
    router.post(T2V).respond(401, json=envelope(code=1004, message="expired"))
    with pytest.raises(AuthError, match="clock"):
        run(make(router).submit(VideoRequest(prompt="p"), "k"))


# -- error mapping ---------------------------------------------------------------------------------

CASES = [
    (401, 1000, AuthError), (401, 1001, AuthError), (401, 1002, AuthError),
    (401, 1003, AuthError),
    (429, 1100, AccountError), (429, 1101, AccountError), (429, 1102, AccountError),
    (403, 1103, ModelRefused), (400, 1200, RejectedError), (400, 1201, RejectedError),
    (404, 1202, RejectedError), (404, 1203, ModelRefused),  # on a create the missing resource is the model
    (400, 1300, RejectedError), (400, 1301, RejectedError),
    (429, 1302, RateLimited), (429, 1303, SlotsBusy), (429, 1304, AccountError),
    (500, 5000, TransientError), (503, 5001, TransientError), (504, 5002, TransientError),
    (200, 1201, RejectedError),  # code != 0 is an error even with HTTP 200
]


@pytest.mark.parametrize(("status", "code", "expected"), CASES)
def test_business_codes_map_to_error_classes(router, status, code, expected):
    router.post(T2V).respond(status, json=envelope(code=code, message=f"kling says {code}"))
    with pytest.raises(expected) as caught:
        run(make(router).submit(VideoRequest(prompt="p", model="kling-v2-master"), "k"))
    error = caught.value
    assert type(error) is expected
    assert error.provider_code == code
    assert error.status_code == status
    assert f"kling says {code}" in str(error)  # Kling's own words are kept
    assert error.request_id == "r-1"  # to quote to Kling's support
    if expected is AuthError:
        assert "KLING_ACCESS_KEY" in str(error)
        assert "KLING_SECRET_KEY" in str(error)
        assert "KLING_API_KEY" in str(error)
    if expected is ModelRefused:
        assert error.model == "kling-v2-master" and "kling-v2-master" in str(error)
    if code in (1100, 1101, 1102):
        assert "balance" in str(error)
    if code == 1304:
        assert "whitelist" in str(error)
    if code == 1103:
        assert "kling-v2-master" in str(error)
    if code in (1300, 1301):
        assert "content policy" in str(error)
    if isinstance(error, TransientError) and not isinstance(error, RateLimited | SlotsBusy):
        assert error.maybe_accepted  # a 5xx after a create: the task may exist
    if isinstance(error, RateLimited | SlotsBusy):
        assert not error.maybe_accepted


def test_retry_after_is_honoured(router):
    route = router.post(T2V)
    route.side_effect = [
        httpx.Response(429, json=envelope(code=1302), headers={"Retry-After": "7"}),
        httpx.Response(429, json=envelope(code=1302)),
        httpx.Response(429, json=envelope(code=1303)),
        httpx.Response(429, json=envelope(code=1303), headers={"Retry-After": "4"}),
    ]
    provider = make(router)

    async def four() -> list[Any]:
        out = []
        for _ in range(4):
            try:
                await provider.submit(VideoRequest(prompt="p"), "k")
            except TransientError as exc:
                out.append(exc.retry_after)
        return out

    assert run(four()) == [7.0, None, 1.0, 4.0]


def test_unreadable_answers_are_transient(router):
    route = router.post(T2V)
    route.side_effect = [
        httpx.Response(200, content=b'{"code": 0, "data": {"task_'),
        httpx.Response(502, content=b"<html>Bad gateway</html>"),
        httpx.Response(200, json=envelope({"no": "task id"})),
    ]
    provider = make(router)
    for _ in range(3):
        with pytest.raises(TransientError) as caught:
            run(provider.submit(VideoRequest(prompt="p"), "k"))
        assert caught.value.maybe_accepted


@pytest.mark.parametrize(("failure", "maybe_accepted"), [
    (httpx.ConnectError("refused"), False),
    (httpx.ConnectTimeout("connect timed out"), False),
    (httpx.ReadTimeout("read timed out"), True),
    (httpx.RemoteProtocolError("peer closed connection"), True),
    (httpx.ReadError("connection reset"), True),
])
def test_network_failures(router, failure, maybe_accepted):
    router.post(T2V).mock(side_effect=failure)
    with pytest.raises(TransientError) as caught:
        run(make(router).submit(VideoRequest(prompt="p"), "k"))
    assert caught.value.maybe_accepted is maybe_accepted
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


def test_failed_poll_never_claims_acceptance(router):
    router.get(f"{T2V}/t1").respond(500, json=envelope(code=5000))
    provider = make(router)
    provider._kinds["t1"] = "text2video"
    with pytest.raises(TransientError) as caught:
        run(provider.status("t1"))
    assert not caught.value.maybe_accepted


# -- duplicates and lookups ------------------------------------------------------------------------

DUPLICATE = envelope(code=1201, message="Invalid parameters: external_task_id 'k' already exists")


def test_duplicate_external_task_id_adopts_the_existing_task(router):
    router.post(T2V).respond(400, json=DUPLICATE)
    lookup = router.get(T2V, params={"external_task_id": "k"}).respond(
        json=envelope(task("t9", "processing", key="k")))
    status = run(make(router).submit(VideoRequest(prompt="p"), "k"))
    assert status.task_id == "t9"
    assert status.state is TaskState.RUNNING
    assert lookup.call_count == 1


def test_duplicate_that_cannot_be_found_is_key_already_used_not_rejected(router):
    # A RejectedError here made the row "failed" as if nothing was paid, and a retry paid again.
    router.post(T2V).respond(400, json=DUPLICATE)
    router.get(T2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    router.get(I2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    with pytest.raises(KeyAlreadyUsed, match="already exists") as caught:
        run(make(router).submit(VideoRequest(prompt="p"), "k"))
    error = caught.value
    assert type(error) is KeyAlreadyUsed
    assert not isinstance(error, RejectedError)
    assert error.provider_code == 1201
    assert error.request_id == "r-1"
    assert "did not find" in str(error)


@pytest.mark.parametrize("lookup", [
    httpx.Response(500, json=envelope(code=5000, message="busy")),
    httpx.Response(400, json=envelope(code=1201, message="external_task_id is not supported")),
    httpx.Response(200, json=envelope([task("t8", key="someone-else")])),
])
def test_duplicate_whose_lookup_fails_is_key_already_used(router, lookup):
    router.post(T2V).respond(400, json=DUPLICATE)
    router.get(T2V, params={"external_task_id": "k"}).mock(return_value=lookup)
    router.get(I2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    with pytest.raises(KeyAlreadyUsed, match="looking it up failed") as caught:
        run(make(router).submit(VideoRequest(prompt="p"), "k"))
    assert caught.value.__cause__ is None
    assert SK not in str(caught.value)


def test_find_looks_in_both_kinds(router):
    router.get(T2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    router.get(I2V, params={"external_task_id": "k"}).respond(json=envelope(task("t5", key="k")))
    provider = make(router)
    found = run(provider.find("k"))
    assert found is not None
    assert found.task_id == "t5"
    assert provider._kinds["t5"] == "image2video"


def test_find_returns_none_when_nothing_exists(router):
    router.get(T2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    router.get(I2V, params={"external_task_id": "k"}).respond(200, json=envelope(None))
    assert run(make(router).find("k")) is None


def test_find_accepts_a_list_and_picks_the_matching_task(router):
    router.get(T2V, params={"external_task_id": "k"}).respond(
        json=envelope([task("t1", key="other"), task("t2", key="k")]))
    found = run(make(router).find("k"))
    assert found is not None
    assert found.task_id == "t2"


def test_find_passes_the_limiter_once_per_kind_tried(router):
    router.get(T2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    router.get(I2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    provider = make(router)
    taken = []

    class Counting(RateLimiter):
        async def acquire(self) -> None:
            taken.append(1)
            await super().acquire()

    provider.attach(Counting(None))
    assert run(provider.find("k")) is None
    assert len(taken) == 2


@pytest.mark.parametrize(("status", "code"), [(400, 1201), (400, 1200), (404, 1202), (403, 1103)])
def test_a_refused_lookup_is_not_not_found(router, status, code):
    refused = envelope(code=code, message="Invalid parameters: external_task_id")
    router.get(T2V, params={"external_task_id": "k"}).respond(status, json=refused)
    router.get(I2V, params={"external_task_id": "k"}).respond(status, json=refused)
    with pytest.raises(ProviderError, match="cannot look") as caught:
        run(make(router).find("k"))
    error = caught.value
    assert not isinstance(error, NotFoundError | RejectedError)  # neither "none" nor "row failed"
    assert error.provider_code == code
    assert error.request_id == "r-1"


def test_a_lookup_refused_on_one_kind_still_finds_the_task_on_the_other(router):
    router.get(T2V, params={"external_task_id": "k"}).respond(400, json=envelope(code=1201))
    router.get(I2V, params={"external_task_id": "k"}).respond(json=envelope(task("t5", key="k")))
    found = run(make(router).find("k"))
    assert found is not None and found.task_id == "t5"


def test_a_lookup_refused_on_one_kind_and_absent_on_the_other_cannot_answer(router):
    router.get(T2V, params={"external_task_id": "k"}).respond(400, json=envelope(code=1201))
    router.get(I2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    with pytest.raises(ProviderError, match="cannot look") as caught:
        run(make(router).find("k"))
    assert not isinstance(caught.value, NotFoundError)


def test_a_404_without_an_envelope_is_not_kling_saying_none(router):
    # A gateway's or proxy's 404 page says nothing about tasks.
    router.get(T2V, params={"external_task_id": "k"}).respond(404, text="<html>Not Found</html>")
    router.get(I2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    with pytest.raises(ProviderError, match="cannot look") as caught:
        run(make(router).find("k"))
    assert not isinstance(caught.value, NotFoundError)


def test_an_ignored_parameter_answering_other_tasks_is_not_not_found(router):
    page = [task("t1", key="other-system"), task("t2", key=None), task("t3", key="k-2")]
    router.get(T2V, params={"external_task_id": "k"}).respond(json=envelope(page))
    router.get(I2V, params={"external_task_id": "k"}).respond(json=envelope(page))
    with pytest.raises(ProviderError, match="other tasks") as caught:
        run(make(router).find("k"))
    assert not isinstance(caught.value, NotFoundError)


def test_an_ignored_parameter_page_that_holds_our_task_adopts_exactly_it(router):
    page = [task("t1", key=None), task("t2", key="k"), task("t3", key="k-2")]
    router.get(T2V, params={"external_task_id": "k"}).respond(json=envelope(page))
    found = run(make(router).find("k"))
    assert found is not None
    assert (found.task_id, found.idempotency_key) == ("t2", "k")


@pytest.mark.parametrize("data", [task("t1", key=None), [task("t1", key=None)]])
def test_a_task_without_an_external_id_is_never_adopted(router, data):
    # It may be any task on the account: adopting it would attach another row's (or another
    # system's) video to this row, and leave this row's own task unpaid-for in our books.
    router.get(T2V, params={"external_task_id": "k"}).respond(json=envelope(data))
    router.get(I2V, params={"external_task_id": "k"}).respond(404, json=envelope(code=1203))
    with pytest.raises(ProviderError) as caught:
        run(make(router).find("k"))
    assert not isinstance(caught.value, NotFoundError)


# -- scanning the task list ------------------------------------------------------------------------

HOUR_MS = 3_600_000
T0 = 1_700_000_000_000  # ms


def listed(task_id: str, key: str | None, hour: float) -> dict[str, Any]:
    return {**task(task_id, "succeed", key=key), "created_at": int(T0 + hour * HOUR_MS)}


def pages_route(router: respx.MockRouter, url: str, items: list[dict[str, Any]]) -> respx.Route:
    """The list endpoint over ``items`` in the order given, paged as asked."""

    def answer(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["pageNum"])
        size = int(request.url.params["pageSize"])
        return httpx.Response(200, json=envelope(items[(number - 1) * size:number * size]))

    return router.get(url, params={"pageSize": "3"}).mock(side_effect=answer)


def page_numbers(route: respx.Route) -> list[int]:
    return [int(c.request.url.params["pageNum"]) for c in route.calls]


def test_scan_stops_at_since_skips_foreign_tasks_and_proves_the_rest_free(router):
    # newest first, one task an hour; ours are "k6" (hour 6) and "k-free" (never created)
    items = [listed("t10", "other-10", 10), listed("t9", None, 9), listed("t8", "k6x", 8),
             listed("t7", "other-7", 7), listed("t6", "k6", 6), listed("t5", None, 5),
             listed("t4", "other-4", 4), listed("t3", "other-3", 3)]
    t2v = pages_route(router, T2V, items)
    i2v = pages_route(router, I2V, [listed("i1", "other-i", 9.5)])
    provider = make(router, page_size=3, max_rps=None)
    result = run(provider.scan(["k6", "k-free"], since=(T0 + 5.5 * HOUR_MS) / 1000))
    assert set(result.found) == {"k6"}
    assert result.found["k6"].task_id == "t6"
    assert result.found["k6"].idempotency_key == "k6"
    assert result.complete  # both lists reached back past ``since``: "k-free" has no task
    assert page_numbers(t2v) == [1, 2]  # page 2 ends at hour 5, before since: page 3 not read
    assert page_numbers(i2v) == [1]
    assert provider._kinds["t6"] == "text2video"


def test_scan_finds_keys_in_both_kinds_and_stops_when_all_are_found(router):
    text = [listed(f"t{h}", f"x{h}", h) for h in range(20, 0, -1)]
    text[11] = listed("t9", "k-text", 9)  # page 4 of 3 a page
    t2v = pages_route(router, T2V, text)
    i2v = pages_route(router, I2V, [listed(f"i{h}", "k-img" if h == 11 else f"y{h}", h)
                                    for h in range(12, 0, -1)])
    result = run(make(router, page_size=3, max_rps=None).scan(["k-text", "k-img"],
                                                              since=(T0 + 8.5 * HOUR_MS) / 1000))
    assert {k: s.task_id for k, s in result.found.items()} == {"k-text": "t9", "k-img": "i11"}
    assert result.complete
    assert page_numbers(t2v) == [1, 2, 3, 4, 5]  # on to page 5, whose oldest is before since
    assert page_numbers(i2v) == [1]  # "k-img" is on page 1: all found, nothing more is read


def test_scan_is_incomplete_when_the_page_budget_ends_first(router):
    items = [listed(f"t{h}", f"other-{h}", h) for h in range(30, 0, -1)]
    t2v = pages_route(router, T2V, items)
    pages_route(router, I2V, [])
    result = run(make(router, page_size=3, scan_pages=2, max_rps=None).scan(["k"], since=0))
    assert result.found == {}
    assert not result.complete  # nothing proves "k" has no task further back
    assert page_numbers(t2v) == [1, 2]


def test_scan_does_not_trust_since_when_the_list_is_not_newest_first(router):
    # oldest first: page 1 starts before ``since``; stopping there would miss the task on page 3
    items = [listed(f"t{h}", f"other-{h}", h) for h in range(1, 8)] + [listed("t8", "k", 8)]
    t2v = pages_route(router, T2V, items)
    pages_route(router, I2V, [])
    result = run(make(router, page_size=3, max_rps=None).scan(["k"], since=(T0 + 7.5 * HOUR_MS) / 1000))
    assert result.found["k"].task_id == "t8"
    assert page_numbers(t2v) == [1, 2, 3]


def test_scan_keeps_reading_past_since_by_a_clock_margin(router):
    # Kling's clock may lag ours: a task it stamped a few minutes "before" since may be ours.
    minute = 60_000 / HOUR_MS
    items = [listed("t3", "other", 3), listed("t2", "other-2", 2), listed("t1", "other-1", 1),
             listed("t0", "k", 1 - 5 * minute)]
    pages_route(router, T2V, items)
    pages_route(router, I2V, [])
    result = run(make(router, page_size=3, max_rps=None).scan(["k"], since=(T0 + 1.5 * HOUR_MS) / 1000))
    assert "k" not in result.found  # page 1 ends at hour 1, 30 minutes before since: complete
    router.routes.clear()
    pages_route(router, T2V, items)
    pages_route(router, I2V, [])
    result = run(make(router, page_size=3, max_rps=None).scan(["k"], since=(T0 + 1 * HOUR_MS) / 1000))
    assert result.found["k"].task_id == "t0"  # page 1 ends exactly at since: page 2 is read too


def test_scan_is_incomplete_when_a_task_with_our_key_cannot_be_read(router):
    broken = {"task_status": "succeed", "task_info": {"external_task_id": "k"}, "created_at": T0}
    pages_route(router, T2V, [broken])
    pages_route(router, I2V, [])
    result = run(make(router, page_size=3, max_rps=None).scan(["k"], since=0))
    assert result.found == {}
    assert not result.complete


def test_a_refused_list_is_not_not_found(router):
    router.get(T2V).respond(404, json=envelope(code=1202, message="method invalid"))
    with pytest.raises(ProviderError, match="refused to list") as caught:
        run(make(router).scan(["k"], since=0))
    assert not isinstance(caught.value, NotFoundError | RejectedError)
    assert caught.value.request_id == "r-1"


# -- status ----------------------------------------------------------------------------------------


def test_status_parsing(router):
    videos = {"videos": [{"id": "v1", "url": "https://cdn.test/v1.mp4", "duration": "5.1"}]}
    router.get(f"{T2V}/a").respond(json=envelope(task("a", "submitted")))
    router.get(f"{T2V}/b").respond(json=envelope(task("b", "processing")))
    router.get(f"{T2V}/c").respond(json=envelope(task("c", "succeed", task_result=videos)))
    router.get(f"{T2V}/d").respond(json=envelope(
        task("d", "failed", task_status_msg="Content moderation review failed.")))
    provider = make(router)
    a, b, c, d = (run(provider.status(t)) for t in "abcd")
    assert a.state is TaskState.QUEUED
    assert b.state is TaskState.RUNNING
    assert c.state is TaskState.SUCCEEDED
    assert d.state is TaskState.FAILED
    assert c.videos[0].url == "https://cdn.test/v1.mp4"
    assert c.videos[0].id == "v1"
    assert c.videos[0].duration == 5.1
    assert c.created_at == 1_700_000_000.0
    assert c.finished_at == 1_700_000_060.0
    assert c.expires_at == 1_700_000_000.0 + 30 * 24 * 3600
    assert d.message == "Content moderation review failed."
    assert not d.videos
    assert a.finished_at is None
    assert a.message is None


def test_status_of_unknown_kind_tries_both_then_remembers(router):
    t2v = router.get(f"{T2V}/t7").respond(404, json=envelope(code=1203))
    i2v = router.get(f"{I2V}/t7").respond(json=envelope(task("t7", "processing")))
    provider = make(router)

    async def twice() -> None:
        await provider.status("t7")
        await provider.status("t7")

    run(twice())
    assert t2v.call_count == 1
    assert i2v.call_count == 2


def test_status_of_missing_task(router):
    router.get(f"{T2V}/nope").respond(404, json=envelope(code=1203))
    router.get(f"{I2V}/nope").respond(404, json=envelope(code=1203))
    with pytest.raises(NotFoundError):
        run(make(router).status("nope"))


def list_route(router: respx.MockRouter, url: str, items: list[dict[str, Any]]) -> respx.Route:
    return router.get(url, params={"pageNum": "1"}).respond(json=envelope(items))


def test_status_many_uses_one_list_request(router):
    ids = [f"t{i}" for i in range(6)]
    page = [task(t, "processing" if i % 2 else "succeed") for i, t in enumerate(ids)]
    listing = list_route(router, T2V, [*page, task("someone-else")])
    single = router.get(url__regex=rf"{T2V}/.+").respond(json=envelope(task()))
    provider = make(router)
    for t in ids:
        provider._kinds[t] = "text2video"
    answers = run(provider.status_many(ids))
    assert list(answers) == ids
    assert listing.call_count == 1
    assert single.call_count == 0
    assert listing.calls[0].request.url.params["pageSize"] == "500"
    assert answers["t0"].state is TaskState.SUCCEEDED  # type: ignore[union-attr]
    assert answers["t1"].state is TaskState.RUNNING  # type: ignore[union-attr]


def test_status_many_falls_back_to_single_gets_for_the_missing(router):
    list_route(router, T2V, [task("t1"), task("t2"), task("t3")])
    single = router.get(f"{T2V}/t4").respond(json=envelope(task("t4", "succeed")))
    provider = make(router)
    for t in ("t1", "t2", "t3", "t4"):
        provider._kinds[t] = "text2video"
    answers = run(provider.status_many(["t1", "t2", "t3", "t4"]))
    assert single.call_count == 1
    assert answers["t4"].state is TaskState.SUCCEEDED  # type: ignore[union-attr]


def test_status_many_with_few_ids_polls_singly(router):
    listing = router.get(T2V).respond(json=envelope([]))
    router.get(f"{T2V}/t1").respond(json=envelope(task("t1")))
    router.get(f"{T2V}/t2").respond(json=envelope(task("t2")))
    provider = make(router)
    provider._kinds.update(t1="text2video", t2="text2video")
    assert set(run(provider.status_many(["t1", "t2"]))) == {"t1", "t2"}
    assert listing.call_count == 0


def test_status_many_reports_a_rate_limit_for_each_task(router):
    router.get(T2V).respond(429, json=envelope(code=1302), headers={"Retry-After": "2"})
    single = router.get(url__regex=rf"{T2V}/.+").respond(json=envelope(task()))
    provider = make(router)
    ids = ["t1", "t2", "t3"]
    for t in ids:
        provider._kinds[t] = "text2video"
    answers = run(provider.status_many(ids))
    assert all(isinstance(a, RateLimited) and a.retry_after == 2 for a in answers.values())
    assert single.call_count == 0  # no pile-on after a rate limit


# -- configuration and secrets ---------------------------------------------------------------------


def test_a_console_api_key_is_sent_as_is_and_wins_over_a_key_pair(router):
    route = router.post(T2V).respond(json=envelope(task()))
    api_key = "api-key-kling-0123456789abcdef"
    provider = make(router, api_key=api_key)
    provider.check([VideoRequest(prompt="p")])
    run(provider.submit(VideoRequest(prompt="p"), "key-1"))
    assert route.calls.last.request.headers["authorization"] == f"Bearer {api_key}"
    assert api_key not in repr(provider) and api_key not in str(provider.describe())
    alone = make(router, api_key=api_key, access_key=None, secret_key=None)
    alone.check([])  # the API key alone is enough


def test_without_any_key_the_error_names_both_ways(router, monkeypatch):
    for name in ("KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as caught:
        make(router, access_key=None, secret_key=None).check([])
    assert all(name in str(caught.value) for name in ("KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"))
    monkeypatch.setenv("KLING_API_KEY", "api-key-kling-from-the-environment")
    make(router, access_key=None, secret_key=None).check([])
    with pytest.raises(ConfigError, match="KLING_API_KEY"):
        make(router, api_key="key with spaces").check([])


@pytest.mark.parametrize(("missing", "variable"), [("access_key", "KLING_ACCESS_KEY"),
                                                    ("secret_key", "KLING_SECRET_KEY")])
def test_missing_key_names_the_variable_and_sends_nothing(router, missing, variable):
    route = router.route().respond(json=envelope(task()))
    provider = make(router, **{missing: None})
    with pytest.raises(ConfigError, match=variable):
        provider.check([VideoRequest(prompt="p")])
    with pytest.raises(ConfigError, match=variable):
        run(provider.submit(VideoRequest(prompt="p"), "k"))
    assert route.call_count == 0


def test_malformed_key_is_a_config_error(router):
    provider = make(router, secret_key="my secret key with spaces")
    with pytest.raises(ConfigError, match="KLING_SECRET_KEY") as caught:
        provider.check([])
    assert "spaces" in str(caught.value)
    assert "my secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="KLING_ACCESS_KEY"):
        make(router, access_key='"ak-quoted-key"').check([])


def test_keys_and_base_url_come_from_the_environment(router, monkeypatch):
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    monkeypatch.setenv("KLING_BASE_URL", "https://api-singapore.klingai.com/")
    provider = KlingProvider()
    provider.check([])
    assert provider.describe() == {"provider": "kling",
                                   "base_url": "https://api-singapore.klingai.com"}
    assert KlingProvider(access_key=None).describe()["base_url"].startswith("https://api-sing")


def test_options_arrive_as_strings():
    provider = get_provider("kling", max_parallel="7", max_rps="2.5", timeout="12",
                            first_poll="0.2", poll_interval="0.05")
    assert provider.limits.max_parallel == 7
    assert provider.limits.max_rps == 2.5
    assert provider.poll_hint.first_poll == 0.2
    assert provider.poll_hint.min_interval == 0.05
    default = KlingProvider()
    # The hint shapes only the first wave (one list request answers for all), then the run polls
    # when task ends are expected (test_polling); Kling says it imposes no QPS limit.
    assert default.poll_hint.first_poll == 2
    assert default.poll_hint.min_interval == 1
    assert default.limits.max_rps == 10
    assert default.poll_hint.max_interval == 60
    assert default.base_url == "https://api-singapore.klingai.com"  # the documented default host
    assert KlingProvider(region="cn").base_url == "https://api-beijing.klingai.com"
    with pytest.raises(ConfigError, match="region 'mars'"):
        KlingProvider(region="mars")
    with pytest.raises(ConfigError, match="max_parallel"):
        get_provider("kling", max_parallel="lots")
    with pytest.raises(ConfigError, match="bad option"):
        get_provider("kling", colour="blue")
    with pytest.raises(ConfigError, match="KLING_BASE_URL"):
        KlingProvider(base_url="ftp://kling")


def test_no_secret_shows_anywhere(router, caplog):
    router.post(T2V).respond(401, json=envelope(code=1000, message="Authentication failed"))
    provider = make(router)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as caught:
        run(provider.submit(VideoRequest(prompt="p"), "k"))
    token = provider._bearer()
    shown = [repr(provider), str(provider), json.dumps(provider.describe()),
             repr(vars(provider)), str(caught.value), repr(caught.value), caplog.text]
    for text in shown:
        assert AK not in text
        assert SK not in text
        assert token not in text
    with pytest.raises(TypeError):
        pickle.dumps(provider)


# -- pre-flight check ------------------------------------------------------------------------------


def png(width: int, height: int) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + width.to_bytes(4, "big")
            + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00")


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big") + b"\x03"
    return b"\xff\xd8" + app0 + sof + b"\x00" * 9


def test_check_reports_rows_kling_would_refuse(router, tmp_path):
    good_png, good_jpg = tmp_path / "ok.png", tmp_path / "ok.jpg"
    good_png.write_bytes(png(640, 480))
    good_jpg.write_bytes(jpeg(1280, 720))
    tiny, wide, big, text = (tmp_path / n for n in ("tiny.png", "wide.jpg", "big.png", "x.gif"))
    tiny.write_bytes(png(200, 200))
    wide.write_bytes(jpeg(3000, 1000))
    big.write_bytes(png(1000, 1000) + b"\0" * (10 * 1024 * 1024))
    text.write_bytes(b"GIF89a....")
    rows = [
        VideoRequest(prompt="fine"),
        VideoRequest(prompt="x" * 2501),
        VideoRequest(prompt="ok", negative_prompt="n" * 2501),
        VideoRequest(image=str(good_png), image_tail=str(good_jpg)),
        VideoRequest(image="https://img.test/a.jpg"),
        VideoRequest(image=str(tmp_path / "missing.png")),
        VideoRequest(image=str(tiny)),
        VideoRequest(image=str(wide)),
        VideoRequest(image=str(big)),
        VideoRequest(image=str(text)),
        VideoRequest(prompt="x" * 2500),
    ]
    problems = make(router).check(rows)
    by_row = {(p.row, p.column): p.message for p in problems}
    assert set(by_row) == {(2, "prompt"), (3, "negative_prompt"), (6, "image"), (7, "image"),
                           (8, "image"), (9, "image"), (10, "image")}
    assert "2501" in by_row[(2, "prompt")]
    assert "not found" in by_row[(6, "image")]
    assert "200x200" in by_row[(7, "image")]
    assert "2.5:1" in by_row[(8, "image")]
    assert "10 MB" in by_row[(9, "image")]
    assert "JPEG or PNG" in by_row[(10, "image")]
