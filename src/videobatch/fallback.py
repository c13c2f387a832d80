"""Fallback: where a row goes when its own provider refuses it for account or model reasons.

Opt-in, per row (a ``fallback`` column) or for the run (``fallback=`` in Python, ``--fallback`` on
the command line; a row's own cell wins). The syntax, one or more targets tried in order::

    PROVIDER:MODEL [-OPTION ...] [, PROVIDER:MODEL [-OPTION ...] ...]

    fal:fal-ai/kling-video/v2.5-turbo/pro/text-to-video -mode, replicate:kwaivgi/kling-v2.6 -mode

The model is always named: nothing picks a model for you. A row's request is carried to a target as
it is: the shared fields (prompt, images, duration, aspect ratio, resolution, seed, audio) and each
option of the row under the same name, and the whole is checked against the target's own rules
before anything is paid. An option the target does not take is refused unless the target drops
it (``-mode``: leave the row's ``mode`` behind, e.g. because the target model is itself the "pro"
endpoint). A duration or aspect ratio the target model does not take is refused too.

When does a row move: only while it is unpaid — its provider refused the account (balance,
permission) or the model (gone, not allowed), which creates no task. A row once accepted never
moves; ``provider_used`` / ``model_used`` in the results say who made each clip.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ._input_table import column_values
from .errors import ConfigError, Problem
from .request import RequestRules, VideoRequest, request_errors

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._input_keys import Prompts
    from .providers.base import Provider

__all__ = ["FALLBACK_COLUMN", "Target", "fallbacks", "parse_fallback", "row_fallbacks"]

FALLBACK_COLUMN = "fallback"
_TARGET = re.compile(r"^(?P<provider>[A-Za-z0-9_.-]+):(?P<model>\S+)(?P<drops>(?:\s+-[A-Za-z_][\w]*)*)$")


@dataclass(frozen=True)
class Target:
    """One fallback target: a provider, its model, and the row options left behind."""

    provider: str
    model: str
    drop: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + "".join(f" -{name}" for name in self.drop)


def parse_fallback(spec: str | Sequence[str]) -> tuple[Target, ...]:
    """The targets of a fallback spec (see the module docstring); ValueError says what is wrong."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    pieces = [piece.strip() for part in parts for piece in str(part).split(",")]
    targets = []
    for piece in pieces:
        if not piece:
            continue
        found = _TARGET.match(piece)
        if found is None:
            raise ValueError(f"{piece!r} is not PROVIDER:MODEL [-OPTION ...] "
                             "(e.g. 'fal:fal-ai/kling-video/v2.5-turbo/pro/text-to-video -mode')")
        drops = tuple(word[1:] for word in found["drops"].split())
        targets.append(Target(found["provider"], found["model"], drops))
    return tuple(targets)


def fallbacks(
    requests: Sequence[VideoRequest],
    cells: Sequence[Any] | None,
    run_spec: str | Sequence[str] | None,
    rules_of: Callable[[str], RequestRules],
) -> tuple[list[tuple[VideoRequest, ...]], list[Problem]]:
    """Each row's fallback requests, in order (empty: none), and every problem with them.

    ``cells``: the table's ``fallback`` column (None: no such column); ``run_spec``: the run-wide
    fallback for rows whose cell is empty; ``rules_of``: a provider's rules by name (ConfigError
    for a provider nobody offers).
    """
    try:
        run_targets = parse_fallback(run_spec) if run_spec else ()
    except ValueError as exc:
        raise ConfigError(f"fallback: {exc}") from None
    out: list[tuple[VideoRequest, ...]] = []
    problems: list[Problem] = []
    for row, request in enumerate(requests, 1):
        cell = cells[row - 1] if cells is not None else None
        targets = run_targets
        if isinstance(cell, str) and cell.strip():
            try:
                targets = parse_fallback(cell)
            except ValueError as exc:
                problems.append(Problem(row, FALLBACK_COLUMN, str(exc)))
                out.append(())
                continue
        alternatives = []
        for target in targets:
            made = _carry(request, target, rules_of)
            if isinstance(made, str):
                problems.append(Problem(row, FALLBACK_COLUMN, f"{target}: {made}"))
            else:
                alternatives.append(made)
        out.append(tuple(alternatives))
    return out, problems


def _carry(request: VideoRequest, target: Target,
           rules_of: Callable[[str], RequestRules]) -> VideoRequest | str:
    """``request`` as ``target`` would be sent it, checked against its rules; or what is wrong."""
    try:
        rules = rules_of(target.provider)
    except ConfigError as exc:
        return str(exc)
    values = {name: value for name, value in request.__dict__.items()
              if value is not None and name not in ("provider", "model", "options")}
    options = {name: value for name, value in (request.options or {}).items()
               if name not in target.drop}
    values.update(provider=target.provider, model=target.model, options=options or None)
    try:
        return VideoRequest.model_validate(values, context={"rules": rules})
    except ValidationError as exc:
        said = []
        for error in request_errors(exc):
            said.append(error["msg"])
            field = (error.get("ctx") or {}).get("field") or (error["loc"][0] if error["loc"] else None)
            if field in (request.options or {}) and field not in target.drop:
                said[-1] += f" (leave it behind with -{field})"
        return "; ".join(said)


def row_fallbacks(prompts: Prompts, run_spec: str | Sequence[str] | None, provider: Provider,
                  given: Mapping[str, Provider | Mapping[str, Any]] | None
                  ) -> tuple[dict[str, tuple[VideoRequest, ...]], list[Problem]]:
    """Each row's fallback requests by row key (rows with none left out), and their problems:
    the table's ``fallback`` column, else ``run_spec``; each target checked against the rules of
    ``provider`` (the run's), of a ready provider object in ``given``, or of the registry's."""
    from .providers import Provider, rules_of

    cells = column_values(prompts.table, FALLBACK_COLUMN) if FALLBACK_COLUMN in prompts.columns else None
    if cells is None and not run_spec:
        return {}, []
    objects = {name: p for name, p in (given or {}).items() if isinstance(p, Provider)}

    def rules(name: str) -> RequestRules:
        chosen = provider if name == provider.name else objects.get(name)
        return chosen.rules() if chosen is not None else rules_of(name)

    alternatives, problems = fallbacks(prompts.requests, cells, run_spec, rules)
    return {key: alts for key, alts in zip(prompts.keys, alternatives, strict=True) if alts}, problems
