"""How a plan reads on the command line (``videobatch._plan``): the main command's ``--dry-run``
and ``retry --dry-run`` print it, and the spend figures (``videobatch._spend``) the summary and
``status`` show."""

from __future__ import annotations

import os
import sys
from collections import Counter

from .._api import Batch
from .._jobs import Job
from .._plan import Plan
from .._spend import BUDGET, Actuals, Figures, money
from ..fallback import Target
from ._options import ExitCode

__all__ = ["CONFIRM_ABOVE", "budget_left", "budget_lines", "confirmed", "declined",
           "plan_lines"]

# USD: in an interactive terminal, a run estimated above this asks first (unset: never asks).
CONFIRM_ABOVE = "VIDEOBATCH_CONFIRM_ABOVE"


def plan_lines(batch: Batch, plan: Plan, *, checkpoint: str | None,
               examples: bool = True) -> list[str]:
    """What the run of ``batch`` would do, as ``plan`` says: one line per kind of row, the cost."""
    names = Counter[str]()
    for group in plan.groups:
        names[group.provider] += group.rows
    mixed = len(names) > 1
    where = (f" to {next(iter(names), batch.provider.name)!r}" if not mixed
             else ": " + ", ".join(f"{n} to {name!r}" for name, n in names.most_common()))
    lines = [f"{plan.rows} rows valid; {plan.paid} would be submitted{where} (paid requests)"]
    lines += [f"note: {note}" for note in plan.notes]
    for g in sorted(plan.groups, key=lambda g: -g.rows):
        lines.append(f"  {g.rows:>5} × {g.provider + ' ' if mixed else ''}{g}   "
                     + ("price unknown" if g.cost is None else f"about {money(g.cost)}"))
    retry = f"`python -m videobatch retry {checkpoint or 'CHECKPOINT'}`"
    counted = [
        (len(plan.kept), "already completed: kept as they are"),
        (len(plan.reused), "made by an earlier run (the result cache): reused, not paid "
                           f"(saves {'an unknown amount' if plan.saved is None else 'about ' + money(plan.saved)})"),
        (len(plan.waiting), "accepted earlier: their open task is waited for (not paid again)"),
        (len(plan.in_doubt), "in doubt (submitting or unknown): looked up by key first, sent "
                             "again (paid) only if the provider has no task for them"
                             + (f" (up to {money(plan.in_doubt_cost)})" if plan.in_doubt_cost
                                else "")),
        (len(plan.left.get("failed", ())), f"failed: left as they are ({retry} sends them)"),
        (len(plan.left.get("cancelled", ())), f"cancelled: left as they are ({retry} "
                                              "--cancelled sends them)"),
    ]
    lines += [f"  {n} {what}" for n, what in counted if n]
    if plan.refused:
        key, why = next(iter(plan.refused.items()))
        lines.append(f"  {len(plan.refused)} kept back by the budget, e.g. {key}: {why}")
    if plan.groups:
        by_provider = Counter[str]()
        unknown = {g.provider for g in plan.groups if g.cost is None}
        for g in plan.groups:
            by_provider[g.provider] += round((g.cost or 0) * 1_000_000)
        per = (" (" + ", ".join(f"{name} " + ("unknown" if name in unknown else money(v / 1e6))
                                for name, v in by_provider.items()) + ")") if mixed else ""
        lines.append("estimated cost: " + (f"about {money(plan.estimated)}" if plan.estimated
                                           is not None else "unknown (some rows have no price)")
                     + per)
    if plan.groups:
        per = ("; " + "; ".join(f"{name}: {t.text()}" for name, t in plan.times.items())
               if len(plan.times) > 1 else "")
        lines.append(f"estimated time: {plan.time.text()}{per}")
    lines += budget_lines(plan.before, "this checkpoint so far", Actuals.of(batch.jobs))
    if plan.before.budget is not None and plan.groups and plan.estimated is not None:
        lines.append(f"after this run, at most: spent {money(plan.after.spent)} of the budget "
                     f"{money(plan.before.budget)}")
    return lines + _fallbacks(batch, plan) + (_examples(batch, plan) if examples else [])


