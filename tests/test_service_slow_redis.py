"""A worker whose Redis stops answering keeps its event loop running (async Redis everywhere).

The worker talks to a real redis-server through ``HoldingProxy``, a TCP proxy that can hold
Redis's answers (the worker's commands still reach Redis). While the answers are held, a request
ends at the provider: the worker records its end (``RedisStore``), gives its slot back and waits
for the answers, and a heartbeat task on the worker's loop must go on ticking meanwhile. With a
blocking Redis call on the loop (as the store once made) the worker never gets as far as giving
the slot back, and the heartbeat stops for the whole hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from service_fixtures import AK, FAST, SK, needs_redis, queue_directly, wait_until
from videobatch.request import VideoRequest
from videobatch.service.worker import WorkerSettings, run_worker
from videobatch.testing import running_server

pytestmark = needs_redis

HOLD = 2.0  # seconds the answers stay held after the worker sent a request's end
MAX_GAP = 0.75  # the longest the worker's loop may go without running the heartbeat


class HoldingProxy:
    """A loopback TCP proxy to Redis; while ``held`` is set, Redis's answers wait in the proxy.
    ``seen``: when a command carrying ``marker`` first went up while the answers were held."""

    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.held = threading.Event()
        self.seen: float | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    @contextlib.contextmanager
    def running(self) -> Iterator[HoldingProxy]:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._connection, "127.0.0.1", 0), self._loop).result(10)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.held.clear()
            server.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def up() -> None:
            while data := await reader.read(1 << 16):
                if self.held.is_set() and self.seen is None and self.marker in data:
                    self.seen = time.monotonic()
                up_writer.write(data)
                await up_writer.drain()

        async def down() -> None:
            while data := await up_reader.read(1 << 16):
                while self.held.is_set():
                    await asyncio.sleep(0.005)
                writer.write(data)
                await writer.drain()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(up(), down())
        for w in (writer, up_writer):
            w.close()


def test_the_loop_runs_on_while_redis_holds_its_answers(redis_server, monkeypatch):
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    r = redis_server.client()
    with running_server(latency=1.0, jitter=0.0) as kling, \
            HoldingProxy(redis_server.port, b"ZREM").running() as proxy:
        ids = ["slow-1", "slow-2"]
        for rid in ids:
            queue_directly(r, rid, VideoRequest(prompt=f"{rid} fox"))
        settings = WorkerSettings(redis_url=f"redis://127.0.0.1:{proxy.port}/0", provider="kling",
                                  provider_options={"base_url": kling.url, **FAST},
                                  account_limit=2, lease=30.0)
        ticks: list[float] = []
        loop_and_stop: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        failure: list[BaseException] = []

        async def main() -> None:
            stop = asyncio.Event()
            loop_and_stop.append((asyncio.get_running_loop(), stop))

            async def heartbeat() -> None:
                while True:
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            beat = asyncio.create_task(heartbeat())
            try:
                await run_worker(settings, stop=stop)
            finally:
                beat.cancel()

        def thread() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # shown by the test
                failure.append(exc)

        worker = threading.Thread(target=thread, daemon=True, name="worker")
        worker.start()
        try:
            wait_until(lambda: all(r.hget(f"vb:job:{rid}", "status") == "generating" for rid in ids),
                       30, "both requests to be generating")
            proxy.held.set()  # from now on Redis answers nothing (the tasks end in about 1 s)
            # A slot is given back (ZREM) right after the request's end was appended to the store.
            wait_until(lambda: proxy.seen is not None, 20, "the worker to free a slot")
            assert proxy.seen is not None
            time.sleep(HOLD)
            window = [t for t in ticks if proxy.seen <= t <= proxy.seen + HOLD]
            proxy.held.clear()
            gaps = [b - a for a, b in itertools.pairwise(window)]
            assert len(window) > HOLD / 0.05, f"{len(window)} heartbeats in {HOLD} s while Redis was held"
            assert max(gaps) < MAX_GAP, f"the loop stalled {max(gaps):.2f} s while Redis was held"
            # Released: the ends are stored and the queue entries acknowledged.
            wait_until(lambda: all(r.hget(f"vb:job:{rid}", "status") == "completed" for rid in ids),
                       30, "both requests to be completed")
            wait_until(lambda: r.xlen("vb:queue") == 0, 30, "the queue entries to be acknowledged")
        finally:
            proxy.held.clear()
            if loop_and_stop:
                loop, stop = loop_and_stop[0]
                loop.call_soon_threadsafe(stop.set)
            worker.join(30)
            r.close()
        assert not worker.is_alive() and not failure, failure
        assert kling.counters()["paid_duplicates"] == 0


@pytest.fixture(autouse=True)
def _fresh_keys(redis_server):
    r = redis_server.client()
    r.flushall()
    r.close()
