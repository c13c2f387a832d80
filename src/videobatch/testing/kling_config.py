"""What the Kling test server can be told: its settings (``SimConfig``), checked, at start and
at run time (``POST /_test/config``), and the constants they choose from.

The account that follows them is ``kling_sim``; ``kling_server`` starts a server with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._settings import ServerSettings, one_of

__all__ = ["LIST_ORDERS", "LOOKUPS", "RETIRED", "SimConfig"]

# Retired on 2026-09-15 (and the v1 family before): Kling answers 404 / 1203 for them. A body
# without model_name asks for Kling's documented default, kling-v1: retired too.
RETIRED = ("kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master")
LOOKUPS = ("answered", "refused", "ignored")  # how ``GET ?external_task_id=`` is served
LIST_ORDERS = ("newest", "oldest")


@dataclass
class SimConfig(ServerSettings):
    """Everything the server can be told at start (and most of it at run time)."""

    tuples = ("allowed_models", "retired")

    access_key: str = "test-access-key"
    secret_key: str = "test-secret-key-0123456789abcdef"  # noqa: S105 (a test double's key)
    # A console API key, sent as is ("Authorization: Bearer <key>"); None: only JWTs are accepted.
    api_key: str | None = "api-key-kling-test-0123456789"
    latency: float = 0.5  # seconds from create to the end of a task
    jitter: float = 0.2  # ± fraction of latency, uniform
    queue_share: float = 0.2  # share of the latency spent "submitted"
    max_parallel: int = 5  # tasks in flight at once (1303 beyond)
    parallel_per_model: bool = True  # max_parallel per model version, as Kling (False: per account)
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
    # every task's deduction (``kling_billing``) × this: 1.0 bills Kling's published prices; another
    # value makes the actual cost a client records differ from its catalogue's estimate
    deduction_scale: float = 1.0
    seed: int = 0
    callbacks: bool = False  # POST each task's end to its callback_url (``kling_callbacks``)
    callback_secret: str | None = None  # whsec_<base64>: sign callbacks (Standard Webhooks)

    def check(self) -> None:
        one_of("lookup", self.lookup, LOOKUPS)
        one_of("list_order", self.list_order, LIST_ORDERS)
        scale = self.deduction_scale
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 <= scale < math.inf:
            raise ValueError(f"deduction_scale must be a number ≥ 0, not {scale!r}")
        for name in ("foreign_tasks", "foreign_slots"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int ≥ 0, not {value!r}")
