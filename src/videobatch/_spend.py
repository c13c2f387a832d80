"""The cost vocabulary, defined once for every face (plan, summary, ``status``, results), and the
``Ledger`` that holds a run to its budget.

All figures are in USD, from the providers' catalogue prices (``Provider.estimate_cost``; a
catalogue priced in credits converts with its ``unit_price``), except where a provider reports
what a finished task actually cost.

- **estimated**: the price of one request before it is sent. A row's ``cost_estimated`` result is
  the estimate of its latest submission, written with its ``submitting`` record (so before the paid
  request leaves); a plan's estimate is the sum over the rows it would send.
- **actual**: what the provider says a finished task cost (``TaskStatus.cost_actual``: Kling's
  ``final_unit_deduction`` / ``billing[]`` units × the catalogue's ``unit_price``), recorded as the
  row's ``cost_actual`` result with its ``completed`` / ``failed`` record. None where the provider
  does not say (most do not; a task still running): the estimate stands in for it.
- **spent**: what this checkpoint's submissions have cost or may have cost, each by its actual cost
  where known, else its estimate: every submission the provider accepted (a task exists:
  generating, completed, failed after acceptance), every submission of unknown outcome ("maybe
  paid" counts as paid), and the earlier submissions of rows that were retried since (a row's
  ``cost_spent`` result). A task the provider stopped before it ran (``cancelled``) and a submit
  refused before a task existed cost nothing. When a task ends with an actual cost, spent moves
  from its estimate to that figure (down, releasing the difference to the budget; or up).
- **reserved**: the estimates of submissions whose answer has not come yet (``submitting``): held
  against the budget from just before the ``submitting`` record until the provider answers; then
  they become spent (accepted, unknown) or are released (refused, nothing created). A resumed run
  counts the rows a crash left ``submitting`` as reserved until they are reconciled.
- **budget**: ``--max-cost`` / ``max_cost=``: spent + reserved never exceeds it (by the figures
  known when each request is sent: a provider that charges more than its estimate can only be
  counted once it says so). It covers the whole checkpoint, across runs and retries; the checkpoint
  keeps the last run's budget (``status`` shows it). A submission that would exceed it is not sent; its
  row stays ``pending`` with error_kind ``budget`` (a run with a higher budget sends it). With a
  budget set, a row whose price is unknown is not sent either (same error_kind): the budget could
  not be kept.

The ``Ledger`` counts in whole micro-dollars, so a budget of $1.00 takes exactly 100 rows of $0.01.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._jobs import PENDING, SUBMITTING, Job, RowSnapshot, may_have_paid
from .request import VideoRequest

__all__ = ["BUDGET", "Actuals", "Figures", "Ledger", "charge", "micro", "money", "usd"]

BUDGET = "budget"  # the error_kind of a row left pending because of the budget

Estimate = Callable[[VideoRequest], float | None]


def micro(amount: float | str | None) -> int:
    """USD as whole micro-dollars (0 for None). A string (a record read back as text) is read."""
    return 0 if amount is None else round(float(amount) * 1_000_000)


def usd(amount: int) -> float:
    return amount / 1_000_000


def money(amount: float | None) -> str:
    """``$1.25`` (``$0.0040`` below a cent), or ``unknown``."""
    if amount is None:
        return "unknown"
    return f"${amount:,.2f}" if amount == 0 or abs(amount) >= 0.01 else f"${amount:.4f}"


def charge(job: Job | RowSnapshot, estimate: Estimate | None = None) -> tuple[int, int]:
    """What ``job`` holds against a budget, in micro-dollars: (spent, reserved); its actual cost
    where the provider reported one, else its estimate.

    ``estimate`` prices a row sent by a videobatch that did not record ``cost_estimated`` yet."""
    own = job.cost_actual if job.cost_actual is not None else job.cost_estimated
    paid = may_have_paid(job.state, job.task_id)  # (asked once: this runs twice per transition)
    if own is None and estimate is not None and (paid or job.state is SUBMITTING):
        own = estimate(job.request)
    earlier = job.cost_earlier  # (None, the usual case, skips a call: this runs 6 times a row)
    spent = 0 if earlier is None else micro(earlier)
    if own is None:
        return spent, 0
    if paid:
        return spent + micro(own), 0
    return spent, micro(own) if job.state is SUBMITTING else 0


@dataclass(frozen=True)
class Figures:
    """Spent, reserved and budget in USD at one moment (budget None: none set)."""

    spent: float
    reserved: float
    budget: float | None = None

    @property
    def left(self) -> float | None:
        return None if self.budget is None else max(0.0, self.budget - self.spent - self.reserved)

    def text(self) -> str:
        """``spent $1.20 · reserved $0.30 · budget $5.00 ($3.50 left)``"""
        parts = [f"spent {money(self.spent)}", f"reserved {money(self.reserved)}"]
        if self.budget is not None:
            left = self.left
            parts.append(f"budget {money(self.budget)} ({money(left)} left)")
        return " · ".join(parts)


@dataclass(frozen=True)
class Actuals:
    """The latest submissions whose task ended with an actual cost from the provider: how many,
    that cost, and what they were estimated at (USD; None: some had no estimate)."""

    tasks: int = 0
    actual: float = 0.0
    estimated: float | None = 0.0

    @classmethod
    def of(cls, rows: Iterable[Job | RowSnapshot]) -> Actuals:
        tasks, actual, estimated = 0, 0, 0
        priced = True
        for row in rows:
            if row.cost_actual is None:
                continue
            tasks += 1
            actual += micro(row.cost_actual)
            if row.cost_estimated is None:
                priced = False
            else:
                estimated += micro(row.cost_estimated)
        return cls(tasks, usd(actual), usd(estimated) if priced else None)

    def text(self) -> str:
        """``actual cost reported for 6 tasks: $0.50 (estimated $0.84)``, or "" for none."""
        if not self.tasks:
            return ""
        return (f"actual cost reported for {self.tasks} task{'s' if self.tasks != 1 else ''}: "
                f"{money(self.actual)} (estimated {money(self.estimated)})")


class Ledger:
    """Spent and reserved of one run's rows (the whole checkpoint), against an optional budget.

    Every change of a row goes through ``change``: the runner takes ``charge(job)`` before a
    transition and hands it over afterwards, so the figures follow the rows exactly.
    ``admits`` and the ``submitting`` record that reserves must happen in one synchronous step
    on the run's event loop (no ``await`` in between): that makes a reservation atomic with
    respect to every other worker of the run.
    """

    def __init__(self, jobs: Iterable[Job], budget: float | None = None,
                 estimate: Estimate | None = None, *, dropped: float = 0.0) -> None:
        """``dropped``: USD spent on rows the checkpoint no longer holds (``Store.cost_dropped``)."""
        if budget is not None and not (math.isfinite(budget) and budget >= 0):
            raise ValueError(f"max_cost must be a number of USD, 0 or more, got {budget}")
        self.budget = None if budget is None else micro(budget)
        self.spent = micro(dropped)
        self.reserved = 0
        pending = PENDING
        for job in jobs:
            if job.state is pending and job.cost_earlier is None:
                continue  # holds nothing (most rows of a new run: skipped cheaply)
            spent, reserved = charge(job, estimate)
            self.spent += spent
            self.reserved += reserved

    def change(self, before: tuple[int, int], job: Job) -> None:
        """``job`` changed; ``before`` was its ``charge`` until then."""
        spent, reserved = charge(job)
        self.spent += spent - before[0]
        self.reserved += reserved - before[1]

    def admits(self, amount: float | None) -> bool:
        """Whether a submission of estimated ``amount`` USD fits the budget (always, without one;
        never, with one, when the amount is unknown)."""
        if self.budget is None:
            return True
        return amount is not None and self.spent + self.reserved + micro(amount) <= self.budget

    def refusal(self, amount: float | None, what: str) -> str:
        """Why ``admits(amount)`` said no, for the row's ``error`` (``what``: its model)."""
        assert self.budget is not None
        if amount is None:
            return (f"not sent: the price of {what} is unknown, so with a budget set it cannot be "
                    "kept; add the model's price to its catalogue (see `python -m videobatch "
                    "models`), or run without --max-cost")
        return (f"not sent: its estimated {money(amount)} would take the spend over the budget "
                f"of {money(usd(self.budget))}; run again with a higher --max-cost (max_cost=) "
                "to send it")

    def figures(self) -> Figures:
        return Figures(usd(self.spent), usd(self.reserved),
                       None if self.budget is None else usd(self.budget))
