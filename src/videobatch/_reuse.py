"""Which rows a run takes from the result cache (``_cache``) instead of paying for them again
(``reuse=True`` / ``--reuse``): each request's cache key, the lookup made when a run opens, and the
rows it completes from it.

A row is reused when the run would send it (pending, or cancelled and resumed: the rows
``_plan.starting`` names) and the cache holds a clip made from the same request: the same provider
with the same settings (``Provider.describe()``, e.g. its API address) and the same values as sent
(the model's defaults filled in, so a changed duration, model or mode is another request; an image
given as a local file counts by its content; a provider without a model catalogue: the values as
given). The row's key, id column, other columns and fallback
play no part. The clip must still be there: a provider URL is handed out only while it stays valid
for ``FRESH_FOR`` seconds more (a ``file://`` URL only while the file exists); past that, only the
file a download saved (then the result points at that file). Rows submitted, generating, in doubt,
completed or failed in this checkpoint are never touched.

A reused row becomes ``completed`` without a request: its result columns are the clip's, its
``cost_estimated`` is 0 (nothing spent), ``attempts`` 0, and the extra column ``reused_from`` says
where the clip came from (``CHECKPOINT#ROW``). The plan (``_plan``) counts the same rows and what
they would have cost.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ._cache import Entry, ResultCache
from ._fleet import Providers
from ._input_keys import canonical_json
from ._jobs import Job, State
from ._plan import starting
from ._settings import RunSettings
from ._store import Store
from .errors import ConfigError
from .providers.base import Provider
from .request import REQUEST_FIELDS, VideoRequest

__all__ = ["FRESH_FOR", "Hit", "ImageDigests", "Keys", "find", "open_cache", "request_key", "take"]

FRESH_FOR = 3600.0  # seconds a provider URL must stay valid after the run opens to be handed out
_KEY_VERSION = 1  # bump when what a key covers changes: older entries then simply miss
_IMAGES = ("image", "end_image")


class ImageDigests:
    """sha256 of local image files, read once per file (and again only if it changed)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, int, str]] = {}

    def ref(self, value: str) -> str | None:
        """What a key holds for an image cell: a URL as given, a local file's content digest, a
        digest of inline data; None when it names a file that cannot be read (no reuse)."""
        text = value.strip()
        if text.lower().startswith(("http://", "https://")):
            return text
        try:
            path = Path(text).expanduser()
            info = path.stat() if len(text) < 4096 and path.is_file() else None
        except (OSError, ValueError):
            info = None
        if info is None:  # a data: URL or base64: the text is the content
            return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
        known = self._seen.get(text)
        if known is not None and known[:2] == (info.st_size, info.st_mtime_ns):
            return known[2]
        try:
            digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None
        self._seen[text] = (info.st_size, info.st_mtime_ns, digest)
        return digest


class Keys:
    """``request_key`` of many requests, made fast: the key text of one request per shape (every
    value but the prompt the same, no image) is split around its prompt, and every other request of
    that shape spells its own prompt in (the same text ``request_key`` hashes). Also each shape's
    estimated price (prices never depend on the prompt's words)."""

    _MARK = "\x00videobatch-prompt\x00"

    def __init__(self) -> None:
        self.images = ImageDigests()
        self._templates: dict[tuple[object, ...], tuple[str, str] | None] = {}
        self._costs: dict[tuple[object, ...], float | None] = {}

    def key(self, provider: Provider, request: VideoRequest,
            shape: tuple[object, ...] | None = None) -> str | None:
        """``request_key(provider, request)``; ``shape``: ``_shape``'s, if the caller has it."""
        shape = shape or _shape(provider, request)
        if shape is None:
            return request_key(provider, request, self.images)
        try:
            template = self._templates[shape]
        except KeyError:
            template = self._templates[shape] = self._template(provider, request)
        if template is None:
            return request_key(provider, request, self.images)
        text = f"{template[0]}{encode_basestring(request.prompt)}{template[1]}"
        return hashlib.sha256(text.encode()).hexdigest()

    def cost(self, provider: Provider, request: VideoRequest,
             shape: tuple[object, ...] | None = None) -> float | None:
        shape = shape or _shape(provider, request)
        if shape is None:
            return provider.estimate_cost(request)
        if shape not in self._costs:
            self._costs[shape] = provider.estimate_cost(request)
        return self._costs[shape]

    def _template(self, provider: Provider, request: VideoRequest) -> tuple[str, str] | None:
        values = dict(provider.resolve(request).values)
        if values.get("prompt") != request.prompt:
            return None
        values["prompt"] = self._MARK
        text = _key_text(provider, values)
        head, mark, tail = text.partition(encode_basestring(self._MARK))
        return (head, tail) if mark and encode_basestring(self._MARK) not in tail else None


_SHAPE_FIELDS = tuple(n for n in REQUEST_FIELDS if n not in ("prompt", "image", "end_image"))


def _shape(provider: Provider, request: VideoRequest) -> tuple[object, ...] | None:
    """What a request's key depends on apart from its prompt (types too: 1, 1.0 and True are
    spelled apart); None: it has an image (keyed by content, one by one)."""
    given = request.__dict__
    if given.get("image") is not None or given.get("end_image") is not None:
        return None
    values = tuple(map(given.get, _SHAPE_FIELDS))
    options = given.get("options")
    return id(provider), values, tuple(map(type, values)), repr(options) if options else None


