"""A service worker: the library's runner fed by the Redis queue, under the account-wide slot limit.

Start any number of them (``python -m videobatch worker``) on any machines that reach the Redis.
Each takes requests from the shared stream, drives them exactly like a local batch (submit with an
idempotency key written to Redis first, poll, record the result), fires the request's webhook, and
acknowledges the entry. What a client sent is checked again here, whatever way it reached Redis:
a row's image must be a URL the address policy allows, a ``data:`` URL or a file of the image
folder (else the row fails, nothing read or paid), and webhooks reach only allowed addresses
(``service.addresses``: each connection checked, no redirect followed).

A Redis without persistence is reported loudly at start (``service.redis_loss``). If it restarts
empty meanwhile, the worker goes on: it recreates the queue's group, re-asserts the service's run id
and its slot leases, and submits nothing whose record is gone.

Every Redis call is made by the asyncio client: a slow or unreachable Redis holds up only the rows
waiting for it, never the polling of every other row (``service.store``).

SIGTERM/SIGINT stop it; requests it had in flight are taken over by another worker once their
lease runs out, and reconciled with the provider, never submitted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis

from .._gate import Gates
from .._jobs import Job, RowSnapshot, State
from .._retry import RetryPolicy, RetryState
from .._runner import Runner, RunOutcome, RunSettings
from ..delivery.webhooks import WebhookNotifier
from ..errors import ConfigError
from ..providers import Provider, get_provider
from . import callbacks
from .addresses import AddressPolicy, guarded_transport
from .images import ImageGate, ImageRules
from .queue import RedisSource
from .records import RETENTION_DAYS, UNAVAILABLE, Keys, apatiently, decode_hash, ensure_run_id
from .redis_loss import RecordGate, acheck_persistence
from .slots import RedisSlots
from .store import RedisStore

__all__ = ["WorkerSettings", "run_worker"]

log = logging.getLogger("videobatch.service")


@dataclass
class WorkerSettings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "vb:"
    provider: str = "local"
    provider_options: dict[str, Any] = field(default_factory=dict)
    concurrency: int | None = None  # rows this process drives at once (default: the account limit)
    account_limit: int | None = None  # parallel tasks for all workers together (default: provider's)
    lease: float = 30.0  # seconds before a silent worker's requests are taken over
    timeout: float | None = 3600.0
    max_attempts: int = 5
    webhook_secret: str | None = None
    retention: float = RETENTION_DAYS * 86400  # seconds a record is kept after it ended (0: forever)
    image_dir: str | None = None  # the operator's image folder (VIDEOBATCH_SERVICE_IMAGE_DIR)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)  # for webhook and image URLs
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


class _ServiceWebhooks(WebhookNotifier):
    """Webhooks whose URL and metadata come from each request's Redis hash.

    Also the queue's ``EndHooks``: the stream entry of a request is acknowledged only after its
    delivery ends, and a request found ended without its notification (its worker died) gets it.
    """

    def __init__(self, client: aioredis.Redis, keys: Keys, secret: str | None,
                 addresses: AddressPolicy, store: RedisStore) -> None:
        super().__init__(None, secret=secret, url_check=addresses.refusal)
        self._redis = client
        self._keys = keys
        self._addresses = addresses
        self._store = store
        self._deliveries: dict[str, asyncio.Task[None]] = {}

    def new_client(self) -> httpx.AsyncClient:
        """Connections only to addresses the policy allows (checked at connect); no redirects."""
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                 transport=guarded_transport(self._addresses,
                                                             max_connections=self.concurrency))

    def work(self, job: RowSnapshot) -> Coroutine[Any, Any, None] | None:
        return self._notify(job) if self._context is not None else None

    async def _notify(self, job: RowSnapshot) -> None:
        """Read the request's receiver and metadata (asynchronously), then deliver. First the
        request's end must be in Redis: a client told by its webhook reads it back at once."""
        await self._store.durable()
        key = self._keys.job(job.key)
        fields = decode_hash(await apatiently(lambda: self._redis.hgetall(key), f"read {key}", 60.0))
        url = fields.get("webhook_url")
        if not url:
            return
        metadata = json.loads(fields.get("metadata") or "{}")
        row = {"prompt": job.request.prompt, **(metadata if isinstance(metadata, dict) else {})}
        await self.delivery(job, url, row)

    def schedule(self, job: RowSnapshot) -> asyncio.Task[None] | None:
        task = super().schedule(job)
        if task is not None:
            self._deliveries[job.key] = task
            task.add_done_callback(lambda t: self._forget(job.key, t))
        return task

    def _forget(self, key: str, task: asyncio.Task[None]) -> None:
        if self._deliveries.get(key) is task:
            del self._deliveries[key]

    # ------------------------------------------------------------------ EndHooks (live rows)
    def pending(self, job: Job) -> asyncio.Task[None] | None:
        return self._deliveries.get(job.key)

    def catch_up(self, job: Job) -> asyncio.Task[None] | None:
        if job.state not in (State.COMPLETED, State.FAILED):
            return None
        if job.extras.get("webhook_event") == job.state.value:
            return None  # delivered (or given up on) already
        return self.pending(job) or self.schedule(job.snapshot())


