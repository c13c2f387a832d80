"""The dashboard's cost line: spent / reserved / budget of the checkpoint, and what the rows sent
so far are estimated to cost and actually cost, per provider and model (the vocabulary is
``videobatch._spend``).

Spent / reserved / budget are the run's own ledger, read through ``RunContext.spend()`` when the
dashboard draws. Each submission of a row (a row and its generation: a retry of a failed row is a
new, separately paid one) is priced once, by the provider that took it (``provider_used``,
``model_used``) through its catalogue (``Provider.estimate_cost``), when a task is first seen for
it (``generating``, ``completed``, a ``failed`` row with a task) or it may exist (``unknown``); its
actual cost is added once its task ends with one (``cost_actual``: the provider said what it
billed). A submit refused before any task existed is not counted; a provider without prices makes
its line "unknown". O(1) per event; ``lines()`` is per provider/model, a handful.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

from .._jobs import RowSnapshot, State
from .._spend import Figures, micro, usd
from ..request import VideoRequest
from .dashboard_snapshot import SpendLine

__all__ = ["SendPricer", "Spend", "spend_html", "spend_pricer"]

SendPricer = Callable[[str, VideoRequest], "float | None"]
"""The estimated USD price of ``request`` at the provider called ``name`` (None: unknown)."""

def _paid(row: RowSnapshot) -> bool:
    """A task exists (or may) for this submission of the row: it counts."""
    return row.state in (State.GENERATING, State.COMPLETED, State.UNKNOWN) or (
        row.state is State.FAILED and bool(row.task_id))


def spend_pricer(batch: Any) -> SendPricer | None:
    """Prices by the provider a row went to: the batch's providers (several in a mixed run)."""
    providers = getattr(batch, "providers", None)
    get = getattr(providers, "get", None)
    if not callable(get):
        provider = getattr(batch, "provider", None)
        estimate = getattr(provider, "estimate_cost", None)
        return None if not callable(estimate) else (lambda _name, request: estimate(request))

    def price(name: str, request: VideoRequest) -> float | None:
        result: float | None = get(name).estimate_cost(request)
        return result

    return price


class Spend:
    """Estimated cost of the submissions seen, grouped by (provider, model)."""

    def __init__(self, pricer: SendPricer | None = None) -> None:
        self.pricer = pricer
        self._lock = threading.Lock()
        self._seen: set[tuple[str, int]] = set()  # (row key, generation) priced already
        self._billed: set[tuple[str, int]] = set()  # ... whose actual cost is counted
        # -> [rows, cost, unpriced, rows with an actual cost, actual cost]
        self._groups: dict[tuple[str, str | None], list[Any]] = {}

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._billed.clear()
            self._groups.clear()

    def track(self, row: RowSnapshot) -> None:
        if not _paid(row) or row.provider_used is None or row.attempts == 0:
            return
        with self._lock:
            sent = (row.key, row.generation)
            if row.cost_actual is not None and sent not in self._billed:
                self._billed.add(sent)
                group = self._groups.setdefault((row.provider_used, row.model_used), [0, 0.0, 0, 0, 0])
                group[3] += 1
                group[4] += micro(row.cost_actual)  # whole micro-dollars, as the ledger counts
            if sent in self._seen:
                return
            self._seen.add(sent)
            price: float | None = None
            if self.pricer is not None:
                try:
                    price = self.pricer(row.provider_used, row.request)
                except Exception:  # a request the catalogue cannot price: unknown, not zero
                    price = None
            group = self._groups.setdefault((row.provider_used, row.model_used), [0, 0.0, 0, 0, 0])
            group[0] += 1
            if price is None:
                group[2] += 1
            else:
                group[1] += price

    def lines(self) -> tuple[SpendLine, ...]:
        with self._lock:
            return tuple(SpendLine(provider, model, rows, None if unpriced else cost, billed, usd(actual))
                         for (provider, model), (rows, cost, unpriced, billed, actual)
                         in sorted(self._groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")))


def _money(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:,.2f}"


def spend_html(lines: tuple[SpendLine, ...], figures: Figures | None = None) -> str:
    """``Spent $1.20 · reserved $0.30 · budget $5.00 ($3.50 left)`` (while a run is bound), then
    ``Estimated cost of the 120 submissions sent: $48.00; actual cost reported for 100: $36.00``
    and, when several providers or models took rows, the figures of each."""
    parts = []
    if figures is not None and (figures.spent or figures.reserved or figures.budget is not None):
        parts.append("<b>Spent</b>" + html.escape(figures.text()[len("spent"):]))
    if lines:
        rows = sum(line.rows for line in lines)
        total = None if any(line.cost is None for line in lines) else sum(line.cost or 0 for line in lines)
        text = (f"<b>Estimated</b> cost of the {rows:,} submission{'s' if rows != 1 else ''} sent: "
                f"<b>{_money(total)}</b>")
        billed = sum(line.actual_rows for line in lines)
        if billed:
            text += (f"; <b>actual</b> cost reported for {billed:,}: "
                     f"<b>{_money(sum(line.actual for line in lines))}</b>")
        if len(lines) > 1:
            text += " (" + " · ".join(
                f"{html.escape(line.provider)}{'/' + html.escape(line.model) if line.model else ''}: "
                f"{line.rows:,} = {_money(line.cost)}"
                + (f", actual {_money(line.actual)} for {line.actual_rows:,}" if line.actual_rows else "")
                for line in lines) + ")"
        parts.append(text)
    if not parts:
        return ""
    return f'<div class="vb-spend" style="color:#555">{"<br>".join(parts)}</div>'
