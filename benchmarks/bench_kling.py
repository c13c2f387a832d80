"""Benchmark: videobatch's Kling path against the Kling-compatible server, versus naive loops.

Measures, in one run and against servers with the same known latency:

* **videobatch** — ``videobatch.run(rows, provider="kling", ...)``: efficiency = ideal / actual wall
  time, where ideal = (slot-seconds the tasks really took, from the server) / parallel limit;
  polls per completed task (every GET the server saw, by id, by external id or list page).
* **naive, parallel** — ``parallel`` workers, each: submit a row, poll it at once and then every
  5 s until it ends, take the next row (the seed's worker loop, given the same parallelism).
* **naive, seed** — the seed's single worker (one row at a time, poll every 5 s), timed on a sample
  of rows and scaled to all rows (it is strictly sequential, so the scaling is exact but for noise).

Targets from the issue: efficiency ≥ 0.9, ≥ 3× faster than the naive loop, ≤ 3 polls per task.

    python benchmarks/bench_kling.py                       # 200 rows, parallel 10, latency 3 s
    python benchmarks/bench_kling.py --rows 60 --latency 2 --naive-sample 4   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import videobatch
from videobatch.providers.kling.client import KlingProvider
from videobatch.request import VideoRequest
from videobatch.testing import SimConfig, running_server

AK, SK = SimConfig.access_key, SimConfig.secret_key


def server_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"latency": args.latency, "jitter": args.jitter, "max_parallel": args.parallel,
            "seed": 1}


def bench_videobatch(args: argparse.Namespace) -> dict[str, Any]:
    rows = [f"bench row {i}: a glass city at night" for i in range(args.rows)]
    # The provider's poll hint for a task length known in advance (real Kling's defaults, 30 s /
    # 5-60 s, suit tasks of minutes); the runner refines it from the durations it observes.
    hint = {"first_poll": args.latency * args.first_poll, "poll_interval": args.latency / 15,
            "max_poll_interval": args.latency}
    with running_server(**server_settings(args)) as server:
        started = time.monotonic()
        df = videobatch.run(rows, "kling", base_url=server.url, access_key=AK, secret_key=SK,
                            max_parallel=args.parallel, max_rps=args.max_rps, progress=False,
                            **hint)
        elapsed = time.monotonic() - started
        counters = server.counters()
    completed = int((df["status"] == "completed").sum())
    ideal = counters["task_seconds"] / args.parallel
    polls = counters["polls_single"] + counters["polls_list"] + counters["polls_external"]
    return {"elapsed_s": round(elapsed, 2), "ideal_s": round(ideal, 2),
            "efficiency": round(ideal / elapsed, 3), "completed": completed,
            "polls": polls, "polls_per_task": round(polls / max(1, completed), 2),
            "list_polls": counters["polls_list"], "accepted": counters["accepted"],
            "peak_parallel": counters["peak_parallel"], "requests": counters["requests"],
            "rejected": counters["rejected"]}


async def naive_worker(kling: KlingProvider, queue: asyncio.Queue[int], interval: float) -> int:
    polls = 0
    while True:
        try:
            i = queue.get_nowait()
        except asyncio.QueueEmpty:
            return polls
        status = await kling.submit(VideoRequest(prompt=f"naive row {i}"), f"naive-{i}")
        while True:  # the seed's wait_for_completion: poll, then sleep 5 s
            status = await kling.status(status.task_id)
            polls += 1
            if status.state.done:
                break
            await asyncio.sleep(interval)


def bench_naive(args: argparse.Namespace, rows: int, workers: int) -> dict[str, Any]:
    async def go(url: str) -> int:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(rows):
            queue.put_nowait(i)
        async with KlingProvider(base_url=url, access_key=AK, secret_key=SK) as kling:
            counts = await asyncio.gather(*(naive_worker(kling, queue, args.naive_interval)
                                            for _ in range(workers)))
        return sum(counts)

    with running_server(**server_settings(args)) as server:
        started = time.monotonic()
        polls = asyncio.run(go(server.url))
        elapsed = time.monotonic() - started
    return {"rows": rows, "workers": workers, "elapsed_s": round(elapsed, 2),
            "polls_per_task": round(polls / rows, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=10, help="the account's parallel limit")
    parser.add_argument("--latency", type=float, default=3.0, help="seconds a task takes (mean)")
    parser.add_argument("--jitter", type=float, default=0.2, help="± fraction of the latency")
    parser.add_argument("--max-rps", type=float, default=20.0,
                        help="videobatch's request-rate cap for the run (default 20)")
    parser.add_argument("--first-poll", type=float, default=0.8,
                        help="first poll after this share of the known latency (default 0.8)")
    parser.add_argument("--naive-interval", type=float, default=5.0)
    parser.add_argument("--naive-sample", type=int, default=10,
                        help="rows timed for the single-worker seed loop (0: skip it)")
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()

    print(f"{args.rows} rows, parallel limit {args.parallel}, latency {args.latency} s "
          f"± {args.jitter:.0%}")
    ours = bench_videobatch(args)
    print(f"videobatch     : {ours['elapsed_s']:7.1f} s  (ideal {ours['ideal_s']:.1f} s)  "
          f"efficiency {ours['efficiency']:.3f}  polls/task {ours['polls_per_task']:.2f}  "
          f"({ours['list_polls']} list pages)  peak parallel {ours['peak_parallel']}  "
          f"accepted {ours['accepted']}  rejected {ours['rejected']}")
    report: dict[str, Any] = {"settings": vars(args), "videobatch": ours}
    if not args.skip_naive:
        parallel = bench_naive(args, args.rows, args.parallel)
        speedup = parallel["elapsed_s"] / ours["elapsed_s"]
        print(f"naive parallel : {parallel['elapsed_s']:7.1f} s  polls/task "
              f"{parallel['polls_per_task']:.2f}  → videobatch is {speedup:.2f}× faster")
        report["naive_parallel"] = {**parallel, "speedup": round(speedup, 2)}
        if args.naive_sample > 0:
            seed = bench_naive(args, args.naive_sample, 1)
            scaled = seed["elapsed_s"] * args.rows / args.naive_sample
            speedup = scaled / ours["elapsed_s"]
            print(f"naive seed     : {scaled:7.1f} s  (timed {seed['rows']} rows: "
                  f"{seed['elapsed_s']:.1f} s, scaled)  polls/task {seed['polls_per_task']:.2f}"
                  f"  → videobatch is {speedup:.2f}× faster")
            report["naive_seed"] = {**seed, "scaled_elapsed_s": round(scaled, 1),
                                    "speedup": round(speedup, 2)}
    targets = {"efficiency>=0.9": ours["efficiency"] >= 0.9,
               "polls_per_task<=3": ours["polls_per_task"] <= 3}
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
