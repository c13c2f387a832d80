"""The one small interface every video provider implements; the runner sees nothing else.

A provider turns a ``VideoRequest`` into a paid task and reports on it. It never sees checkpoints,
rows or retries: the runner owns those. Errors are raised as ``videobatch.errors.ProviderError``
subclasses so the runner can tell "retry" from "give up on this row" from "stop the run".

Every HTTP request a provider sends goes out through ``Provider.http_client()``: a client whose
transport takes a token from the run's rate limiter (``attach``) before each request, so
``max_rps`` holds on the wire however many requests one call needs (list pages, a second
endpoint, a token renewal). This module may use the engine's pacing helpers for that
(``videobatch._pacing``, ``videobatch._http``, ``videobatch._retry``) and nothing else of it.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from .._pacing import RateLimiter
from .._text import make_storable, plain
from ..catalog import Catalog, ModelCard
from ..errors import ConfigError, Problem, ProviderError
from ..request import RequestRules, VideoRequest

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from pydantic import BaseModel

__all__ = ["Capabilities", "Limits", "PollHint", "Provider", "Resolved", "ScanResult", "TaskState", "TaskStatus",
           "Video"]


class TaskState(enum.StrEnum):
    QUEUED = "queued"  # accepted, holding a slot, not started
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        return self in _DONE  # (a module constant: see State's constants in videobatch._jobs)


_DONE = (TaskState.SUCCEEDED, TaskState.FAILED)


@dataclass(frozen=True)
class Video:
    url: str
    id: str | None = None
    duration: float | None = None  # seconds

    def __post_init__(self) -> None:
        if not plain(self.url, self.id):  # journaled and snapshotted: made storable (videobatch._text)
            make_storable(self, "url", "id")


@dataclass(frozen=True)
class TaskStatus:
    """What the provider says about one task."""

    task_id: str
    state: TaskState
    videos: tuple[Video, ...] = ()
    message: str | None = None  # why it failed, in the provider's words
    created_at: float | None = None  # epoch seconds
    finished_at: float | None = None  # epoch seconds the provider says the task ended, if it says
    expires_at: float | None = None  # when result URLs stop working
    idempotency_key: str | None = None
    # USD the provider says the finished task actually cost (its own figure, e.g. Kling's
    # final_unit_deduction × the catalogue's unit price); None: it does not say (the estimate holds)
    cost_actual: float | None = None
    cost_units: float | None = None  # the same in the provider's own units, as it reported them

    def __post_init__(self) -> None:
        if not plain(self.task_id, self.message, self.idempotency_key):
            make_storable(self, "task_id", "message", "idempotency_key")


@dataclass(frozen=True)
class ScanResult:
    """What a listing of the account's tasks said about some idempotency keys.

    ``found``: key -> the task created with exactly that key. ``complete``: the listing reached back
    past the earliest time asked for, so a key not in ``found`` certainly has no task (it is free to
    be submitted). An incomplete scan proves nothing about the keys it did not find.
    """

    found: Mapping[str, TaskStatus]
    complete: bool


@dataclass(frozen=True)
class Limits:
    """What the provider account tolerates."""

    max_parallel: int = 5  # tasks that may be in flight at once (queued or running)
    max_rps: float | None = None  # API requests per second (None: no stated limit)
    # True when max_parallel holds for each model apart (the run then keeps one pool per model)
    per_model: bool = False
    # When nobody stated the account's limit: start at max_parallel and look for more while the
    # provider accepts, up to this many (a "slots busy" answer shows where the limit is). None: no.
    probe_up_to: int | None = None


@dataclass(frozen=True)
class PollHint:
    """How long a task usually takes, so polling neither floods the API nor leaves slots idle.

    Before any task has finished, the runner first polls ``first_poll`` seconds after submitting,
    then every ``min_interval`` growing by ``growth`` up to ``max_interval``. Once tasks finish it
    learns their real durations and aims polls at them. ``polls_per_end``: where one list request
    answers for every task, how many of them per expected task end (1: about one status request
    per task; 2: ends are seen about twice as soon, for about two per task).
    """

    first_poll: float = 5.0
    min_interval: float = 1.0
    max_interval: float = 30.0
    growth: float = 1.5
    polls_per_end: float = 1.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.polls_per_end <= 10:  # (also NaN) the run divides by it
            raise ConfigError(f"polls_per_end={self.polls_per_end!r} must be from 0.1 to 10 "
                              "(list polls per expected task end)")


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do besides submit and status. The runner's policies follow it: without
    ``lookup`` a submit whose answer was lost is never resubmitted on its own (its row's outcome is
    unknown until ``listing`` finds it or the user decides); ``cancel`` lets a cancelled run stop
    queued tasks at the provider, where they cost nothing.
    """

    idempotency_key: bool = False  # the provider keeps a client-chosen id with each task
    lookup: bool = False  # ``find``: the task created with a given idempotency key
    listing: bool = False  # ``scan``: the account's tasks, back to a given time
    cancel: bool = False  # ``cancel``: stop a task at the provider
    webhooks: bool = False  # the provider can call a URL when a task ends
    batch_status: bool = False  # ``status_many`` is cheaper than one ``status`` per task


