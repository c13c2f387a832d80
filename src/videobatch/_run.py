"""The one-call entry points: ``run`` (blocks until done, in scripts and inside Jupyter) and
``arun`` (the same for async code), each a ``Batch`` started and waited for; and ``plan``, what
such a call would do, sending nothing."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pandas as pd

from ._api import Batch, PromptsLike
from ._loops import in_running_loop as _in_running_loop
from ._plan import Plan
from .providers import Provider

__all__ = ["arun", "plan", "run"]


def run(prompts: PromptsLike, provider: str | Provider = "local", **kwargs: Any) -> pd.DataFrame:
    """Generate a video for every row and return the results DataFrame (blocks until done).

    The DataFrame is a snapshot of the end of this run: a later retry (the dashboard's Retry
    button) does not change it. For a live table use ``Batch``: ``batch.results()``, or read the
    checkpoint again with ``videobatch.results(checkpoint)``.

    Works in scripts and inside Jupyter. Keyword arguments are those of ``Batch``. Raises
    ``InputError`` for bad rows (nothing submitted), ``CheckpointError`` for a checkpoint made from
    other rows, ``AuthError``/``AccountError`` when the provider stops the run (``.results`` holds
    the DataFrame so far). Ctrl-C stops cleanly (the checkpoint resumes) and raises
    KeyboardInterrupt.
    """
    batch = Batch(prompts, provider, **kwargs)
    if _in_running_loop():
        batch._start_thread()  # this thread's loop is busy running the caller
        batch._join()
        return batch._finish(batch.outcome)
    result: pd.DataFrame = batch.wait()
    return result


async def arun(prompts: PromptsLike, provider: str | Provider = "local",
               **kwargs: Any) -> pd.DataFrame:
    """``run`` for async code: ``df = await videobatch.arun(rows, ...)``."""
    batch = Batch(prompts, provider, **kwargs)
    waiting: Awaitable[pd.DataFrame] = batch.wait()
    return await waiting



def plan(prompts: PromptsLike, provider: str | Provider = "local", **kwargs: Any) -> Plan:
    """What ``run(prompts, provider, **kwargs)`` would do now, with the same arguments (``force``,
    ``checkpoint``, ``max_cost``, ...): the rows it would pay for (``.send``), keep, wait for, look
    up or refuse (the budget), and their estimated cost by provider and model (``.groups``,
    ``.estimated``). Calls no provider and writes no checkpoint; needs no credentials (what the
    run will need is in ``.notes``). Raises what ``run`` would raise before paying anything."""
    kwargs.setdefault("progress", False)
    return Batch(prompts, provider, dry_run=True, **kwargs).plan()
