"""The simulated Kling account behind the test server: tasks, their lifecycle, limits and counters.

No HTTP here: ``kling_app`` turns requests into calls on ``Account`` and ``SimError`` into
Kling's error envelope. Time is read from the monotonic clock; task states are computed from it
when asked (``submitted`` for the first ``queue_share`` of a task's latency, then ``processing``,
then ``succeed`` or ``failed``), so no background work runs.

The account can be shared: ``foreign_slots`` lets another system run that many never-ending tasks
on it (each holds a parallel slot and shows in list pages); ``foreign_tasks`` puts that many
finished tasks of *other systems* on it (created before the run, newest of them ~1 minute old,
3 in 4 text2video; a third carry no external id, a third an id of their own like
``order-00001``, a third an id shaped like videobatch's ``vb-<32 hex>`` from some other run). They
appear in list pages and in ``?external_task_id=`` answers like any task, hold no slot, and are
left out of the counters' task states.

The newer API design (docs/providers/kling.md §4, §7b) runs on the same account: ``create_newer``
takes ``POST /text-to-video/{model}`` and ``/image-to-video/{model}`` bodies (``prompt`` or
``contents``, ``settings``, ``options``) for ``NEWER_MODELS``; its ``/tasks`` endpoints see every
task of the account (both designs and the foreign ones: "all product kinds at one URL"), in the
newer shape (``id``, ``status: succeeded``, ``external_id``, ``outputs``, ``billing``), while the
``/v1`` endpoints see only the tasks created through ``/v1`` (and the foreign ones). External ids are
unique across both designs. ``audit`` compares a client's record of which task each row adopted
with the account: a row whose task does not carry the row's key is a *wrong adoption*.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import itertools
import json
import math
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any

from .faults import CODES

__all__ = ["Account", "SimConfig", "SimError", "SimTask"]

KINDS = ("text2video", "image2video")
RATIOS = ("16:9", "9:16", "1:1")
MODES = ("std", "pro")
DURATIONS = ("5", "10")
# The server's own list, from Kling's documentation (docs/providers/kling.md), not from the
# client's catalogue: a misread catalogue must show up as a refusal here. model_name -> durations.
MODELS: dict[str, tuple[str, ...]] = {
    "kling-v3": tuple(str(n) for n in range(3, 16)),
    "kling-v2-6": DURATIONS,
    "kling-v2-5-turbo": DURATIONS,
}
# The newer design: path model -> (durations in whole seconds, resolutions), from §7b.
NEWER_MODELS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "kling-3.0": (tuple(range(3, 16)), ("720p", "1080p", "4k")),
    "kling-3.0-turbo": (tuple(range(3, 16)), ("720p", "1080p")),
    "kling-2.6": ((5, 10), ("720p", "1080p")),
}
NEWER_ENDPOINTS = ("text-to-video", "image-to-video")
NEWER_MAX_TEXT = {"kling-3.0": 3072, "kling-3.0-turbo": 3072}  # others 2,500
_NEWER_STATUS = {"succeed": "succeeded"}
# Retired on 2026-09-15 (and the v1 family before): Kling answers 404 / 1203 for them. A body
# without model_name asks for Kling's documented default, kling-v1: retired too.
RETIRED = ("kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master")
MAX_TEXT = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024
LOOKUPS = ("answered", "refused", "ignored")  # how ``GET ?external_task_id=`` is served
LIST_ORDERS = ("newest", "oldest")


@dataclass
class SimConfig:
    """Everything the server can be told at start (and most of it at run time)."""

    access_key: str = "test-access-key"
    secret_key: str = "test-secret-key-0123456789abcdef"  # noqa: S105 (a test double's key)
    # A console API key, sent as is ("Authorization: Bearer <key>"); None: only JWTs are accepted.
    api_key: str | None = "api-key-kling-test-0123456789"
    latency: float = 0.5  # seconds from create to the end of a task
    jitter: float = 0.2  # ± fraction of latency, uniform
    queue_share: float = 0.2  # share of the latency spent "submitted"
    max_parallel: int = 5  # tasks in flight at once (1303 beyond)
    rps: float | None = None  # API requests per second (1302 beyond); None: unlimited
    retry_after: bool = True  # send Retry-After with the rate limit's 1302
    allowed_models: tuple[str, ...] | None = None  # others get 1103; None: all
    retired: tuple[str, ...] = RETIRED  # models answered 404 / 1203 (add one to act out a retirement)
    max_tasks: int | None = None  # resource pack size in tasks (1102 beyond); None: unlimited
    slow_seconds: float = 3.0  # how late a "slow" answer comes
    video_seconds: float = 1.0  # length of the MP4 files served
    blocked_marker: str = "[blocked]"  # prompts containing it get 1301
    fail_marker: str = "[fail]"  # prompts containing it end failed
    # GET /v1/videos/{kind}?external_task_id=X: "answered" (the task, or 1203), "refused"
    # (400 / 1201, the parameter is not supported) or "ignored" (a plain list page, other tasks)
    lookup: str = "answered"
    foreign_tasks: int = 0  # other systems' finished tasks on the account (in list pages)
    # other systems' tasks running on the account all along: each holds one parallel slot (so
    # this server accepts max_parallel - foreign_slots of ours) and shows in list pages
    foreign_slots: int = 0
    list_order: str = "newest"  # list pages "newest" first, or "oldest" first
    seed: int = 0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        if self.lookup not in LOOKUPS:
            raise ValueError(f"lookup must be one of {LOOKUPS}, not {self.lookup!r}")
        if self.list_order not in LIST_ORDERS:
            raise ValueError(f"list_order must be one of {LIST_ORDERS}, not {self.list_order!r}")
        for name in ("foreign_tasks", "foreign_slots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int ≥ 0, not {value!r}")

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for name in values:
            if name not in names:
                raise ValueError(f"unknown server setting {name!r}")
        old = {name: getattr(self, name) for name in values}
        for name, value in values.items():
            if name in ("allowed_models", "retired") and value is not None:
                value = tuple(value)
            setattr(self, name, value)
        try:
            self.check()
        except ValueError:
            for name, value in old.items():
                setattr(self, name, value)
            raise


class SimError(Exception):
    """An error answer: HTTP status, Kling business code, message, optional Retry-After."""

    def __init__(self, code: int, message: str | None = None, *,
                 retry_after: float | None = None, reason: str | None = None) -> None:
        status, default = CODES[code]
        self.status, self.code = status, code
        self.message = message or default
        self.retry_after = retry_after
        self.reason = reason or str(code)
        super().__init__(self.message)


@dataclass
class SimTask:
    task_id: str
    kind: str
    body: dict[str, Any]
    external_task_id: str | None
    created_ms: int
    started: float  # monotonic
    processing_at: float
    done_at: float
    fails: bool
    fail_message: str = ""
    foreign: bool = False  # another system's task, not created through this server's API
    design: str = "legacy"  # "legacy" (/v1) or "newer" (model in the path)

    def status(self, now: float) -> str:
        if now >= self.done_at:
            return "failed" if self.fails else "succeed"
        return "processing" if now >= self.processing_at else "submitted"

    def to_json(self, now: float, files_url: str) -> dict[str, Any]:
        status = self.status(now)
        updated = self.created_ms + int(1000 * (min(now, self.done_at) - self.started))
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "task_status": status,
            "task_status_msg": self.fail_message if status == "failed" else "",
            "task_info": {"external_task_id": self.external_task_id} if self.external_task_id
            else {},
            "created_at": self.created_ms,
            "updated_at": updated,
        }
        if status == "succeed":
            data["task_result"] = {"videos": [{
                "id": f"v-{self.task_id}",
                "url": f"{files_url}/files/{self.task_id}.mp4",
                "duration": str(self.seconds()),
            }]}
        return data

    def seconds(self) -> int:
        settings = self.body.get("settings")
        value = settings.get("duration", 5) if isinstance(settings, dict) else self.body.get("duration", "5")
        return int(value)

    def to_newer_json(self, now: float, files_url: str) -> dict[str, Any]:
        """The task as the newer design's ``/tasks`` endpoints show it."""
        status = self.status(now)
        data: dict[str, Any] = {
            "id": self.task_id,
            "status": _NEWER_STATUS.get(status, status),
            "message": self.fail_message if status == "failed" else "",
            "create_time": self.created_ms,
            "update_time": self.created_ms + int(1000 * (min(now, self.done_at) - self.started)),
            "external_id": self.external_task_id or "",
            "outputs": [],
            "billing": [],
        }
        if status == "succeed":
            data["outputs"] = [{"type": "video", "id": f"v-{self.task_id}",
                                "url": f"{files_url}/files/{self.task_id}.mp4",
                                "watermark_url": "", "duration": str(self.seconds())}]
            data["billing"] = [{"charge_type": "unit", "amount": "1", "package_type": "video"}]
        return data


