"""A run's pools: one per provider (per provider and model, where its limit is per model).

Rows go to providers as ``videobatch._fleet.Providers`` says. Each pool has what keeps it full on
its own terms: its slots, its poll schedule, its lookups, its queue of rows and its workers. Every
pool of one provider shares that provider's rate limiter (the account's rate). The runner
(``_runner``) creates pools as rows need them and drives each with its own workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from ._fleet import PoolKey, Providers
from ._gate import OPEN, Gate
from ._jobs import Job, State
from ._pacing import LocalSlots, RateLimiter, SlotPool
from ._poll_schedule import PollSchedule
from ._polling import Poller
from ._reconcile import Reconciler
from ._rows import Rows
from ._settings import RunSettings, Stop
from ._sources import JobSource, QueueSource
from .errors import ProviderError
from .providers.base import Provider

__all__ = ["Pool", "Pools", "slot_range"]


def slot_range(provider: Provider, default: Provider, concurrency: int | None) -> tuple[int, int]:
    """A pool's parallel slots: where they start, and the most they may grow to.

    The user's --concurrency is their statement of the account's limit: it wins over the provider's
    default guess. It is said of the run's provider; the others of a mixed table keep their own
    max_parallel. Where nobody stated a limit, a provider may have the run look for it
    (``probe_up_to``)."""
    if provider is default and concurrency:
        return concurrency, concurrency
    limits = provider.limits
    return limits.max_parallel, max(limits.max_parallel, limits.probe_up_to or 0)


@dataclass(eq=False)
class Pool:
    """One pool's machinery (see the module docstring)."""

    key: PoolKey
    provider: Provider
    ceiling: int
    slots: SlotPool
    poller: Poller
    reconciler: Reconciler
    rows: Rows
    source: JobSource
    workers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        provider, model = self.key
        return provider if model is None else f"{provider}:{model}"

    def alive(self) -> list[asyncio.Task[None]]:
        self.workers = [w for w in self.workers if not w.done()]
        return self.workers


class Pools:
    """The pools of one run by key, opened as rows need them, with one rate limiter per provider
    (every request it sends takes a token on the wire: ``Provider.http_client``)."""

    def __init__(self, providers: Providers, *, settings: RunSettings, stop: Stop,
                 ceiling: Callable[[Provider], tuple[int, int]], slots: SlotPool | None,
                 on_fatal: Callable[[ProviderError], None], make_rows: Callable[..., Rows],
                 gate: Gate = OPEN) -> None:
        self.providers = providers
        self._settings = settings
        self._stop = stop
        self._ceiling = ceiling
        self._shared_slots = slots  # service mode: one pool, slots shared through Redis
        self._on_fatal = on_fatal
        self._make_rows = make_rows
        self._gate = gate
        self._pools: dict[PoolKey, Pool] = {}
        self._limiters: dict[str, RateLimiter] = {}

    def __iter__(self) -> Iterator[Pool]:
        return iter(list(self._pools.values()))

    def open(self, key: PoolKey, provider: Provider, source: JobSource) -> Pool:
        limiter = self._limiters.get(provider.name)
        if limiter is None:
            limiter = self._limiters[provider.name] = RateLimiter(provider.limits.max_rps)
            provider.attach(limiter)
        start, ceiling = self._ceiling(provider)
        slots = self._shared_slots or LocalSlots(ceiling, start)
        hint = provider.poll_hint
        poller = Poller(provider, PollSchedule(hint), on_fatal=self._on_fatal,
                        per_poll=1.0 / hint.polls_per_end)
        reconciler = Reconciler(provider, self._settings.lookup_policy(), stop=self._stop.event,
                                gate=self._gate)
        rows = self._make_rows(provider=provider, slots=slots, poller=poller, reconciler=reconciler)
        pool = self._pools[key] = Pool(key, provider, ceiling, slots, poller, reconciler, rows, source)
        return pool

    def queue(self, job: Job) -> Pool:
        """Put ``job`` in its pool's queue (opening the pool on its first row)."""
        key = self.providers.pool_key(job)
        pool = self._pools.get(key)
        if pool is None:
            pool = self.open(key, self.providers.for_row(job), QueueSource([]))
        source = pool.source
        assert isinstance(source, QueueSource)
        source.add(job)
        return pool

    def workers(self) -> list[asyncio.Task[None]]:
        return [w for pool in self._pools.values() for w in pool.workers]

    def found_limits(self) -> dict[str, int]:
        """Each probing pool's most tasks open at once: what its provider took (the run looked
        for a limit nobody stated), by the tasks' own start and end times."""
        return {p.name: p.rows.most_open for p in self._pools.values()
                if p.provider.limits.probe_up_to and p.ceiling > p.provider.limits.max_parallel}

    @property
    def slots_in_use(self) -> int:
        return sum(p.slots.in_use for p in self._pools.values())

    @property
    def slots_limit(self) -> int:
        return sum(p.slots.limit for p in self._pools.values())

    @property
    def polls(self) -> int:
        return sum(p.poller.polls for p in self._pools.values())

    @property
    def submits(self) -> int:
        return sum(p.rows.submits for p in self._pools.values())

    async def aclose(self) -> None:
        """Stop polling and looking up (the run is finishing)."""
        for pool in self._pools.values():
            await pool.poller.aclose()
            await pool.reconciler.aclose()

    async def cancel_open(self, jobs: Sequence[Job]) -> None:
        """Ask each provider to stop the open tasks of ``jobs`` it has, where it can."""
        by_pool: dict[PoolKey, list[Job]] = {}
        for job in jobs:
            if job.state is State.GENERATING:
                by_pool.setdefault(self.providers.pool_key(job), []).append(job)
        await asyncio.gather(*(self._pools[key].rows.cancel_open(mine)
                               for key, mine in by_pool.items() if key in self._pools))
