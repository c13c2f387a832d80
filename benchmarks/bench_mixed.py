"""Benchmark: one mixed run over three providers with different parallel limits and latencies.

Three Kling-compatible test servers on loopback, each posing as its own provider (``kling``,
``kling_b``, ``kling_c``: the same client registered under three names), with its own limit and
task length. The rows are split evenly between them. Each pool should be kept full on its own
terms, so the run should take as long as its slowest pool needs:

    ideal = max over pools of (slot-seconds its tasks took, from its server) / its limit
    efficiency = ideal / actual wall time

Also printed: per-pool peak parallel tasks (must be <= its limit), polls per task, and the runner
overhead of a mixed table (three zero-latency in-memory providers, checkpoint on and off) beside a
single-provider table of the same size, in rows/s.

    python benchmarks/bench_mixed.py              # 300 rows
    python benchmarks/bench_mixed.py --rows 90    # quicker
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
from bench_core import InstantProvider  # (this folder: run as python benchmarks/bench_mixed.py)

import videobatch
from videobatch._jobs import State
from videobatch.providers import register
from videobatch.providers.kling.client import KlingProvider
from videobatch.testing import SimConfig, running_server

AK, SK = SimConfig.access_key, SimConfig.secret_key
POOLS = {  # name: (parallel limit, task latency in s)
    "kling": (10, 3.0),
    "kling_b": (4, 2.0),
    "kling_c": (6, 5.0),
}


def _alias(name: str) -> type[KlingProvider]:
    return type(f"Kling_{name}", (KlingProvider,), {"name": name})


def efficiency(rows: int) -> None:
    for name in POOLS:
        if name != "kling":
            register(name, _alias(name))
    names = list(POOLS)
    table = pd.DataFrame({"prompt": [f"bench row {i}: a glass city at night" for i in range(rows)],
                          "provider": [names[i % 3] for i in range(rows)]})
    with ExitStack() as stack:
        servers = {name: stack.enter_context(running_server(latency=latency, jitter=0.2,
                                                            max_parallel=limit, seed=i))
                   for i, (name, (limit, latency)) in enumerate(POOLS.items())}

        def options(name: str) -> dict[str, Any]:
            limit, latency = POOLS[name]
            return {"base_url": servers[name].url, "access_key": AK, "secret_key": SK,
                    "max_parallel": limit, "max_rps": 50, "first_poll": latency * 0.9,
                    "poll_interval": latency / 15, "max_poll_interval": latency}

        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            df = videobatch.run(table, "kling", checkpoint=Path(tmp) / "run.parquet",
                                progress=False, providers={n: options(n) for n in names[1:]},
                                **options("kling"))
            elapsed = time.monotonic() - started
        counters = {name: server.counters() for name, server in servers.items()}
    assert (df["status"] == "completed").all(), df["error"].dropna().head()
    ideals = {name: counters[name]["task_seconds"] / POOLS[name][0] for name in names}
    ideal = max(ideals.values())
    print(f"mixed run   rows={rows} over {len(names)} providers: ideal (slowest pool) {ideal:.2f}s "
          f"actual {elapsed:.2f}s -> efficiency {ideal / elapsed:.3f} (target >= 0.9)")
    for name in names:
        c = counters[name]
        polls = c["polls_single"] + c["polls_list"] + c["polls_external"]
        print(f"  {name:8} limit {POOLS[name][0]:>2} latency {POOLS[name][1]:.0f}s: "
              f"{c['accepted']} tasks, ideal {ideals[name]:.2f}s, peak parallel "
              f"{c['peak_parallel']}, {polls / max(1, c['accepted']):.2f} polls/task, "
              f"paid duplicates {c['paid_duplicates']}")


def _instant(name: str, max_parallel: int) -> InstantProvider:
    """bench_core's zero-latency provider, registered under its own name (one per pool)."""
    return type(f"Instant_{name}", (InstantProvider,), {"name": name})(max_parallel=max_parallel)


def overhead(rows: int = 5000) -> None:
    """rows/s of the runner alone: one provider, then the same rows over three (same total slots)."""
    for checkpoint in (False, True):
        for mixed in (False, True):
            names = ["a", "b", "c"] if mixed else ["a"]
            providers = {n: _instant(n, max_parallel=100 // len(names) + 1) for n in names}
            prompts = [{"prompt": f"overhead row {i}", **({"provider": names[i % 3]} if mixed else {})}
                       for i in range(rows)]
            with tempfile.TemporaryDirectory() as tmp:
                batch = videobatch.Batch(prompts, providers["a"], progress=False,
                                         providers={n: p for n, p in providers.items() if n != "a"},
                                         checkpoint=Path(tmp) / "run.parquet" if checkpoint else None)
                started = time.perf_counter()
                batch.wait()
                took = time.perf_counter() - started
                assert all(j.state is State.COMPLETED for j in batch.jobs)
            print(f"overhead    rows={rows} providers={len(names)} checkpoint={checkpoint}: "
                  f"{rows / took:,.0f} rows/s, {took:.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", choices=["efficiency", "overhead"], default=None)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    if args.part in (None, "efficiency"):
        efficiency(args.rows)
    if args.part in (None, "overhead"):
        overhead()


if __name__ == "__main__":
    main()
