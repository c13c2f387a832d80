"""Job records and their state machine: the only place that knows which state change is legal.

    pending ──► submitting ──► generating ──► completed
                     │             └──────────► failed
                     ├──► pending     the submit certainly created no task: try again later
                     ├──► failed      the provider refused the row for good
                     └──► completed   reconciliation found the task already finished
    failed ──retry──► pending         a new, separately paid submission
    failed ──retry──► generating      timed out while its task was open: wait for that same task
    submitting ──► unknown            the submit may have created a task and nobody can say
    unknown ──► generating/completed/failed   found on a later check
    unknown ──► pending               the provider says the key is free (same key), or the
                                      user resubmits it (retry --unknown: new key, may pay twice)
    pending ──cancel──► cancelled ──resume──► pending
    pending ──► completed             reused: the same request completed in an earlier run (the
                                      result cache, ``videobatch._reuse``); nothing is sent
    generating ──cancel──► cancelled  the provider stopped the task on our word (queued: nothing
                                      charged); resuming it is a new paid submission (new key)

``submitting`` is written to the checkpoint *before* the paid request leaves the process. A row found
in ``submitting`` after a crash may or may not exist at the provider; it is reconciled through the
provider's idempotency lookup, never submitted again blindly.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import IllegalTransition
from .request import VideoRequest

__all__ = [
    "CANCELLED", "COMPLETED", "FAILED", "GENERATING", "PENDING", "RESULT_COLUMNS", "SETTLED", "SUBMITTING",
    "TERMINAL", "UNKNOWN", "Job", "RowSnapshot", "State", "annotation", "idempotency_key", "may_have_paid",
]


class State(enum.StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"
    GENERATING = "generating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"  # a paid request may exist; see the module docstring


# The states as module constants too, for code run many times a row: on Python 3.11 a read of
# ``State.PENDING`` goes through ``EnumType.__getattr__``'s slot (190 ns; a constant's 40 ns).
PENDING, SUBMITTING, GENERATING, COMPLETED, FAILED, CANCELLED, UNKNOWN = (
    State.PENDING, State.SUBMITTING, State.GENERATING, State.COMPLETED, State.FAILED, State.CANCELLED,
    State.UNKNOWN)

TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
# Nothing more happens to these rows in this run: ended, or unknown (checked again next run only).
SETTLED = TERMINAL | {UNKNOWN}
IN_FLIGHT = frozenset({SUBMITTING, GENERATING})

_LEGAL: dict[State, frozenset[State]] = {
    # -> pending: not sent, and why (the budget would be exceeded): error_kind/error say it.
    # -> completed: reused from the result cache, nothing sent (``videobatch._reuse``).
    PENDING: frozenset({PENDING, SUBMITTING, CANCELLED, FAILED, COMPLETED}),
    # -> pending: the submit certainly created no task (or lookup says none exists): try again later.
    # -> failed: permanent rejection of the submit.
    # -> completed/failed directly: reconciliation found the task already finished.
    # -> unknown: the submit may have created a task and neither a lookup nor a listing could say.
    SUBMITTING: frozenset({GENERATING, PENDING, FAILED, COMPLETED, UNKNOWN}),
    # Re-checked on every resume and status: found (-> generating/completed/failed), the provider
    # says the key is free (-> pending, same key), or the user resubmits it (-> pending, new key).
    UNKNOWN: frozenset({GENERATING, COMPLETED, FAILED, PENDING}),
    # -> cancelled: the provider stopped the task on our word before it ran (nothing charged)
    GENERATING: frozenset({COMPLETED, FAILED, CANCELLED}),
    COMPLETED: frozenset(),
    # explicit retry: a new, separately paid submission (-> pending), or, for a row that timed out
    # while its task was still open at the provider, waiting for that same task again (-> generating)
    FAILED: frozenset({PENDING, GENERATING}),
    # resume; a row whose task the provider cancelled starts a new, separately paid submission
    CANCELLED: frozenset({PENDING}),
}

# Columns the results DataFrame adds after the user's own columns, in this order. Input columns with
# these names are refused (they would be overwritten).
RESULT_COLUMNS = (
    "status", "video_url", "task_id", "error", "attempts", "submitted_at", "completed_at",
    "elapsed_s", "key", "error_kind", "video_id", "video_duration", "expires_at", "provider_used",
    "model_used", "cost_estimated", "cost_spent", "cost_actual", "cost_units",
)

# Fields a transition may set; everything in a job besides key/index/request/state.
RESULT_FIELDS = (
    "attempts",
    "generation",
    "task_id",
    "submitted_at",
    "completed_at",
    "video_url",
    "video_id",
    "video_duration",
    "expires_at",
    "error_kind",
    "error",
    "provider_used",
    "model_used",
    "cost_estimated",
    "cost_earlier",
    "cost_actual",
    "cost_units",
)
_RESULT_FIELD_SET = frozenset(RESULT_FIELDS)


# What a new submission of a row starts without.
# (Its cost so far is not lost: ``cost_earlier`` carries it, see ``Job.carried_cost``.)
_CLEARED = ("task_id", "submitted_at", "completed_at", "video_url", "video_id", "video_duration",
            "expires_at", "error_kind", "error", "provider_used", "model_used", "cost_estimated", "cost_actual",
            "cost_units")


def idempotency_key(run_id: str, row_key: str, generation: int) -> str:
    """The provider-side idempotency key of one submission of one row in one run.

    Stable across crashes and resumes (same run, row and generation), different for an explicit
    retry of a failed row (new generation). Short and plain so every provider accepts it.
    """
    digest = hashlib.sha256(f"{run_id}\x1f{row_key}\x1f{generation}".encode()).hexdigest()
    return "vb-" + digest[:32]


_NO_EXTRAS: Mapping[str, Any] = MappingProxyType({})


def may_have_paid(state: State, task_id: str | None) -> bool:
    """Whether a row in ``state`` with ``task_id`` may have paid for its latest submission: the
    provider accepted it (a task exists and was not stopped before it ran), or nobody can say."""
    return state is UNKNOWN or (task_id is not None and state is not CANCELLED)


_CORE_NAMES = frozenset(RESULT_COLUMNS) | _RESULT_FIELD_SET


def annotation(key: str, extras: Mapping[str, Any]) -> dict[str, Any]:
    """The journal record that sets extra result columns of row ``key`` (no state change)."""
    clash = _CORE_NAMES.intersection(extras)
    if clash:
        raise ValueError(f"extra result columns may not reuse core names: {sorted(clash)}")
    return {"k": key, "x": dict(extras), "t": time.time()}


@dataclass(frozen=True, slots=True, eq=False)
class RowSnapshot:
    """One row as it stood at one moment: what observers (bars, dashboards, downloads, webhooks)
    are given instead of the live ``Job``, which the runner goes on changing. Immutable."""

    key: str
    index: int
    request: VideoRequest
    state: State
    attempts: int
    generation: int
    task_id: str | None
    submitted_at: float | None
    completed_at: float | None
    video_url: str | None
    video_id: str | None
    video_duration: float | None
    expires_at: float | None
    error_kind: str | None
    error: str | None
    provider_used: str | None
    model_used: str | None
    cost_estimated: float | None
    cost_earlier: float | None
    cost_actual: float | None
    cost_units: float | None
    updated_at: float
    extras: Mapping[str, Any]  # read-only copy

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def may_have_paid(self) -> bool:
        """As ``Job.may_have_paid``."""
        return may_have_paid(self.state, self.task_id)

    def idempotency_key(self, run_id: str) -> str:
        return idempotency_key(run_id, self.key, self.generation)

    def with_extras(self, **extras: Any) -> RowSnapshot:
        """This snapshot with ``extras`` added (what an annotation leaves behind)."""
        return dataclasses.replace(self, extras=MappingProxyType({**self.extras, **extras}))


@dataclass(eq=False, init=False)
class Job:
    """One row's request and where it stands.

    A run builds one per row (200,000 for a large shot list) before its first request, so
    ``__init__`` sets only what the row has: every other field reads its default from the class
    until it is set (about three times faster than a generated init setting all 22).
    """

    key: str
    index: int
    request: VideoRequest
    state: State = State.PENDING
    attempts: int = 0  # submit requests sent (each may cost money)
    generation: int = 0  # bumped by an explicit retry of a failed row
    task_id: str | None = None
    submitted_at: float | None = None  # epoch seconds when the provider accepted the task
    completed_at: float | None = None
    video_url: str | None = None
    video_id: str | None = None
    video_duration: float | None = None
    expires_at: float | None = None
    error_kind: str | None = None
    error: str | None = None
    # Where its task was sent (set with ``submitting``): the provider's name and the model's id.
    provider_used: str | None = None
    model_used: str | None = None
    # USD, by the catalogue (``videobatch._spend``): the estimate of its latest submission (set with
    # ``submitting``), and what its earlier submissions may have cost (carried over by a retry).
    cost_estimated: float | None = None
    cost_earlier: float | None = None
    # USD the provider says its latest submission actually cost (set when its task ended, where
    # the provider reports it: ``TaskStatus.cost_actual``); None: unknown, the estimate holds.
    cost_actual: float | None = None
    # The same in the provider's own units, as it reported them (Kling: final_unit_deduction).
    cost_units: float | None = None
    updated_at: float = field(default_factory=time.time)
    # Extra result columns written by observers (downloads, webhooks): name -> JSON-able value.
    extras: dict[str, Any] = field(default_factory=dict)

    def __init__(self, key: str, index: int, request: VideoRequest, state: State = State.PENDING,
                 *results: Any, updated_at: float | None = None,
                 extras: dict[str, Any] | None = None, **named: Any) -> None:
        """``results``: RESULT_FIELDS in order (attempts, generation, task_id, ...), positionally or
        by name; a positional None keeps the field's default."""
        self.key = key
        self.index = index
        self.request = request
        if state is not State.PENDING:
            self.state = state
        if results:
            if len(results) > len(RESULT_FIELDS):
                raise TypeError(f"Job() takes at most {len(RESULT_FIELDS)} result fields, "
                                f"got {len(results)}")
            for name, value in zip(RESULT_FIELDS, results, strict=False):  # a prefix of them
                if value is not None:  # None: the class default
                    setattr(self, name, value)
        if named:
            if not _RESULT_FIELD_SET.issuperset(named):
                raise TypeError(f"unknown job fields: {sorted(set(named) - _RESULT_FIELD_SET)}")
            for name, value in named.items():
                setattr(self, name, value)
        self.updated_at = time.time() if updated_at is None else updated_at
        self.extras = {} if extras is None else extras

    @classmethod
    def fresh(cls, keys: Sequence[str], requests: Sequence[VideoRequest]) -> list[Job]:
        """New rows' jobs (pending, nothing set), one per key: what ``__init__`` builds, in bulk
        (twice as fast: no argument handling, one clock reading for all). Each job takes its
        request from ``requests[index]`` when it is first asked for (``_row_requests``)."""
        if len(keys) != len(requests):
            raise ValueError("Job.fresh: one request per key")
        now, new, jobs = time.time(), object.__new__, []
        for index, key in enumerate(keys):
            job = new(cls)
            # (``_requests`` is no field: only ``_FromRowRequests`` reads it)
            job.key, job.index, job._requests, job.updated_at, job.extras = (  # type: ignore[attr-defined]
                key, index, requests, now, {})
            jobs.append(job)
        return jobs

    def idempotency_key(self, run_id: str) -> str:
        return idempotency_key(run_id, self.key, self.generation)

    def snapshot(self) -> RowSnapshot:
        """This row as it stands now, frozen (see ``RowSnapshot``)."""
        return RowSnapshot(
            self.key, self.index, self.request, self.state, self.attempts, self.generation,
            self.task_id, self.submitted_at, self.completed_at, self.video_url, self.video_id,
            self.video_duration, self.expires_at, self.error_kind, self.error, self.provider_used,
            self.model_used, self.cost_estimated, self.cost_earlier, self.cost_actual, self.cost_units,
            self.updated_at,
            MappingProxyType(dict(self.extras)) if self.extras else _NO_EXTRAS)

    def retry(self) -> dict[str, Any]:
        """Put a failed row back to work; returns the journal record.

        A row that failed only because we stopped waiting (``timeout``) still has a task at the
        provider that may finish: it goes back to ``generating`` to wait for that task (nothing is
        paid again). Any other failure starts a new, separately paid submission (``pending``).
        """
        if self.state is State.FAILED and self.error_kind == "timeout" and self.task_id:
            return self.transition(State.GENERATING, error_kind=None, error=None, completed_at=None)
        if self.state is State.UNKNOWN:
            # The user's word: send it again under a new key (the old one may be taken at the
            # provider), accepting that the first request may have been paid too.
            return self.transition(State.PENDING, generation=self.generation + 1,
                                   **dict.fromkeys(_CLEARED), cost_earlier=self.carried_cost())
        return self.transition(State.PENDING)

    def may_have_paid(self) -> bool:
        """Whether its latest submission may have cost money: the provider accepted it (a task
        exists and was not stopped before it ran), or nobody can say (``unknown``). A row being
        sent (``submitting``) holds a reservation instead (``videobatch._spend``)."""
        return may_have_paid(self.state, self.task_id)

    def cost_latest(self) -> float | None:
        """What its latest submission cost: the provider's actual figure where known, else the
        estimate (USD; ``videobatch._spend``). Paid or not: see ``may_have_paid``."""
        # (float(): a store that keeps fields as text, as a Redis hash does, hands back strings)
        own = self.cost_actual if self.cost_actual is not None else self.cost_estimated
        return None if own is None else float(own)

    def carried_cost(self) -> float | None:
        """What this row has cost so far (USD: actual where the provider said, else estimates),
        kept when a new submission starts."""
        earlier = None if self.cost_earlier is None else float(self.cost_earlier)
        latest = self.cost_latest() if self.may_have_paid() else None
        if latest is None:
            return earlier
        return round((earlier or 0.0) + float(latest), 6)

    def can_move_to(self, new: State) -> bool:
        return new in _LEGAL[self.state]

    def transition(self, new: State, **fields: Any) -> dict[str, Any]:
        """Move to ``new`` and set ``fields``; returns the journal record describing the change.

        Raises IllegalTransition (and changes nothing) if the state machine forbids the move.
        """
        if type(new) is not State:
            new = State(new)
        if new not in _LEGAL[self.state]:
            raise IllegalTransition(f"row {self.key!r}: cannot go from {self.state.value} to {new.value}")
        if not _RESULT_FIELD_SET.issuperset(fields):
            raise TypeError(f"unknown job fields: {sorted(set(fields) - _RESULT_FIELD_SET)}")
        if new is PENDING and (self.state is FAILED or (self.state is CANCELLED and self.task_id)):
            # A retry starts a fresh submission with its own idempotency key.
            fields.setdefault("generation", self.generation + 1)
            fields.setdefault("cost_earlier", self.carried_cost())
            for name in _CLEARED:
                fields.setdefault(name, None)
        self.state = new
        self.__dict__.update(fields)  # (plain fields, checked above: as setattr, at C speed)
        self.updated_at = time.time()
        # (``_value_``: the plain attribute behind ``.value``, a Python-level property call)
        return {"k": self.key, "s": new._value_, "t": self.updated_at, **fields}

    def annotate(self, **extras: Any) -> dict[str, Any]:
        """Set extra result columns (no state change); returns the journal record."""
        record = annotation(self.key, extras)
        self.extras.update(extras)
        return record

    def apply(self, record: dict[str, Any]) -> None:
        """Replay a journal record (no legality check: the record was legal when written)."""
        if "x" in record:
            self.extras.update(record["x"])
        if "s" not in record:
            return
        self.state = State(record["s"])
        for name in RESULT_FIELDS:
            if name in record:
                setattr(self, name, record[name])
        self.updated_at = record.get("t", self.updated_at)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def __repr__(self) -> str:
        return f"Job(key={self.key!r}, state={self.state.value}, attempts={self.attempts})"


class _FromRowRequests:
    """``Job.request`` of a job ``Job.fresh`` made: its rows' request, taken when first asked for,
    then kept as if set. (A ``__getattr__`` on ``Job`` would slow every read of every job's fields.)"""

    def __get__(self, job: Job | None, owner: type | None = None) -> Any:
        if job is None:
            return self
        requests = job.__dict__.get("_requests")
        if requests is None:
            raise AttributeError(f"{type(job).__name__!r} object has no attribute 'request'")
        request = job.__dict__["request"] = requests[job.index]
        return request


if not TYPE_CHECKING:  # (for type checkers ``request`` is the plain field it acts as)
    Job.request = _FromRowRequests()
