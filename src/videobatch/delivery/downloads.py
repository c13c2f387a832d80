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
download never fails the generated row: it is retried with backoff, then reported in
``download_error`` and left for ``python -m videobatch download CHECKPOINT DIR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import pandas as pd

from .._events import Event
from .._inputs import Prompts
from .._jobs import Job, State
from .._pacing import backoff
from .._store import Checkpoint, LoadedCheckpoint, load
from ..errors import ConfigError, VideobatchError
from .thumbnails import poster_frame
from .transfer import DownloadError, check_container, fetch_video

__all__ = ["DownloadError", "DownloadSummary", "Downloader", "download_missing", "reopen"]

log = logging.getLogger("videobatch")

DEFAULT_TEMPLATE = "{key}"
_VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".m4v")
_UNSAFE = re.compile(r"[^\w.\- ]+")


class Annotator(Protocol):
    """Where outcomes are recorded: ``videobatch._runner.RunContext`` during a run."""

    def annotate(self, job: Job, **extras: Any) -> None: ...


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


class Downloader:
    """An observer that downloads each completed row's video into ``directory``.

    ``name_template``: file name from row columns, e.g. ``"{team}/{key}"`` (default ``"{key}"``);
    fields are the input columns of ``frame`` plus ``key``, ``index`` (0-based) and ``row``
    (1-based); the video's extension is added. ``client``: an ``httpx.AsyncClient`` to use (the
    seam for tests); by default one is made per run and closed at the end. ``thumbnails``: write a
    poster PNG per clip into ``<directory>/thumbnails``.
    """

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
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"download concurrency must be at least 1, got {concurrency}")
        if max_attempts < 1:
            raise ConfigError(f"download max_attempts must be at least 1, got {max_attempts}")
        self.directory = Path(directory).expanduser().absolute()
        self.template = name_template or DEFAULT_TEMPLATE
        self.frame = frame
        self._check_template()
        self._unique = "key" in self._fields()  # names cannot collide across rows
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.thumbnails = thumbnails
        self.summary = DownloadSummary()
        self._given_client = client
        self._client: httpx.AsyncClient | None = None
        self._sink: Annotator | None = None
        self._gate: asyncio.Semaphore | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._claimed: dict[str, str] = {}  # relative file name -> row key

    def __repr__(self) -> str:
        return f"<Downloader {str(self.directory)!r} concurrency={self.concurrency}>"

    # ------------------------------------------------------------------ observer protocol
    def bind(self, context: Annotator) -> None:
        """Called by the runner before the run starts (on its event loop)."""
        self._sink = context
        self._gate = asyncio.Semaphore(self.concurrency)
        self._tasks = {}
        self.directory.mkdir(parents=True, exist_ok=True)
        # Rows completed in an earlier run whose file is missing (when the context lists its jobs).
        for job in getattr(context, "jobs", None) or ():
            if job.state is State.COMPLETED and not self.on_disk(job):
                self.schedule(job)

    def __call__(self, event: Event) -> None:
        if event.kind == "transition" and event.new is State.COMPLETED and event.job is not None:
            self.schedule(event.job)

    async def drain(self, cancelled: bool) -> None:
        """Wait for downloads in flight; when cancelled, abandon them (their ``.part`` stays)."""
        try:
            while self._tasks:
                tasks = list(self._tasks.values())
                if cancelled:
                    for task in tasks:
                        task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self._client is not None and self._client is not self._given_client:
                await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ scheduling
    def schedule(self, job: Job) -> asyncio.Task[None] | None:
        """Start downloading ``job``'s video in the background (once per row at a time)."""
        if job.video_url is None or job.key in self._tasks:
            return None
        task = asyncio.get_running_loop().create_task(self._run_one(job),
                                                      name=f"videobatch-download-{job.key}")
        self._tasks[job.key] = task
        task.add_done_callback(functools.partial(self._forget, job.key))
        return task

    def _forget(self, key: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    def on_disk(self, job: Job) -> bool:
        """True when the row's recorded file exists in this directory with its recorded size."""
        recorded, size = job.extras.get("local_path"), job.extras.get("bytes")
        if not recorded or size is None:
            return False
        path = Path(recorded)
        try:
            return path.parent.is_relative_to(self.directory) and path.stat().st_size == size
        except OSError:
            return False

    async def _run_one(self, job: Job) -> None:
        try:
            await self._download(job)
        except VideobatchError as exc:  # e.g. the name template does not fit this row
            self._record_failure(job, str(exc))
        except Exception as exc:  # a bug here must not take the run down
            log.exception("row %s: download crashed", job.key)
            self._record_failure(job, f"download crashed: {exc!r}")

    # ------------------------------------------------------------------ one row
    def target(self, job: Job) -> Path:
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

    async def _download(self, job: Job) -> None:
        url = job.video_url
        assert url is not None
        if await asyncio.to_thread(self._intact, job):
            self.summary.skipped.append(job.key)
            thumb = job.extras.get("thumbnail")
            if self.thumbnails and not (thumb and await asyncio.to_thread(os.path.exists, thumb)):
                self._annotate(job, thumbnail=await self._thumbnail(job, Path(job.extras["local_path"])))
            return
        if job.expires_at is not None and time.time() > job.expires_at:
            self.summary.expired.append(job.key)
        dest = self.target(job)
        client = self._http()
        assert self._gate is not None, "Downloader.bind() was not called"
        failures = 0
        while True:
            try:
                async with self._gate:  # held per attempt, not while backing off
                    result = await fetch_video(client, url, dest)
                break
            except DownloadError as exc:
                failures += 1
                message = self._explain(job, exc)
                if exc.permanent or failures >= self.max_attempts:
                    self._record_failure(job, message if exc.permanent else
                                         f"gave up after {failures} attempts: {message}; "
                                         "`python -m videobatch download CHECKPOINT DIR` tries again")
                    return
                delay = backoff(failures, base=self.backoff_base, cap=self.backoff_cap,
                                retry_after=exc.retry_after)
                log.info("row %s: %s; retrying the download in %.1fs", job.key, message, delay)
                await asyncio.sleep(delay)
        extras: dict[str, Any] = {"local_path": str(result.path), "bytes": result.size,
                                  "sha256": result.sha256, "download_error": None}
        if self.thumbnails:
            extras["thumbnail"] = await self._thumbnail(job, result.path)
        self._annotate(job, **extras)
        self.summary.downloaded.append(job.key)

    def _intact(self, job: Job) -> bool:
        if not self.on_disk(job):
            return False
        try:
            check_container(Path(job.extras["local_path"]))
        except DownloadError:
            return False
        return True

    async def _thumbnail(self, job: Job, video: Path) -> str | None:
        png = self.directory / "thumbnails" / video.relative_to(self.directory).with_suffix(".png")
        try:
            await asyncio.to_thread(poster_frame, video, png)
        except Exception as exc:  # a missing poster never costs the video
            log.warning("row %s: no thumbnail for %s: %s", job.key, video, exc)
            return None
        return str(png)

    def _explain(self, job: Job, exc: DownloadError) -> str:
        text = str(exc)
        if job.expires_at is not None and time.time() > job.expires_at and exc.permanent:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(job.expires_at))
            text += (f" (the provider's URL expired {when}: this video can no longer be "
                     "downloaded; generate the row again to get a new one)")
        return text

    def _record_failure(self, job: Job, message: str) -> None:
        log.warning("row %s: download failed: %s", job.key, message)
        self.summary.failed.append((job.key, message))
        self._annotate(job, local_path=None, bytes=None, sha256=None, download_error=message)

    def _annotate(self, job: Job, **extras: Any) -> None:
        if self._sink is not None:
            self._sink.annotate(job, **extras)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._given_client or httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                follow_redirects=True,
                limits=httpx.Limits(max_connections=self.concurrency),
            )
        return self._client

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

    def _values(self, job: Job) -> Mapping[str, Any]:
        values: dict[str, Any] = {}
        if self.frame is not None and job.index < len(self.frame):
            row = self.frame.iloc[job.index]
            values = {str(k): ("" if _missing(v) else v) for k, v in row.items()}
        values.update(key=job.key, index=job.index, row=job.index + 1)
        return {k: (_safe(v) if isinstance(v, str) else v) for k, v in values.items()}

    def _render_name(self, job: Job) -> str:
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

    def __init__(self, store: Checkpoint) -> None:
        self.store = store

    def annotate(self, job: Job, **extras: Any) -> None:
        self.store.append(job.annotate(**extras))


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
                            backoff_base=backoff_base, thumbnails=thumbnails)
    cancelled = True
    try:
        downloader.bind(_StoreSink(store))
        for job in loaded.jobs:
            if job.state is State.COMPLETED:
                downloader.schedule(job)
        await downloader.drain(cancelled=False)
        cancelled = False
    finally:
        if cancelled:  # interrupted (Ctrl-C): abandon transfers, keep what was recorded
            with contextlib.suppress(Exception):
                await asyncio.shield(downloader.drain(cancelled=True))
        await asyncio.shield(store.close(loaded.jobs))
    return downloader.summary
