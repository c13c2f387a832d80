"""The providers one run uses, by name, and where each row goes: the provider its ``provider``
column names (else the run's own), or, after refusals, its fallback (``videobatch.fallback``);
once sent, the provider that took its task.

``plan`` builds them for a table and checks every row (and every fallback) against its provider
before anything is paid; the runner's pools (``_pools``) ask ``Providers`` where each row goes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._jobs import Job, State
from ._row_requests import distinct
from ._settings import Stop
from .errors import ConfigError, Problem, ProviderError
from .providers.base import Provider
from .request import VideoRequest

if TYPE_CHECKING:
    from ._input_keys import Prompts

__all__ = ["PoolKey", "Providers", "plan"]

PoolKey = tuple[str, str | None]  # provider name, and the model where its limit is per model
Given = Mapping[str, Provider | Mapping[str, Any]]  # other providers: objects, or their options

# States whose task (possibly) exists: the row belongs to the provider it was sent to.
_SENT = frozenset({State.SUBMITTING, State.GENERATING, State.UNKNOWN, State.COMPLETED, State.FAILED})


def plan(default: Provider, prompts: Prompts, given: Given | None,
         fallback: str | Sequence[str] | None, *, rows_only: bool = False
         ) -> tuple[Providers, list[Problem]]:
    """The providers of a run over ``prompts`` (each row's own, and its fallbacks'), and every
    problem their pre-flight checks find (``rows_only``: without credentials, as a dry run)."""
    from .fallback import row_fallbacks

    alternatives, problems = row_fallbacks(prompts, fallback, default, given)
    providers = Providers.for_rows(default, prompts.requests, given, fallbacks=alternatives)
    problems += providers.check(prompts.requests, rows_only=rows_only)
    problems += providers.check_fallbacks(prompts.keys, rows_only=rows_only)
    return providers, problems


class Providers:
    """The providers of one run, by name: the run's own (``default``, for rows naming none) and
    the others a mixed table names."""

    def __init__(self, default: Provider, others: Mapping[str, Provider] | None = None, *,
                 fallbacks: Mapping[str, tuple[VideoRequest, ...]] | None = None) -> None:
        self.default = default
        self._by_name: dict[str, Provider] = {default.name: default}
        for name, provider in (others or {}).items():
            self._by_name.setdefault(name, provider)
        # Row key -> its fallback requests in order (``videobatch.fallback``), and how far along
        # them each row has moved in this run (rows start at their own request).
        self.fallbacks = dict(fallbacks or {})
        self._moved: dict[str, int] = {}
        self._named: set[str] | None = None  # providers the rows name (None: all of them)

    @classmethod
    def of(cls, given: Provider | Providers) -> Providers:
        return given if isinstance(given, Providers) else cls(given)

    @classmethod
    def for_rows(cls, default: Provider, requests: Sequence[VideoRequest],
                 given: Given | None = None, *,
                 fallbacks: Mapping[str, tuple[VideoRequest, ...]] | None = None) -> Providers:
        """The run's provider and every other one ``requests`` (or their ``fallbacks``, by row
        key) name: the objects in ``given``, or built by name with the options ``given`` holds for
        them (``{"fal": {"base_url": ...}}``)."""
        from .providers import get_provider

        given = given or {}
        others: dict[str, Provider] = {}
        shown = distinct(requests)  # (only their providers are read)
        for request in [*shown, *(alt for alts in (fallbacks or {}).values() for alt in alts)]:
            name = request.provider
            if name is None or name == default.name or name in others:
                continue
            chosen = given.get(name, {})
            if isinstance(chosen, Provider):
                others[name] = chosen
            elif isinstance(chosen, Mapping):
                others[name] = get_provider(name, **chosen)
            else:
                raise ConfigError(f"providers[{name!r}] must be a provider object or a dict of its "
                                  f"options, got {type(chosen).__name__}")
        named = cls(default, others, fallbacks=fallbacks)
        named._named = {r.provider for r in shown if r.provider is not None}
        return named

    def include(self, jobs: Sequence[Job], given: Given | None = None) -> None:
        """Add the providers that rows of a resumed checkpoint were sent to and that nothing else
        names now (a fallback not given again): their tasks are still theirs to look up and poll."""
        from .providers import get_provider

        for job in jobs:
            name = job.provider_used
            if name is None or name in self._by_name or job.state not in _SENT:
                continue
            chosen = (given or {}).get(name, {})
            provider = chosen if isinstance(chosen, Provider) else get_provider(name, **chosen)
            provider.check([])  # its set-up (a key) is needed now: say so before anything runs
            self._by_name[name] = provider

    def check(self, requests: Sequence[VideoRequest], *, rows_only: bool = False,
              row_numbers: Sequence[int] | None = None) -> list[Problem]:
        """Each provider's pre-flight check of its own rows (row numbers: ``row_numbers``, else
        those of ``requests``). ``rows_only``: without the set-up part (credentials), as a dry run
        does."""
        if len(self._by_name) == 1:  # one provider: all rows are its own (no grouping to do)
            found = (self.default.check_rows(requests) if rows_only else self.default.check(requests))
            return found if row_numbers is None else [
                p if p.row is None else replace(p, row=row_numbers[p.row - 1]) for p in found]
        rows: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            rows.setdefault(self.get(request.provider).name, []).append(index)
        numbers = row_numbers if row_numbers is not None else range(1, len(requests) + 1)
        problems: list[Problem] = []
        for name, indexes in rows.items():
            provider = self._by_name[name]
            mine = [requests[i] for i in indexes]
            found = provider.check_rows(mine) if rows_only else provider.check(mine)
            problems += [p if p.row is None else replace(p, row=numbers[indexes[p.row - 1]])
                         for p in found]
        return problems

    def check_fallbacks(self, keys: Sequence[str], *, rows_only: bool = False) -> list[Problem]:
        """``check`` of every row's fallback requests (rows in the order of ``keys``)."""
        if not self.fallbacks:
            return []
        requests, numbers = [], []
        for row, key in enumerate(keys, 1):
            for request in self.fallbacks.get(key, ()):
                requests.append(request)
                numbers.append(row)
        return self.check(requests, rows_only=rows_only, row_numbers=numbers) if requests else []

    def estimate_cost(self, request: VideoRequest) -> float | None:
        """Estimated USD price of ``request`` at its provider (None when unknown)."""
        return self.get(request.provider).estimate_cost(request)

    def describe(self) -> dict[str, Any]:
        """What the checkpoint records of the providers: the run's own, then the others its rows
        name (not those only a fallback names: adding a fallback to resume a run is no change)."""
        described = self.default.describe()
        named = self._named
        others = {name: p.describe() for name, p in self._by_name.items()
                  if p is not self.default and (named is None or name in named)}
        return {**described, "mixed": others} if others else described

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str | None) -> Provider:
        """The provider called ``name`` (None: the run's own)."""
        if name is None:
            return self.default
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"this run has no provider {name!r} (it has: "
                              f"{', '.join(self._by_name)})") from None

    def request_of(self, job: Job) -> VideoRequest:
        """What ``job`` sends: once sent, the request its task was made from; before, its own
        request or, after refusals, the fallback it has moved to."""
        alternatives = self.fallbacks.get(job.key)
        if not alternatives:
            return job.request
        if job.provider_used is not None and job.state in _SENT:
            for request in (job.request, *alternatives):
                provider = self.get(request.provider)
                if provider.name == job.provider_used and (
                        job.model_used is None or provider.model_id(request) == job.model_used):
                    return request
            return job.request
        return (job.request, *alternatives)[self._moved.get(job.key, 0)]

    def fail_over(self, job: Job) -> bool:
        """Move an unpaid ``job`` to its next fallback; False when it has none left."""
        step = self._moved.get(job.key, 0) + 1
        if step > len(self.fallbacks.get(job.key, ())):
            return False
        self._moved[job.key] = step
        return True

    def for_row(self, job: Job) -> Provider:
        """Where ``job`` goes: the provider its task was sent to once sent, else the one its
        request (or fallback) names."""
        if job.provider_used is not None and job.state in _SENT:
            return self.get(job.provider_used)
        return self.get(self.request_of(job).provider)

    def pool_key(self, job: Job) -> PoolKey:
        provider = self.for_row(job)
        if not provider.limits.per_model:
            return (provider.name, None)
        model = (job.model_used if job.provider_used == provider.name and job.state in _SENT
                 else None) or provider.model_id(self.request_of(job))
        return (provider.name, model)

    def left_waiting(self, stop: Stop, jobs: Sequence[Job]) -> ProviderError | None:
        """The account or model refusal that left rows unpaid and pending at the end of a run (a
        refusal whose rows all moved to a fallback stopped nothing)."""
        for job in jobs:
            if job.state is not State.PENDING:
                continue
            provider = self.for_row(job)
            closed = stop.closed(provider.name)
            if closed is not None:
                return closed
            if (provider.name, provider.model_id(self.request_of(job)) or "") in stop.blocked:
                return stop.blocked_error()
        return None

    async def aclose(self, *, keep: Provider | None = None) -> None:
        """Close every provider but ``keep`` (the caller's own object stays open)."""
        for provider in self:
            if provider is not keep:
                await provider.aclose()
