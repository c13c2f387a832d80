"""The result cache on disk: one entry per request that completed in any run, so a later run (another
checkpoint, another notebook) can take the clip instead of paying for it again (``_reuse``).

Where it lives: ``reuse_dir=`` / ``--reuse-dir``, else ``$VIDEOBATCH_CACHE_DIR``, else
``$XDG_CACHE_HOME/videobatch`` (``~/.cache/videobatch``); the file is ``results.sqlite3`` there.

Why SQLite (the standard library's ``sqlite3``) in WAL mode: the cache is written by whichever runs
finish rows, possibly two notebooks or processes at the same moment, and read by every run that opens.
A transaction is atomic (a process killed mid-write leaves the previous state, never a torn entry),
writers from several processes are serialised by SQLite's own file locks (``busy_timeout`` waits
for the other one instead of failing), and in WAL mode readers never block the writer nor it them.
A lookup of 100,000 keys is a few indexed queries, not a file read into memory. Plain JSON files
would need our own locking and atomic rewrites; a journal per process would need merging. (Like
every SQLite database in WAL mode it wants a local disk, not a network share.)

An entry holds what a run needs to hand the result out again (the provider's URL and when it
expires, the downloaded file if there is one) and where it came from (checkpoint, row key, run);
its key is a hash of the request as sent (``_reuse.request_key``). No credentials are ever stored.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from .errors import ConfigError

__all__ = ["CACHE_ENV", "Entry", "ResultCache", "default_dir"]

CACHE_ENV = "VIDEOBATCH_CACHE_DIR"
FILE_NAME = "results.sqlite3"
_SCHEMA = 1  # PRAGMA user_version of the layout below
_CHUNK = 500  # keys per lookup query (well under SQLite's limit on bound values)


class Entry(NamedTuple):
    """One completed request and where its clip is (a tuple: 100,000 are read in a blink)."""

    key: str  # sha256 of the request as sent (``_reuse.request_key``)
    provider: str
    model: str | None
    video_url: str
    video_id: str | None
    video_duration: float | None
    expires_at: float | None  # when the provider's URL stops working (None: not said)
    local_path: str | None  # the file the downloads saved, if any
    bytes: int | None  # its size when saved
    cost: float | None  # USD the request cost when it was made (an estimate)
    checkpoint: str | None  # where it was made: the checkpoint (None: a run without one) ...
    row_key: str  # ... its row ...
    run_id: str  # ... and the run
    task_id: str | None
    completed_at: float | None
    written_at: float

    def source(self) -> str:
        """``CHECKPOINT#ROW`` (``run RUN_ID#ROW`` for a run without a checkpoint): ``reused_from``."""
        return f"{self.checkpoint or 'run ' + self.run_id[:12]}#{self.row_key}"


_COLUMNS = Entry._fields
_TYPES = {"video_duration": "REAL", "expires_at": "REAL", "bytes": "INTEGER", "cost": "REAL",
          "completed_at": "REAL", "written_at": "REAL"}
_CREATE = ("CREATE TABLE IF NOT EXISTS results ("
           + ", ".join(f"{name} {_TYPES.get(name, 'TEXT')}" + (" PRIMARY KEY" if name == "key" else "")
                       for name in _COLUMNS) + ") WITHOUT ROWID")
# (SQL built from this module's constant column names only; every value is a bound parameter.)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM results"  # noqa: S608
# A newer completion replaces an entry, except that one with a downloaded file is not replaced by
# one without (the file outlives the provider's URL).
_PUT = (f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "  # noqa: S608
        "ON CONFLICT(key) DO UPDATE SET "
        + ", ".join(f"{n} = excluded.{n}" for n in _COLUMNS if n != "key")
        + " WHERE results.local_path IS NULL OR excluded.local_path IS NOT NULL")


def default_dir() -> Path:
    """``$VIDEOBATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/videobatch`` (``~/.cache/videobatch``)."""
    given = os.environ.get(CACHE_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "videobatch"


class ResultCache:
    """The cache in ``directory`` (see the module docstring). ``open`` checks it can be used."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_dir()
        self.path = self.directory / FILE_NAME

    @classmethod
    def open(cls, directory: str | os.PathLike[str] | None = None, *, write: bool = True) -> ResultCache:
        """The cache in ``directory`` (None: ``default_dir()``), created if missing; ConfigError when
        it cannot be read or (``write``) written, before anything is paid."""
        cache = cls(directory)
        try:
            if write:
                cache.directory.mkdir(parents=True, exist_ok=True)
                with cache._connect() as db:
                    db.execute("BEGIN IMMEDIATE")  # takes the write lock: proves we may write
                    db.execute("COMMIT")
            elif cache.path.exists():
                with cache._connect() as db:
                    db.execute("SELECT count(*) FROM results").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"the result cache {cache.path} cannot be {'written' if write else 'read'} ({exc}); "
                f"choose a writable folder with --reuse-dir DIR (reuse_dir=) or ${CACHE_ENV}, or run "
                "without --reuse (reuse=False). Nothing was submitted") from None
        return cache

    def writable(self) -> bool:
        """Whether a run could write here, judged without writing (what a dry run asks)."""
        place = self.path if self.path.exists() else self.directory
        while not place.exists() and place.parent != place:
            place = place.parent
        if place != self.path and not place.is_dir():
            return False
        return os.access(place, os.W_OK)

    def _connect(self) -> _Connection:
        return _Connection(self.path)

    def lookup(self, keys: Iterable[str]) -> dict[str, Entry]:
        """The entries of those ``keys`` the cache holds."""
        wanted = list(dict.fromkeys(keys))
        if not wanted or not self.path.exists():
            return {}
        found: dict[str, Entry] = {}
        with self._connect() as db:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(f"{_SELECT} WHERE key IN ({marks})", chunk)
                for row in rows:
                    found[row[0]] = Entry._make(row)
        return found

    def put(self, entries: Sequence[Entry]) -> None:
        """Add or replace ``entries`` in one transaction (a newer clip replaces an older one, except
        that an entry with a downloaded file is kept over one without)."""
        if not entries:
            return
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_PUT, entries)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def entries(self) -> list[Entry]:
        """Every entry, oldest first (for looking at the cache; a run uses ``lookup``)."""
        if not self.path.exists():
            return []
        with self._connect() as db:
            return [Entry._make(row) for row in db.execute(f"{_SELECT} ORDER BY written_at")]

    def __repr__(self) -> str:
        return f"<ResultCache {str(self.path)!r}>"


class _Connection:
    """One short-lived connection (opened per use: safe from any thread), in WAL mode, waiting up
    to ``busy_timeout`` for another process's write, with the schema in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def __enter__(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout = 30000")
            if db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA:
                db.execute("PRAGMA journal_mode = WAL")  # persistent: set once per file
                db.execute(_CREATE)
                db.execute(f"PRAGMA user_version = {_SCHEMA}")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: a killed process loses nothing committed
        except BaseException:
            db.close()
            raise
        self.db = db
        return db

    def __exit__(self, *exc: object) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
