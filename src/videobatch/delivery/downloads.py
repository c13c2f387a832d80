"""Get each finished clip onto disk, verified, once: a run observer and the ``download`` command's engine.

``Downloader`` watches a run: when a row completes it schedules a streamed download on the running
loop, with its own concurrency limit (separate from the provider's slots), so files arrive while
the batch goes on. ``download_missing`` does the same afterwards for a stored checkpoint.

Each file goes to ``<dir>/<name>.part`` and is renamed onto ``<dir>/<name>`` only after it is
verified (HTTP status, byte count against Content-Length, a readable video container, see
``videobatch.delivery.transfer``), so nothing half-written ever sits under the final name. An interrupted
``.part`` is resumed with an HTTP Range request when the server allows it, else restarted. A row
whose recorded file (``local_path``, ``bytes``) is still on disk and intact is not fetched again.

Outcomes join the results through ``RunContext.annotate``: ``local_path``, ``bytes``, ``sha256``,
``thumbnail`` (a poster PNG, see ``videobatch.delivery.thumbnails``) and ``download_error``. A failed
download never fails the generated row: it is retried under the one retry policy
(``videobatch._retry``), then reported in ``download_error`` and left for
``python -m videobatch download CHECKPOINT DIR``. The observer skeleton (binding, background tasks,
concurrency, catching up, draining) is ``videobatch.delivery._observer.BackgroundObserver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import string
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import pandas as pd

from .._inputs import Prompts
from .._jobs import Job, RowSnapshot, State
from .._retry import RetryPolicy, RetryState
from .._store import Checkpoint, LoadedCheckpoint, load
from ..errors import ConfigError, VideobatchError
from ._observer import Annotator, BackgroundObserver, retry_policy
from .thumbnails import poster_frame
from .transfer import DownloadError, check_container, fetch_video

__all__ = ["DownloadError", "DownloadSummary", "Downloader", "download_missing", "reopen"]

log = logging.getLogger("videobatch")

DEFAULT_TEMPLATE = "{key}"
_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".m4v")
_UNSAFE = re.compile(r"[^\w.\- ]+")


@dataclass
class DownloadSummary:
    """What ``download_missing`` (or one Downloader) did."""

    downloaded: list[str] = field(default_factory=list)  # row keys fetched now
    skipped: list[str] = field(default_factory=list)  # already on disk and intact
    failed: list[tuple[str, str]] = field(default_factory=list)  # (row key, reason)
    expired: list[str] = field(default_factory=list)  # rows whose URL was past expires_at

    @property
    def ok(self) -> bool:
        return not self.failed


def _safe(text: str) -> str:
    """One path component: no separators, no leading dots, nothing a filesystem dislikes."""
    cleaned = _UNSAFE.sub("_", text.replace("/", "_").replace("\\", "_")).strip(" .")
    return cleaned[:120] or "_"


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, DownloadError) and not exc.permanent


class Downloader(BackgroundObserver[Annotator]):
    """An observer that downloads each completed row's video into ``directory``.

    ``name_template``: file name from row columns, e.g. ``"{team}/{key}"`` (default ``"{key}"``);
    fields are the input columns of ``frame`` plus ``key``, ``index`` (0-based) and ``row``
    (1-based); the video's extension is added. ``client``: an ``httpx.AsyncClient`` to use (the
    seam for tests); by default one is made per run and closed at the end. ``thumbnails``: write a
    poster PNG per clip into ``<directory>/thumbnails``. ``retry``: the retry policy of one
    download (default: ``max_attempts`` tries, waits from ``backoff_base`` doubling to ``backoff_cap``).
    """

    states: ClassVar[frozenset[State]] = frozenset({State.COMPLETED})
    noun: ClassVar[str] = "download"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        name_template: str | None = None,
        frame: pd.DataFrame | None = None,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 4,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        timeout: float = 60.0,
        thumbnails: bool = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency, client=client, retry=retry_policy(
            retry, attempts=max_attempts, base=backoff_base, cap=backoff_cap, what="download"))
        self.directory = Path(directory).expanduser().absolute()
        self.template = name_template or DEFAULT_TEMPLATE
        self.frame = frame
        self._check_template()
        self._unique = "key" in self._fields()  # names cannot collide across rows
        self.timeout = timeout
        self.thumbnails = thumbnails
        self.summary = DownloadSummary()
        self._claimed: dict[str, str] = {}  # relative file name -> row key

    def __repr__(self) -> str:
        return f"<Downloader {str(self.directory)!r} concurrency={self.concurrency}>"

    # ------------------------------------------------------------------ the observer's parts
    def bind(self, context: Annotator) -> None:
        """Called by the runner before the run starts (on its event loop)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        super().bind(context)

    def owed(self, job: RowSnapshot) -> bool:
        return not self.on_disk(job)  # completed in an earlier run, its file missing

    def work(self, job: RowSnapshot) -> Coroutine[Any, Any, None] | None:
        if job.video_url is None or self.running(job) is not None:
            return None  # once per row at a time
        return self._run_one(job)

    def crashed(self, job: RowSnapshot, message: str) -> None:
        self._record_failure(job, message)

    def new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
            follow_redirects=True,
            limits=httpx.Limits(max_connections=self.concurrency),
        )

    # ------------------------------------------------------------------ one row
    def on_disk(self, job: RowSnapshot) -> bool:
        """True when the row's recorded file exists in this directory with its recorded size."""
        recorded, size = job.extras.get("local_path"), job.extras.get("bytes")
        if not recorded or size is None:
            return False
        path = Path(recorded)
        try:
            return path.parent.is_relative_to(self.directory) and path.stat().st_size == size
        except OSError:
            return False

    async def _run_one(self, job: RowSnapshot) -> None:
        try:
            await self._download(job)
        except VideobatchError as exc:  # e.g. the name template does not fit this row
            self._record_failure(job, str(exc))

    def target(self, job: RowSnapshot) -> Path:
        """The final path of ``job``'s video (stable for a row once recorded)."""
        recorded = job.extras.get("local_path")
        if recorded and Path(recorded).parent.is_relative_to(self.directory):
            return Path(recorded)
        relative = self._render_name(job)
        owner = self._claimed.setdefault(relative, job.key)
        # Two rows rendering to one name keep both files, distinguishably. Without {key} in the
        # template, a file already there (from another row in an earlier run) is not overwritten.
        taken = owner != job.key or (not self._unique and (self.directory / relative).exists())
        if taken:
            stem, suffix = os.path.splitext(relative)
            relative = f"{stem}-{_safe(job.key)}{suffix}"
            self._claimed[relative] = job.key
        return self.directory / relative

    async def _download(self, job: RowSnapshot) -> None:
        url = job.video_url
        assert url is not None
        if await asyncio.to_thread(self._intact, job):
            self.summary.skipped.append(job.key)
            thumb = job.extras.get("thumbnail")
            if self.thumbnails and not (thumb and await asyncio.to_thread(os.path.exists, thumb)):
                self.record(job, thumbnail=await self._thumbnail(job, Path(job.extras["local_path"])))
            return
        if job.expires_at is not None and time.time() > job.expires_at:
            self.summary.expired.append(job.key)
        dest = self.target(job)
        client = self.http()
        tries = RetryState(self.retry)

        def retrying(failures: int, exc: Exception, delay: float) -> None:
            log.info("row %s: %s; retrying the download in %.1fs", job.key, self._explain(job, exc), delay)

        try:
            result = await self.attempt(lambda: fetch_video(client, url, dest), retry_on=_retryable,
                                        state=tries, on_retry=retrying)
        except DownloadError as exc:
            message = self._explain(job, exc)
            self._record_failure(job, message if exc.permanent else
                                 f"gave up after {tries.failures} attempts: {message}; "
                                 "`python -m videobatch download CHECKPOINT DIR` tries again")
            return
        extras: dict[str, Any] = {"local_path": str(result.path), "bytes": result.size,
                                  "sha256": result.sha256, "download_error": None}
        if self.thumbnails:
            extras["thumbnail"] = await self._thumbnail(job, result.path)
        self.record(job, **extras)
        self.summary.downloaded.append(job.key)

    def _intact(self, job: RowSnapshot) -> bool:
        if not self.on_disk(job):
            return False
        try:
            check_container(Path(job.extras["local_path"]))
        except DownloadError:
            return False
        return True

    async def _thumbnail(self, job: RowSnapshot, video: Path) -> str | None:
        png = self.directory / "thumbnails" / video.relative_to(self.directory).with_suffix(".png")
        try:
            await asyncio.to_thread(poster_frame, video, png)
        except Exception as exc:  # a missing poster never costs the video
            log.warning("row %s: no thumbnail for %s: %s", job.key, video, exc)
            return None
        return str(png)

    def _explain(self, job: RowSnapshot, exc: Exception) -> str:
        text = str(exc)
        if job.expires_at is not None and time.time() > job.expires_at and getattr(exc, "permanent", False):
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.expires_at))
            text += (f" (the provider's URL expired {when}: this video can no longer be "
                     "downloaded; generate the row again to get a new one)")
        return text

    def _record_failure(self, job: RowSnapshot, message: str) -> None:
        log.warning("row %s: download failed: %s", job.key, message)
        self.summary.failed.append((job.key, message))
        self.record(job, local_path=None, bytes=None, sha256=None, download_error=message)

    # ------------------------------------------------------------------ names
    def _fields(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.template) if name]

    def _check_template(self) -> None:
        try:
            names = self._fields()
        except ValueError as exc:
            raise ConfigError(f"download name template {self.template!r} is malformed: {exc}") from None
        known = {"key", "index", "row"} | ({str(c) for c in self.frame.columns}
                                           if self.frame is not None else set())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"download name template {self.template!r} uses {', '.join(map(repr, unknown))}, "
                f"which is not a column; available: {', '.join(sorted(known))}"
            )

    def _values(self, job: RowSnapshot) -> Mapping[str, Any]:
        values: dict[str, Any] = {}
        if self.frame is not None and job.index < len(self.frame):
            row = self.frame.iloc[job.index]
            values = {str(k): ("" if _missing(v) else v) for k, v in row.items()}
        values.update(key=job.key, index=job.index, row=job.index + 1)
        return {k: (_safe(v) if isinstance(v, str) else v) for k, v in values.items()}

    def _render_name(self, job: RowSnapshot) -> str:
        try:
            text = self.template.format_map(self._values(job))
        except (KeyError, ValueError, IndexError) as exc:
            raise ConfigError(
                f"row {job.key!r}: download name template {self.template!r} failed: {exc}"
            ) from None
        parts = [_safe(p) for p in PurePosixPath(text.replace("\\", "/")).parts if p not in ("/", "..")]
        relative = "/".join(parts) or _safe(job.key)
        if not relative.lower().endswith(_VIDEO_SUFFIXES):
            suffix = PurePosixPath(urlsplit(job.video_url or "").path).suffix.lower()
            relative += suffix if suffix in _VIDEO_SUFFIXES else ".mp4"
        return relative


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


