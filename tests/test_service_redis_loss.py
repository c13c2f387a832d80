"""A Redis that loses its data (issue 13, item 6): restarted without persistence mid-run, no worker
crashes, nothing is submitted for a request whose record is gone, nothing is paid twice, the
account's slot limit holds while the lease set is reborn; a Redis without persistence (or one that
refuses CONFIG) is reported at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from service_fixtures import (
    RedisServer,
    needs_redis,
    redis_statuses,
    running_api,
    running_redis,
    wait_until,
    worker_argv,
    worker_env,
    workers,
)
from videobatch._jobs import Job
from videobatch.request import VideoRequest
from videobatch.service.queue import RedisSource, enqueue_fields
from videobatch.service.records import Keys, new_job_fields
from videobatch.service.redis_loss import acheck_persistence
from videobatch.service.slots import RedisSlots
from videobatch.testing import running_server

pytestmark = needs_redis

LIMIT = 3


@pytest.fixture
def volatile(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis without any persistence: a restart starts empty."""
    with running_redis(tmp_path / "volatile", persistent=False) as server:
        yield server


def _post(client: httpx.Client, prompt: str) -> str:
    """Create a request, riding out the moments Redis is still coming back (503)."""
    def attempt() -> str | None:
        try:
            answer = client.post("/api/v1/videos", json={"prompt": prompt})
        except httpx.HTTPError:
            return None
        return answer.json()["request_id"] if answer.status_code == 202 else None
    return str(wait_until(attempt, 30, f"the API to accept {prompt!r}", every=0.2))


def test_redis_restarted_empty_mid_run(volatile, tmp_path):
    with running_server(process=True, latency=2.5, jitter=0.1, max_parallel=3 * LIMIT) as kling, \
            running_api(volatile.url, provider="kling") as api, api.client() as client:
        argv = worker_argv(volatile.url, kling, account_limit=LIMIT, lease=2.0)
        with workers([argv] * 3, tmp_path, worker_env()) as running:
            wait_until(lambda: all(" ready: " in w.log() for w in running), 60, "the workers")
            before = [_post(client, f"lighthouse {i}") for i in range(20)]
            # every slot busy, and each worker holding more requests that wait for one
            wait_until(lambda: redis_statuses(volatile, before).count("generating") >= LIMIT, 30,
                       "the account's slots to fill")
            volatile.kill()
            time.sleep(0.5)  # submits already sent arrive at the server; no new one can be recorded
            paid_before = kling.counters()["accepted"]
            volatile.start()  # empty: the records, the queue, the slot leases are gone
            after = [_post(client, f"harbour {i}") for i in range(8)]
            wait_until(lambda: all(s in ("completed", "failed") for s in redis_statuses(volatile, after)),
                       90, "the requests made after the restart to end")
            assert redis_statuses(volatile, after) == ["completed"] * len(after)
            time.sleep(1.0)  # what the workers still held from before has had its chance to go wrong
            logs = []
            for worker in running:
                assert worker.proc.poll() is None, worker.log()[-3000:]  # no worker crashed
                logs.append(worker.log())
            # what the workers held when Redis lost it is written again from their copies: paid
            # tasks with their results, the others failed unpaid with the reason; the rest is gone
            answers = [client.get(f"/api/v1/videos/{rid}") for rid in before]
        counters = kling.counters()

    text = "\n".join(logs)
    kinds = {"gone": 0, "completed": 0, "refused": 0}
    for answer in answers:
        if answer.status_code == 404:
            kinds["gone"] += 1
            continue
        view = answer.json()
        if view["status"] == "completed":
            kinds["completed"] += 1
            assert view["video_url"], view
        else:
            assert view["status"] == "failed" and "record is gone" in view["error"], view
            kinds["refused"] += 1
    assert kinds["gone"] and kinds["completed"] >= 1 and kinds["refused"] >= 1, kinds
    assert "consumer group is gone" in text  # NOGROUP met, and the group recreated
    assert "NOT submitting" in text  # requests held in memory whose record was gone: refused
    assert "Traceback" not in text, text[-5000:]
    # nothing was submitted for a request whose record is gone: only the new ones were paid since
    assert counters["accepted"] == paid_before + len(after), (counters, paid_before)
    assert counters["paid_duplicates"] == 0
    assert counters["peak_parallel"] <= LIMIT, counters
    assert all(peak <= LIMIT for peak in counters["peak_per_model"].values()), counters