@dataclass(frozen=True)
class Resolved:
    """One request as the provider sends it: its model's card, every value with the model's
    defaults filled in (shared fields and options, flat), and the options typed by the provider's
    schema."""

    card: ModelCard | None
    values: Mapping[str, Any]
    options: BaseModel | None

    @property
    def model(self) -> str | None:
        return self.card.id if self.card is not None else self.values.get("model")


class Provider(ABC):
    """Base class of providers. Subclass it and register the class (see ``videobatch.providers``).

    ``capabilities``: declare them; a subclass that does not is credited with what it implements
    (``find`` -> idempotency key and lookup, ``scan`` -> listing, ``cancel``, ``batch_polling``).
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    _capabilities_inferred: ClassVar[bool] = False
    # Its own options (types only: which values each model takes is the catalogue's business) and
    # its packaged model catalogue; see videobatch.catalog for the file and how users extend it.
    option_schema: ClassVar[type[BaseModel] | None] = None
    models_file: ClassVar[Path | None] = None
    _catalog: Catalog | None = None
    limits: Limits = Limits()
    poll_hint: PollHint = PollHint()
    # Set True when status_many() is cheaper than one status() per task (e.g. a list endpoint).
    batch_polling: bool = False
    _attached: RateLimiter | None = None  # the run's limiter (attach)
    _own_limiter: RateLimiter | None = None  # used when none is attached, at limits.max_rps

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = next(c for c in cls.__mro__ if "capabilities" in c.__dict__)
        if declared is Provider or "_capabilities_inferred" in declared.__dict__:
            cls._capabilities_inferred = True
            looks_up = cls.find is not Provider.find
            cls.capabilities = Capabilities(
                idempotency_key=looks_up, lookup=looks_up, listing=cls.scan is not Provider.scan,
                cancel=cls.cancel is not Provider.cancel, batch_status=bool(cls.batch_polling))

    def attach(self, limiter: RateLimiter | None) -> None:
        """Share the run's rate limiter: every request sent through ``http_client`` clients takes
        a token from it, and a "too fast" answer slows it. The runner calls this once per run,
        before any other call; ``None`` goes back to the provider's own pacing (``limits.max_rps``).
        A provider that overrides it must call ``super().attach(limiter)``.
        """
        self._attached = limiter

    def limiter(self) -> RateLimiter:
        """The limiter requests take tokens from now: the attached one, else the provider's own,
        which paces at ``limits.max_rps`` (a provider used on its own, e.g. in a script or test)."""
        if self._attached is not None:
            return self._attached
        own = self._own_limiter
        if own is None or own.rate != self.limits.max_rps:
            own = self._own_limiter = RateLimiter(self.limits.max_rps)
        return own

    def too_fast(self, response: httpx.Response) -> float | None:
        """Seconds the whole account should pause after this HTTP 429 answer (its body is read),
        or None if it does not mean "too many requests" (e.g. a quota or busy-slots answer).

        Default: every 429 means too fast; wait what ``Retry-After`` says, else one second.
        """
        from .._http import default_too_fast

        return default_too_fast(response)

    def http_client(self, *, transport: httpx.AsyncBaseTransport | None = None,
                    **options: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` (``options`` as for it) whose every request is paced by
        ``limiter()``, looked up at each request, and whose 429 answers slow it (``too_fast``).

        ``transport``: what the pacing wraps (tests pass a mock); by default a plain
        ``httpx.AsyncHTTPTransport`` made from the pool options (``limits``, ``verify``, ``http2``,
        ``proxy``), honouring the proxy environment variables. Use it for every API request.
        """
        from .._http import paced_client  # httpx is imported only by providers that talk HTTP

        return paced_client(self.limiter, transport=transport, too_fast=self.too_fast, **options)

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        """Pre-flight: problems with rows this provider would reject (row numbers 1-based).

        Called before anything is submitted, so a bad row costs nothing. Raise ConfigError for
        problems with the provider set-up itself (e.g. missing credentials).
        """
        return self.check_rows(requests)

    def check_rows(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        """The row part of ``check`` alone, needing no credentials (a dry run without keys)."""
        return []

    @abstractmethod
    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        """Create a paid task. ``idempotency_key`` must reach the provider so ``find`` can see it.

        When the provider refuses the create because the key already has a task, return the task
        ``await self.find(idempotency_key)`` finds (adopt it); if the lookup misses it or cannot
        answer, raise ``KeyAlreadyUsed`` — never an error that reads as "nothing was created".
        """

    @abstractmethod
    async def status(self, task_id: str) -> TaskStatus:
        """The current status of one task."""

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        """The task created with exactly this idempotency key, or None when the provider answered
        that it has none (only for providers whose capabilities include ``lookup``).

        A lookup that cannot answer (refused, or the key ignored and other tasks listed instead)
        raises a ``ProviderError`` that is *not* ``NotFoundError``: the runner then falls back to
        ``scan``. A task whose own key is missing or different is never returned.
        """
        raise ProviderError(f"{self.name} cannot look tasks up by an idempotency key")

    async def cancel(self, task_id: str) -> bool | None:
        """Stop a task at the provider (only with the ``cancel`` capability). True when the
        provider shows it stopped before it ran (nothing charged: the row ends ``cancelled``, and a
        resume sends it again); None when it was stopped but may have been charged (the row ends
        ``failed``: only the user's retry pays again); False when it was left alone (running or
        finished: it ends on its own and the next run collects it)."""
        raise ProviderError(f"{self.name} cannot cancel tasks")

    async def scan(self, keys: Mapping[str, VideoRequest | None], since: float) -> ScanResult | None:
        """Look for tasks created with any of ``keys`` by listing the account's tasks back to
        ``since`` (epoch seconds; the earliest moment any of them may have been submitted).

        The fallback when ``find`` cannot answer (a refused or failing lookup): only tasks whose own
        idempotency key equals one of ``keys`` exactly are returned; other systems' tasks on the
        account are skipped. ``None``: this provider cannot list tasks. Errors are raised like
        ``find``'s.

        ``keys`` is a mapping from each key to the request sent under it (or None when unknown):
        a provider that keeps no key of ours matches listed tasks on their inputs instead, and must
        adopt a task only when exactly one listed task and one key match each other (two rows with
        the same inputs are a tie: neither is adopted, so neither can be paid twice).
        """
        return None

    async def status_many(
        self, task_ids: Sequence[str], riders: Sequence[str] = ()
    ) -> Mapping[str, TaskStatus | ProviderError]:
        """Status of several tasks; errors are returned per task, not raised.

        ``riders``: other tasks the caller would like news of *if it costs nothing extra* (they
        appear on a list page fetched anyway). A provider may ignore them; it must not spend a
        request on them.
        """
        answers = await asyncio.gather(*(self.status(t) for t in task_ids), return_exceptions=True)
        out: dict[str, TaskStatus | ProviderError] = {}
        for task_id, answer in zip(task_ids, answers, strict=True):
            if isinstance(answer, TaskStatus | ProviderError):
                out[task_id] = answer
            elif isinstance(answer, BaseException):
                raise answer
        return out

    # ------------------------------------------------------------------ its parameters
    @classmethod
    def catalog_name(cls) -> str:
        """Whose catalogue it reads: the provider that declared ``models_file``, so a subclass
        registered under another name (a second account of the same API) shares its models."""
        owner = next((c for c in cls.__mro__ if "models_file" in c.__dict__), cls)
        return getattr(owner, "name", cls.name)

    def catalog(self) -> Catalog | None:
        """Its models: the packaged file, then the user's (read once per provider object)."""
        if self._catalog is None and self.models_file is not None:
            self._catalog = Catalog.load(self.catalog_name(), self.models_file)
        return self._catalog

    def rules(self) -> RequestRules:
        """What rows for this provider are checked against (options and catalogue)."""
        return RequestRules(self.name, self.option_schema, self.catalog())

    def resolve(self, request: VideoRequest) -> Resolved:
        """``request`` as it is sent: its model's defaults filled in, its options typed."""
        rules = self.rules()
        return Resolved(rules.card(request.model), rules.resolved(request), rules.typed_options(request))

    def model_id(self, request: VideoRequest) -> str | None:
        """The model ``request`` is sent to (``resolve(request).model``, without resolving the
        rest: the runner asks for every row it sends)."""
        catalog = self.catalog()
        card = None if catalog is None else catalog.resolve(request.model)
        return card.id if card is not None else request.model

    def estimate_cost(self, request: VideoRequest) -> float | None:
        """Estimated price of one request in USD, or None if unknown."""
        catalog = self.catalog()
        if catalog is None:
            return None
        rules = self.rules()
        card = rules.card(request.model)
        return None if card is None else catalog.to_usd(card.estimate(rules.resolved(request)))

    def describe(self) -> dict[str, Any]:
        """Settings that change what is generated (stored in the checkpoint). Never secrets."""
        return {"provider": self.name}

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most providers hold nothing
        """Release connections."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} max_parallel={self.limits.max_parallel}>"