@dataclass
class Counters:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0  # creates repeating an external_task_id already used
    paid_duplicates: int = 0  # accepted tasks with the same content as an earlier accepted one
    polls_single: int = 0
    polls_external: int = 0
    polls_list: int = 0
    peak_parallel: int = 0
    downloads: int = 0
    lookups_ignored: int = 0  # ?external_task_id= answered with a plain list page
    foreign_polled: set[str] = field(default_factory=set)  # other systems' tasks asked for by id
    wrong_adoptions: int = 0  # rows whose task does not carry their key (the last ``audit``)
    foreign_adopted: int = 0  # ... of them, rows holding another system's task
    rejected: dict[str, int] = field(default_factory=dict)


class Account:
    """One Kling account: its tasks, its limits, and what happened to it."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tasks: dict[str, SimTask] = {}
        self.by_external: dict[str, str] = {}
        self._listed: list[SimTask] = []  # every task, oldest first (by created_ms)
        self.counters = Counters()
        self._contents: set[str] = set()
        self._active: list[SimTask] = []
        self._ids = itertools.count(1)
        self._rng = random.Random(config.seed)
        self._tokens = float("inf")  # a full bucket, capped at the first request
        self._refilled = time.monotonic()
        self._foreign_rng = random.Random(f"foreign-{config.seed}")
        self._foreign = 0
        self._holding: list[SimTask] = []  # other systems' running tasks, one slot each
        self.add_foreign(config.foreign_tasks)
        self.hold_slots(config.foreign_slots)

    # -- limits ---------------------------------------------------------------------------------

    def reject(self, error: SimError) -> SimError:
        self.counters.rejected[error.reason] = self.counters.rejected.get(error.reason, 0) + 1
        return error

    def take_token(self) -> None:
        """Spend one request of the rate budget, or raise 1302 (a token bucket, burst = rps)."""
        rps = self.config.rps
        if not rps:
            return
        now = time.monotonic()
        burst = max(1.0, rps)
        self._tokens = min(burst, self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return
        wait = (1.0 - self._tokens) / rps
        raise self.reject(SimError(1302, retry_after=max(1, math.ceil(wait))
                                   if self.config.retry_after else None, reason="rate_limit"))

    def running(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        self._active = [t for t in self._active if t.done_at > now]
        return len(self._active)

    # -- create ---------------------------------------------------------------------------------

    def validate(self, kind: str, body: Any) -> None:
        """Raise 1201 naming the field, as Kling does, for a body it would refuse."""
        def bad(name: str, why: str) -> SimError:
            return self.reject(SimError(1201, f"Invalid parameters: {name} {why}",
                                        reason="invalid"))

        if not isinstance(body, dict):
            raise bad("body", "must be a JSON object")
        model = body.get("model_name", "kling-v1")
        if model in self.config.retired:
            raise self.reject(SimError(1203, f"model {model} does not exist", reason="model_gone"))
        if model not in MODELS:
            raise bad("model_name", f"{model!r} is not one of {', '.join(MODELS)}")
        for name in ("prompt", "negative_prompt"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise bad(name, "must be a string of at most 2500 characters")
        if kind == "text2video" and not body.get("prompt"):
            raise bad("prompt", "is required")
        if body.get("duration", "5") not in MODELS[model]:
            raise bad("duration", f"must be one of the strings {', '.join(MODELS[model])} for {model}")
        if body.get("mode", "std") not in MODES:
            raise bad("mode", f"must be one of {MODES}")
        if body.get("aspect_ratio", "16:9") not in RATIOS:
            raise bad("aspect_ratio", f"must be one of {RATIOS}")
        cfg = body.get("cfg_scale")
        if cfg is not None and (isinstance(cfg, bool) or not isinstance(cfg, int | float)
                                or not 0 <= cfg <= 1):
            raise bad("cfg_scale", "must be a number from 0 to 1")
        camera = body.get("camera_control")
        if camera is not None and not (isinstance(camera, dict) and "type" in camera):
            raise bad("camera_control", "must be an object with a type")
        ext = body.get("external_task_id")
        if ext is not None and (not isinstance(ext, str) or not ext):
            raise bad("external_task_id", "must be a non-empty string")
        if kind == "image2video":
            if not (body.get("image") or body.get("image_tail")):
                raise bad("image", "or image_tail is required")
            for name in ("image", "image_tail"):
                value = body.get(name)
                if value is not None and not _image_ok(value):
                    raise bad(name, "must be an http(s) URL or base64 (no data: prefix), ≤ 10 MB")

    def create(self, kind: str, body: dict[str, Any], files_url: str) -> SimTask:
        cfg = self.config
        self.validate(kind, body)
        prompt = str(body.get("prompt") or "")
        if cfg.blocked_marker and cfg.blocked_marker in prompt:
            raise self.reject(SimError(1301, "Failure to pass the risk control system: the "
                                       "prompt contains blocked content", reason="policy"))
        return self._accept(kind, body, body.get("external_task_id"), body.get("model_name", "kling-v1"),
                            prompt, {k: v for k, v in body.items()
                                     if k not in ("external_task_id", "callback_url")})

    def _accept(self, kind: str, body: dict[str, Any], ext: Any, model: str, prompt: str,
                content: Any, design: str = "legacy") -> SimTask:
        """The checks every create passes after its body is valid, then the task itself."""
        cfg = self.config
        if ext and ext in self.by_external:
            self.counters.duplicates += 1
            raise self.reject(SimError(1201, f"Invalid parameters: external_task_id {ext!r} "
                                       "already exists (it must be unique per account)",
                                       reason="duplicate"))
        if cfg.allowed_models is not None and model not in cfg.allowed_models:
            raise self.reject(SimError(1103, f"No permission to use model {model}",
                                       reason="model_denied"))
        if cfg.max_tasks is not None and self.counters.accepted >= cfg.max_tasks:
            raise self.reject(SimError(1102, reason="balance"))
        now = time.monotonic()
        if self.running(now) + len(self._holding) >= cfg.max_parallel:
            raise self.reject(SimError(1303, reason="parallel_limit"))
        latency = max(0.0, cfg.latency * (1 + cfg.jitter * self._rng.uniform(-1, 1)))
        task = SimTask(
            task_id=f"{800000000000000000 + next(self._ids)}",
            kind=kind, body=body, external_task_id=ext,
            created_ms=int(time.time() * 1000), started=now,
            processing_at=now + latency * cfg.queue_share, done_at=now + latency,
            fails=bool(cfg.fail_marker and cfg.fail_marker in prompt), design=design,
        )
        if task.fails:
            task.fail_message = "Video generation failed (marked prompt)"
        self._store(task)
        self._active.append(task)
        self.counters.accepted += 1
        self.counters.peak_parallel = max(self.counters.peak_parallel, len(self._active))
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        if digest in self._contents:
            self.counters.paid_duplicates += 1
        self._contents.add(digest)
        return task

    # -- the newer design -----------------------------------------------------------------------

    def create_newer(self, endpoint: str, model: str, body: Any) -> SimTask:
        """``POST /{endpoint}/{model}``: validated as documented, then accepted like a /v1 create."""
        self.validate_newer(endpoint, model, body)
        cfg = self.config
        contents = body.get("contents") or []
        prompt = str(body.get("prompt") or next(
            (c.get("text") for c in contents if c.get("type") == "prompt"), "") or "")
        if cfg.blocked_marker and cfg.blocked_marker in prompt:
            raise self.reject(SimError(1301, "Failure to pass the risk control system: the "
                                       "prompt contains blocked content", reason="policy"))
        options = body.get("options") or {}
        content = {"model": model, "endpoint": endpoint, "prompt": body.get("prompt"),
                   "contents": contents, "settings": body.get("settings") or {}}
        kind = "image2video" if endpoint == "image-to-video" else "text2video"
        return self._accept(kind, body, options.get("external_task_id"), model, prompt, content,
                            design="newer")

    def validate_newer(self, endpoint: str, model: str, body: Any) -> None:
        """Raise 1201 naming the field for a newer-design body Kling would refuse (unknown keys
        too, so a client mixing the two designs' fields is caught)."""
        def bad(name: str, why: str) -> SimError:
            return self.reject(SimError(1201, f"Invalid parameters: {name} {why}", reason="invalid"))

        if model in self.config.retired or model not in NEWER_MODELS or endpoint not in NEWER_ENDPOINTS:
            raise self.reject(SimError(1203, f"model {model} does not exist", reason="model_gone"))
        if not isinstance(body, dict):
            raise bad("body", "must be a JSON object")
        durations, resolutions = NEWER_MODELS[model]
        image = endpoint == "image-to-video"
        allowed = {"contents", "settings", "options"} | ({"prompt"} if not image else set())
        if set(body) - allowed:
            raise bad(sorted(set(body) - allowed)[0], f"is not a field of {endpoint}/{model}")
        limit = NEWER_MAX_TEXT.get(model, MAX_TEXT)
        prompt = body.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > limit):
            raise bad("prompt", f"must be a string of at most {limit} characters")
        contents = body.get("contents", [])
        if not isinstance(contents, list) or not all(isinstance(c, dict) for c in contents):
            raise bad("contents", "must be an array of objects")
        types = [c.get("type") for c in contents]
        if set(types) - {"prompt", "first_frame", "last_frame", "element"}:
            raise bad("contents.type", "must be prompt, first_frame, last_frame or element")
        for item in contents:
            if item.get("type") in ("first_frame", "last_frame") and not _image_ok(item.get("url")):
                raise bad("contents.url", "must be an http(s) URL or base64 (no data: prefix)")
        if image and "first_frame" not in types:
            raise bad("contents", "needs a first_frame (a last_frame alone is not allowed)")
        if not image and not prompt:
            raise bad("prompt", "is required")
        settings = body.get("settings", {})
        if not isinstance(settings, dict):
            raise bad("settings", "must be an object")
        known = {"resolution", "aspect_ratio", "duration", "audio", "multi_shot"}
        if set(settings) - known:
            raise bad(f"settings.{sorted(set(settings) - known)[0]}", "is not a setting")
        duration = settings.get("duration", 5)
        if isinstance(duration, bool) or not isinstance(duration, int) or duration not in durations:
            raise bad("settings.duration", f"must be an integer among {durations} for {model}")
        resolution = settings.get("resolution", "720p")
        if resolution not in resolutions:
            raise bad("settings.resolution", f"must be one of {resolutions} for {model}")
        if image and "aspect_ratio" in settings:
            raise bad("settings.aspect_ratio", "follows the image on image-to-video")
        if settings.get("aspect_ratio", "16:9") not in RATIOS:
            raise bad("settings.aspect_ratio", f"must be one of {RATIOS}")
        audio = settings.get("audio", "off")
        if audio not in ("native", "off"):
            raise bad("settings.audio", "must be native or off")
        if model == "kling-2.6" and audio == "native" and resolution != "1080p":
            raise bad("settings.audio", "native needs resolution 1080p on kling-2.6")
        if not isinstance(settings.get("multi_shot", False), bool):
            raise bad("settings.multi_shot", "must be true or false")
        options = body.get("options", {})
        if not isinstance(options, dict) or set(options) - {"callback_url", "external_task_id",
                                                              "watermark_info"}:
            raise bad("options", "holds only callback_url, external_task_id, watermark_info")
        ext = options.get("external_task_id")
        if ext is not None and not isinstance(ext, str):
            raise bad("options.external_task_id", "must be a string")

    def by_ids(self, ids: list[str]) -> list[SimTask]:
        return [self.tasks[i] for i in ids if i in self.tasks]

    def by_external_ids(self, ids: list[str]) -> list[SimTask]:
        return self.by_ids([self.by_external[i] for i in ids if i in self.by_external])

    def window(self, start_ms: int, end_ms: int) -> list[SimTask]:
        """Every task created in ``[start_ms, end_ms]``, newest first (the cursor listing)."""
        return [t for t in reversed(self._listed) if start_ms <= t.created_ms <= end_ms]

    def audit(self, rows: dict[str, str]) -> dict[str, Any]:
        """A client's record ``{row key: task id}`` against the account: the rows whose task does
        not exist or does not carry the row's key (wrong adoptions), and how many of those hold
        another system's task. The counters keep the last audit's figures."""
        wrong = sorted(key for key, task_id in rows.items()
                       if (task := self.tasks.get(str(task_id))) is None or task.external_task_id != key)
        foreign = sum(1 for key in wrong if (t := self.tasks.get(str(rows[key]))) is not None and t.foreign)
        self.counters.wrong_adoptions, self.counters.foreign_adopted = len(wrong), foreign
        return {"rows": len(rows), "wrong": wrong, "wrong_adoptions": len(wrong),
                "foreign_adopted": foreign}

    def touched(self, task: SimTask) -> None:
        """A task asked for by its id (or its video fetched): another system's counts as adopted."""
        if task.foreign:
            self.counters.foreign_polled.add(task.task_id)

    def _store(self, task: SimTask) -> None:
        self.tasks[task.task_id] = task
        if task.external_task_id:
            self.by_external[task.external_task_id] = task.task_id
        bisect.insort(self._listed, task, key=lambda t: t.created_ms)

    def add_foreign(self, total: int) -> None:
        """Top the account up to ``total`` tasks of other systems, older than every task so far."""
        rng, now, now_ms = self._foreign_rng, time.monotonic(), int(time.time() * 1000)
        oldest = min((t.created_ms for t in self.tasks.values()), default=now_ms)
        for i in range(self._foreign, total):
            age = (oldest - now_ms) / 1000 - 60.0 * (i - self._foreign + 1)  # seconds, < 0
            ext = (None, f"order-{i:05d}", f"vb-{rng.getrandbits(128):032x}")[i % 3]
            fails = rng.random() < 0.1
            task = SimTask(
                task_id=f"{700000000000000000 + i}", kind=KINDS[1] if i % 4 == 3 else KINDS[0],
                body={"model_name": "kling-v2-6", "prompt": f"another system's clip {i}"},
                external_task_id=ext, created_ms=now_ms + int(age * 1000), started=now + age,
                processing_at=now + age + 1, done_at=now + age + 30, fails=fails,
                fail_message="Video generation failed" if fails else "", foreign=True)
            self._store(task)
        self._foreign = max(self._foreign, total)

    def hold_slots(self, total: int) -> None:
        """Let other systems run ``total`` tasks on the account (never ending), one slot each."""
        now, now_ms = time.monotonic(), int(time.time() * 1000)
        while len(self._holding) < total:
            i = len(self._holding)
            task = SimTask(
                task_id=f"{600000000000000000 + i}", kind=KINDS[0],
                body={"model_name": "kling-v2-6", "prompt": f"another system's long job {i}"},
                external_task_id=f"job-{i:05d}", created_ms=now_ms - 1000, started=now - 1.0,
                processing_at=now - 0.5, done_at=now + 10.0 ** 9, fails=False, foreign=True)
            self._store(task)
            self._holding.append(task)
        for task in self._holding[total:]:  # the other system's jobs end
            task.done_at = min(task.done_at, now)
        self._holding = self._holding[:total]

    # -- queries --------------------------------------------------------------------------------

    def get(self, kind: str, task_id: str) -> SimTask:
        task = self.tasks.get(task_id)
        if task is None or task.kind != kind or task.design != "legacy":
            raise self.reject(SimError(1203, reason="not_found"))
        return task

    def get_external(self, kind: str, external_task_id: str) -> SimTask:
        return self.get(kind, self.by_external.get(external_task_id, ""))

    def tasks_in_order(self) -> list[SimTask]:
        return list(self._listed)

    def page(self, kind: str, number: int, size: int) -> list[SimTask]:
        if not (1 <= number <= 1000 and 1 <= size <= 500):
            raise self.reject(SimError(1201, "Invalid parameters: pageNum must be 1-1000 and "
                                       "pageSize 1-500", reason="invalid"))
        ordered = self._listed if self.config.list_order == "oldest" else reversed(self._listed)
        tasks = [t for t in ordered if t.kind == kind and t.design == "legacy"]
        return tasks[(number - 1) * size:number * size]

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        states: dict[str, int] = {}
        busy = 0.0  # slot-seconds the finished tasks held: the ideal run's total work
        for task in self.tasks.values():
            if task.foreign:
                continue
            state = task.status(now)
            states[state] = states.get(state, 0) + 1
            if now >= task.done_at:
                busy += task.done_at - task.started
        c = self.counters
        return {
            "requests": c.requests, "accepted": c.accepted, "duplicates": c.duplicates,
            "paid_duplicates": c.paid_duplicates, "rejected": dict(c.rejected),
            "polls_single": c.polls_single, "polls_external": c.polls_external,
            "polls_list": c.polls_list, "polls": c.polls_single + c.polls_list,
            "lookups_ignored": c.lookups_ignored, "foreign_tasks": self._foreign,
            "foreign_slots": len(self._holding), "foreign_polled": len(c.foreign_polled),
            "wrong_adoptions": c.wrong_adoptions, "foreign_adopted": c.foreign_adopted,
            "peak_parallel": c.peak_parallel, "current_parallel": self.running(now),
            "downloads": c.downloads, "tasks": states, "task_seconds": round(busy, 3),
            "succeeded": states.get("succeed", 0), "failed": states.get("failed", 0),
        }


def _image_ok(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    if value.startswith(("http://", "https://")):
        return True
    if value.startswith("data:"):
        return False
    try:
        return len(base64.b64decode(value, validate=True)) <= MAX_IMAGE_BYTES
    except (binascii.Error, ValueError):
        return False
