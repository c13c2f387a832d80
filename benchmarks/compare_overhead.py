"""Runner overhead of this tree against an earlier revision, both measured at the same moments.

    python benchmarks/compare_overhead.py b699e37            # the code as issue 10 found it
    python benchmarks/compare_overhead.py REV --rounds 12 --rows 5000

This VM's speed for the same work swings by up to 2x within a day (other tenants of its host, and
its disk's fsync latency), so an absolute rows/s figure says as much about the hour as about the
code. Here both trees run ``bench_core.py``'s overhead figure, each with its own ``InstantProvider``
(zero latency, 100 slots, checkpoint on), in a fresh process per run, alternating run by run, so
both meet the same moments; the ratio of their medians is what the code itself gained.

Two rates per tree: by wall time (what ``bench_core.py`` reports) and by the CPU time of the thread
that runs the event loop (which leaves out time that thread spent blocked, e.g. on an fsync).
The revision is read with ``git archive`` into a temporary folder: the work tree is not touched.
It must be importable with this environment's packages.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _once(tree: str, rows: int) -> None:
    """One run of ``tree``'s code in this (fresh) process: prints wall and CPU rates."""
    sys.path[:0] = [str(Path(tree) / "src"), str(Path(tree) / "benchmarks")]
    import bench_core  # the tree's own, with its own InstantProvider

    import videobatch

    with tempfile.TemporaryDirectory() as tmp:
        provider = bench_core.InstantProvider(max_parallel=100)
        batch = videobatch.Batch([f"overhead row {i}" for i in range(rows)], provider, concurrency=100,
                                 progress=False, checkpoint=Path(tmp) / "run.parquet")
        cpu, wall = time.thread_time(), time.perf_counter()
        batch.wait()
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        assert all(job.state.value == "completed" for job in batch.jobs)
    print(rows / wall, rows / cpu)


def _extract(rev: str, into: Path) -> Path:
    """``rev``'s ``src`` and ``benchmarks`` folders, written under ``into``."""
    got = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src", "benchmarks"], capture_output=True)
    if got.returncode:  # no such revision, or one without a src/ and benchmarks/ folder
        raise SystemExit(f"cannot read revision {rev!r}: {got.stderr.decode(errors='replace').strip()}")
    archive = got.stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def compare(rev: str, rounds: int, rows: int) -> None:
    # (imported here, not at the top: a run's child process must import its own tree's code)
    from bench_core import _compile_package  # bytecode compiled, as an installed package runs

    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": ROOT, rev: _extract(rev, Path(tmp))}
        for tree in trees.values():
            _compile_package(tree / "src" / "videobatch")
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        names = list(trees)
        for n in range(rounds):
            for name in names if n % 2 == 0 else names[::-1]:  # neither always goes first
                out = subprocess.run([sys.executable, __file__, "_once", str(trees[name]), str(rows)],
                                     check=True, capture_output=True, text=True).stdout.split()
                rates[name].append((float(out[-2]), float(out[-1])))
    medians = {}
    for name, runs in rates.items():
        wall = sorted(w for w, _ in runs)
        cpu = sorted(c for _, c in runs)
        medians[name] = statistics.median(wall), statistics.median(cpu)
        print(f"overhead    {name:>12}: {medians[name][0]:,.0f} rows/s by wall time (range {wall[0]:,.0f}-"
              f"{wall[-1]:,.0f}), {medians[name][1]:,.0f} by the loop thread's CPU time; "
              f"median of {len(runs)}, rows={rows}, checkpoint on")
    ours, theirs = medians["this tree"], medians[rev]
    print(f"ratio       this tree / {rev}: {ours[0] / theirs[0]:.2f}x by wall time, "
          f"{ours[1] / theirs[1]:.2f}x by CPU time")


if __name__ == "__main__":
    if sys.argv[1:2] == ["_once"]:
        _once(sys.argv[2], int(sys.argv[3]))
        raise SystemExit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare against, e.g. b699e37")
    parser.add_argument("--rounds", type=int, default=10, help="runs of each tree (default 10)")
    parser.add_argument("--rows", type=int, default=5000, help="rows per run (default 5000)")
    args = parser.parse_args()
    compare(args.rev, args.rounds, args.rows)