def budget_lines(figures: Figures, label: str, actuals: Actuals | None = None) -> list[str]:
    """``label (USD estimates): spent $x · reserved $y · budget $z ($w left)``, when there is
    anything to say; with ``actuals`` (tasks whose provider reported their cost) a second line
    says what was spent by estimates alone and what the provider reported."""
    if figures.budget is None and not figures.spent and not figures.reserved:
        return []
    if actuals is None or not actuals.tasks:
        return [f"{label} (USD estimates): {figures.text()}"]
    lines = [f"{label} (USD; actual where the provider reported it): {figures.text()}"]
    if actuals.estimated is not None:
        by_estimates = figures.spent - actuals.actual + actuals.estimated
        lines.append(f"  estimated {money(max(0.0, by_estimates))} for what was spent; "
                     f"{actuals.text()}")
    else:
        lines.append(f"  {actuals.text()}")
    return lines


def budget_left(jobs: list[Job]) -> str | None:
    """The line that says how many rows the budget left unsent, and what to do (or None)."""
    over = [j for j in jobs if j.error_kind == BUDGET and j.state.value == "pending"]
    if not over:
        return None
    return (f"{len(over)} row(s) not sent because of the budget (e.g. {over[0].key}: "
            f"{over[0].error}); they stay pending")


def confirmed(batch: Batch, *, checkpoint: str | None) -> bool:
    """Whether the run of ``batch`` may go ahead: yes, unless stdin and stdout are a terminal,
    ``VIDEOBATCH_CONFIRM_ABOVE`` is set and the run's estimate is above it (or unknown) — then
    the plan is shown and the user is asked. Scripts and pipes are never asked."""
    raw = os.environ.get(CONFIRM_ABOVE, "").strip()
    if not raw or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return True
    try:
        threshold = float(raw)
    except ValueError:
        print(f"warning: {CONFIRM_ABOVE}={raw!r} is not a number of USD; not asking",
              file=sys.stderr)
        return True
    plan = batch.plan()
    if not plan.paid or (plan.estimated is not None and plan.estimated <= threshold):
        return True
    print("\n".join(plan_lines(batch, plan, checkpoint=checkpoint, examples=False)))
    cost = "at an unknown cost" if plan.estimated is None else f"about {money(plan.estimated)}"
    print(f"Send {plan.paid} paid request(s), {cost} (above {CONFIRM_ABOVE}={money(threshold)})? "
          "[y/N] ", end="", flush=True)
    answer = sys.stdin.readline()  # "" at the end of input: no
    return answer.strip().lower() in ("y", "yes")


def declined(batch: Batch) -> ExitCode:
    """The user said no: nothing was sent; the checkpoint is left as it was opened."""
    release = getattr(batch.store, "release", None)
    if release is not None:
        release()
    print("nothing was submitted (run the same command again to be asked again; --yes does not "
          "ask)", file=sys.stderr)
    return ExitCode.INTERRUPTED


def _fallbacks(batch: Batch, plan: Plan) -> list[str]:
    moving = [key for key in plan.send if key in batch.providers.fallbacks]
    if not moving:
        return []
    first = batch.providers.fallbacks[moving[0]]
    return [f"  {len(moving)} row(s) have a fallback: should their provider refuse the account or "
            "the model, they go on unpaid (e.g. to " + ", then ".join(
                str(Target(r.provider or "", r.model or "")) for r in first) + ")"]


def _examples(batch: Batch, plan: Plan, shown: int = 20) -> list[str]:
    by_key = {job.key: job for job in batch.jobs}
    lines = [f"  {key}: {by_key[key].request.summary()}" for key in plan.send[:shown]]
    if len(plan.send) > shown:
        lines.append(f"  ... and {len(plan.send) - shown} more")
    return lines
