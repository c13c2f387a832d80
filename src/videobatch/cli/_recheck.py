"""``status``'s fresh look at the provider: rows whose outcome is unknown, and (``--verify-tasks``)
whether each row's task is really its own. Both ask the provider and change nothing.

Each unknown row is looked up by its idempotency key (and, where the lookup cannot answer, in a
listing of the account's tasks back past its submit time), with the same reconciliation the runner
uses. The checkpoint is only read: the next run (the same command again) adopts what was found and
sends what the provider says is free; ``status`` just tells the user what that run will do.

A task is a row's own when the provider says it was created with the row's idempotency key. An
older release could adopt a listed task that carried no key, or another one: that row then shows
another system's video while its own paid task may be orphaned. ``verify_tasks`` names such rows.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._jobs import Job, State
from .._reconcile import Found, Free, Reconciler, Verdict
from .._retry import RetryPolicy
from .._store import LoadedCheckpoint
from ..errors import VideobatchError
from ..providers import get_provider
from ..providers.base import TaskStatus

__all__ = ["recheck_unknown", "verify_tasks"]


def recheck_unknown(loaded: LoadedCheckpoint, provider: str | None,
                    options: dict[str, Any]) -> list[str]:
    """Lines for the status report about each unknown row (empty when there are none)."""
    name = provider or str(loaded.meta.get("settings", {}).get("provider", "local"))
    rows, elsewhere = _sent_to(name, [j for j in loaded.jobs if j.state is State.UNKNOWN])
    if not rows:
        return elsewhere
    try:
        client = get_provider(name, **options)
        client.check([])  # credentials and set-up, before asking anything
        verdicts = asyncio.run(_ask(client, rows, str(loaded.meta["run_id"])))
    except VideobatchError as exc:
        return [f"Could not check the {len(rows)} row(s) of unknown outcome again ({exc}); pass "
                "the provider's options (-P ..., --base-url) or its credentials to check them"]
    lines = [f"Checked the {len(rows)} row(s) of unknown outcome again with {name!r}:"]
    for job, verdict in zip(rows, verdicts, strict=True):
        if isinstance(verdict, Found):
            lines.append(f"  {job.key}: the provider has its task {verdict.status.task_id} "
                         f"({verdict.status.state.value}); the next run adopts it, nothing is paid")
        elif isinstance(verdict, Free):
            lines.append(f"  {job.key}: the provider has no task for it ({verdict.how}); the next "
                         "run sends it (paid once)")
        else:
            lines.append(f"  {job.key}: still unknown: {verdict.reason}")
    return lines + elsewhere


def verify_tasks(loaded: LoadedCheckpoint, provider: str | None, options: dict[str, Any]) -> list[str]:
    """Lines naming every row whose task does not carry the row's own idempotency key (empty when
    every task is the row's own, or the provider keeps no key of ours to compare)."""
    name = provider or str(loaded.meta.get("settings", {}).get("provider", "local"))
    rows, elsewhere = _sent_to(name, [j for j in loaded.jobs if j.task_id])
    if not rows:
        return elsewhere
    try:
        client = get_provider(name, **options)
        if not client.capabilities.idempotency_key:
            return [f"{name!r} keeps no key of ours with its tasks: their owners cannot be verified"]
        client.check([])
        answers = asyncio.run(_statuses(client, [j.task_id for j in rows if j.task_id]))
    except VideobatchError as exc:
        return [f"Could not verify the rows' tasks ({exc}); pass the provider's options (-P ..., "
                "--base-url) or its credentials"]
    run_id = str(loaded.meta["run_id"])
    lines: list[str] = []
    for job in rows:
        answer = answers.get(job.task_id or "")
        if not isinstance(answer, TaskStatus):
            continue  # not readable now (deleted, expired): nothing to say either way
        own = job.idempotency_key(run_id)
        if answer.idempotency_key != own:
            carried = f"key {answer.idempotency_key}" if answer.idempotency_key else "no key at all"
            lines.append(f"  {job.key}: task {job.task_id} carries {carried}, not the row's own {own}: "
                         "its video may be another system's, and the row's own paid task may be "
                         "orphaned; look it up in the provider's console, then `retry` the row")
    head = (f"Verified the tasks of {len(rows)} row(s) with {name!r}: "
            + (f"{len(lines)} are not the row's own:" if lines else "every task is the row's own"))
    return [head, *lines, *elsewhere]


def _sent_to(name: str, rows: list[Job]) -> tuple[list[Job], list[str]]:
    """``rows`` sent to provider ``name`` (rows of an older checkpoint, which records none, count
    as its), and a line naming the other providers a mixed table's rows went to."""
    mine = [j for j in rows if j.provider_used in (None, name)]
    others = sorted({str(j.provider_used) for j in rows if j.provider_used not in (None, name)})
    if not others:
        return mine, []
    return mine, [f"{len(rows) - len(mine)} row(s) were sent to {', '.join(others)}: check them "
                  "with --provider NAME (and its options)"]


async def _statuses(client: Any, task_ids: list[str]) -> dict[str, Any]:
    try:
        return dict(await client.status_many(task_ids))
    finally:
        await client.aclose()


async def _ask(client: Any, rows: list[Job], run_id: str) -> list[Verdict]:
    stop = asyncio.Event()
    reconciler = Reconciler(client, RetryPolicy(attempts=3, base=0.5, cap=5.0, deadline=30.0),
                            stop=stop)
    try:
        return list(await asyncio.gather(*(
            reconciler.check(job.idempotency_key(run_id), job.submitted_at, request=job.request)
            for job in rows)))
    finally:
        await reconciler.aclose()
        await client.aclose()
