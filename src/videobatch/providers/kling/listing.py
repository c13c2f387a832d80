"""Reading Kling's task list, ``GET /v1/videos/{kind}?pageNum=N&pageSize=M`` (pageNum 1-1000,
pageSize 1-500, ``data`` a list of task objects), to poll many tasks with few requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["MAX_PAGE", "pages_for_status"]

MAX_PAGE = 1000  # Kling's highest pageNum


async def pages_for_status(
    fetch: Callable[[int], Awaitable[Any]],
    wanted: set[str],
    along: set[str],
    found: dict[str, dict[str, Any]],
    *,
    threshold: int,
    page_size: int,
) -> None:
    """Status polling by list pages: put the task objects of ``wanted`` tasks (and of ``along``,
    riders that come free) seen on pages 1, 2, ... into ``found``, removing them from both sets.

    Reads pages only while at least ``threshold`` tasks are looked for and never more pages than
    the single GETs they replace; stops at the end of the list, or when ``fetch`` returns None (no
    usable list endpoint). Errors ``fetch`` raises propagate; ``found`` keeps what was seen.
    """
    budget = max(1 if wanted and along else 0, -(-len(wanted) // threshold))
    for number in range(1, min(budget, MAX_PAGE) + 1):
        if not wanted or len(wanted) + len(along) < threshold:
            return
        data = await fetch(number)
        if data is None:
            return
        items = data if isinstance(data, list) else []
        for item in items:
            task_id = item.get("task_id") if isinstance(item, dict) else None
            if task_id in wanted or task_id in along:
                found[task_id] = item
                wanted.discard(task_id)
                along.discard(task_id)
        if len(items) < page_size:
            return
