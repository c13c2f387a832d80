"""What the rows sent so far are estimated to cost, per provider and model: the dashboard's cost line.

Each submission of a row (a row and its generation: a retry of a failed row is a new, separately
paid one) is priced once, by the provider that took it (``provider_used``, ``model_used``) through
its catalogue (``Provider.estimate_cost``), when a task is first seen for it (``generating``,
``completed``, a ``failed`` row with a task) or it may exist (``unknown``). A submit refused before
any task existed is not counted; a provider without prices makes its line "unknown". Estimates
only: what the provider bills is its own.
O(1) per event; ``lines()`` is per provider/model, a handful.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

from .._jobs import RowSnapshot, State
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
        self._groups: dict[tuple[str, str | None], list[Any]] = {}  # -> [rows, cost, unpriced]

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self._groups.clear()

    def track(self, row: RowSnapshot) -> None:
        if not _paid(row) or row.provider_used is None or row.attempts == 0:
            return
        with self._lock:
            sent = (row.key, row.generation)
            if sent in self._seen:
                return
            self._seen.add(sent)
            price: float | None = None
            if self.pricer is not None:
                try:
                    price = self.pricer(row.provider_used, row.request)
                except Exception:  # a request the catalogue cannot price: unknown, not zero
                    price = None
            group = self._groups.setdefault((row.provider_used, row.model_used), [0, 0.0, 0])
            group[0] += 1
            if price is None:
                group[2] += 1
            else:
                group[1] += price

    def lines(self) -> tuple[SpendLine, ...]:
        with self._lock:
            return tuple(SpendLine(provider, model, rows, None if unpriced else cost)
                         for (provider, model), (rows, cost, unpriced)
                         in sorted(self._groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")))


def _money(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:,.2f}"


def spend_html(lines: tuple[SpendLine, ...]) -> str:
    """``Estimated cost of the 120 submissions sent: $48.00`` and, when several providers or
    models took rows, a figure for each."""
    if not lines:
        return ""
    rows = sum(line.rows for line in lines)
    total = None if any(line.cost is None for line in lines) else sum(line.cost or 0 for line in lines)
    text = (f"<b>Estimated</b> cost of the {rows:,} submission{'s' if rows != 1 else ''} sent: "
            f"<b>{_money(total)}</b>")
    if len(lines) > 1:
        text += " (" + " · ".join(
            f"{html.escape(line.provider)}{'/' + html.escape(line.model) if line.model else ''}: "
            f"{line.rows:,} = {_money(line.cost)}" for line in lines) + ")"
    return f'<div class="vb-spend" style="color:#555">{text}</div>'
