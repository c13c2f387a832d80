"""Keeping Python's cycle collector off the rows: paused while a whole table of rows is built
(requests, jobs, columns), and kept from walking them while they are run.

Each of its full collections walks every object alive, i.e. every row built so far: for 200,000
rows that doubles the build time. Memory is still freed by reference counting meanwhile, and
cycles are collected once the collector runs again.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["frozen_for_runs", "gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cycle collector paused for the block (or the decorated function), then as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_runs = 0  # runs of this process inside frozen_for_runs()
_froze = False  # whether frozen_for_runs() made the freeze it holds (else somebody else did)
_count = threading.Lock()


@contextlib.contextmanager
def frozen_for_runs() -> Iterator[None]:
    """The objects alive when a run starts (its rows, every imported module's objects) left out of
    the collector's walks while runs go on (``gc.freeze``), given back when the last one ends.

    A run makes short-lived objects for every row, so collections come often, and a full one
    walks everything alive: one cost 0.09 s of a 1.4 s run of 5,000 rows, and a 200k-row table
    is about a million objects. Cycles that become garbage meanwhile are collected after the run.
    A freeze somebody else made (the command line makes one for its whole process) is left as it
    is."""
    global _runs, _froze
    with _count:
        if _runs == 0 and gc.get_freeze_count() == 0:
            gc.freeze()
            _froze = True
        _runs += 1
    try:
        yield
    finally:
        with _count:
            _runs -= 1
            if _runs == 0 and _froze:
                gc.unfreeze()
                _froze = False
