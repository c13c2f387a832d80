"""max_rps on the wire: the Kling test server on loopback records when each API request arrives.

One provider call may send many requests (``status_many``: list pages of both kinds, then single
GETs that may try two endpoints; ``find``: one lookup per kind). Whatever the calls, the requests
the server receives in any stretch of ``t`` seconds stay within the token bucket's bound,
``burst + rate * t`` (plus one request of slack for loopback jitter under a shared GIL).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from videobatch._pacing import RateLimiter
from videobatch.providers import TaskStatus
from videobatch.providers.kling.client import KlingProvider
from videobatch.request import VideoRequest
from videobatch.testing import KlingApp, SimConfig

AK, SK = SimConfig.access_key, SimConfig.secret_key
RATE = 5.0


class Recorder:
    """ASGI middleware: the arrival time, method, path and query of every ``/v1/`` request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[tuple[float, str, str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            self.seen.append((time.monotonic(), scope["method"], scope["path"],
                              scope["query_string"].decode()))
        await self.app(scope, receive, send)


class CountingLimiter(RateLimiter):
    def __init__(self, rate: float, burst: float) -> None:
        super().__init__(rate, burst)
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, Recorder]]:
    recorder = Recorder(KlingApp(SimConfig(latency=0.05, jitter=0.0, max_parallel=100)).app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(recorder, log_level="critical", access_log=False,
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # The account: 6 text-to-video and 9 image-to-video tasks, made without any rate limit.
    maker = KlingProvider(base_url=url, access_key=AK, secret_key=SK, max_rps=None, timeout=5)

    async def make_tasks() -> None:
        async with maker:
            for i in range(6):
                await maker.submit(VideoRequest(prompt=f"text {i}"), f"text-{i}")
            for i in range(9):
                await maker.submit(VideoRequest(prompt=f"image {i}", image="https://img.test/a.jpg"),
                                   f"image-{i}")

    asyncio.run(make_tasks())
    try:
        yield url, recorder
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def worst_excess(stamps: list[float], rate: float, burst: float) -> float:
    """How far the busiest stretch of arrivals goes beyond ``burst + rate * t`` (<= 0: within)."""
    stamps = sorted(stamps)
    return max(((j - i + 1) - (burst + rate * (stamps[j] - stamps[i]))
                for i, j in itertools.combinations_with_replacement(range(len(stamps)), 2)),
               default=0.0)


def provider_after_restart(url: str) -> KlingProvider:
    # A fresh provider knows no task's kind (as after a crash): status_many reads list pages of
    # both kinds, then single GETs try text2video before image2video.
    return KlingProvider(base_url=url, access_key=AK, secret_key=SK, max_rps=RATE, timeout=5,
                         page_size=2, list_threshold=3)


async def poll_everything(kling: KlingProvider, ids: list[str]) -> tuple[Any, Any]:
    async with kling:
        return await asyncio.gather(kling.status_many(ids), kling.find("image-4"))


def task_ids(url: str) -> list[str]:
    async def ids() -> list[str]:
        async with KlingProvider(base_url=url, access_key=AK, secret_key=SK, max_rps=None) as k:
            found = [await k.find(f"text-{i}") for i in range(6)]
            found += [await k.find(f"image-{i}") for i in range(9)]
        return [s.task_id for s in found if s is not None]

    return asyncio.run(ids())


def check_wire(recorder: Recorder, answers: Any, found: Any, ids: list[str], burst: float) -> None:
    assert all(isinstance(answers[t], TaskStatus) for t in ids)
    assert found is not None and found.idempotency_key == "image-4"
    seen = recorder.seen
    pages = [s for s in seen if "pageNum=" in s[3]]
    singles_missed = [s for s in seen if s[2].startswith("/v1/videos/text2video/")]
    lookups = [s for s in seen if "external_task_id=" in s[3]]
    assert len({s[2] for s in pages}) == 2 and len(pages) >= 4  # several pages of both kinds
    assert singles_missed  # single GETs, some of them trying the wrong kind first
    assert len(lookups) == 2  # find tried text2video, then image2video
    excess = worst_excess([s[0] for s in seen], RATE, burst)
    assert excess <= 1.0, f"{len(seen)} requests broke the token bucket by {excess:.1f}"


def test_a_shared_limiter_bounds_every_request_the_server_receives(served):
    url, recorder = served
    ids = task_ids(url)
    assert len(ids) == 15
    kling = provider_after_restart(url)
    limiter = CountingLimiter(RATE, burst=2)
    kling.attach(limiter)  # what the runner does once per run
    recorder.seen.clear()
    answers, found = asyncio.run(poll_everything(kling, ids))
    check_wire(recorder, answers, found, ids, limiter.burst)
    assert limiter.acquired == len(recorder.seen)  # one token per request on the wire, no more


def test_a_provider_on_its_own_paces_with_its_own_max_rps(served):
    url, recorder = served
    ids = task_ids(url)
    kling = provider_after_restart(url)
    recorder.seen.clear()
    answers, found = asyncio.run(poll_everything(kling, ids))
    check_wire(recorder, answers, found, ids, burst=max(1.0, RATE))
