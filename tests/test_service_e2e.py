"""Service mode end to end: a real redis-server, the API on loopback, worker processes, and the
project's Kling-compatible server (its own process), with faults, a worker killed with SIGKILL,
a worker stopped with SIGTERM, and Redis itself killed and restarted on its AOF.

The invariants: every accepted request ends completed or failed with a reason; nothing is paid
twice (the server counts tasks with the same content); the account's parallel-task limit holds
across all workers (the server would allow more, and counts its peak); every request's webhook
reaches the receiver (signed, one delivery id per request).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from outputs_server import OutputsServer
from outputs_server import running as running_receiver
from service_fixtures import (
    LOOPBACK_ALLOWED,
    ApiHandle,
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
from videobatch.delivery.webhooks import verify_signature
from videobatch.request import VideoRequest
from videobatch.service.queue import RedisSource, enqueue_fields
from videobatch.service.records import Keys, new_job_fields
from videobatch.service.slots import RedisSlots
from videobatch.service.store import RedisStore
from videobatch.testing import running_server

pytestmark = needs_redis

ACCOUNT_LIMIT = 5
SECRET = "whsec-test-0123456789"
FAULTS = "rate_limit=0.01,server_error=0.02,lost=0.04,garbage=0.02,lost_500=0.02,fail=0.04"
TERMINAL = ("completed", "failed")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def api(redis_server: RedisServer) -> Iterator[ApiHandle]:
    # the workers here drive Kling; the webhook receivers are on loopback: allowed for these tests
    with running_api(redis_server.url, provider="kling", allow=(LOOPBACK_ALLOWED,)) as handle:
        yield handle


def statuses(client: httpx.Client, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {rid: client.get(f"/api/v1/videos/{rid}").json() for rid in ids}


def wait_all_ended(client: httpx.Client, server: RedisServer, ids: list[str],
                   timeout: float) -> dict[str, dict[str, Any]]:
    """Wait (watching Redis, which is cheap) until every request ended; then read them all
    through the API."""
    wait_until(lambda: all(s in TERMINAL for s in redis_statuses(server, ids)), timeout,
               f"{len(ids)} requests to end", every=0.2)
    return statuses(client, ids)


def pending_by_consumer(server: RedisServer) -> dict[str, int]:
    r = server.client()
    try:
        return {c["name"]: int(c["pending"]) for c in r.xinfo_consumers("vb:queue", "workers")}
    except redis.exceptions.ResponseError:  # no worker made the group yet
        return {}
    finally:
        r.close()


def consumer_name(pid: int) -> str:
    return f"{socket.gethostname()}-{pid}"


def webhooks_by_request(receiver: OutputsServer) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = defaultdict(list)
    for hook in receiver.seen("POST", "/hooks/"):
        try:
            payload = json.loads(hook.body)
        except ValueError:  # cut short: its worker was killed mid-send (another sends it again)
            continue
        if hook.status == 200:
            seen[payload["request_id"]].append(hook)
    return seen


def check_signed(hook: Any) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in hook.headers.items()}
    assert verify_signature(SECRET, hook.body, headers["x-videobatch-timestamp"],
                            headers["x-videobatch-signature"])
    payload: dict[str, Any] = json.loads(hook.body)
    assert payload["delivery_id"] == headers["x-videobatch-delivery"]
    return payload


def test_two_hundred_requests_three_workers_one_killed(api, redis_server, tmp_path):
    """The issue's main check: 200 requests, a fault mix, a worker SIGKILLed mid-run."""
    blocked, marked = {11, 97, 150}, {23, 131}
    with running_server(process=True, latency=0.25, jitter=0.3, max_parallel=2 * ACCOUNT_LIMIT,
                        faults=FAULTS, seed=7) as kling, \
            running_receiver() as receiver, api.client() as client:
        argv = worker_argv(redis_server.url, kling, account_limit=ACCOUNT_LIMIT, lease=2.0)
        env = worker_env(VIDEOBATCH_WEBHOOK_SECRET=SECRET, VIDEOBATCH_SERVICE_ALLOW=LOOPBACK_ALLOWED)
        with workers([argv] * 3, tmp_path, env) as running:
            ids: list[str] = []
            for i in range(200):
                prompt = f"scene {i}: a lighthouse at dusk"
                prompt += " [blocked]" if i in blocked else " [fail]" if i in marked else ""
                answer = client.post("/api/v1/videos", json={
                    "prompt": prompt, "duration": 5, "model": "kling-v2.6",
                    "webhook_url": receiver.hook_url("videos"), "metadata": {"n": i}})
                assert answer.status_code == 202, answer.text
                ids.append(answer.json()["request_id"])

            # Kill -9 a worker that holds requests, once a good part of the run is done.
            wait_until(lambda: sum(s in TERMINAL for s in redis_statuses(redis_server, ids)) >= 60,
                       60, "60 requests to end")
            held = pending_by_consumer(redis_server)
            victim = max(running, key=lambda w: held.get(consumer_name(w.pid), 0))
            assert held.get(consumer_name(victim.pid), 0) > 0, held
            victim.kill9()

            final = wait_all_ended(client, redis_server, ids, timeout=120)
            for worker in running:
                if worker is not victim:
                    assert worker.proc.poll() is None, worker.log()[-3000:]
            logs = "".join(w.log() for w in running if w is not victim)
            assert "taking over request" in logs
            wait_until(lambda: len(webhooks_by_request(receiver)) >= 200, 60, "every webhook")
            hooks = webhooks_by_request(receiver)
        counters = kling.counters()

    # Every request ended, failures with reasons.
    failed = {i for i, rid in enumerate(ids) if final[rid]["status"] == "failed"}
    assert blocked | marked <= failed
    for i, rid in enumerate(ids):
        view = final[rid]
        if view["status"] == "completed":
            assert view["video_url"].startswith(kling.url) and view["task_id"]
        else:
            assert view["error"] and view["error_kind"], view
        if i in blocked:
            assert view["error_kind"] == "rejected" and "content" in view["error"].lower()
    # Never paid twice; never above the account's limit though the server allows twice as much.
    assert counters["accepted"] == 200 - len(blocked)
    assert counters["paid_duplicates"] == 0, counters
    assert counters["peak_parallel"] <= ACCOUNT_LIMIT, counters
    assert counters["rejected"].get("parallel_limit", 0) == 0, counters
    assert sum(counters["faults_injected"].values()) >= 10  # the fault mix really happened
    # One notification per request, signed, saying how it ended.
    assert set(hooks) == set(ids)
    for rid, got in hooks.items():
        assert len({h.headers["X-Videobatch-Delivery"] for h in got}) == 1, rid
        payload = check_signed(got[0])
        assert payload["status"] == final[rid]["status"]
        assert payload["video_url"] == final[rid]["video_url"]
        assert payload["metadata"] == {"n": ids.index(rid)}