def test_reborn_slot_leases_are_reasserted_before_anyone_takes_a_new_one(redis_server):
    async def scenario() -> None:
        clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(2)]
        a, b = (RedisSlots(cl, "loss:slots", limit=LIMIT, ceiling=LIMIT, lease=1.5, max_wait=0.05)
                for cl in clients)
        jobs = [Job(key=f"r{i}", index=i, request=VideoRequest(prompt="x")) for i in range(5)]
        check = redis.Redis.from_url(redis_server.url)
        try:
            await asyncio.wait_for(a.setup(), 5)
            await asyncio.wait_for(b.setup(), 5)
            for job in jobs[:LIMIT]:  # a holds every slot; its tasks run at the provider
                await asyncio.wait_for(a.acquire(job), 5)
            check.delete("loss:slots", "loss:slots:epoch")  # Redis lost its data
            waiting = asyncio.create_task(b.acquire(jobs[LIMIT]))
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:  # b waits, a's leases come back: never over
                assert check.zcard("loss:slots") <= LIMIT
                await asyncio.sleep(0.02)
            assert not waiting.done()
            assert {m.decode() for m in check.zrange("loss:slots", 0, -1)} == {"r0", "r1", "r2"}
            await asyncio.wait_for(a.release(jobs[0]), 5)
            await asyncio.wait_for(waiting, 2)  # a freed slot is taken again
            assert check.zcard("loss:slots") == LIMIT
        finally:
            for slots in (a, b):
                await slots.aclose()
            for cl in clients:
                await cl.aclose()
            check.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_the_queue_recreates_its_group_and_drops_entries_without_a_record(redis_server, caplog):
    keys = Keys("lossq:")

    async def scenario() -> list[str]:
        client = aioredis.Redis.from_url(redis_server.url)
        source = RedisSource(client, keys, "c1", lease=5.0, block=0.1)
        reasserted: list[bool] = []

        async def on_loss() -> None:
            reasserted.append(True)

        source.on_loss = on_loss
        try:
            await source.setup()
            await client.delete(keys.queue)  # the stream and its group, gone as after a restart
            orphan, real = "a" * 32, "b" * 32
            await client.xadd(keys.queue, enqueue_fields(orphan))  # a record that was lost
            await client.hset(keys.job(real), mapping=new_job_fields(real, VideoRequest(prompt="x")))
            await client.xadd(keys.queue, enqueue_fields(real))
            job = await asyncio.wait_for(source.next(), 5)
            assert job is not None and job.key == real and reasserted
            assert await client.xlen(keys.queue) == 1  # the orphan's entry acknowledged and deleted
            return [job.key]
        finally:
            await source.aclose()
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="videobatch.service"):
        assert asyncio.run(scenario()) == ["b" * 32]
    assert "consumer group is gone" in caplog.text
    assert "whose record is gone" in caplog.text


def test_persistence_is_checked_at_start_up(redis_server, volatile, caplog):
    async def check(server: RedisServer, **auth: str) -> str | None:
        client = aioredis.Redis(port=server.port, **auth)
        try:
            return await acheck_persistence(client)
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="videobatch.service"):
        assert asyncio.run(check(redis_server)) is None
        assert "no persistence" in (asyncio.run(check(volatile)) or "")
        admin = volatile.client()
        try:
            admin.execute_command("ACL", "SETUSER", "app", "on", ">app-pw", "~*", "+@all", "-config")
        finally:
            admin.close()
        assert "could not check" in (asyncio.run(check(volatile, username="app", password="app-pw"))
                                     or "")
    assert "no persistence" in caplog.text and "could not check" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videobatch.service"), running_api(volatile.url):
        pass  # the API says it too, when it starts
    assert "no persistence" in caplog.text
