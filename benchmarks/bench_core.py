"""Core figures, measured in one run: slot efficiency, runner overhead, checkpoint cost at 100k rows,
and a 200k-row CSV from process start to the first paid request (and its resume).

    python benchmarks/bench_core.py            # all five
    python benchmarks/bench_core.py efficiency # or: overhead, checkpoint, scale (scale + resume)

Every run first prints a reference loop's time: this VM's speed varies by up to 1.6x over a day, so
figures are compared between runs with like reference times. ``compare_overhead.py REV`` measures
the overhead figure of this tree and of an earlier revision at the same moments, for their ratio.

Targets (issue 3): efficiency >= 0.95 (200 rows, concurrency 10, known latency); checkpoint write
and load < 1 s and peak memory < 500 MB for 100,000 rows.
Efficiency = ideal wall time / actual wall time, where ideal = ceil(rows / concurrency) * latency.
Targets (issue 10): 200,000 CSV rows to the first submit < 3 s and a resume of that checkpoint to
its first provider call < 3 s, peak memory < 500 MB for both; overhead >= 5,000 rows/s with the
checkpoint on. The command line is timed with videobatch's bytecode compiled, as installed.
"""

from __future__ import annotations

import asyncio
import csv
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import videobatch
from videobatch._jobs import State
from videobatch.providers import register
from videobatch.providers.base import Limits, PollHint, Provider, TaskState, TaskStatus, Video
from videobatch.request import VideoRequest


def efficiency(rows: int = 200, concurrency: int = 10, latency: float = 1.0, render: bool = False) -> None:
    # Imported here: the scale figures run this file as the command line's process, and the
    # command line does not load the local provider's renderer (PyAV, 0.1-0.2 s) for other providers.
    from videobatch.providers.local.provider import LocalProvider

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
    """Accepts every task and reports it finished at the first poll: only the runner costs time.
    Like a real provider it says when each task was created and ended (here: the same instant)."""

    name = "instant"

    def __init__(self, max_parallel: int) -> None:
        self.limits = Limits(max_parallel=max_parallel)
        self.poll_hint = PollHint(first_poll=0.0, min_interval=0.001, max_interval=0.01)
        self._keys: dict[str, str] = {}
        self._created: dict[str, float] = {}

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        task_id = self._keys.setdefault(idempotency_key, f"t{len(self._keys)}")
        created = self._created.setdefault(task_id, time.time())
        return TaskStatus(task_id, TaskState.QUEUED, created_at=created)

    async def status(self, task_id: str) -> TaskStatus:
        created = self._created.get(task_id)
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(Video(f"mem://{task_id}"),),
                          created_at=created, finished_at=created)

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        task_id = self._keys.get(idempotency_key)
        return None if task_id is None else await self.status(task_id)


def overhead(rows: int = 5000, concurrency: int = 100, runs: int = 3) -> None:
    """Runner cost per row: an in-memory provider with zero latency, with and without a checkpoint.

    Each figure is the median of ``runs`` runs, each in a fresh process (a run leaves garbage and a
    warmed-up poll schedule behind that would flatter or burden the next one); the spread is shown.
    (The offline ``local`` provider is not used here: it creates a file per task, which measures the
    file system rather than the runner.)
    """
    for checkpoint in (False, True):
        rates = sorted(float(subprocess.run(
            [sys.executable, __file__, "_overhead", str(rows), str(concurrency), str(int(checkpoint))],
            check=True, capture_output=True, text=True).stdout) for _ in range(runs))
        print(f"overhead    rows={rows} concurrency={concurrency} latency=0 checkpoint={checkpoint}: "
              f"{rates[len(rates) // 2]:,.0f} rows/s median of {runs} (range {rates[0]:,.0f}-{rates[-1]:,.0f}; "
              f"target >= 5,000 with the checkpoint)")


def _overhead_once(rows: int, concurrency: int, checkpoint: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        provider = InstantProvider(max_parallel=concurrency)
        prompts = [f"overhead row {i}" for i in range(rows)]
        batch = videobatch.Batch(prompts, provider, concurrency=concurrency, progress=False,
                                 checkpoint=Path(tmp) / "run.parquet" if checkpoint else None)
        started = time.perf_counter()
        batch.wait()
        took = time.perf_counter() - started
        assert all(j.state is State.COMPLETED for j in batch.jobs)
    print(rows / took)


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
    elif stage == "results":  # videobatch.results(checkpoint): the results table of a big checkpoint
        df = videobatch.results(path)
        assert len(df) == rows
        detail = f"results(checkpoint) {time.perf_counter() - t0:.2f}s"
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


_SUBJECTS = ("a red fox", "an old lighthouse keeper", "a paper boat", "two cyclists", "a neon koi fish",
             "a glass greenhouse", "a lone astronaut", "a street violinist", "a herd of wild horses")
_ACTIONS = ("drifting slowly across", "walking through", "circling above", "racing along",
            "reflected in", "emerging from", "resting beside")
_PLACES = ("a misty pine forest at dawn", "a rain-soaked Tokyo alley", "the dunes of the Sahara",
           "a frozen mountain lake", "a crowded night market", "an abandoned train station")
_STYLES = ("cinematic, 35mm film grain", "soft pastel light", "handheld documentary look",
           "golden hour, shallow depth of field", "moody blue tones, slow dolly in")
_NOTES = ("", "", "", "client approved", "check logo placement, colours", 'needs a "hero" feel',
          "reshoot if too dark")


def write_shot_list(path: Path, rows: int) -> None:
    """A realistic pasted shot list: ~80-character prompts, a campaign and notes carried through,
    duration and aspect-ratio columns filled on some rows only (the rest take the defaults), no id
    column (keys are hashed from the requests)."""
    rng = random.Random(10)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["shot", "campaign", "prompt", "duration", "aspect_ratio", "notes"])
        for i in range(rows):
            prompt = (f"Shot {i}: {rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)} {rng.choice(_PLACES)}, "
                      f"{rng.choice(_STYLES)}")
            duration = "10" if i % 4 == 0 else ""
            aspect = "9:16" if i % 5 == 0 else ("1:1" if i % 7 == 0 else "")
            out.writerow([f"S{i:06d}", f"spring-{i % 12:02d}", prompt, duration, aspect, rng.choice(_NOTES)])


