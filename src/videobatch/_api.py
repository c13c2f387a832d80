"""``Batch``: a table of rows bound to its providers and checkpoint; start now, look later
(``videobatch._run`` holds the one-call ``run``/``arun`` built on it).

Batches work inside a running event loop (Jupyter) and outside it:
- outside a loop, ``run`` drives the batch on the calling thread with ``asyncio.run``;
- inside one (a notebook cell), ``run`` drives it on a private thread with its own loop and blocks
  the cell; ``Batch.start()`` schedules it on the notebook's own loop and returns at once.
Input is validated and the checkpoint opened when the ``Batch`` is built: bad rows or a mismatched
checkpoint fail before anything is submitted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ._events import Observer
from ._fleet import plan
from ._images import check_images_of
from ._inputs import Prompts, load_prompts
from ._jobs import State
from ._loops import in_running_loop as _in_running_loop
from ._plan import Plan, make_plan
from ._results import results_frame
from ._runner import Runner, RunOutcome, RunSettings
from ._store import Checkpoint, load, open_rows
from .delivery.outputs import outputs_for
from .delivery.remember import Reuse
from .errors import ConfigError, InputError
from .providers import Provider, get_provider, option_names, setting_names
from .request import REQUEST_FIELDS
from .ui import make_progress

__all__ = ["Batch", "PromptsLike"]

PromptsLike = Any  # str | PathLike | DataFrame | list[str | dict] | Prompts


def _split_options(options: dict[str, Any], provider: str | Provider) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword options that name a request field or one of the provider's options (``mode=`` for
    Kling) are run-wide defaults; the rest go to the provider itself (``latency=``, ``base_url=``),
    and so does a name that is both (Kling's ``api``: its constructor applies it to every row)."""
    names = {*REQUEST_FIELDS, *option_names(provider), "image_tail"} - setting_names(provider)
    defaults = {k: v for k, v in options.items() if k in names}
    provider_options = {k: v for k, v in options.items() if k not in names}
    return defaults, provider_options


