"""What a benchmark run could have reached: small simulations of list scheduling on given task lengths.

Pure functions, no I/O. The lengths are what the test server's tasks really took, in the order they
were created; each task is given to the first slot that frees (greedy list scheduling, the best a
client can do that does not know the lengths in advance). Two clients are simulated:

* ``oracle``: sees every task end at once and resubmits at once (zero detection delay);
* ``ticked`` / ``ceiling``: looks with one list request every ``interval`` seconds (at interval,
  2·interval, ...), sees the tasks ended since the last look and resubmits them at that look.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

__all__ = ["ceiling", "oracle", "ticked"]


def oracle(lengths: Sequence[float], slots: int) -> float:
    """The makespan of greedy list scheduling of ``lengths`` (in order) on ``slots`` slots, each end
    seen and refilled at once."""
    free = [0.0] * max(1, slots)
    for length in lengths:
        heapq.heappush(free, heapq.heappop(free) + length)
    return max(free) if lengths else 0.0


def ticked(lengths: Sequence[float], slots: int, interval: float) -> tuple[float, int]:
    """Greedy list scheduling where ends are seen only at looks every ``interval`` seconds: the
    makespan (the look that sees the last end) and the looks it took."""
    if not lengths:
        return 0.0, 0

    def seen(t: float) -> int:  # the look that sees an end at t (a hair of float slack)
        return max(1, math.ceil(t / interval - 1e-9))

    free = [(0, i) for i in range(max(1, slots))]  # (look index when the slot is seen free, slot)
    last = 0
    for length in lengths:
        look, slot = heapq.heappop(free)
        end = seen(look * interval + length)
        last = max(last, end)
        heapq.heappush(free, (end, slot))
    return last * interval, last


def ceiling(lengths: Sequence[float], slots: int, budget: float = 1.0,
            steps: int = 600) -> tuple[float, float, int]:
    """The best efficiency (slot-seconds ideal / makespan) of a ``ticked`` client whose looks number
    at most ``budget`` per task, over intervals from the tightest the budget allows up to 3× that;
    returns (efficiency, interval, looks)."""
    if not lengths:
        return 0.0, 0.0, 0
    ideal = sum(lengths) / max(1, slots)
    allowed = max(1, math.floor(budget * len(lengths)))
    lowest = oracle(lengths, slots) / allowed  # no interval below this keeps to the budget
    best = (0.0, 0.0, 0)
    for k in range(steps + 1):
        interval = lowest * (1 + 2 * k / steps)
        makespan, looks = ticked(lengths, slots, interval)
        if looks <= allowed and ideal / makespan > best[0]:
            best = (ideal / makespan, interval, looks)
    return best
