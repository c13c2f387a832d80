"""The Kling-compatible server on loopback, driven by the real KlingProvider over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from videobatch.errors import (
    AccountError,
    AuthError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from videobatch.providers import TaskState, TaskStatus
from videobatch.providers.kling import client as kling_module
from videobatch.providers.kling.client import KlingProvider
from videobatch.providers.local.render import probe
from videobatch.request import VideoRequest
from videobatch.testing import Faults, ServerHandle, SimConfig, parse_rules, running_server

AK, SK = SimConfig.access_key, SimConfig.secret_key
DEFAULTS: dict[str, Any] = {"latency": 0.2, "jitter": 0.0, "max_parallel": 5, "rps": None,
                            "retry_after": True, "max_tasks": None, "allowed_models": None,
                            "slow_seconds": 1.0}


@pytest.fixture(scope="module")
def module_server() -> Iterator[ServerHandle]:
    with running_server(**DEFAULTS) as server:
        yield server


@pytest.fixture
def server(module_server: ServerHandle) -> ServerHandle:
    module_server.reset()
    module_server.configure(**DEFAULTS)
    return module_server


def provider(server: ServerHandle, **options: Any) -> KlingProvider:
    options.setdefault("access_key", AK)
    options.setdefault("secret_key", SK)
    options.setdefault("timeout", 5)
    return KlingProvider(base_url=server.url, **options)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def until_done(kling: KlingProvider, task_id: str, limit: float = 10) -> TaskStatus:
    deadline = time.monotonic() + limit
    while True:
        status = await kling.status(task_id)
        if status.state.done or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


async def submit_error(kling: KlingProvider, request: VideoRequest, key: str) -> Exception:
    try:
        await kling.submit(request, key)
    except Exception as exc:
        return exc
    raise AssertionError("submit did not fail")


def test_submit_poll_and_download_a_real_mp4(server, tmp_path):
    kling = provider(server)

    async def go() -> TaskStatus:
        async with kling:
            first = await kling.submit(VideoRequest(prompt="a red fox", aspect_ratio="9:16"),
                                       "row-1")
            assert first.state is TaskState.QUEUED
            return await until_done(kling, first.task_id)

    done = run(go())
    assert done.state is TaskState.SUCCEEDED
    assert done.idempotency_key == "row-1"
    assert done.expires_at is not None
    assert done.created_at is not None
    assert done.expires_at - done.created_at == 30 * 24 * 3600
    video = done.videos[0]
    assert video.duration == 5.0
    path = tmp_path / "fox.mp4"
    path.write_bytes(httpx.get(video.url, timeout=30).content)
    facts = probe(path)
    assert facts["duration"] > 0
    assert facts["height"] > facts["width"]  # 9:16
    counters = server.counters()
    assert counters["accepted"] == 1
    assert counters["downloads"] == 1
    assert counters["succeeded"] == 1


def test_image2video_round_trip(server, tmp_path):
    picture = tmp_path / "still.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    kling = provider(server)

    async def go() -> tuple[TaskStatus, TaskStatus | None]:
        async with kling:
            first = await kling.submit(VideoRequest(prompt="zoom", image=str(picture)), "img-1")
            fresh = provider(server)  # a new process would not know the task's kind
            async with fresh:
                return await until_done(fresh, first.task_id), await fresh.find("img-1")

    done, found = run(go())
    assert done.state is TaskState.SUCCEEDED
    assert found is not None
    assert found.task_id == done.task_id


@pytest.mark.parametrize(("options", "code"), [
    ({"secret_key": "a-wrong-secret-key-0123456789abcdef"}, 1000),
    ({"access_key": "someone-elses-access-key"}, 1000),
])
def test_bad_credentials_are_auth_errors(server, options, code):
    error = run(submit_error(provider(server, **options), VideoRequest(prompt="p"), "k"))
    assert isinstance(error, AuthError)
    assert error.provider_code == code
    assert "KLING_SECRET_KEY" in str(error)
    counters = server.counters()
    assert counters["accepted"] == 0
    assert counters["rejected"] == {"auth_1000": 1}


@pytest.mark.parametrize(("skew", "code"), [(-3600.0, 1004), (600.0, 1003)])
def test_clock_skew_is_an_auth_error_after_one_renewal(server, monkeypatch, skew, code):
    monkeypatch.setattr(kling_module, "_now", lambda: time.time() + skew)
    error = run(submit_error(provider(server), VideoRequest(prompt="p"), "k"))
    assert isinstance(error, AuthError)
    assert error.provider_code == code
    assert "clock" in str(error)
    expected_tries = 2 if code == 1004 else 1  # an expired token is renewed once
    assert server.counters()["rejected"] == {f"auth_{code}": expected_tries}


def test_expired_token_is_renewed_transparently(server):
    server.configure(faults={"code_1004@create": 1})
    status = run(provider(server).submit(VideoRequest(prompt="p"), "k"))
    assert status.state is TaskState.QUEUED
    counters = server.counters()
    assert counters["accepted"] == 1
    assert counters["rejected"] == {"fault_code_1004": 1}


def test_raw_requests_without_a_valid_token(server):
    empty = httpx.get(f"{server.url}/v1/videos/text2video/1")
    assert (empty.status_code, empty.json()["code"]) == (401, 1001)
    garbled = httpx.get(f"{server.url}/v1/videos/text2video/1",
                        headers={"Authorization": "Bearer not-a-jwt"})
    assert (garbled.status_code, garbled.json()["code"]) == (401, 1002)


def test_parallel_limit_answers_slots_busy(server):
    server.configure(max_parallel=2, latency=2.0)
    kling = provider(server)

    async def go() -> Exception:
        async with kling:
            await kling.submit(VideoRequest(prompt="one"), "k1")
            await kling.submit(VideoRequest(prompt="two"), "k2")
            return await submit_error(kling, VideoRequest(prompt="three"), "k3")

    error = run(go())
    assert isinstance(error, SlotsBusy)
    assert error.retry_after is not None
    assert error.retry_after >= 1
    assert not error.maybe_accepted
    counters = server.counters()
    assert counters["peak_parallel"] == 2
    assert counters["current_parallel"] == 2
    assert counters["rejected"] == {"parallel_limit": 1}


@pytest.mark.parametrize("retry_after", [True, False])
def test_request_rate_limit(server, retry_after):
    server.configure(rps=2, retry_after=retry_after)
    kling = provider(server)

    async def go() -> list[BaseException | TaskStatus]:
        async with kling:
            return await asyncio.gather(
                *(kling.submit(VideoRequest(prompt=f"p{i}"), f"k{i}") for i in range(4)),
                return_exceptions=True)

    answers = run(go())
    limited = [a for a in answers if isinstance(a, RateLimited)]
    assert len(limited) == 2
    assert all(a.retry_after == (1.0 if retry_after else None) for a in limited)
    assert server.counters()["rejected"] == {"rate_limit": 2}


def test_duplicate_external_task_id_is_adopted(server):
    kling = provider(server)

    async def go() -> tuple[TaskStatus, TaskStatus]:
        async with kling:
            first = await kling.submit(VideoRequest(prompt="same row"), "row-7")
            again = await provider(server).submit(VideoRequest(prompt="same row"), "row-7")
            return first, again

    first, again = run(go())
    assert again.task_id == first.task_id
    counters = server.counters()
    assert counters["accepted"] == 1
    assert counters["duplicates"] == 1
    assert counters["paid_duplicates"] == 0


@pytest.mark.parametrize(("fault", "error_class", "accepted", "retry_after"), [
    ("rate_limit", RateLimited, False, 1.0),
    ("rate_limit_bare", RateLimited, False, None),
    ("server_error", TransientError, False, None),
    ("garbage", TransientError, True, None),
    ("slow", TransientError, True, None),
    ("lost", TransientError, True, None),
    ("lost_500", TransientError, True, None),
])
def test_faults_surface_as_the_right_error(server, fault, error_class, accepted, retry_after):
    """Each fault gives its error class; ``find`` then tells whether the task exists."""
    server.configure(faults={f"{fault}@create": 1})
    kling = provider(server, timeout=0.4)

    async def go() -> tuple[Exception, TaskStatus | None, TaskStatus]:
        async with kling:
            error = await submit_error(kling, VideoRequest(prompt="p"), "k")
            found = await kling.find("k")
            retried = await kling.submit(VideoRequest(prompt="p"), "k")
            return error, found, retried

    error, found, retried = run(go())
    assert type(error) is error_class
    assert isinstance(error, TransientError)
    assert error.retry_after == retry_after
    # A 5xx *might* follow an accepted create, so the client cannot rule it out: the runner checks.
    assert error.maybe_accepted is (accepted or fault == "server_error")
    assert (found is not None) is accepted
    if found is not None:
        assert retried.task_id == found.task_id  # duplicate adopted, nothing paid twice
    counters = server.counters()
    assert counters["accepted"] == 1
    assert counters["faults_injected"] == {fault: 1}


def test_content_policy_and_failed_tasks(server):
    kling = provider(server)

    async def go() -> tuple[Exception, Exception, TaskStatus, TaskStatus]:
        async with kling:
            blocked = await submit_error(kling, VideoRequest(prompt="a [blocked] scene"), "k1")
            server.configure(faults={"policy": 1})
            policy = await submit_error(kling, VideoRequest(prompt="fine"), "k2")
            marked = await kling.submit(VideoRequest(prompt="this will [fail]"), "k3")
            server.configure(fail=1)
            unlucky = await kling.submit(VideoRequest(prompt="ordinary"), "k4")
            return (blocked, policy, await until_done(kling, marked.task_id),
                    await until_done(kling, unlucky.task_id))

    blocked, policy, marked, unlucky = run(go())
    for error in (blocked, policy):
        assert isinstance(error, RejectedError)
        assert error.provider_code == 1301
        assert "content policy" in str(error)
    for status in (marked, unlucky):
        assert status.state is TaskState.FAILED
        assert status.message
        assert "failed" in status.message
    assert server.counters()["failed"] == 2


def test_account_and_permission_errors(server):
    server.configure(max_tasks=1, allowed_models=["kling-v1-6"])
    kling = provider(server)

    async def go() -> tuple[Exception, Exception]:
        async with kling:
            denied = await submit_error(kling, VideoRequest(prompt="p", model="kling-v2-master"),
                                        "k0")
            await kling.submit(VideoRequest(prompt="p"), "k1")
            broke = await submit_error(kling, VideoRequest(prompt="q"), "k2")
            return denied, broke

    denied, broke = run(go())
    assert isinstance(denied, RejectedError)
    assert "kling-v2-master" in str(denied)
    assert isinstance(broke, AccountError)
    assert "balance" in str(broke)


@pytest.mark.parametrize(("change", "field"), [
    ({"duration": 5}, "duration"),
    ({"duration": "7"}, "duration"),
    ({"model_name": "kling-v9"}, "model_name"),
    ({"aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"mode": "max"}, "mode"),
    ({"cfg_scale": 1.5}, "cfg_scale"),
    ({"prompt": "x" * 2501}, "prompt"),
    ({"prompt": ""}, "prompt"),
])
def test_server_validates_bodies_like_kling(server, change, field):
    body = {"model_name": "kling-v1-6", "prompt": "p", "duration": "5", **change}
    answer = httpx.post(f"{server.url}/v1/videos/text2video", json=body,
                        headers={"Authorization": f"Bearer {token()}"})
    assert answer.status_code == 400
    assert answer.json()["code"] == 1201
    assert field in answer.json()["message"]


def token() -> str:
    now = int(time.time())
    return jwt.encode({"iss": AK, "exp": now + 1800, "nbf": now - 5}, SK, algorithm="HS256")


def test_status_many_uses_the_list_endpoint(server):
    kling = provider(server)

    async def go() -> dict[str, Any]:
        async with kling:
            ids = [(await kling.submit(VideoRequest(prompt=f"p{i}"), f"k{i}")).task_id
                   for i in range(5)]
            await asyncio.sleep(0.3)
            return dict(await kling.status_many(ids))

    answers = run(go())
    assert all(isinstance(a, TaskStatus) and a.state is TaskState.SUCCEEDED
               for a in answers.values())
    counters = server.counters()
    assert counters["polls_list"] == 1
    assert counters["polls_single"] == 0


def test_list_endpoint_pages_newest_first(server):
    kling = provider(server)

    async def go() -> None:
        async with kling:
            for i in range(3):
                await kling.submit(VideoRequest(prompt=f"p{i}"), f"k{i}")

    run(go())
    headers = {"Authorization": f"Bearer {token()}"}
    page = httpx.get(f"{server.url}/v1/videos/text2video",
                     params={"pageNum": 1, "pageSize": 2}, headers=headers).json()["data"]
    assert [t["task_info"]["external_task_id"] for t in page] == ["k2", "k1"]
    too_big = httpx.get(f"{server.url}/v1/videos/text2video",
                        params={"pageNum": 1, "pageSize": 501}, headers=headers)
    assert too_big.json()["code"] == 1201


def test_server_as_a_separate_process():
    with running_server(process=True, latency=0.1, jitter=0.0, faults="rate_limit=next:1") as srv:
        kling = provider(srv)

        async def go() -> tuple[Exception, TaskStatus]:
            async with kling:
                error = await submit_error(kling, VideoRequest(prompt="p"), "k")
                status = await kling.submit(VideoRequest(prompt="p"), "k")
                return error, await until_done(kling, status.task_id)

        error, status = run(go())
        assert isinstance(error, RateLimited)
        assert status.state is TaskState.SUCCEEDED
        assert srv.counters()["accepted"] == 1


def test_fault_specs_parse_with_scopes_and_counts():
    rules = parse_rules("rate_limit=0.05, server_error@create=next:2,fail=1,code_1102@query=0.5")
    assert [(r.kind, r.scope, r.rate, r.next) for r in rules] == [
        ("rate_limit", "all", 0.05, 0), ("server_error", "create", 0.0, 2),
        ("fail", "task", 1.0, 0), ("code_1102", "query", 0.5, 0)]
    faults = Faults(parse_rules({"lost": 2, "garbage@query": "next:1"}))
    picks = [faults.pick("after", "create") for _ in range(3)]
    assert picks == ["lost", "lost", None]
    assert faults.pick("after", "query") == "garbage"
    assert faults.injected == {"lost": 2, "garbage": 1}
    for bad in ("teleport=0.1", "lost@nowhere=0.1", "code_9999=1", "lost=1.5", "lost"):
        with pytest.raises(ValueError):  # noqa: PT011 (each message differs)
            parse_rules(bad)