def _key_text(provider: Provider, values: dict[str, object]) -> str:
    return canonical_json({"v": _KEY_VERSION, "provider": provider.describe(), "request": values})


def request_key(provider: Provider, request: VideoRequest, images: ImageDigests | None = None) -> str | None:
    """The cache key of ``request`` sent to ``provider`` (see the module docstring), or None when
    it cannot have one (an image file that cannot be read)."""
    values = dict(provider.resolve(request).values)
    for name in _IMAGES:
        value = values.get(name)
        if isinstance(value, str):
            ref = (images or ImageDigests()).ref(value)
            if ref is None:
                return None
            values[name] = ref
    return hashlib.sha256(_key_text(provider, values).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Hit:
    """What a row takes from the cache: the entry, the URL it hands out (the provider's, or the
    saved file's ``file://`` URL once that expired), and what the row would have cost."""

    entry: Entry
    provider: str
    video_url: str
    expires_at: float | None
    local_path: str | None
    bytes: int | None
    saved: float | None


def find(jobs: Sequence[Job], providers: Providers, settings: RunSettings, cache: ResultCache,
         now: float | None = None, *, chunk: int = 2000) -> dict[str, Hit]:
    """The rows of ``jobs`` a run of ``settings`` would take from ``cache`` (by row key). Reads only.
    Rows are keyed and looked up ``chunk`` at a time: what a lookup holds stays small."""
    now = time.time() if now is None else now
    keys = Keys()
    hits: dict[str, Hit] = {}
    present: dict[str, bool] = {}  # file:// URLs checked in this lookup (many rows share one)
    rows = starting(jobs, settings).pending
    for start in range(0, len(rows), chunk):
        wanted: list[tuple[Job, Provider, VideoRequest, tuple[object, ...] | None, str]] = []
        for job in rows[start:start + chunk]:
            provider, request = providers.for_row(job), providers.request_of(job)
            shape = _shape(provider, request)
            key = keys.key(provider, request, shape)
            if key is not None:
                wanted.append((job, provider, request, shape, key))
        entries = cache.lookup(key for *_, key in wanted)
        for job, provider, request, shape, key in wanted:
            entry = entries.get(key)
            found = _usable(entry, now, present) if entry is not None else None
            if entry is not None and found is not None:
                hits[job.key] = Hit(entry, provider.name, *found, keys.cost(provider, request, shape))
    return hits


def _usable(entry: Entry, now: float, present: dict[str, bool]
            ) -> tuple[str, float | None, str | None, int | None] | None:
    """(URL, its expiry, saved file, its size) to hand out for ``entry``, or None: gone."""
    saved = entry.local_path if entry.local_path and _intact(entry.local_path, entry.bytes) else None
    size = entry.bytes if saved else None
    fresh = entry.expires_at is None or float(entry.expires_at) > now + FRESH_FOR
    if fresh and entry.video_url.startswith("file:"):
        url = entry.video_url
        if url not in present:
            present[url] = _intact(unquote(urlsplit(url).path), None)
        fresh = present[url]
    if fresh:
        return entry.video_url, entry.expires_at, saved, size
    if saved is not None:
        return Path(saved).absolute().as_uri(), None, saved, size
    return None


def _intact(path: str, size: int | None) -> bool:
    try:
        found = os.stat(path).st_size
    except (OSError, ValueError):
        return False
    return size is None or found == size


def take(jobs: Sequence[Job], providers: Providers, settings: RunSettings, cache: ResultCache,
         store: Store) -> dict[str, Hit]:
    """Complete the rows ``find`` names from the cache, durably (journaled and fsync'ed), before
    the run starts: no request is sent for them. Returns the hits."""
    hits = find(jobs, providers, settings, cache)
    if not hits:
        return hits
    for job in jobs:
        hit = hits.get(job.key)
        if hit is None:
            continue
        if job.state is State.CANCELLED:  # a resumed row: back to pending, then done
            store.append(job.transition(State.PENDING))
        entry = hit.entry
        store.append(job.transition(
            State.COMPLETED, video_url=hit.video_url, video_id=entry.video_id,
            video_duration=entry.video_duration, expires_at=hit.expires_at,
            completed_at=entry.completed_at or time.time(), provider_used=hit.provider,
            model_used=entry.model, cost_estimated=0.0, error_kind=None, error=None))
        files = {"local_path": hit.local_path, "bytes": hit.bytes} if hit.local_path else {}
        store.append(job.annotate(reused_from=entry.source(), **files))
    store.sync()
    return hits


def open_cache(reuse: bool, directory: str | os.PathLike[str] | None, *, dry_run: bool,
               notes: list[str]) -> ResultCache | None:
    """The result cache a batch reuses from and remembers into (None: ``reuse`` is off). A cache
    that cannot be written is a ConfigError before anything is paid: asked to reuse, a run that
    silently could not would pay for clips the user expects for free. A dry run only reads it and
    notes such a problem."""
    if not reuse:
        if directory is not None:
            raise ConfigError("reuse_dir (--reuse-dir) is given without reuse=True (--reuse)")
        return None
    try:
        cache = ResultCache.open(directory, write=not dry_run)
    except ConfigError as exc:
        if not dry_run:
            raise
        notes.append(f"{exc} (the real run needs it)")
        return None
    if dry_run and not cache.writable():
        notes.append(f"the result cache {cache.path} cannot be written: the real run would stop "
                     "before paying (choose another with --reuse-dir or run without --reuse)")
    return cache
