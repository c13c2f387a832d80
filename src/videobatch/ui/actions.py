"""What a dashboard button will do, said before it acts: how many rows it puts back to work, how
many of them are new paid submissions, and their estimated cost where the provider prices rows.

- **Retry failed** takes failed rows only. A row that failed because we stopped waiting
  (``timeout``) while its task was still open waits for that same task again: not paid again.
- **Resume cancelled** takes the rows a cancel stopped: each is a paid submission.

Neither ever takes a row of unknown outcome (a paid task may exist for it: only code that names it,
``batch.retry(unknown=True)``, resubmits it). Plain data and text, no widgets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._jobs import RowSnapshot, State
from ..request import VideoRequest

__all__ = ["NO_RESUME", "NO_RETRY", "Action", "Pool", "Pricer", "Prices", "cancelled_text",
           "pricer_of"]

Pricer = Callable[[VideoRequest], "float | None"]
"""The estimated price of one request in USD, or None when unknown (``Provider.estimate_cost``)."""


def _rewaits(row: RowSnapshot) -> bool:
    """A failed row whose retry waits for its still-open task (``Job.retry``): nothing is paid."""
    return row.state is State.FAILED and row.error_kind == "timeout" and bool(row.task_id)


@dataclass(frozen=True)
class Action:
    """One button's effect, as counted just now."""

    verb: str  # "Retry" / "Resume"
    what: str  # "failed" / "cancelled"
    rows: int  # rows the click puts back to work
    paid: int  # of which new paid submissions
    cost: float | None  # estimated USD for the paid ones; None when the provider gives no price
    done: str = "queued again"  # what the click did to them

    @property
    def rewait(self) -> int:
        """Rows that wait for their open task again: not paid again."""
        return self.rows - self.paid

    @property
    def cost_text(self) -> str:
        if not self.paid:
            return "nothing to pay"
        return "cost unknown" if self.cost is None else f"est. ${self.cost:,.2f}"

    def label(self) -> str:
        """The button's caption: ``Retry 5 failed · est. $2.10``."""
        if not self.rows:
            return f"{self.verb} {self.what} (none)"
        extra = f" ({self.rewait} not paid again)" if self.rewait else ""
        return f"{self.verb} {self.rows} {self.what}{extra} · {self.cost_text}"

    def tooltip(self) -> str:
        if not self.rows:
            return f"No {self.what} rows."
        parts = [f"{self.paid} new paid submission{'s' if self.paid != 1 else ''} "
                 f"({self.cost_text})"]
        if self.rewait:
            parts.append(f"{self.rewait} timed-out row{'s wait' if self.rewait != 1 else ' waits'} "
                         "for its still-open task (not paid again)")
        return f"{self.verb} {self.rows} {self.what} row{'s' if self.rows != 1 else ''}: " + \
            "; ".join(parts) + "."

    def done_text(self, count: int) -> str:
        """What the dashboard says after the click put ``count`` rows back to work."""
        if not count:
            return f"No {self.what} rows."
        rows = f"{count} {self.what} row{'s' if count != 1 else ''}"
        if count != self.rows:  # the rows changed since the count: say only what is certain
            return f"{rows} {self.done} (each is a paid submission unless it timed out)."
        parts = [f"{self.paid} new paid submission{'s' if self.paid != 1 else ''} "
                 f"({self.cost_text})"] if self.paid else []
        if self.rewait:
            parts.append(f"{self.rewait} waiting for their open task (not paid again)")
        return f"{rows} {self.done}: " + ", ".join(parts) + "."


def cancelled_text(cancelled: int, in_flight: int) -> str:
    """What the dashboard says once the run the Cancel button stopped is over (the "Cancelling"
    note said while it stopped must not outlive it)."""
    if not cancelled and not in_flight:
        return "Cancel came after every row was sent: nothing was left to stop."
    return (f"Cancelled: {cancelled} row{'s' if cancelled != 1 else ''} not sent (nothing paid; "
            f"Resume sends them); {in_flight} in flight finish on the next run (not paid again).")


NO_RETRY = Action("Retry", "failed", 0, 0, None)
NO_RESUME = Action("Resume", "cancelled", 0, 0, None, "resumed")


def pricer_of(batch: Any) -> Pricer | None:
    """How the batch prices a row: its providers' ``estimate_cost`` (each row at the provider it
    names, in a mixed run), else its provider's, if it has one."""
    for owner in (getattr(batch, "providers", None), getattr(batch, "provider", None)):
        estimate = getattr(owner, "estimate_cost", None)
        if callable(estimate):
            return estimate  # type: ignore[no-any-return]
    return None


class Prices:
    """Prices per row key, asked once per row (a catalogue lookup is not free)."""

    def __init__(self, pricer: Pricer | None) -> None:
        self.pricer = pricer
        self._known: dict[str, float | None] = {}

    def of(self, row: RowSnapshot) -> float | None:
        if self.pricer is None:
            return None
        if row.key not in self._known:
            try:
                self._known[row.key] = self.pricer(row.request)
            except Exception:  # a row the catalogue cannot price: the sum is unknown
                self._known[row.key] = None
        return self._known[row.key]


class Pool:
    """The rows one button would take, with running totals: O(1) per row that enters or leaves,
    so a batch of 200,000 rows costs nothing per event or redraw."""

    def __init__(self, verb: str, what: str, done: str, prices: Prices) -> None:
        self.verb, self.what, self.done, self.prices = verb, what, done, prices
        self._rows: dict[str, tuple[bool, float | None]] = {}  # key -> (paid again, price)
        self._paid = 0
        self._cost = 0.0
        self._unpriced = 0  # paid rows without a price: the total is unknown

    @classmethod
    def retry(cls, prices: Prices) -> Pool:
        return cls("Retry", "failed", "queued again", prices)

    @classmethod
    def resume(cls, prices: Prices) -> Pool:
        return cls("Resume", "cancelled", "resumed", prices)

    def put(self, row: RowSnapshot) -> None:
        self.drop(row.key)
        paid = not _rewaits(row)
        price = self.prices.of(row) if paid else None
        self._rows[row.key] = (paid, price)
        if paid:
            self._paid += 1
            if price is None:
                self._unpriced += 1
            else:
                self._cost += price

    def drop(self, key: str) -> None:
        gone = self._rows.pop(key, None)
        if gone is None:
            return
        paid, price = gone
        if paid:
            self._paid -= 1
            if price is None:
                self._unpriced -= 1
            else:
                self._cost -= price

    def clear(self) -> None:
        self._rows.clear()
        self._paid, self._cost, self._unpriced = 0, 0.0, 0

    def action(self) -> Action:
        cost = None if self._unpriced or self.prices.pricer is None else max(0.0, self._cost)
        return Action(self.verb, self.what, len(self._rows), self._paid, cost, self.done)
