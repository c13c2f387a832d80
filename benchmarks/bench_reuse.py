"""Reuse at scale: planning and the result-cache lookup for 100,000 rows, every one of them in the
cache (issue 15), and a run that takes them all from it.

    python benchmarks/bench_reuse.py            # 100,000 rows
    python benchmarks/bench_reuse.py 20000      # another size

Each phase runs in a fresh process so its peak memory (ru_maxrss) is its own:
  fill   the cache gets one entry per row (as finished runs would leave them)
  plan   ``videobatch.plan(rows, reuse=True)``: validate the table, key every row, look the keys up
  plain  the same plan without reuse (every row priced as a paid request), for comparison
  find   the lookup alone (``videobatch._reuse.find``) on rows already validated
  run    ``videobatch.run(rows, checkpoint=..., reuse=True)``: every row completed from the cache,
         journaled and snapshotted, nothing sent

Measured (2026-11-28, 2 shared cores under load from other jobs, 100,000 rows): fill 8.1 s; plan
5.2 s, peak 370 MB (plain plan 5.8 s, 263 MB); lookup alone 4.4 s, 364 MB; fully reused run
13.2 s, 462 MB (of which ~3 s journaling 200,000 records). Cache file 29 MB.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS = 100_000


def prompts(rows: int) -> list[str]:
    return [f"benchmark clip {i}: a comet over a mountain lake" for i in range(rows)]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase(name: str, rows: int, folder: Path) -> dict[str, float]:
    import videobatch
    from videobatch._cache import Entry, ResultCache
    from videobatch._reuse import ImageDigests, find, request_key

    cache_dir = folder / "cache"
    options = {"render": False, "latency": 0.0, "progress": False}
    table = prompts(rows)
    started = time.perf_counter()
    if name == "fill":
        batch = videobatch.Batch(table, "local", dry_run=True, **options)
        cache = ResultCache.open(cache_dir)
        provider, images, now = batch.provider, ImageDigests(), time.time()
        entries = [Entry(key, "local", "local-v1", f"https://cdn.example/{job.key}.mp4", None, 5.0,
                         now + 30 * 86400, None, None, 0.05, "/elsewhere/run.parquet", job.key,
                         "r" * 32, None, now, now)
                   for job in batch.jobs
                   if (key := request_key(provider, job.request, images)) is not None]
        for start in range(0, len(entries), 10_000):
            cache.put(entries[start:start + 10_000])
        assert len(entries) == rows
    elif name == "plan":
        plan = videobatch.plan(table, "local", reuse=True, reuse_dir=cache_dir, **options)
        assert len(plan.reused) == rows and plan.paid == 0, (len(plan.reused), plan.paid)
    elif name == "plain":
        plan = videobatch.plan(table, "local", **options)
        assert plan.paid == rows
    elif name == "find":
        batch = videobatch.Batch(table, "local", dry_run=True, reuse=True, reuse_dir=cache_dir, **options)
        assert batch._reuse.cache is not None
        started = time.perf_counter()  # the lookup alone, on validated rows
        hits = find(batch.jobs, batch.providers, batch.settings, batch._reuse.cache)
        assert len(hits) == rows
    elif name == "run":
        df = videobatch.run(table, "local", checkpoint=folder / "run.parquet", reuse=True,
                            reuse_dir=cache_dir, **options)
        assert df["reused_from"].notna().all() and (df["status"] == "completed").all()
    return {"seconds": time.perf_counter() - started, "peak_mb": _peak_mb()}


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env_dir = Path(tmp)
        for name in ("fill", "plan", "plain", "find", "run"):
            out = subprocess.run([sys.executable, __file__, "--phase", name, str(rows), tmp],
                                 capture_output=True, text=True, check=False,
                                 env={**__import__("os").environ, "VIDEOBATCH_LOCAL_DIR": str(env_dir / "local")})
            if out.returncode != 0:
                raise SystemExit(f"{name} failed:\n{out.stderr}")
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            size = (env_dir / "cache" / "results.sqlite3").stat().st_size / 1e6
            print(f"{name:<5} {rows:,} rows: {figures['seconds']:6.2f} s, peak memory "
                  f"{figures['peak_mb']:6.0f} MB" + (f" (cache file {size:.0f} MB)" if name == "fill" else ""))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        print(json.dumps(phase(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS)