async def run_worker(settings: WorkerSettings, *, provider: Provider | None = None,
                     stop: asyncio.Event | None = None) -> RunOutcome:
    """Work until ``stop`` is set (or SIGTERM/SIGINT when running in the main thread)."""
    async_client = aioredis.Redis.from_url(settings.redis_url)
    try:
        return await _run(settings, async_client, provider, stop)
    finally:
        await async_client.aclose()


async def _run(settings: WorkerSettings, async_client: aioredis.Redis, provider: Provider | None,
               stop: asyncio.Event | None) -> RunOutcome:
    keys = Keys(settings.prefix)
    run_id = await apatiently(lambda: ensure_run_id(async_client, keys), "start", 60.0)
    await apatiently(lambda: acheck_persistence(async_client), "check its persistence", 60.0)
    provider = provider or get_provider(settings.provider, **settings.provider_options)
    # Asked by the runner right before every paid submit: images, then the record in Redis.
    gate = Gates(ImageGate(ImageRules(settings.image_dir, settings.addresses)),
                 RecordGate(async_client, keys))
    problems = provider.check([])  # credentials and set-up, before taking any request
    if problems:
        raise ConfigError(f"provider set-up: {'; '.join(map(str, problems))}")
    account_limit = settings.account_limit or provider.limits.max_parallel
    if account_limit != provider.limits.max_parallel:  # the account's limit, as the runner knows it
        provider.limits = dataclasses.replace(provider.limits, max_parallel=account_limit)
    ceiling = min(settings.concurrency or account_limit, account_limit)
    store = RedisStore(async_client, keys, run_id, retention=settings.retention)
    webhooks = _ServiceWebhooks(async_client, keys, settings.webhook_secret, settings.addresses,
                                store)

    async def reassert_run_id() -> None:  # Redis lost it: the idempotency keys must not change
        await async_client.hsetnx(keys.meta, "run_id", run_id)
        if _text(await async_client.hget(keys.meta, "run_id")) != run_id:
            log.error("!!! the service's run id in Redis changed (a worker started while Redis was "
                      "empty?): workers with different run ids cannot reconcile each other's "
                      "requests; restart every worker")

    source = RedisSource(async_client, keys, settings.consumer, lease=settings.lease, hooks=webhooks,
                         on_loss=reassert_run_id)
    slots = RedisSlots(async_client, keys.slots, limit=account_limit, ceiling=ceiling,
                       lease=settings.lease * 1.5)
    await _set_up(source, slots)
    store.remembered = source.remembered  # the end of a request Redis lost is written on a copy
    source.written = store.durable  # an entry is acknowledged only once its request's end is stored
    runner = Runner(
        [], provider, store,
        RunSettings(concurrency=ceiling, timeout=settings.timeout, max_attempts=settings.max_attempts),
        [webhooks], source=source, slots=slots, gate=gate,
    )

    def shut_down() -> None:
        log.info("worker %s stopping; in-flight requests will be taken over", settings.consumer)
        source.stop()
        runner.cancel()

    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, shut_down)
            handled.append(sig)
        except (RuntimeError, ValueError):  # not the main thread
            pass
    watcher = asyncio.create_task(_watch(stop, shut_down)) if stop is not None else None
    heard = asyncio.create_task(callbacks.listen(async_client, keys))  # Kling's callbacks, if any
    log.info("worker %s ready: provider %s, %d of %d account slots", settings.consumer,
             provider.name, ceiling, account_limit)
    try:
        outcome = await runner.run()
        if not source.stopping and outcome.stopped_by is None:
            # Every worker loop ended without being asked to: an error the runner swallowed.
            raise RuntimeError("the worker's loops ended unexpectedly (see the log); restart it")
        return outcome
    finally:
        if watcher is not None:
            watcher.cancel()
        heard.cancel()
        for sig in handled:
            loop.remove_signal_handler(sig)
        await source.aclose()
        await slots.aclose()
        await provider.aclose()
        with contextlib.suppress(Exception):  # (the run's end flushed it; a crash may not have)
            await asyncio.wait_for(store.aclose(), 10.0)


async def _set_up(source: RedisSource, slots: RedisSlots, outage: float = 60.0) -> None:
    """The queue's group and the slots' epoch, waiting (up to ``outage`` s) while Redis is away."""
    tries = RetryState(RetryPolicy(attempts=None, base=0.05, cap=1.0, jitter=0.0, deadline=outage))
    while True:
        try:
            await source.setup()
            await slots.setup()
            return
        except UNAVAILABLE as exc:
            delay = tries.failed()
            if delay is None:
                raise
            log.warning("Redis unavailable (%s); waiting for it to start", exc)
            await tries.sleep(delay)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _watch(stop: asyncio.Event, shut_down: Any) -> None:
    await stop.wait()
    shut_down()