def test_redis_killed_and_restarted_loses_no_accepted_request(api, redis_server, tmp_path):
    accepted: list[str] = []
    refused = 0
    stop = threading.Event()
    killed = threading.Event()

    def submit() -> None:
        nonlocal refused
        with api.client() as client:
            for i in range(100):
                if i == 60:  # the last 40 go out during the outage, however slow this machine is
                    killed.wait(60)
                if stop.is_set():
                    return
                try:
                    answer = client.post("/api/v1/videos", json={"prompt": f"harbour {i} at night"})
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code == 202:
                    accepted.append(answer.json()["request_id"])
                else:
                    assert answer is None or answer.status_code == 503, answer.text
                    refused += 1
                time.sleep(0.03)

    with running_server(process=True, latency=0.3, jitter=0.2, max_parallel=2 * ACCOUNT_LIMIT) as kling, \
            api.client() as client:
        argv = worker_argv(redis_server.url, kling, account_limit=ACCOUNT_LIMIT, lease=5.0)
        with workers([argv] * 2, tmp_path, worker_env()) as running:
            submitter = threading.Thread(target=submit)
            submitter.start()
            try:
                # Kill Redis while requests are being submitted, generated and accepted.
                wait_until(lambda: sum(s in TERMINAL for s in redis_statuses(redis_server, accepted[:20]))
                           >= 10, 30, "10 requests to end")
                redis_server.kill()  # no shutdown save: only the AOF (fsync always) survives
                killed.set()
                time.sleep(1.0)
                redis_server.start()
            finally:
                submitter.join(60)
                stop.set()
            final = wait_all_ended(client, redis_server, accepted, timeout=90)
            for worker in running:
                assert worker.proc.poll() is None, worker.log()[-3000:]  # rode out the outage
        counters = kling.counters()

    assert len(accepted) + refused == 100 and len(accepted) >= 60 and refused >= 1, (len(accepted), refused)
    assert all(final[rid]["status"] == "completed" for rid in accepted), final
    assert counters["accepted"] == len(accepted)  # each accepted request paid exactly once
    assert counters["paid_duplicates"] == 0
    assert counters["peak_parallel"] <= ACCOUNT_LIMIT