class Batch:
    """A batch of rows bound to a provider and (optionally) a checkpoint.

    ``Batch(prompts, provider="local", checkpoint="run.parquet", duration=10).start()`` returns at
    once; ``results()`` shows the current state; ``wait()`` blocks (or, inside a running event loop,
    returns an awaitable: ``await batch.wait()``); ``cancel()`` stops it resumably.
    Extra keyword options naming a request field (``model``, ``duration``, ...) are run-wide defaults
    for empty cells; any other option goes to the provider (``latency=``, ``base_url=``, ...).

    A mixed table: rows with a ``provider`` column go to the provider they name (empty: to
    ``provider``). ``providers={"fal": {"base_url": ...}}`` gives the options of the others (or
    ready provider objects); each provider (each model, where its limit is per model) gets its own
    pool of slots, and the results say in ``provider_used`` / ``model_used`` who made each clip.
    ``fallback="fal:MODEL -mode"`` (or a ``fallback`` column): where unpaid rows go when their
    provider refuses the account or the model (see ``videobatch.fallback``).

    Outputs: ``download=DIR`` streams each finished clip to DIR as soon as it completes (verified,
    with a poster frame; ``download_name`` is a file-name template using row columns and ``{key}``);
    ``webhook=URL`` (or a ``webhook_url`` column) POSTs each row's outcome, HMAC-signed with
    ``webhook_secret``. Their outcomes join the results as extra columns.

    Spending: ``max_cost=USD``, a budget the checkpoint never exceeds (``videobatch._spend``);
    ``plan()`` says what a run would pay for; ``dry_run=True`` writes nothing and only plans.
    Input: ``template=True`` fills each prompt's ``{column}`` placeholders from its row; the
    images of the rows to send are checked first (``videobatch._images``; ``check_images=False``).
    ``reuse=True``: clips of identical requests made in earlier runs, unpaid (``_reuse``, ``reuse_dir``).
    """

    def __init__(
        self,
        prompts: PromptsLike,
        provider: str | Provider = "local",
        *,
        concurrency: int | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        force: bool = False,
        progress: bool | str = True,
        timeout: float | None = 3600.0,
        max_attempts: int = 5,
        observers: Sequence[Observer] = (),
        download: str | os.PathLike[str] | None = None,
        download_concurrency: int = 4,
        download_name: str | None = None,
        webhook: str | None = None,
        webhook_secret: str | None = None,
        providers: Mapping[str, Provider | Mapping[str, Any]] | None = None,
        fallback: str | Sequence[str] | None = None,
        max_cost: float | None = None,
        dry_run: bool = False,
        template: bool = False,
        check_images: bool = True,
        reuse: bool = False, reuse_dir: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        if timeout is not None and not timeout > 0:  # NaN too; checked before reading any row
            raise ConfigError(f"timeout must be more than 0 seconds (or None for none), got {timeout}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_cost is not None and not 0 <= max_cost < math.inf:  # NaN too
            raise ConfigError(f"max_cost must be a number of USD, 0 or more, got {max_cost!r}")
        defaults, provider_options = _split_options(options, provider)
        self._owns_provider = not isinstance(provider, Provider)
        self.provider = get_provider(provider, **provider_options)
        given = {name: p.rules() for name, p in (providers or {}).items() if isinstance(p, Provider)}
        self.prompts: Prompts = load_prompts(prompts, defaults=defaults or None, template=template,
                                             rules=self.provider.rules().with_others(given))
        outputs = outputs_for(self.prompts, download=download, download_name=download_name,
                              download_concurrency=download_concurrency, webhook=webhook,
                              webhook_secret=webhook_secret, given=observers)
        # A mixed table, fallbacks: the other providers rows name, built now so a missing key
        # fails here (a dry run notes it); every row and fallback checked before anything is paid.
        self.dry_run, self._notes = dry_run, list[str]()  # notes: what a plan says besides rows
        try:
            self.providers, problems = plan(self.provider, self.prompts, providers, fallback)
        except ConfigError as exc:
            if not dry_run:
                raise
            self._notes.append(f"{exc} (the real run needs it)")
            self.providers, problems = plan(self.provider, self.prompts, providers, fallback,
                                            rows_only=True)
        self._given = [p for p in (providers or {}).values() if isinstance(p, Provider)]
        if problems:
            raise InputError(problems, source=self.prompts.source)
        self._reuse = Reuse.open(reuse, reuse_dir, dry_run=dry_run, notes=self._notes)
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.settings = RunSettings(concurrency=concurrency, timeout=timeout,
                                    max_attempts=max_attempts, max_cost=max_cost)
        if check_images:  # the images of the rows it would send, before the checkpoint is written
            check_images_of(checkpoint, self.prompts, self.providers.describe(), self.settings, force)
        self.store, self.jobs, opening = open_rows(
            checkpoint, self.prompts, settings=self.providers.describe(), force=force,
            dry_run=dry_run)
        self._notes[:0] = [opening] if opening else []  # how the checkpoint opens, first
        if isinstance(self.store, Checkpoint):
            self.store.meta["max_cost"] = max_cost  # what `status` shows as the budget
        try:
            self.providers.include(self.jobs, providers)
        except ConfigError as exc:
            if not dry_run:
                raise
            self._notes.append(f"{exc} (the real run needs it)")
        self._progress = progress
        self._observers = outputs + list(observers) + self._reuse.observers(self.providers, self.store)
        self._runner: Runner | None = None
        self._task: asyncio.Future[RunOutcome] | None = None
        self._thread: threading.Thread | None = None
        self._thread_result: RunOutcome | BaseException | None = None
        self.outcome: RunOutcome | None = None
        self._after_run: list[tuple[list[str], bool]] = []  # retries asked for during teardown

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike[str], provider: str | Provider | None = None, **kwargs: Any
    ) -> Batch:
        """The batch stored in ``checkpoint``, without its original input (for retry/resume).

        ``provider`` defaults to the one the checkpoint was made with; its options (latency,
        base_url, ...) are not stored and must be passed again when they matter.
        """
        loaded = load(checkpoint)
        prompts = Prompts(frame=loaded.frame, requests=[j.request for j in loaded.jobs],
                          keys=[j.key for j in loaded.jobs], source=str(checkpoint))
        if provider is None:
            provider = str(loaded.meta.get("settings", {}).get("provider", "local"))
        return cls(prompts, provider, checkpoint=checkpoint, **kwargs)

    # ------------------------------------------------------------------ running
    def _new_progress(self) -> Observer | None:
        return make_progress(self, self._progress) if self._progress else None

    async def _run(self, progress: Observer | None = None) -> RunOutcome:
        """One run of the batch. ``progress``: an observer made by the caller (``start()`` makes
        it in the notebook cell that starts the batch, so it shows there); else one is made here."""
        if self.dry_run:
            raise ConfigError("this batch is a dry run (dry_run=True): it plans and sends nothing; "
                              "build it without dry_run to run it")
        self._reuse.take(self.jobs, self.providers, self.settings, self.store)  # completed, unpaid
        progress = progress or self._new_progress()
        observers = list(self._observers) + ([progress] if progress else [])
        self._runner = Runner(self.jobs, self.providers, self.store, self.settings, observers)
        try:
            self.outcome = await self._runner.run()
        finally:
            for one in self.providers:  # those we built; the caller's own objects stay open
                if one not in self._given and (one is not self.provider or self._owns_provider):
                    await one.aclose()
        outcome = self.outcome
        while self._after_run:  # asked for while the run was finishing: ready for the next one
            keys, unknown = self._after_run.pop(0)
            self._requeue(keys, unknown)
        return outcome

    def start(self) -> Batch:
        """Start in the background and return at once (on the running loop, or on a thread)."""
        if self.running:
            return self
        if _in_running_loop():
            self._thread = None
            self._task = asyncio.ensure_future(self._run(self._new_progress()))
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        self._task = None
        self._thread_result = None
        self._thread = threading.Thread(target=self._thread_main, name="videobatch", daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        try:
            self._thread_result = asyncio.run(self._run())
        except BaseException as exc:  # handed to the waiting thread
            self._thread_result = exc

    @property
    def running(self) -> bool:
        if self._task is not None and not self._task.done():
            return True
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> Any:
        """Block until done and return the results DataFrame.

        Inside a running event loop this returns an awaitable instead: ``df = await batch.wait()``.
        Not started yet: starts it first.
        """
        if _in_running_loop():
            return self._wait_async()
        if not self.running and self.outcome is None:
            return self._finish(asyncio.run(self._run()))
        self._join()
        return self._finish(self.outcome)

    async def _wait_async(self) -> pd.DataFrame:
        if not self.running and self.outcome is None:  # not started, or failed rows put back
            self.start()
        if self._task is not None:
            return self._finish(await self._task)
        if self._thread is not None:  # started on a thread before this loop existed
            await asyncio.to_thread(self._thread.join)
        return self._finish(self._thread_outcome())

    def _join(self) -> None:
        thread = self._thread
        if thread is None:
            return
        try:
            while thread.is_alive():
                thread.join(0.2)
        except KeyboardInterrupt:
            # Ctrl-C / notebook interrupt: stop cleanly, keep the checkpoint resumable, re-raise.
            self.cancel()
            thread.join()
            raise
        self._thread_outcome()

    def _thread_outcome(self) -> RunOutcome:
        result = self._thread_result
        if isinstance(result, BaseException):
            raise result
        assert result is not None
        self.outcome = result
        return result

    def _finish(self, outcome: RunOutcome | None) -> pd.DataFrame:
        df = self.results()
        stopped = outcome.stopped_by if outcome else None
        if stopped is not None:  # auth, account, or a provider breaking its contract
            stopped.results = df
            raise stopped
        return df

    def cancel(self) -> None:
        """Stop submitting, leave in-flight rows resumable, flush the checkpoint.

        Rows not started yet become ``cancelled`` and stay so: starting this batch again (after
        ``retry_failed()``, say) finishes what is in flight but sends no cancelled row, so Cancel
        really stops the spending. ``resume_cancelled()`` puts them back to work; so does a new
        ``Batch`` on the same checkpoint (the same cell or command run again: a resume).
        """
        self._resume_next_run(False)
        if self._runner is not None:
            self._runner.cancel()

    def _resume_next_run(self, resume: bool) -> None:
        """Whether this batch's next run puts rows cancelled earlier back to work by itself."""
        if self.settings.resume_cancelled is not resume:
            self.settings = dataclasses.replace(self.settings, resume_cancelled=resume)

    def retry_failed(self, kinds: Sequence[str] | None = None) -> int:
        """Put failed rows back to work (optionally only these error kinds); returns how many.

        Failed rows only: cancelled rows stay cancelled (``resume_cancelled()`` is the separate
        step that sends them) and rows of unknown outcome stay unknown (``retry(unknown=True)``).
        Each retried row is a new, separately paid submission, except rows that timed out: they
        wait for their still-open task again and are not paid again. While the batch runs, the
        rows join the running batch; otherwise call ``start()``/``wait()`` again.
        """
        return self.retry(failed=True, kinds=kinds)

    def retry(self, *, failed: bool = True, unknown: bool = False,
              kinds: Sequence[str] | None = None) -> int:
        """Put rows back to work; returns how many. ``failed``: failed rows (only ``kinds`` of
        error, if given). ``unknown``: rows whose outcome is unknown — a paid request may exist
        for them, so sending them again may pay twice; only you can decide that.

        Cancelled rows are never among them, also not on the next run of this batch: a retry
        pays for what it names and nothing else (``resume_cancelled()`` sends cancelled rows).
        While the batch runs, the rows join the running batch; if it is already finishing, they
        are queued for the next ``start()``/``wait()``. Nothing is ever sent that nobody waits for.
        """
        self._resume_next_run(False)
        chosen = [j for j in self.jobs
                  if (failed and j.state is State.FAILED and (kinds is None or j.error_kind in kinds))
                  or (unknown and j.state is State.UNKNOWN)]
        if not chosen:
            return 0
        keys = [j.key for j in chosen]
        if self.running and self._runner is not None:
            joined = self._runner.retry(keys, unknown=unknown)
            if joined is not None:
                return joined
            self._after_run.append((keys, unknown))  # the run is finishing: next run takes them
            return len(chosen)
        return self._requeue(keys, unknown)

    def resume_cancelled(self) -> int:
        """Put the rows a cancel stopped back to work; returns how many.

        The explicit counterpart of ``cancel()``: each of them is a paid submission (a new one for
        a row whose task the provider cancelled). Rows finished, failed or of unknown outcome are
        not touched. Call ``start()``/``wait()`` to run them. A running batch does not take
        them: they are put back to work when it ends, for the next ``start()``."""
        keys = [j.key for j in self.jobs if j.state is State.CANCELLED]
        if not keys:
            return 0
        if self.running:
            self._after_run.append((keys, False))  # moved back to pending when this run ends
            return len(keys)
        return self._requeue(keys, False)

    def _requeue(self, keys: Sequence[str], unknown: bool) -> int:
        """Move the rows ``keys`` back to work: those failed (and of unknown outcome with
        ``unknown``), and those cancelled (only ``resume_cancelled()`` names cancelled rows)."""
        wanted = set(keys)
        states = {State.FAILED, State.UNKNOWN} if unknown else {State.FAILED}
        moved = 0
        for job in self.jobs:
            if job.key not in wanted:
                continue
            if job.state in states:
                self.store.append(job.retry())
                moved += 1
            elif job.state is State.CANCELLED:
                self.store.append(job.transition(State.PENDING))
                moved += 1
        if moved:
            self.outcome = None
        return moved

    # ------------------------------------------------------------------ looking
    def plan(self) -> Plan:
        """What running this batch now would do: the rows it pays for, keeps, waits for, looks up
        or refuses (the budget), and their estimated cost by provider and model. Sends nothing."""
        return make_plan(self.jobs, self.providers, self.settings, self._notes, dropped=self.store.cost_dropped,
                         reused=self._reuse.saved(self.jobs, self.providers, self.settings))

    def results(self) -> pd.DataFrame:
        """The results DataFrame as it stands now (input columns, then result columns).

        Live: each call reads the rows afresh, so after a retry (from code or the dashboard's
        buttons) it agrees with the dashboard, unlike a DataFrame returned earlier, which is a
        copy of the moment it was made."""
        return results_frame(self.prompts.frame, self.jobs)

    def counts(self) -> dict[str, int]:
        found = Counter(job.state.value for job in self.jobs)
        return {s.value: found[s.value] for s in State}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items() if v)
        return f"<Batch {len(self.jobs)} rows via {self.provider.name!r}: {counts}>"
