"""The Kling-compatible server on loopback, driven by the real KlingProvider over real HTTP."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from videobatch.errors import (
    AccountError,
    AuthError,
    NotFoundError,
    ProviderError,
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
                            "slow_seconds": 1.0, "lookup": "answered", "foreign_tasks": 0,
                            "foreign_slots": 0, "list_order": "newest"}


@pytest.fixture(scope="module")
def module_server() -> Iterator[ServerHandle]:
    with running_server(**DEFAULTS) as server:
        yield server


@pytest.fixture
def server(module_server: ServerHandle) -> ServerHandle:
    module_server.configure(**DEFAULTS)
    module_server.reset()  # after configure: a reset account is built from the settings
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
    server.configure(max_tasks=1, allowed_models=["kling-v2-6"])
    kling = provider(server)

    async def go() -> tuple[Exception, Exception]:
        async with kling:
            denied = await submit_error(kling, VideoRequest(prompt="p", model="kling-v3"),
                                        "k0")
            await kling.submit(VideoRequest(prompt="p"), "k1")
            broke = await submit_error(kling, VideoRequest(prompt="q"), "k2")
            return denied, broke

    denied, broke = run(go())
    assert isinstance(denied, RejectedError)
    assert "kling-v3" in str(denied)
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
    body = {"model_name": "kling-v2-6", "prompt": "p", "duration": "5", **change}
    answer = httpx.post(f"{server.url}/v1/videos/text2video", json=body,
                        headers={"Authorization": f"Bearer {token()}"})
    assert answer.status_code == 400
    assert answer.json()["code"] == 1201
    assert field in answer.json()["message"]


@pytest.mark.parametrize("body", [{"model_name": "kling-v1-6", "prompt": "p"}, {"prompt": "p"}])
def test_a_retired_model_or_none_at_all_is_a_resource_that_does_not_exist(server, body):
    """Kling answers 404 / 1203 for a retired model; without model_name it means kling-v1 (retired)."""
    answer = httpx.post(f"{server.url}/v1/videos/text2video", json=body,
                        headers={"Authorization": f"Bearer {token()}"})
    assert answer.status_code == 404 and answer.json()["code"] == 1203


def test_a_console_api_key_authenticates_a_whole_run(server):
    """API key only (no access/secret pair): a run completes against the server."""
    from videobatch.testing.kling_sim import SimConfig

    kling = provider(server, api_key=SimConfig().api_key, access_key=None, secret_key=None)

    async def go() -> TaskState:
        async with kling:
            task = await kling.submit(VideoRequest(prompt="p"), "api-key-row")
            return (await kling.status(task.task_id)).state

    assert run(go()) in (TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED)
    answer = httpx.post(f"{server.url}/v1/videos/text2video", json={"model_name": "kling-v2-6", "prompt": "p"},
                        headers={"Authorization": "Bearer api-key-kling-wrong-0000"})
    assert answer.status_code == 401


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


# -- how the lookup by external_task_id is served, and other systems' tasks ------------------------


def get(server: ServerHandle, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", params=params,
                     headers={"Authorization": f"Bearer {token()}"}, timeout=10)


def submit_rows(server: ServerHandle, keys: list[str]) -> list[str]:
    kling = provider(server)

    async def go() -> list[str]:
        async with kling:
            return [(await kling.submit(VideoRequest(prompt=f"row {k}"), k)).task_id
                    for k in keys]

    ids: list[str] = run(go())
    return ids


def test_refused_lookup_is_a_1201_and_everything_else_still_answers(server):
    server.configure(lookup="refused")
    [task_id] = submit_rows(server, ["row-1"])

    refused = get(server, "/v1/videos/text2video", external_task_id="row-1")
    assert refused.status_code == 400
    body = refused.json()
    assert body["code"] == 1201
    assert "external_task_id" in body["message"]
    assert body["data"] is None
    assert body["request_id"]
    # ... while the task itself, by id and in the list, is there
    one = get(server, f"/v1/videos/text2video/{task_id}").json()
    assert (one["code"], one["data"]["task_info"]["external_task_id"]) == (0, "row-1")
    page = get(server, "/v1/videos/text2video", pageNum=1, pageSize=10).json()
    assert [t["task_id"] for t in page["data"]] == [task_id]

    # The provider sees a permanent refusal (the runner must treat it as "cannot tell")
    async def find() -> Exception:
        try:
            await provider(server).find("row-1")
        except Exception as exc:
            return exc
        raise AssertionError("find did not fail")

    error = run(find())
    assert isinstance(error, ProviderError) and not isinstance(error, NotFoundError)  # "cannot tell"
    assert error.provider_code == 1201
    counters = server.counters()
    # one refusal above, then find asks both kinds (text2video, image2video) before giving up
    assert counters["rejected"] == {"lookup_refused": 3}
    assert counters["polls_external"] == 3
    assert counters["accepted"] == 1


def test_ignored_lookup_answers_a_plain_list_page(server):
    server.configure(lookup="ignored", foreign_tasks=6)
    submit_rows(server, ["row-1", "row-2"])

    for asked in ("row-1", "no-such-row"):
        answer = get(server, "/v1/videos/text2video", external_task_id=asked).json()
        assert answer["code"] == 0
        page = answer["data"]
        assert isinstance(page, list)  # not the one task: the first page, newest first
        seen = [(t["task_info"] or {}).get("external_task_id") for t in page]
        assert seen[:2] == ["row-2", "row-1"]
        assert len(page) == 2 + 5  # and other systems' text2video tasks (1 in 4 is image2video)
    small = get(server, "/v1/videos/text2video", external_task_id="row-1", pageSize=1).json()
    assert [t["task_info"]["external_task_id"] for t in small["data"]] == ["row-2"]
    counters = server.counters()
    assert counters["lookups_ignored"] == 3
    assert counters["polls_external"] == 3
    assert counters["polls_list"] == 0


def test_find_adopts_only_its_own_task_when_the_lookup_is_ignored(server):
    server.configure(lookup="ignored", foreign_tasks=6)
    [mine] = submit_rows(server, ["row-1"])

    async def go() -> tuple[TaskStatus | None, Exception | TaskStatus | None]:
        async with provider(server) as kling:
            found = await kling.find("row-1")  # on the page the server answered instead
            try:
                missing: Exception | TaskStatus | None = await kling.find("row-never-sent")
            except ProviderError as exc:
                missing = exc
            return found, missing

    found, missing = run(go())
    assert found is not None
    assert found.task_id == mine
    # A page of other tasks proves nothing about this key: "cannot tell", never another system's task
    assert isinstance(missing, ProviderError) and not isinstance(missing, NotFoundError), missing


def test_other_systems_tasks_share_the_list_pages(server):
    server.configure(foreign_tasks=8)
    ours = submit_rows(server, ["row-1", "row-2", "row-3"])

    page = get(server, "/v1/videos/text2video", pageNum=1, pageSize=500).json()["data"]
    assert [t["task_id"] for t in page[:3]] == ours[::-1]  # newest first: ours, then theirs
    theirs = page[3:]
    assert len(theirs) == 6  # 8 foreign tasks, 2 of them image2video
    assert all(t["task_status"] in ("succeed", "failed") for t in theirs)
    assert all(t["created_at"] < page[2]["created_at"] for t in theirs)
    external = {(t["task_info"] or {}).get("external_task_id") for t in theirs}
    assert None in external
    assert any(e and e.startswith("order-") for e in external)
    assert any(e and e.startswith("vb-") and len(e) == 35 for e in external)  # videobatch-shaped
    image = get(server, "/v1/videos/image2video", pageNum=1, pageSize=500).json()["data"]
    assert len(image) == 2
    # answered lookups find theirs too (an exact id), and duplicates of their ids are refused
    their_id = next(e for e in external if e and e.startswith("order-"))
    by_ext = get(server, "/v1/videos/text2video", external_task_id=their_id).json()["data"]
    assert by_ext["task_info"]["external_task_id"] == their_id

    server.configure(list_order="oldest")
    oldest = get(server, "/v1/videos/text2video", pageNum=1, pageSize=500).json()["data"]
    assert [t["task_id"] for t in oldest] == [t["task_id"] for t in page][::-1]

    counters = server.counters()
    assert counters["foreign_tasks"] == 8
    assert counters["accepted"] == 3
    assert sum(counters["tasks"].values()) == 3  # task states count only ours
    tasks = server.tasks()
    assert [t["foreign"] for t in tasks] == [True] * 8 + [False] * 3  # oldest first
    assert [t["task_id"] for t in tasks[8:]] == ours
    assert {t["prompt"] for t in tasks[8:]} == {"row row-1", "row row-2", "row row-3"}

    server.reset()  # the account is rebuilt with the same number of other systems' tasks
    assert server.counters()["foreign_tasks"] == 8
    assert len(server.tasks()) == 8


def test_lookup_and_foreign_settings_are_checked(server):
    for bad in ({"lookup": "sometimes"}, {"list_order": "random"}, {"foreign_tasks": -1},
                {"foreign_slots": -2}):
        answer = httpx.post(f"{server.url}/_test/config", json=bad, timeout=10)
        assert answer.status_code == 400, bad
    assert server.configure()["config"]["lookup"] == "answered"  # unchanged by the refusals
    with pytest.raises(ValueError, match="lookup"):
        SimConfig(lookup="never")


def test_command_line_flags_select_the_lookup_mode_and_foreign_tasks():
    argv = [sys.executable, "-m", "videobatch.testing.kling_server", "--port", "0",
            "--lookup", "refused", "--foreign-tasks", "4", "--list-order", "oldest"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        handle = ServerHandle(url, SimConfig())
        deadline = time.monotonic() + 20
        while True:
            try:
                config = handle.configure()["config"]
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        assert (config["lookup"], config["foreign_tasks"], config["list_order"]) == (
            "refused", 4, "oldest")
        assert get(handle, "/v1/videos/text2video", external_task_id="x").json()["code"] == 1201
        page = get(handle, "/v1/videos/text2video", pageNum=1, pageSize=500).json()["data"]
        assert len(page) == 3
        assert page[0]["created_at"] < page[-1]["created_at"]  # oldest first
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    refused = subprocess.run([*argv[:5], "--lookup", "sometimes"], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2
    assert "--lookup" in refused.stderr


# -- the newer API design ----------------------------------------------------------------------------


def post(server: ServerHandle, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {SimConfig.api_key}"})


def newer_body(key: str, **settings: Any) -> dict[str, Any]:
    return {"prompt": f"row {key}", "settings": {"duration": 5, **settings},
            "options": {"external_task_id": key}}


@pytest.mark.parametrize(("path", "settings", "field"), [
    ("/text-to-video/kling-3.0", {"duration": "5"}, "settings.duration"),  # an integer, not "5"
    ("/text-to-video/kling-3.0", {"duration": 16}, "settings.duration"),
    ("/text-to-video/kling-2.6", {"audio": "native"}, "settings.audio"),  # 1080p only
    ("/text-to-video/kling-3.0-turbo", {"resolution": "4k"}, "settings.resolution"),
    ("/text-to-video/kling-3.0", {"mode": "pro"}, "settings.mode"),  # a /v1 field
])
def test_newer_design_bodies_are_checked_as_documented(server, path, settings, field):
    answer = post(server, path, newer_body("k", **settings))
    assert (answer.status_code, answer.json()["code"]) == (400, 1201)
    assert field in answer.json()["message"]
    gone = post(server, "/text-to-video/kling-v1-6", newer_body("k"))
    assert (gone.status_code, gone.json()["code"]) == (404, 1203)
    assert server.counters()["accepted"] == 0


def test_newer_design_tasks_by_id_external_id_and_cursor(server):
    server.configure(foreign_tasks=4)
    ids = [post(server, "/text-to-video/kling-3.0", newer_body(f"n-{i}")).json()["data"]["id"]
           for i in range(3)]
    [legacy] = submit_rows(server, ["old-1"])
    tasks = get(server, "/tasks", task_ids=",".join([*ids, legacy])).json()["data"]
    assert [t["id"] for t in tasks] == [*ids, legacy]  # every design at one URL
    assert get(server, "/tasks", external_task_ids="n-1,old-1").json()["data"][0]["external_id"] == "n-1"
    both = get(server, "/tasks", task_ids=ids[0], external_task_ids="n-0")
    assert (both.status_code, both.json()["code"]) == (400, 1201)
    # /v1 does not show the newer design's tasks
    assert get(server, f"/v1/videos/text2video/{ids[0]}").json()["code"] == 1203
    assert ids[0] not in {t["task_id"] for t in get(server, "/v1/videos/text2video", pageSize=500).json()["data"]}
    # the cursor listing: newest first, every task of the window once, then has_more false
    seen: list[str] = []
    body: dict[str, Any] = {"start_time": "0", "end_time": str(2**60), "limit": 3}
    while True:
        page = post(server, "/tasks", body).json()["data"]
        seen += [t["id"] for t in page["result"]]
        if not page["has_more"]:
            break
        body = {"cursor": page["next_cursor"], "limit": 3}
    assert len(seen) == len(set(seen)) == 3 + 1 + 4
    assert seen[:4] == [legacy, *ids[::-1]]
    assert post(server, "/tasks", {"limit": 501}).json()["code"] == 1201


@pytest.mark.parametrize("lookup", ["answered", "refused", "ignored"])
def test_newer_design_lookup_modes(server, lookup):
    server.configure(lookup=lookup, foreign_tasks=5)
    post(server, "/text-to-video/kling-3.0", newer_body("mine"))
    answer = get(server, "/tasks", external_task_ids="mine")
    if lookup == "refused":
        assert (answer.status_code, answer.json()["code"]) == (400, 1201)
        return
    data = answer.json()["data"]
    if lookup == "answered":
        assert [t["external_id"] for t in data] == ["mine"]
        assert get(server, "/tasks", external_task_ids="nobody").json()["data"] == []
    else:  # the parameter ignored: the account's newest tasks, other systems' among them
        nobody = get(server, "/tasks", external_task_ids="nobody").json()["data"]
        assert {t["external_id"] for t in nobody} >= {"mine", ""}
        assert server.counters()["lookups_ignored"] == 2


def test_other_systems_hold_slots(server):
    # (tasks last 5 s: the first must still hold its slot when the second comes, on a busy machine)
    server.configure(max_parallel=3, foreign_slots=2, latency=5.0)
    first = post(server, "/text-to-video/kling-3.0", newer_body("a"))
    second = post(server, "/text-to-video/kling-3.0", newer_body("b"))
    assert first.json()["code"] == 0 and second.json()["code"] == 1303
    running = [t for t in server.tasks() if t["foreign"]]
    assert len(running) == 2 and {t["status"] for t in running} == {"processing"}
    assert server.counters()["foreign_slots"] == 2
    server.configure(foreign_slots=0)  # the other system's jobs end
    assert post(server, "/text-to-video/kling-3.0", newer_body("b")).json()["code"] == 0


def test_a_newer_design_create_repeated_under_its_key_adopts_the_first_task(server):
    """The answer to a create was lost and the row is sent again under the same key: the server
    refuses the duplicate external id and the client adopts the task it already has."""
    kling = provider(server, api_key=SimConfig.api_key)
    row = VideoRequest.model_validate({"prompt": "a heron", "model": "kling-3.0"},
                                      context={"rules": kling.rules()})

    async def go() -> tuple[TaskStatus, TaskStatus]:
        async with kling:
            first = await kling.submit(row, "heron-1")
            async with provider(server, api_key=SimConfig.api_key) as fresh:  # a new process
                fresh.check([row])
                return first, await fresh.submit(row, "heron-1")

    first, again = run(go())
    assert again.task_id == first.task_id and again.idempotency_key == "heron-1"
    counters = server.counters()
    assert (counters["accepted"], counters["duplicates"], counters["paid_duplicates"]) == (1, 1, 0)
