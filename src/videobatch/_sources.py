"""Where a run's workers get their next row: the ``JobSource`` interface and the local queue.

The local runner drives the batch's rows in order (``QueueSource``); service workers share a Redis
stream (``videobatch.service.queue.RedisSource``). The runner sees only this interface.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from ._jobs import Job

__all__ = ["JobSource", "QueueSource"]


class JobSource(Protocol):
    """Where workers get their next row. The local runner uses a queue of the batch's rows; the
    service uses a Redis stream shared by many worker processes."""

    async def next(self) -> Job | None:
        """The next row to drive, or None when there is no more work for this run."""

    async def done(self, job: Job) -> None:
        """The worker is finished with ``job`` (it ended, or the run stops while it is in flight)."""

    def backlog(self) -> int | None:
        """Rows waiting, or None when unknown (then the runner keeps every worker slot busy)."""


class QueueSource:
    """The local job source: the batch's rows in order, and rows queued again by a retry."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        self._queue: deque[Job] = deque(jobs)

    async def next(self) -> Job | None:
        return self._queue.popleft() if self._queue else None

    async def done(self, job: Job) -> None:
        return None

    def backlog(self) -> int | None:
        return len(self._queue)

    def add(self, job: Job) -> None:
        self._queue.append(job)