def test_sigterm_hands_in_flight_requests_over_at_once(api, redis_server, tmp_path):
    """A worker stopped gracefully does not make its requests wait for the lease (60 s here: it is
    renewed every third of it, so a request that waited for it would end >= 40 s after the stop)."""
    with running_server(process=True, latency=1.0, jitter=0.1, max_parallel=8) as kling, \
            api.client() as client:
        argv = worker_argv(redis_server.url, kling, account_limit=4, lease=60.0)
        with workers([argv], tmp_path, worker_env()) as (first,):
            ids = [client.post("/api/v1/videos", json={"prompt": f"desert {i}"}).json()["request_id"]
                   for i in range(8)]
            wait_until(lambda: pending_by_consumer(redis_server).get(consumer_name(first.pid), 0) >= 4,
                       30, "the first worker to take requests")
            wait_until(lambda: any(v["status"] == "generating" for v in statuses(client, ids).values()),
                       30, "a request in flight")
            stopped = time.monotonic()
            assert first.stop() == 0, first.log()[-3000:]
            (tmp_path / "second").mkdir()
            with workers([argv], tmp_path / "second", worker_env()) as (second,):
                final = wait_all_ended(client, redis_server, ids, timeout=38)
                # (a few seconds in a quiet machine; the bound leaves room for a loaded one)
                assert time.monotonic() - stopped < 38  # before any lease could have run out
                assert "taking over request" in second.log()
        counters = kling.counters()
    assert all(v["status"] == "completed" for v in final.values())
    assert counters["accepted"] == 8 and counters["paid_duplicates"] == 0


def test_a_webhook_owed_by_a_dead_worker_is_sent_by_another(api, redis_server, tmp_path):
    """The worker dies after its requests ended but before their webhooks were answered."""
    with running_server(process=True, latency=0.2, max_parallel=4) as kling, \
            running_receiver() as receiver, api.client() as client:
        receiver.state.hook_stall = 3.0  # every delivery hangs 3 s before the answer
        argv = worker_argv(redis_server.url, kling, account_limit=4, lease=2.0)
        env = worker_env(VIDEOBATCH_WEBHOOK_SECRET=SECRET, VIDEOBATCH_SERVICE_ALLOW=LOOPBACK_ALLOWED)
        with workers([argv], tmp_path, env) as (first,):
            ids = [client.post("/api/v1/videos", json={
                "prompt": f"orchard {i}", "webhook_url": receiver.hook_url()}).json()["request_id"]
                for i in range(4)]
            wait_all_ended(client, redis_server, ids, timeout=30)
            first.kill9()  # its deliveries are still waiting for the receiver's answer
        assert all(v["webhook_status"] is None for v in statuses(client, ids).values())
        (tmp_path / "second").mkdir()
        with workers([argv], tmp_path / "second", env):
            wait_until(lambda: all(v["webhook_status"] == "delivered"
                                   for v in statuses(client, ids).values()), 30,
                       "the second worker to deliver the owed webhooks")
            r = redis_server.client()
            wait_until(lambda: r.xpending("vb:queue", "workers")["pending"] == 0, 10,
                       "the entries to be acknowledged")
            r.close()
        hooks = webhooks_by_request(receiver)
        counters = kling.counters()
    assert set(hooks) == set(ids)
    for got in hooks.values():
        assert len({h.headers["X-Videobatch-Delivery"] for h in got}) == 1  # receivers de-duplicate
        assert check_signed(got[-1])["status"] == "completed"
    assert counters["accepted"] == 4 and counters["paid_duplicates"] == 0


