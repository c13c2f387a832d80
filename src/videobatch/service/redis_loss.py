"""A Redis that loses its data (restarted without persistence): said loudly at start-up, and no
paid request without its record.

Run Redis with ``appendonly yes``: then a restart keeps every request. Without persistence a
restart empties it: the requests accepted before are gone (their clients get 404), and the
workers must neither crash nor pay for work no one can read back. What each part does:

- ``acheck_persistence``: at start-up (worker and API), ``CONFIG GET appendonly`` / ``save``; a
  warning when neither is on, another when ``CONFIG`` is refused (managed Redis: not checked).
- ``RecordGate``: right before a paid submit, the worker checks the request's record is still
  in Redis; if not, the submit is refused (the row fails unpaid; its queue entry is dropped).
- the store writes the end of a request whose record is gone on the copy the worker took
  (``RedisSource.remembered``): a paid result, or the refusal, reaches its client after all.
- the queue (``queue.RedisSource``) recreates its consumer group on ``NOGROUP``; the slots
  (``slots.RedisSlots``) notice that their lease set was reborn and re-assert the leases the
  worker holds before anyone takes a new slot.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from .._gate import Gate
from .._jobs import Job
from .._retry import RetryState
from ..request import VideoRequest
from .queue import REDIS_OUTAGE
from .records import UNAVAILABLE, Keys

__all__ = ["RecordGate", "acheck_persistence", "persistence_problem"]

log = logging.getLogger("videobatch.service")


def persistence_problem(appendonly: str | None, save: str | None) -> str | None:
    """What is wrong with a Redis whose ``appendonly`` and ``save`` settings are these, or None."""
    if (appendonly or "").strip().lower() == "yes" or (save or "").strip():
        return None
    return ("Redis has no persistence (appendonly no, save \"\"): a Redis restart loses every "
            "request, batch and result it holds (clients then get 404 for them). Run it with "
            "appendonly yes (appendfsync everysec or always); see the README's 'Deploying'.")


def _report(settings: dict[Any, Any] | None, error: Exception | None) -> str | None:
    if error is not None:
        message = (f"could not check Redis's persistence (CONFIG GET refused: {error}); make "
                   "sure it runs with appendonly yes, or a restart loses every request")
        log.warning(message)
        return message
    settings = {_text(k): _text(v) for k, v in (settings or {}).items()}
    problem = persistence_problem(settings.get("appendonly"), settings.get("save"))
    if problem:
        log.warning("!!! %s", problem)
    return problem


async def acheck_persistence(client: aioredis.Redis) -> str | None:
    """Log (and return) a warning when Redis would lose its data on a restart."""
    try:
        settings = {**await client.config_get("appendonly"), **await client.config_get("save")}
    except ResponseError as exc:
        return _report(None, exc)
    return _report(settings, None)


class RecordGate(Gate):
    """The worker's run gate (``videobatch._gate``) for Redis loss: a request whose record is no
    longer in Redis is not submitted (the row fails unpaid), checked right before it leaves."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys

    async def refusal(self, job: Job, request: VideoRequest) -> str | None:
        if await _exists(self.client, self.keys.job(job.key)):
            return None
        log.error("!!! request %s: its record is gone from Redis (did Redis lose its data?); "
                  "NOT submitting it (nothing paid); its queue entry is dropped", job.key)
        return ("the request's record is gone from the service's Redis (Redis lost its data); "
                "nothing was submitted: send the request again")


async def _exists(client: aioredis.Redis, key: str) -> bool:
    """Whether ``key`` exists; while Redis is away this waits for it (no submit meanwhile)."""
    outage = RetryState(REDIS_OUTAGE)
    while True:
        try:
            return bool(await client.exists(key))
        except UNAVAILABLE:
            await outage.sleep(outage.failed() or 0.0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
