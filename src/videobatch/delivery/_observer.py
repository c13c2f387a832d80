"""One background-observer base: the skeleton every acting observer (downloads, webhooks) shares.

A ``BackgroundObserver`` binds to the run's context, picks the rows that reach one of its
``states``, and runs the work ``work(row)`` returns as a background task on the run's loop, each
try of it holding one of ``concurrency`` places (``attempt``: the one retry policy, never a place
held while waiting). Outcomes are recorded durably through ``context.annotate`` (``record``). At
``bind`` it catches up on rows that ended in an earlier run but are still ``owed`` work; ``drain``
lets work in flight finish (up to ``drain_timeout``) or, when the run was cancelled, gives it up.
A crash in the work is logged and reported to ``crashed``: it never takes the run down.

A subclass says what it watches (``states``, ``owed``), what one row's work is (``work``) and how
its HTTP client is made (``new_client``); the rest is here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import httpx

from .._events import Event
from .._jobs import RowSnapshot, State
from .._retry import RetryOn, RetryPolicy, RetryState, call
from ..errors import ConfigError

__all__ = ["Annotator", "BackgroundObserver", "retry_policy"]

log = logging.getLogger("videobatch")

T = TypeVar("T")


class Annotator(Protocol):
    """Where outcomes are recorded: ``videobatch._runner.RunContext`` during a run."""

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot: ...


C = TypeVar("C", bound=Annotator)


def retry_policy(retry: RetryPolicy | None, *, attempts: int, base: float, cap: float, what: str) -> RetryPolicy:
    """``retry`` when given, else the policy the older options (max_attempts, backoff_base/cap) describe."""
    if retry is not None:
        return retry
    if attempts < 1:
        raise ConfigError(f"{what} max_attempts must be at least 1, got {attempts}")
    try:
        return RetryPolicy(attempts=attempts, base=base, cap=cap)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


class BackgroundObserver(Generic[C]):
    """Runs one piece of background work per row reaching ``states``; see the module docstring.

    ``concurrency``: tries in flight at once. ``retry``: the policy ``attempt`` applies.
    ``client``: an ``httpx.AsyncClient`` to use (the seam for tests); by default one is made by
    ``new_client`` when first needed and closed by ``drain``. ``drain_timeout``: seconds ``drain``
    waits for work in flight before giving it up (None: as long as it takes).
    """

    states: ClassVar[frozenset[State]]  # the rows whose arrival in one of these starts work
    noun: ClassVar[str]  # "download", "webhook": task names and log lines

    def __init__(self, *, concurrency: int, retry: RetryPolicy, client: httpx.AsyncClient | None = None,
                 drain_timeout: float | None = None) -> None:
        if concurrency < 1:
            raise ConfigError(f"{self.noun} concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self.retry = retry
        self.drain_timeout = drain_timeout
        self._given_client = client
        self._client: httpx.AsyncClient | None = None
        self._context: C | None = None
        self._gate: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._latest: dict[str, asyncio.Task[None]] = {}  # row key -> its newest task

    # ------------------------------------------------------------------ what a subclass says
    def owed(self, row: RowSnapshot) -> bool:
        """At ``bind``: does ``row``, ended in an earlier run, still need this observer's work?"""
        return False

    def work(self, row: RowSnapshot) -> Coroutine[Any, Any, None] | None:
        """The background work for ``row`` (not yet started), or None when there is none."""
        raise NotImplementedError

    def new_client(self) -> httpx.AsyncClient:
        raise NotImplementedError

    def crashed(self, row: RowSnapshot, message: str) -> None:
        """The work for ``row`` raised unexpectedly (already logged): record it if it matters."""

    # ------------------------------------------------------------------ observer protocol
    def bind(self, context: C) -> None:
        """Called by the runner before the run starts (on its event loop)."""
        self._context = context
        self._gate = asyncio.Semaphore(self.concurrency)
        self._tasks, self._latest = set(), {}
        # Rows that ended in an earlier run without this work done (when the context lists rows).
        rows = getattr(context, "rows", None)
        for row in rows(self.states) if rows is not None else ():
            if self.owed(row):
                self.schedule(row)

    def __call__(self, event: Event) -> None:
        if event.kind == "transition" and event.new in self.states and event.row is not None:
            self.schedule(event.row)

    async def drain(self, cancelled: bool) -> None:
        """Wait for work in flight, up to ``drain_timeout``; give up what is left (at once when
        ``cancelled``), then close the client this observer made."""
        loop = asyncio.get_running_loop()
        deadline = None if self.drain_timeout is None else loop.time() + self.drain_timeout
        try:
            while self._tasks:
                pending = set(self._tasks)
                if not cancelled:
                    left = None if deadline is None else max(0.0, deadline - loop.time())
                    _, pending = await asyncio.wait(pending, timeout=left)
                if pending:
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    log.warning("%d %s task(s) abandoned at the end of the run", len(pending), self.noun)
        finally:
            if self._client is not None and self._client is not self._given_client:
                await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ for subclasses
    def schedule(self, row: RowSnapshot) -> asyncio.Task[None] | None:
        """Start ``row``'s work in the background; None when ``work`` says there is none."""
        work = self.work(row)
        if work is None:
            return None
        task = asyncio.get_running_loop().create_task(self._guarded(row, work),
                                                      name=f"videobatch-{self.noun}-{row.key}")
        self._tasks.add(task)
        self._latest[row.key] = task
        task.add_done_callback(lambda done: self._done(row.key, done))
        return task

    def running(self, row: RowSnapshot) -> asyncio.Task[None] | None:
        """``row``'s newest task, while it runs."""
        return self._latest.get(row.key)

    def record(self, row: RowSnapshot, **extras: Any) -> None:
        """Record result columns for ``row`` durably (nothing before ``bind``)."""
        if self._context is not None:
            self._context.annotate(row, **extras)

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._given_client or self.new_client()
        return self._client

    async def attempt(self, fn: Callable[[], Awaitable[T]], *, retry_on: RetryOn, state: RetryState | None = None,
                      on_retry: Callable[[int, Exception, float], None] | None = None) -> T:
        """``await fn()`` under ``self.retry`` (see ``videobatch._retry.call``), each try holding one
        of the ``concurrency`` places; the waits between tries hold none."""
        gate = self._gate
        assert gate is not None, f"{type(self).__name__}.bind() was not called"

        async def gated() -> T:
            async with gate:
                return await fn()

        return await call(state or self.retry, gated, retry_on=retry_on, on_retry=on_retry)

    # ------------------------------------------------------------------ internals
    async def _guarded(self, row: RowSnapshot, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # a bug here must not take the run down
            log.exception("row %s: %s crashed", row.key, self.noun)
            self.crashed(row, f"{self.noun} crashed: {exc!r}")

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._latest.get(key) is task:
            del self._latest[key]