def test_slot_leases_hold_the_account_limit_across_workers_and_a_redis_restart(redis_server):
    """The shared slot set directly: two 'workers' share 3 slots; a freed slot wakes a waiter;
    a slot freed while Redis is down is given back once it returns, not when its lease expires."""

    async def scenario() -> None:
        clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(3)]
        a, b, c = (RedisSlots(cl, "vb:slots", limit=3, ceiling=3, lease=30.0) for cl in clients)
        jobs = [Job(key=f"r{i}", index=i, request=VideoRequest(prompt="x")) for i in range(5)]
        try:
            await a.acquire(jobs[0])
            await a.acquire(jobs[1])
            await b.acquire(jobs[2])
            waiting = asyncio.create_task(b.acquire(jobs[3]))
            await asyncio.sleep(0.6)
            assert not waiting.done()  # 3 of 3 taken, whichever worker asks
            started = time.monotonic()
            await a.release(jobs[0])
            await asyncio.wait_for(waiting, 2)
            assert time.monotonic() - started < 0.6  # seen within one wait tick

            # A worker taking over r3 (its first worker died) keeps r3's slot though all are taken.
            await asyncio.wait_for(c.acquire(jobs[3]), 1)

            redis_server.kill()
            await a.release(jobs[1])  # Redis is away: the slot cannot be given back yet
            redis_server.start()
            check = redis.Redis.from_url(redis_server.url)
            deadline = time.monotonic() + 3
            while check.zscore("vb:slots", "r1") is not None:
                assert time.monotonic() < deadline, "a freed slot stayed taken after Redis returned"
                await asyncio.sleep(0.1)
            assert {m.decode() for m in check.zrange("vb:slots", 0, -1)} == {"r2", "r3"}
            check.close()
        finally:
            for slots in (a, b, c):
                await slots.aclose()
            for cl in clients:
                await cl.aclose()

    asyncio.run(scenario())


def test_an_expired_lease_behind_many_live_ones_is_taken_over(redis_server):
    """XAUTOCLAIM scans a few pending entries per call: the source must go on scanning, or a dead
    worker's request queued behind many live ones would wait until those end."""

    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        keys = Keys()
        source = RedisSource(client, keys, "taker", lease=1.0, block=0.05)
        try:
            await source.setup()
            ids = [f"req{i:02d}" for i in range(26)]
            for rid in ids:
                await client.hset(keys.job(rid), mapping=new_job_fields(rid, VideoRequest(prompt=rid)))
                await client.xadd(keys.queue, enqueue_fields(rid))
            await client.xreadgroup(keys.group, "live", {keys.queue: ">"}, count=25)
            await client.xreadgroup(keys.group, "dead", {keys.queue: ">"}, count=1)
            await asyncio.sleep(1.2)  # every lease ran out; the live worker renews its own:
            live = [e["message_id"] for e in await client.xpending_range(
                keys.queue, keys.group, min="-", max="+", count=100, consumername="live")]
            await client.xclaim(keys.queue, keys.group, "live", 0, live, justid=True)
            job = await asyncio.wait_for(source.next(), 5)
            assert job is not None and job.key == "req25"
            await source.done(job)  # not ended, not stopping: left to its lease
        finally:
            source.stop()
            await source.aclose()
            await client.aclose()

    asyncio.run(scenario())


def test_a_stale_worker_cannot_overwrite_a_finished_request(redis_server):
    """A worker that lost its lease (and still drives the request) writes after the new owner
    finished it: the final state stays; annotations and an explicit retry still go through."""
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys()
    client.hset(keys.job("r1"), mapping=new_job_fields("r1", VideoRequest(prompt="x")))

    async def scenario() -> None:
        async_client = aioredis.Redis.from_url(redis_server.url)
        store = RedisStore(async_client, keys, run_id="run")
        store.append({"k": "r1", "s": "completed", "video_url": "https://v/1.mp4", "t": 1.0})
        store.append({"k": "r1", "s": "generating", "task_id": "stale", "t": 2.0})  # the stale writer
        store.append({"k": "r1", "x": {"webhook_status": "delivered"}, "t": 3.0})
        await store.durable()
        job = client.hgetall(keys.job("r1"))
        assert job[b"status"] == b"completed" and job[b"video_url"] == b"https://v/1.mp4"
        assert b"stale" not in job.values() and job[b"x:webhook_status"] == b'"delivered"'
        store.append({"k": "r1", "s": "pending", "generation": 1, "t": 4.0})  # an explicit retry
        await store.durable()
        assert client.hget(keys.job("r1"), "status") == b"pending"
        store.append({"k": "ghost", "s": "failed", "t": 5.0})  # never creates a request
        await store.aclose()
        assert not client.exists(keys.job("ghost"))
        await async_client.aclose()

    asyncio.run(scenario())
    client.close()
