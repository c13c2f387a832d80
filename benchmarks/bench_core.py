"""Core figures, measured in one run: slot efficiency, runner overhead, checkpoint cost at 100k rows.

    python benchmarks/bench_core.py            # all three
    python benchmarks/bench_core.py efficiency # or: overhead, checkpoint

Targets (issue 3): efficiency >= 0.95 (200 rows, concurrency 10, known latency); overhead >= 2,000
rows/s (zero latency); checkpoint write and load < 1 s and peak memory < 500 MB for 100,000 rows.
Efficiency = ideal wall time / actual wall time, where ideal = ceil(rows / concurrency) * latency.
"""

from __future__ import annotations

import asyncio
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import videobatch
from videobatch._jobs import State
from videobatch.providers.base import Limits, PollHint, Provider, TaskState, TaskStatus, Video
from videobatch.providers.local.provider import LocalProvider
from videobatch.request import VideoRequest


def efficiency(rows: int = 200, concurrency: int = 10, latency: float = 1.0, render: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        provider = LocalProvider(root=tmp, latency=latency, jitter=0.0, max_parallel=concurrency, render=render)
        prompts = [f"benchmark clip {i}: a comet over a mountain lake" for i in range(rows)]
        started = time.perf_counter()
        df = videobatch.run(prompts, provider, concurrency=concurrency, progress=False,
                            checkpoint=Path(tmp) / "run.parquet")
        actual = time.perf_counter() - started
    ideal = math.ceil(rows / concurrency) * latency
    assert (df["status"] == "completed").all()
    print(f"efficiency  rows={rows} concurrency={concurrency} latency={latency}s render={render}: "
          f"ideal {ideal:.2f}s actual {actual:.2f}s -> efficiency {ideal / actual:.3f} (target >= 0.95)")


class InstantProvider(Provider):
    """Accepts every task and reports it finished at the first poll: only the runner costs time."""

    name = "instant"

    def __init__(self, max_parallel: int) -> None:
        self.limits = Limits(max_parallel=max_parallel)
        self.poll_hint = PollHint(first_poll=0.0, min_interval=0.001, max_interval=0.01)
        self._keys: dict[str, str] = {}

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        task_id = self._keys.setdefault(idempotency_key, f"t{len(self._keys)}")
        return TaskStatus(task_id, TaskState.QUEUED, created_at=time.time())

    async def status(self, task_id: str) -> TaskStatus:
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(Video(f"mem://{task_id}"),))

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        task_id = self._keys.get(idempotency_key)
        return None if task_id is None else await self.status(task_id)


def overhead(rows: int = 5000, concurrency: int = 100) -> None:
    """Runner cost per row: an in-memory provider with zero latency, with and without a checkpoint.

    (The offline ``local`` provider is not used here: it creates a file per task, which measures the
    file system rather than the runner.)
    """
    for checkpoint in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            provider = InstantProvider(max_parallel=concurrency)
            prompts = [f"overhead row {i}" for i in range(rows)]
            batch = videobatch.Batch(prompts, provider, concurrency=concurrency, progress=False,
                                     checkpoint=Path(tmp) / "run.parquet" if checkpoint else None)
            started = time.perf_counter()
            batch.wait()
            took = time.perf_counter() - started
            assert all(j.state is State.COMPLETED for j in batch.jobs)
        print(f"overhead    rows={rows} concurrency={concurrency} latency=0 checkpoint={checkpoint}: "
              f"{rows / took:,.0f} rows/s (target >= 2,000), {took:.2f}s")


def _child(stage: str, rows: int, path: Path) -> None:
    """One stage in a fresh process, so its peak memory (ru_maxrss) is its own."""
    subprocess.run([sys.executable, __file__, "_stage", stage, str(rows), str(path)], check=True)


def _stage(stage: str, rows: int, path: Path) -> None:
    from videobatch._store import Checkpoint, load

    t0 = time.perf_counter()
    if stage == "write":
        prompts = videobatch.load_prompts([{"id": f"r{i}", "prompt": f"row {i}: a long tracking shot of a city",
                                            "campaign": "bench"} for i in range(rows)])
        t_validate = time.perf_counter() - t0
        t0 = time.perf_counter()
        store, jobs = Checkpoint.open(path, prompts, settings={"provider": "local"})
        t_create = time.perf_counter() - t0
        now = time.time()
        for i, job in enumerate(jobs):  # a realistic mid-run mix of states
            if i % 3 == 0:
                continue
            store.append(job.transition(State.SUBMITTING, attempts=1))
            store.append(job.transition(State.GENERATING, task_id=f"task-{i}", submitted_at=now))
            if i % 3 == 1:
                store.append(job.transition(State.COMPLETED, video_url=f"file:///videos/{i}.mp4",
                                            completed_at=now + 60, expires_at=now + 30 * 86400))
        records = len(next(path.parent.glob(path.name + ".journal.*")).read_bytes().splitlines())
        t0 = time.perf_counter()
        asyncio.run(store.snapshot(jobs))
        t_write = time.perf_counter() - t0
        detail = (f"validate {t_validate:.2f}s, create checkpoint {t_create:.2f}s, "
                  f"snapshot write {t_write:.3f}s (folding {records:,} journal records)")
    elif stage == "load":
        loaded = load(path, requests=False)
        t_load = time.perf_counter() - t0
        df = videobatch.results(path)
        assert (df["status"] == "completed").sum() == len(range(1, rows, 3))
        assert sum(j.state is State.COMPLETED for j in loaded.jobs) == len(range(1, rows, 3))
        detail = f"load {t_load:.3f}s, file {path.stat().st_size / 1e6:.1f} MB"
    else:  # load with every request rebuilt (retry/status commands), and journal replay
        loaded = load(path)
        detail = f"load rebuilding every request {time.perf_counter() - t0:.3f}s"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"checkpoint  rows={rows} {stage}: {detail}; peak RSS {peak_mb:.0f} MB")


def checkpoint(rows: int = 100_000) -> None:
    """Targets: snapshot write and load < 1 s, peak memory < 500 MB, for 100,000 rows."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.parquet"
        for stage in ("write", "load", "load_requests"):
            _child(stage, rows, path)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_stage"]:
        _stage(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        raise SystemExit(0)
    which = sys.argv[1:] or ["efficiency", "overhead", "checkpoint"]
    for name in which:
        {"efficiency": efficiency, "overhead": overhead, "checkpoint": checkpoint}[name]()
