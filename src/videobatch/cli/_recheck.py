"""``status``'s fresh look at rows whose outcome is unknown: ask the provider again, change nothing.

Each unknown row is looked up by its idempotency key (and, where the lookup cannot answer, in a
listing of the account's tasks back past its submit time), with the same reconciliation the runner
uses. The checkpoint is only read: the next run (the same command again) adopts what was found and
sends what the provider says is free; ``status`` just tells the user what that run will do.
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

__all__ = ["recheck_unknown"]


def recheck_unknown(loaded: LoadedCheckpoint, provider: str | None,
                    options: dict[str, Any]) -> list[str]:
    """Lines for the status report about each unknown row (empty when there are none)."""
    rows = [j for j in loaded.jobs if j.state is State.UNKNOWN]
    if not rows:
        return []
    name = provider or str(loaded.meta.get("settings", {}).get("provider", "local"))
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
    return lines


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
