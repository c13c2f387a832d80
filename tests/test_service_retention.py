"""Job records expire (issue 13, item 7): a request's record is kept ``retention`` after it ended
(default 30 days), its batch after its last row ended; a retried request is kept again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from service_fixtures import needs_redis
from videobatch.errors import ConfigError
from videobatch.request import VideoRequest
from videobatch.service.records import Keys, new_job_fields, retention_from_env
from videobatch.service.store import RedisStore
from videobatch.service.worker import WorkerSettings

pytestmark = needs_redis

DAY = 86400


def _ttls(client: redis.Redis, *keys: str) -> list[int]:
    return [int(client.ttl(k)) for k in keys]


def _store(redis_server, keys: Keys, retention: float) -> tuple[redis.Redis, Any]:
    """A blocking client to look, and ``write(*records)``: the store's appends, once stored."""
    client = redis.Redis.from_url(redis_server.url)

    def write(*records: dict[str, Any]) -> None:
        async def scenario() -> None:
            async_client = aioredis.Redis.from_url(redis_server.url)
            store = RedisStore(async_client, keys, run_id="run", retention=retention)
            for record in records:
                store.append(record)
            await store.aclose()
            await async_client.aclose()
        asyncio.run(scenario())

    return client, write


def test_a_record_expires_after_its_request_ended_and_a_batch_after_its_last_row(redis_server):
    keys = Keys("ret:")
    client, write = _store(redis_server, keys, retention=100)
    batch = [keys.batch("b1"), keys.batch_ids("b1")]
    client.hset(batch[0], mapping={"total": 2})
    client.rpush(batch[1], "r1", "r2")
    for rid in ("r1", "r2"):
        client.hset(keys.job(rid), mapping=new_job_fields(rid, VideoRequest(prompt="x"), batch_id="b1"))
    r1, r2 = keys.job("r1"), keys.job("r2")
    try:
        write({"k": "r1", "s": "generating", "task_id": "t1", "t": 1.0},
              {"k": "r2", "s": "generating", "task_id": "t2", "t": 1.0})
        assert _ttls(client, r1, r2, *batch) == [-1] * 4  # nothing expires while running
        write({"k": "r1", "s": "completed", "video_url": "https://v/1.mp4", "t": 2.0})
        assert 90 < client.ttl(r1) <= 100 and client.ttl(r2) == -1
        write({"k": "r2", "x": {"webhook_status": "pending"}, "t": 2.5},  # an annotation
              {"k": "r2", "s": "failed", "error": "refused", "t": 3.0})
        assert all(90 < ttl <= 100 for ttl in _ttls(client, r1, r2, *batch))  # all of it, now
        write({"k": "r2", "s": "pending", "generation": 1, "t": 4.0})  # a retry: kept again
        assert _ttls(client, r2, *batch) == [-1, -1, -1] and 90 < client.ttl(r1) <= 100
    finally:
        client.delete(r1, r2, *batch)
        client.close()


def test_retention_zero_keeps_records_forever(redis_server):
    keys = Keys("ret0:")
    client, write = _store(redis_server, keys, retention=0)
    client.hset(keys.job("r1"), mapping=new_job_fields("r1", VideoRequest(prompt="x")))
    try:
        write({"k": "r1", "s": "completed", "video_url": "https://v/1.mp4", "t": 1.0})
        assert client.hget(keys.job("r1"), "status") == b"completed"
        assert client.ttl(keys.job("r1")) == -1
    finally:
        client.delete(keys.job("r1"))
        client.close()


def test_the_retention_setting(monkeypatch):
    assert WorkerSettings().retention == 30 * DAY
    monkeypatch.delenv("VIDEOBATCH_SERVICE_RETENTION_DAYS", raising=False)
    assert retention_from_env() == 30 * DAY
    monkeypatch.setenv("VIDEOBATCH_SERVICE_RETENTION_DAYS", "0.5")
    assert retention_from_env() == DAY / 2
    monkeypatch.setenv("VIDEOBATCH_SERVICE_RETENTION_DAYS", "0")
    assert retention_from_env() == 0
    for bad in ("-1", "soon", "nan", "inf"):
        monkeypatch.setenv("VIDEOBATCH_SERVICE_RETENTION_DAYS", bad)
        with pytest.raises(ConfigError, match="RETENTION_DAYS"):
            retention_from_env()
