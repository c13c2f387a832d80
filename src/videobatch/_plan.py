"""What a run would do, told before it does it: which rows it pays for, keeps, reuses (the result
cache), waits for, looks up or refuses, and what that costs (``Plan``; ``--dry-run``,
``Batch.plan()``, ``videobatch.plan``).

The plan is made from the rows in the state the run starts from (the checkpoint read as
``_opening.decide`` reads it for the run, retries applied as the run applies them) by the same
rules the run follows: ``starting`` says which rows a run drives (the runner calls it too), and the
budget is kept by the same ``Ledger``, admitting rows in the order the run sends them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

from ._fleet import Providers
from ._jobs import Job, State
from ._plan_time import NOTHING, Eta, eta, task_lengths, total
from ._pools import slot_range
from ._settings import RunSettings
from ._spend import Figures, Ledger, micro, usd
from .providers.base import Provider
from .request import VideoRequest

__all__ = ["Group", "Plan", "Start", "make_plan", "starting"]


class Start(NamedTuple):
    """The rows a run drives, in the order it takes them up."""

    resumed: list[Job]  # cancelled earlier, put back to work (a resume): they are sent
    in_doubt: list[Job]  # submitting/unknown: looked up by key before anything is sent again
    accepted: list[Job]  # generating: their open task is waited for
    pending: list[Job]  # sent (paid), resumed rows among them, in input order


def starting(jobs: Sequence[Job], settings: RunSettings) -> Start:
    """Which rows a run over ``jobs`` drives (nothing changed: the runner moves ``resumed`` rows to
    pending itself). Failed rows, and cancelled rows when not resuming, stay as they are."""
    resume = settings.resume_cancelled
    if list(map(_state, jobs)).count(State.PENDING) == len(jobs):  # a new run: nothing to sort
        return Start([], [], [], list(jobs))
    by_state: dict[State, list[Job]] = {state: [] for state in State}
    for job in jobs:
        by_state[job.state].append(job)
    resumed = by_state[State.CANCELLED] if resume else []
    in_doubt = by_state[State.SUBMITTING] or by_state[State.UNKNOWN]
    if by_state[State.SUBMITTING] and by_state[State.UNKNOWN]:  # both: in input order
        in_doubt = [j for j in jobs if j.state is State.SUBMITTING or j.state is State.UNKNOWN]
    if resume and resumed:
        pending = [j for j in jobs if j.state is State.PENDING or j.state is State.CANCELLED]
    else:
        pending = by_state[State.PENDING]
    return Start(resumed, in_doubt, by_state[State.GENERATING], pending)


_state = attrgetter("state")


@dataclass(frozen=True)
class Group:
    """Rows a plan sends to one provider's model with the same priced choices (e.g. ``pro 10s``),
    and their estimated cost in USD (None: no price)."""

    provider: str
    model: str
    choices: str
    rows: int
    cost: float | None

    def __str__(self) -> str:
        return " ".join(p for p in (self.model or "default model", self.choices) if p)


@dataclass
class Plan:
    """What a run would do (see the module docstring). Keys are row keys, in input order."""

    rows: int
    send: list[str]  # paid submissions (pending rows, resumed or retried ones)
    kept: list[str]  # completed: kept as they are
    waiting: list[str]  # generating: their open task is waited for, not paid again
    in_doubt: list[str]  # submitting/unknown: looked up first; paid only if the key is free
    left: dict[str, list[str]]  # untouched, by state: failed (not retried), cancelled, unknown
    refused: dict[str, str]  # not sent, and why (the budget)
    groups: list[Group]  # the rows to send by provider and model
    estimated: float | None  # their estimated cost in USD (None: some have no price)
    in_doubt_cost: float | None  # what the in-doubt rows would cost if sent again
    before: Figures  # spent / reserved / budget of the checkpoint when the run starts
    notes: list[str] = field(default_factory=list)  # how the checkpoint opens, set-up to do
    # About how long the rows to send take: per pool (provider, or provider:model), and in all.
    times: dict[str, Eta] = field(default_factory=dict)
    time: Eta = NOTHING
    reused: list[str] = field(default_factory=list)  # taken from the result cache: not paid
    saved: float | None = 0.0  # what the reused rows would have cost (None: some have no price)

    @property
    def paid(self) -> int:
        """How many paid submissions the run makes (at most, if in-doubt rows find their task)."""
        return len(self.send)

    @property
    def after(self) -> Figures:
        """The figures once every row sent was accepted (their estimates spent)."""
        sent = sum(micro(g.cost) for g in self.groups)
        return Figures(usd(micro(self.before.spent) + micro(self.before.reserved) + sent), 0.0,
                       self.before.budget)


def make_plan(jobs: Sequence[Job], providers: Providers, settings: RunSettings,
              notes: Sequence[str] = (), *, dropped: float = 0.0,
              reused: Mapping[str, float | None] | None = None) -> Plan:
    """The plan of a run of ``settings`` over ``jobs`` (as they stand before it starts);
    ``dropped``: what the checkpoint spent on rows it no longer holds; ``reused``: the rows the
    run takes from the result cache (``videobatch._reuse.find``) and what each would have cost."""
    reused = reused or {}
    start = starting(jobs, settings)
    ledger = Ledger(jobs, settings.max_cost, providers.estimate_cost, dropped=dropped)
    before = ledger.figures()
    send: list[str] = []
    refused: dict[str, str] = {}
    groups: dict[tuple[str, str, str], list[float | None]] = {}
    priced: dict[tuple[Any, ...], tuple[str, str, float | None]] = {}
    for job in start.pending:
        if job.key in reused:
            continue
        request, provider = providers.request_of(job), providers.for_row(job)
        model, choices, cost = _priced(provider, request, priced)
        if not ledger.admits(cost):
            refused[job.key] = ledger.refusal(cost, f"{provider.name} {model}".strip())
            continue
        ledger.reserved += micro(cost)  # held from here on, as the run's submitting record holds it
        send.append(job.key)
        groups.setdefault((provider.name, model, choices), []).append(cost)
    by_group = [Group(*group, len(costs), _total(costs)) for group, costs in groups.items()]
    times = _times(by_group, jobs, providers, settings)
    doubt = start.in_doubt
    left: dict[str, list[str]] = {}
    for job in jobs:
        if job.state is State.FAILED or (job.state is State.CANCELLED
                                         and not settings.resume_cancelled):
            left.setdefault(job.state.value, []).append(job.key)
    return Plan(
        rows=len(jobs), send=send, kept=[j.key for j in jobs if j.state is State.COMPLETED],
        waiting=[j.key for j in start.accepted], in_doubt=[j.key for j in doubt], left=left,
        refused=refused, groups=by_group,
        estimated=_total([g.cost for g in by_group]) if by_group else 0.0,
        in_doubt_cost=_total([providers.for_row(j).estimate_cost(providers.request_of(j))
                              for j in doubt]) if doubt else 0.0,
        before=before, notes=list(notes), times=times, time=total(list(times.values())),
        reused=[j.key for j in start.pending if j.key in reused],
        saved=_total(list(reused.values())) if reused else 0.0)


def _times(groups: Sequence[Group], jobs: Sequence[Job], providers: Providers,
           settings: RunSettings) -> dict[str, Eta]:
    """About how long each pool's rows take (a pool: a provider, or a provider's model where its
    limit is per model), on the slots the run starts with."""
    pools: dict[tuple[str, str | None], Counter[str]] = {}
    for g in groups:
        provider = providers.get(g.provider)
        pool = (g.provider, g.model if provider.limits.per_model else None)
        pools.setdefault(pool, Counter())[g.model] += g.rows
    lengths = task_lengths(jobs)
    times = {}
    for (name, model), models in pools.items():
        provider = providers.get(name)
        slots = slot_range(provider, providers.default, settings.concurrency)[0]
        most = models.most_common(1)[0][0]  # the pool's tasks take about as long as its usual model's
        times[name if model is None else f"{name}:{model}"] = eta(
            sum(models.values()), slots, provider, most, lengths)
    return times


# A request's fields but its prompt, as a tuple (every request's dict has every field).
_BUT_PROMPT = itemgetter(*(name for name in VideoRequest.model_fields if name != "prompt"))


def _priced(provider: Provider, request: VideoRequest,
            memo: dict[tuple[Any, ...], tuple[str, str, float | None]]) -> tuple[str, str, float | None]:
    """``request``'s model, priced choices and estimated cost at ``provider``. Rows that differ
    only in their prompt are priced once (unless the provider prices requests its own way)."""
    if type(provider).estimate_cost is not Provider.estimate_cost:
        key = None
    else:
        key = (provider.name, _BUT_PROMPT(request.__dict__))
        try:
            return memo[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable value (camera_control, options): spelled out
            key = (provider.name, repr(key[1]))
            if key in memo:
                return memo[key]
    resolved = provider.resolve(request)
    answer = resolved.model or "", _choices(resolved.values), provider.estimate_cost(request)
    if key is not None:
        memo[key] = answer
    return answer


def _choices(values: Mapping[str, Any]) -> str:
    """The choices of a row that set its price besides the model, e.g. ``pro 1080p 10s audio``."""
    parts = [str(values[name]) for name in ("mode", "resolution") if values.get(name)]
    parts += [f"{values['duration']}s"] if values.get("duration") else []
    parts += ["audio"] if values.get("audio") else []
    return " ".join(parts)


def _total(costs: Sequence[float | None]) -> float | None:
    if any(c is None for c in costs):
        return None
    return usd(sum(micro(c) for c in costs))
