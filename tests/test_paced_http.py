"""The paced HTTP client from the core: one rate token per request on the wire, 429s slow the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from videobatch._http import PacedTransport, _environment_proxy, default_too_fast, paced_client
from videobatch._pacing import RateLimiter
from videobatch.providers.base import Limits, Provider


class CountingLimiter(RateLimiter):
    """A RateLimiter that counts the tokens taken and the penalties asked for."""

    def __init__(self, rate: float | None = None, burst: float | None = None) -> None:
        super().__init__(rate, burst)
        self.acquired = 0
        self.penalties: list[float] = []

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()

    def penalize(self, seconds: float) -> None:
        self.penalties.append(seconds)
        super().penalize(seconds)


class HttpProvider(Provider):
    name = "http-test"

    def __init__(self, handler: Any, max_rps: float | None = None) -> None:
        self.limits = Limits(max_parallel=2, max_rps=max_rps)
        self.transport = httpx.MockTransport(handler)

    async def submit(self, request: Any, idempotency_key: str) -> Any:
        raise NotImplementedError

    async def status(self, task_id: str) -> Any:
        raise NotImplementedError

    async def find(self, idempotency_key: str) -> Any:
        async with self.http_client(base_url="https://api.test", transport=self.transport) as client:
            for path in ("/a", "/b"):  # a provider that tries two endpoints
                response = await client.get(path, params={"key": idempotency_key})
                if response.status_code == 200:
                    return response.json()
        return None


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200 if request.url.path == "/b" else 404, json={"path": request.url.path})


def test_every_request_takes_a_token_from_the_attached_limiter():
    provider = HttpProvider(ok)
    limiter = CountingLimiter()
    provider.attach(limiter)
    assert asyncio.run(provider.find("k")) == {"path": "/b"}
    assert limiter.acquired == 2  # both endpoints tried: two requests, two tokens


def test_a_redirect_is_one_more_request_and_one_more_token():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old":
            return httpx.Response(302, headers={"Location": "/new"})
        return httpx.Response(200, json={})

    limiter = CountingLimiter()

    async def go() -> int:
        async with paced_client(limiter, transport=httpx.MockTransport(handler),
                                base_url="https://api.test", follow_redirects=True) as client:
            return (await client.get("/old")).status_code

    assert asyncio.run(go()) == 200
    assert limiter.acquired == 2


def test_without_a_limiter_the_provider_paces_at_its_own_max_rps():
    provider = HttpProvider(ok, max_rps=20.0)
    own = provider.limiter()
    assert own.rate == 20.0
    assert provider.limiter() is own  # one bucket, not one per call

    async def six_finds() -> float:
        start = time.monotonic()
        for _ in range(6):
            await provider.find("k")
        return time.monotonic() - start

    took = asyncio.run(six_finds())  # 12 requests, burst 20: free; then a slower rate shows it
    assert took < 5
    provider.limits = Limits(max_parallel=2, max_rps=10.0)
    slow = provider.limiter()
    assert slow is not own and slow.rate == 10.0
    slow._tokens = 0.0  # an empty bucket: 12 requests need 12 refills at 10/s
    assert asyncio.run(six_finds()) >= 1.0
    shared = RateLimiter(None)
    provider.attach(shared)
    assert provider.limiter() is shared
    provider.attach(None)
    assert provider.limiter() is slow


def test_too_fast_answers_penalize_the_limiter_once_each():
    answers = iter([
        httpx.Response(429, headers={"Retry-After": "3"}, json={}),
        httpx.Response(429, json={}),
        httpx.Response(503, headers={"Retry-After": "9"}, json={}),
        httpx.Response(200, json={}),
    ])
    limiter = CountingLimiter()

    async def go() -> list[int]:
        async with paced_client(limiter, transport=httpx.MockTransport(lambda r: next(answers)),
                                base_url="https://api.test") as client:
            return [(await client.get("/x")).status_code for _ in range(4)]

    assert asyncio.run(go()) == [429, 429, 503, 200]
    assert limiter.penalties == [3.0, 1.0]  # a 503 is not "too fast"


def test_a_provider_decides_which_429s_mean_too_fast():
    class Picky(HttpProvider):
        def too_fast(self, response: httpx.Response) -> float | None:
            return 2.0 if response.json().get("code") == 1302 else None

    answers = iter([httpx.Response(429, json={"code": 1303}), httpx.Response(429, json={"code": 1302})])
    provider = Picky(lambda request: next(answers))
    limiter = CountingLimiter()
    provider.attach(limiter)
    assert asyncio.run(provider.find("k")) is None
    assert limiter.penalties == [2.0]


class _Chunks(httpx.AsyncByteStream):
    """A body that arrives in pieces, as off the network (not read in advance)."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def test_a_streamed_429_is_read_for_the_limiter_and_still_readable_by_the_caller():
    stream = _Chunks(b'{"code": 13', b'02, "message": "too fast"}')

    class Network(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(429, headers={"Retry-After": "4", "Content-Type": "application/json"},
                                  stream=stream)

    limiter = CountingLimiter()
    seen: list[Any] = []

    def too_fast(response: httpx.Response) -> float | None:
        seen.append(response.json())
        return default_too_fast(response)

    async def go() -> Any:
        transport = PacedTransport(Network(), limiter, too_fast=too_fast)
        async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
            response = await client.get("/x")
            return response.json(), response.elapsed

    body, elapsed = asyncio.run(go())
    assert body == {"code": 1302, "message": "too fast"}
    assert seen == [body]
    assert elapsed.total_seconds() >= 0  # the answer the caller got is a normal, closed one
    assert stream.closed  # the connection's stream was released
    assert limiter.penalties == [4.0]


def test_the_paced_client_has_no_unpaced_way_out():
    with pytest.raises(TypeError, match="mounts"):
        paced_client(RateLimiter(None), mounts={"all://": httpx.AsyncHTTPTransport()})


def test_the_default_transport_honours_the_proxy_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
                 "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert _environment_proxy("https://api.klingai.com") is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    assert _environment_proxy("https://api.klingai.com") == "http://proxy.corp:3128"
    assert _environment_proxy("http://api.klingai.com") is None
    monkeypatch.setenv("NO_PROXY", "klingai.com")
    assert _environment_proxy("https://api.klingai.com") is None
    assert _environment_proxy("https://other.test") == "http://proxy.corp:3128"
    client = paced_client(RateLimiter(None), base_url="https://other.test")
    asyncio.run(client.aclose())