def _peak_mb_now() -> float:
    """This process's peak resident memory so far (VmHWM), in MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class FirstCallProvider(Provider):
    """Records when the run first calls the provider (submit, poll or lookup) and the process's peak
    memory then; after ``kill_after`` calls the process kills itself (``kill -9``, a crash mid-run).
    Tasks are accepted and never finish."""

    name = "bench"

    def __init__(self, report: str, kill_after: str = "20") -> None:
        self.limits = Limits(max_parallel=20)
        self.poll_hint = PollHint(first_poll=0.05, min_interval=0.05, max_interval=0.2)
        self._report = report
        self._kill_after = int(kill_after)
        self._calls = 0

    def _called(self, what: str) -> None:
        self._calls += 1
        if self._calls == 1:
            Path(self._report).write_text(f"{time.time()} {what} {_peak_mb_now():.0f}\n")
        if self._calls >= self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        self._called("submit")
        return TaskStatus(f"t-{idempotency_key}", TaskState.QUEUED, created_at=time.time())

    async def status(self, task_id: str) -> TaskStatus:
        self._called("poll")
        return TaskStatus(task_id, TaskState.RUNNING)

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        self._called("lookup")
        return TaskStatus(f"t-{idempotency_key}", TaskState.RUNNING, created_at=time.time())


def _scale_child(report: str, prompts: str, path: str) -> None:
    """``python -m videobatch PROMPTS --provider bench --checkpoint PATH`` with the bench provider."""
    from videobatch.cli import main

    register("bench", FirstCallProvider)
    raise SystemExit(main([prompts, "--provider", "bench", "-P", f"report={report}",
                           "--checkpoint", path]))


def _cli_until_first_call(prompts: Path, path: Path) -> str:
    """Run the CLI in a fresh process until it has made a few provider calls (then it is killed)."""
    report = path.with_name("first-call.txt")
    report.unlink(missing_ok=True)
    with tempfile.TemporaryFile() as err:
        started = time.time()
        proc = subprocess.Popen([sys.executable, __file__, "_scale_child", str(report), str(prompts), str(path)],
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != -signal.SIGKILL or not report.exists():
            err.seek(0)
            raise RuntimeError(f"the run ended with {proc.returncode}:\n{err.read().decode()[-3000:]}")
    at, what, peak_then = report.read_text().split()
    return (f"start to first {what} {float(at) - started:.2f}s (peak RSS then {peak_then} MB); "
            f"peak RSS {usage.ru_maxrss / 1024:.0f} MB, CPU {usage.ru_utime + usage.ru_stime:.2f}s")


def _compile_package(package: Path | None = None) -> None:
    """Compile videobatch's bytecode (or that of the package folder ``package``) into its
    ``__pycache__`` folders, as Python does, so the command line is timed as an installed package
    runs: pip compiles it at install, and an editable install writes it at its first import. A
    machine with PYTHONDONTWRITEBYTECODE set (this one) would otherwise compile the whole package
    from source in every process: 0.3-0.4 s that no user's second run pays."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package or Path(videobatch.__file__).parent)],
                   env=env, check=True, stdout=subprocess.DEVNULL)


def scale(rows: int = 200_000) -> None:
    """Targets: CSV to the first submit < 3 s, resume to the first provider call < 3 s, peak < 500 MB."""
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "shots.csv"
        write_shot_list(prompts, rows)
        path = Path(tmp) / "shots.checkpoint.parquet"
        size = prompts.stat().st_size / 1e6
        _compile_package()
        print(f"scale       rows={rows} ({size:.0f} MB CSV), new run: {_cli_until_first_call(prompts, path)}")
        print(f"resume      rows={rows}, after kill -9: {_cli_until_first_call(prompts, path)}")
        _child("results", rows, path)


def machine() -> None:
    """A fixed pure-Python workload timed first: this VM's speed for the same work varies by up to
    1.6x over a day (other tenants of its host), so figures are compared at like values of it."""
    started = time.perf_counter()
    table: dict[int, str] = {}
    for i in range(2_000_000):
        table[i % 4096] = f"row {i}"
    print(f"machine     reference loop (2M dict stores of f-strings): {time.perf_counter() - started:.3f}s "
          "(lower is a faster machine; compare figures taken at like values)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_scale_child"]:
        _scale_child(*sys.argv[2:5])
    if sys.argv[1:2] == ["_overhead"]:
        _overhead_once(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
        raise SystemExit(0)
    if sys.argv[1:2] == ["_stage"]:
        _stage(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        raise SystemExit(0)
    which = sys.argv[1:] or ["efficiency", "overhead", "checkpoint", "scale"]
    machine()
    for name in which:
        {"efficiency": efficiency, "overhead": overhead, "checkpoint": checkpoint, "scale": scale}[name]()
