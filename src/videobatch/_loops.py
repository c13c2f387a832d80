"""Calling into a run's event loop from any thread (a notebook button, a signal handler, a script):
on the loop itself the call happens now; from elsewhere it is handed to the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import TypeVar

__all__ = ["call_in_loop", "in_running_loop"]

T = TypeVar("T")


def in_running_loop() -> bool:
    """Whether this thread is running an event loop (a notebook cell, async code)."""
    return _current_loop() is not None


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def call_in_loop(loop: asyncio.AbstractEventLoop | None, call: Callable[[], T], *,
                 wait: float | None = 30.0) -> T | None:
    """``call()`` on ``loop``: at once when this is that loop's thread; otherwise scheduled there
    and, with ``wait`` seconds, its result (or exception) awaited. None when the loop is gone, or
    when not waiting."""
    if loop is None or loop.is_closed():
        return None
    if _current_loop() is loop:
        return call()
    if wait is None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(call)
        return None
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def on_loop() -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(on_loop)
    except RuntimeError:  # the loop closed meanwhile
        return None
    return future.result(timeout=wait)
