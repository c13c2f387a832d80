"""Remember each finished clip in the result cache (``videobatch._cache``), so a later run with the
same request takes it instead of paying again (``reuse=True`` / ``--reuse``; ``videobatch._reuse``).

``CacheWriter`` is a background observer of the run's events, like the downloads: when a row
completes it queues an entry (the URL, its expiry, the cost, provider, model, the checkpoint and
row), and when the downloads record the saved file (``local_path``) it queues the entry again with
the file. Entries are written in batches on a thread, off the event loop; ``drain`` writes what is
left before the final snapshot. Rows that were themselves reused are not written back. A failing
write (a full disk) is logged and never touches the run: the cache is a saving, the checkpoint
keeps the results.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._cache import Entry, ResultCache
from .._events import Event, Observer
from .._fleet import Providers
from .._jobs import Job, RowSnapshot, State
from .._reuse import Keys, find, open_cache, take
from .._settings import RunSettings
from .._store import Store
from ..request import VideoRequest

__all__ = ["CacheWriter", "Reuse"]

log = logging.getLogger("videobatch")


class Reuse:
    """A batch's use of the result cache, in one place for ``Batch``: opened with the batch
    (``videobatch._reuse.open_cache``: refused before paying when it cannot be written), it
    completes the rows it holds when a run starts (``take``), says which and what they save for a
    plan (``saved``), and remembers what the run finishes (``observers``: a ``CacheWriter``).
    Without ``reuse`` it does nothing."""

    def __init__(self, cache: ResultCache | None) -> None:
        self.cache = cache

    @classmethod
    def open(cls, reuse: bool, directory: str | os.PathLike[str] | None, *, dry_run: bool,
             notes: list[str]) -> Reuse:
        return cls(open_cache(reuse, directory, dry_run=dry_run, notes=notes))

    def observers(self, providers: Providers, store: Store) -> list[Observer]:
        if self.cache is None:
            return []
        where = store.location
        return [CacheWriter(self.cache, providers,
                            checkpoint=None if where is None else str(Path(where).absolute()))]

    def take(self, jobs: Sequence[Job], providers: Providers, settings: RunSettings,
             store: Store) -> None:
        if self.cache is not None:
            take(jobs, providers, settings, self.cache, store)

    def saved(self, jobs: Sequence[Job], providers: Providers,
              settings: RunSettings) -> dict[str, float | None] | None:
        """The rows a run would take from the cache now, and what each would have cost."""
        if self.cache is None:
            return None
        return {key: hit.saved for key, hit in find(jobs, providers, settings, self.cache).items()}


class CacheWriter:
    """Writes finished rows of one run into ``cache`` (see the module docstring). ``providers``:
    the run's, to key each row by the request its task was made from; ``checkpoint``: where the
    run keeps its rows (None: it keeps none), recorded as the entries' source."""

    def __init__(self, cache: ResultCache, providers: Providers, *, checkpoint: str | None) -> None:
        self.cache = cache
        self.providers = providers
        self.checkpoint = checkpoint
        self.written = 0  # entries written so far (for tests and logs)
        self._run_id = ""
        self._queue: list[RowSnapshot] = []
        self._flushing: asyncio.Task[None] | None = None
        self._keys = Keys()

    def __repr__(self) -> str:
        return f"<CacheWriter {str(self.cache.path)!r}>"

    def bind(self, context: Any) -> None:
        self._run_id = str(context.run_id)

    def __call__(self, event: Event) -> None:
        row = event.row
        if row is None or row.state is not State.COMPLETED or "reused_from" in row.extras:
            return
        finished = event.kind == "transition" and event.new is State.COMPLETED
        saved = event.kind == "annotate" and row.extras.get("local_path") and row.extras.get("bytes")
        if not (finished or saved):
            return
        self._queue.append(row)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush(),
                                                                    name="videobatch-cache")

    async def drain(self, cancelled: bool) -> None:
        """Write what is queued (also after a cancel: these rows are finished and paid)."""
        while self._flushing is not None and not self._flushing.done():
            await asyncio.shield(self._flushing)
        if self._queue:
            await self._flush()

    async def _flush(self) -> None:
        while self._queue:
            rows, self._queue = self._queue, []
            try:
                await asyncio.to_thread(self._write, rows)
            except (OSError, sqlite3.Error) as exc:  # a full disk, a folder gone: the run goes on
                log.warning("the result cache %s could not be written (%s); %d row(s) not "
                            "remembered for reuse", self.cache.path, exc, len(rows))
            except Exception:  # a bug here must not cost the run its results either
                log.exception("remembering %d row(s) in the result cache failed", len(rows))

    def _write(self, rows: list[RowSnapshot]) -> None:
        entries = [e for e in map(self._entry, rows) if e is not None]
        self.cache.put(entries)
        self.written += len(entries)

    def _entry(self, row: RowSnapshot) -> Entry | None:
        """``row``'s entry, keyed by the request its task was made from (None: not keyable)."""
        if not row.video_url or row.provider_used is None:
            return None
        request = self._sent(row)
        if request is None:
            return None
        key = self._keys.key(self.providers.get(row.provider_used), request)
        if key is None:
            return None
        size = row.extras.get("bytes")
        return Entry(key=key, provider=row.provider_used, model=row.model_used,
                     video_url=row.video_url, video_id=row.video_id,
                     video_duration=row.video_duration, expires_at=row.expires_at,
                     local_path=row.extras.get("local_path") if size else None,
                     bytes=int(size) if size else None, cost=row.cost_estimated,
                     checkpoint=self.checkpoint, row_key=row.key, run_id=self._run_id,
                     task_id=row.task_id, completed_at=row.completed_at, written_at=time.time())

    def _sent(self, row: RowSnapshot) -> VideoRequest | None:
        """The request ``row``'s task was made from: its own, or the fallback that took it."""
        for request in (row.request, *self.providers.fallbacks.get(row.key, ())):
            provider = self.providers.get(request.provider)
            if provider.name == row.provider_used and (
                    row.model_used is None or provider.resolve(request).model == row.model_used):
                return request
        return None