class _StoreSink:
    """Records outcomes straight into a checkpoint's journal (no run in progress)."""

    def __init__(self, store: Checkpoint, jobs: list[Job]) -> None:
        self.store = store
        self.jobs = {job.key: job for job in jobs}

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot:
        job = self.jobs[row.key]
        self.store.append(job.annotate(**extras))
        return job.snapshot()


def reopen(checkpoint: str | os.PathLike[str]) -> tuple[Checkpoint, LoadedCheckpoint]:
    """An existing checkpoint opened for appending records, without the original input.

    Raises ``CheckpointError`` when it is missing or unreadable.
    """
    loaded = load(checkpoint)
    prompts = Prompts(frame=loaded.frame, requests=[j.request for j in loaded.jobs],
                      keys=[j.key for j in loaded.jobs], source=str(checkpoint))
    store, jobs = Checkpoint.open(checkpoint, prompts, settings=loaded.meta.get("settings", {}))
    loaded.jobs = jobs
    return store, loaded


async def download_missing(
    checkpoint: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    concurrency: int = 4,
    name_template: str | None = None,
    client: httpx.AsyncClient | None = None,
    max_attempts: int = 4,
    backoff_base: float = 1.0,
    thumbnails: bool = True,
    retry: RetryPolicy | None = None,
) -> DownloadSummary:
    """Download every completed row of ``checkpoint`` whose video is not in ``directory`` yet.

    Outcomes (``local_path``, ``bytes``, ``sha256``, ``thumbnail``, ``download_error``) are written
    to the checkpoint, so ``videobatch.results(checkpoint)`` shows them. Rows whose URL is past
    ``expires_at`` are still tried and listed in ``summary.expired``. Do not run this while a run
    is writing to the same checkpoint. Raises ``CheckpointError`` for a missing/unreadable one.
    """
    store, loaded = reopen(checkpoint)
    downloader = Downloader(directory, concurrency=concurrency, name_template=name_template,
                            frame=loaded.frame, client=client, max_attempts=max_attempts,
                            backoff_base=backoff_base, thumbnails=thumbnails, retry=retry)
    cancelled = True
    try:
        downloader.bind(_StoreSink(store, loaded.jobs))
        for job in loaded.jobs:
            if job.state is State.COMPLETED:
                downloader.schedule(job.snapshot())
        await downloader.drain(cancelled=False)
        cancelled = False
    finally:
        if cancelled:  # interrupted (Ctrl-C): abandon transfers, keep what was recorded
            with contextlib.suppress(Exception):
                await asyncio.shield(downloader.drain(cancelled=True))
        await asyncio.shield(store.close(loaded.jobs))
    return downloader.summary
