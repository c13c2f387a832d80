"""Benchmark: service mode (the HTTP API, Redis, worker processes) against the Kling-compatible server.

Starts its own redis-server (AOF on, ``appendfsync always``, as the README recommends), the API
(``python -m videobatch serve``) and the Kling-compatible server, all on loopback, and measures:

* **API under load** — ``--clients`` concurrent clients (default 200) for ``--seconds`` (30) on
  ``POST /api/v1/videos`` (each one a Redis transaction fsync'ed to the AOF), then as long on
  ``GET /api/v1/videos/{id}``: requests per second, p50/p99 latency, answers by status code (the
  issue's bar: zero 5xx, so no false 503). Also rows per second through ``POST /api/v1/batches``.
* **Uploads** — the API process's memory (peak RSS growth) and time for a CSV upload of the most
  rows a batch may have (10,000) and for one of 1,000,000 rows (refused with 422).
* **End-to-end efficiency** with 1, 2 and 4 workers sharing one account limit: ideal / actual wall
  time from the batch's submission to its last request ending, where ideal = (slot-seconds the
  tasks really took, from the server) / account limit. Also: peak parallel tasks at the server
  (never above the limit), paid duplicates (always 0), polls per task.

    python benchmarks/bench_service.py                      # 96 rows, limit 8, latency 1.5 s
    python benchmarks/bench_service.py --rows 200 --latency 3 --workers 1 2 4 8
    python benchmarks/bench_service.py --clients 50 --seconds 5 --workers   # a quick API run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import redis

from videobatch.testing import ServerHandle, SimConfig

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TERMINAL = {"completed", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def stack(work: Path, args: argparse.Namespace) -> Iterator[tuple[str, str, ServerHandle, int]]:
    """redis-server, the API and the Kling-compatible server; yields (redis url, API url, kling,
    the API's process id)."""
    redis_port, api_port, kling_port = free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    (work / "redis").mkdir()
    config = SimConfig(latency=args.latency, jitter=args.jitter, max_parallel=2 * args.limit, seed=1)
    # uvicorn.run binds its own TCP socket (TCP_NODELAY): answers without Nagle's delayed-ACK wait.
    kling_code = ("import json, sys, uvicorn\n"
                  "from videobatch.testing.kling_server import create_app\n"
                  "from videobatch.testing.kling_sim import SimConfig\n"
                  "config = SimConfig(); config.update(json.loads(sys.argv[1]))\n"
                  "uvicorn.run(create_app(config), host='127.0.0.1', port=int(sys.argv[2]),"
                  " log_level='warning', access_log=False)\n")
    env = {**os.environ, "VIDEOBATCH_API_TOKENS": f"bench:{TOKEN}", "VIDEOBATCH_TOKEN_SECRET": "bench-secret"}
    with process([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
                  "--bind", "127.0.0.1", "--dir", str(work / "redis"), "--appendonly", "yes",
                  "--appendfsync", "always", "--save", ""], work / "redis.log"), \
            process([sys.executable, "-c", kling_code, json.dumps(asdict(config)), str(kling_port)],
                    work / "kling.log"), \
            process([sys.executable, "-m", "videobatch", "serve", "--port", str(api_port),
                     "--redis-url", redis_url, "--provider", "kling"], work / "api.log", env) as api_proc:
        api = f"http://127.0.0.1:{api_port}"
        kling = ServerHandle(f"http://127.0.0.1:{kling_port}", config)
        wait_for(lambda: _answers(f"{api}/healthz"), 30, "the API and Redis")
        wait_for(lambda: _answers(f"{kling.url}/_test/counters"), 30, "the Kling-compatible server")
        yield redis_url, api, kling, api_proc.pid


# ------------------------------------------------------------------------------ API under load
Call = tuple[str, str, Any]  # method, path, JSON body


async def _load(api: str, clients: int, seconds: float, call: Callable[[int, int], Call],
                created: list[str] | None = None) -> dict[str, Any]:
    """``clients`` clients each sending ``call(client, n)`` one after another for ``seconds``."""
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    # Made before the clock starts: each loads the TLS trust store (some 20 ms of CPU), which
    # would otherwise count as the first requests' latency.
    made = [httpx.AsyncClient(base_url=api, headers=AUTH, timeout=60) for _ in range(clients)]
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        async with made[number] as c:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                method, path, body = call(number, n)
                began = time.perf_counter()
                try:
                    answer = await c.request(method, path, json=body)
                    code = str(answer.status_code)
                    if created is not None and answer.status_code == 202:
                        created.append(answer.json()["request_id"])
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                latencies.append(time.perf_counter() - began)
                codes[code] += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1)

    return {"requests": len(latencies), "per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "codes": dict(sorted(codes.items())),
            "5xx": sum(v for k, v in codes.items() if k.startswith("5")),
            "errors": sum(v for k, v in codes.items() if not k.isdigit())}


def _rss(pid: int) -> dict[str, int]:
    """The process's resident memory now and at its peak, in KB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def _upload(api: str, pid: int, rows: int, text: str) -> dict[str, Any]:
    body = "prompt\n" + "".join(f"{text} {i}\n" for i in range(rows))
    with contextlib.suppress(OSError):  # the peak starts again from now (Linux 4.0+, same user)
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _rss(pid)
    began = time.perf_counter()
    answer = httpx.post(f"{api}/api/v1/batches/csv", headers=AUTH, timeout=120,
                        files={"file": ("prompts.csv", body.encode(), "text/csv")})
    took = time.perf_counter() - began
    after = _rss(pid)
    return {"rows": rows, "mb": round(len(body) / 1e6, 1), "status": answer.status_code,
            "seconds": round(took, 2), "answer_bytes": len(answer.content),
            "peak_growth_mb": round((after["VmHWM"] - before["VmRSS"]) / 1024, 1),
            "rss_growth_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 1)}


def bench_api(api: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    ids: list[str] = []
    create = asyncio.run(_load(api, args.clients, args.seconds, lambda c, n: (
        "POST", "/api/v1/videos",
        {"prompt": f"load {c}-{n}", "model": "kling-v2-6", "metadata": {"client": c, "n": n}}), ids))
    known = ids or ["0" * 32]
    status = asyncio.run(_load(api, args.clients, args.seconds, lambda c, n: (
        "GET", f"/api/v1/videos/{known[(c * 7919 + n) % len(known)]}", None)))
    rows = 500
    batch, batch_ok = asyncio.run(_post_many(
        api, 8, 4,
        lambda b: {"rows": [{"id": f"b{b}-{i}", "prompt": f"batch {b} row {i}"} for i in range(rows)]},
        "/api/v1/batches"))
    # (a million short rows: under the body limit, so the row count is what refuses it)
    uploads = [_upload(api, pid, 10_000, "a lighthouse on a cliff at dusk shot"),
               _upload(api, pid, 1_000_000, "p")]
    return {"clients": args.clients, "seconds": args.seconds, "create": create, "status": status,
            "batch_rows_per_s": round(batch_ok * rows / batch, 1), "uploads": uploads}


async def _post_many(api: str, total: int, clients: int, body: Any, path: str) -> tuple[float, int]:
    sent = 0
    accepted = 0

    async def client() -> None:
        nonlocal sent, accepted
        async with httpx.AsyncClient(base_url=api, headers=AUTH, timeout=60) as c:
            while sent < total:
                sent += 1
                answer = await c.post(path, json=body(sent))
                accepted += answer.status_code == 202

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, accepted


# ------------------------------------------------------------------------------ end to end
def bench_workers(n: int, redis_url: str, api: str, kling: ServerHandle, work: Path,
                  args: argparse.Namespace) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushall()
    kling.reset()
    hint = {"first_poll": args.latency * 0.8, "poll_interval": args.latency / 15,
            "max_poll_interval": args.latency, "max_rps": 100}
    argv = [sys.executable, "-m", "videobatch", "worker", "--redis-url", redis_url, "--provider",
            "kling", "--base-url", kling.url, "--account-limit", str(args.limit), "-v"]
    for key, value in hint.items():
        argv += ["-P", f"{key}={value}"]
    env = {**os.environ, "KLING_ACCESS_KEY": SimConfig.access_key,
           "KLING_SECRET_KEY": SimConfig.secret_key}
    logs = [work / f"workers{n}-{i}.log" for i in range(n)]
    with _workers(argv, logs, env):
        wait_for(lambda: all("ready" in log.read_text() for log in logs if log.exists())
                 and all(log.exists() for log in logs), 60, "the workers")
        rows = [{"prompt": f"bench {n} row {i}: a glass city at night"} for i in range(args.rows)]
        started = time.monotonic()
        answer = httpx.post(f"{api}/api/v1/batches", json={"rows": rows}, headers=AUTH, timeout=60)
        answer.raise_for_status()
        ids = answer.json()["request_ids"]

        def ended() -> bool:
            pipe = r.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(f"vb:job:{rid}", "status")
            return all(s in TERMINAL for s in pipe.execute())

        wait_for(ended, 600, "the batch")
        elapsed = time.monotonic() - started
        counters = kling.counters()
    waits = []
    for rid in ids:
        job = r.hgetall(f"vb:job:{rid}")
        waits.append(float(job["completed_at"]) - float(job["created_at"]))
    r.close()
    ideal = counters["task_seconds"] / args.limit
    polls = counters["polls_single"] + counters["polls_list"] + counters["polls_external"]
    waits.sort()
    return {"workers": n, "elapsed_s": round(elapsed, 2), "ideal_s": round(ideal, 2),
            "efficiency": round(ideal / elapsed, 3), "completed": counters["succeeded"],
            "peak_parallel": counters["peak_parallel"], "limit": args.limit,
            "paid_duplicates": counters["paid_duplicates"],
            "polls_per_task": round(polls / max(1, len(ids)), 2),
            "p50_request_s": round(waits[len(waits) // 2], 2)}


@contextmanager
def _workers(argv: list[str], logs: list[Path], env: dict[str, str]) -> Iterator[None]:
    procs: list[subprocess.Popen[bytes]] = []
    files = [log.open("wb") for log in logs]
    try:
        for out in files:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env))
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for out in files:
            out.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=96, help="requests per end-to-end run")
    parser.add_argument("--limit", type=int, default=8, help="the account's parallel-task limit")
    parser.add_argument("--latency", type=float, default=1.5, help="seconds a task takes (mean)")
    parser.add_argument("--jitter", type=float, default=0.2, help="± fraction of the latency")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4],
                        help="end-to-end runs with this many workers (none: API only)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent API clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of each API load")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    results: dict[str, Any] = {"settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp, \
            stack(Path(tmp), args) as (redis_url, api, kling, pid):
        results["api"] = bench_api(api, pid, args)
        if not args.json:
            a = results["api"]
            for name, what in (("create", "POST /api/v1/videos"), ("status", "GET /api/v1/videos/{id}")):
                f = a[name]
                print(f"{what}, {a['clients']} clients, {a['seconds']:g} s: {f['per_s']} requests/s, "
                      f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, {f['5xx']} x 5xx, "
                      f"{f['errors']} client errors; answers {f['codes']}")
            print(f"POST /api/v1/batches: {a['batch_rows_per_s']} rows/s")
            for u in a["uploads"]:
                print(f"CSV upload of {u['rows']:,} rows ({u['mb']} MB): {u['status']} in "
                      f"{u['seconds']} s, API peak memory +{u['peak_growth_mb']} MB "
                      f"(resident +{u['rss_growth_mb']} MB), answer {u['answer_bytes']} bytes")
        results["end_to_end"] = []
        for n in args.workers:
            row = bench_workers(n, redis_url, api, kling, Path(tmp), args)
            results["end_to_end"].append(row)
            if not args.json:
                print(f"{n} worker(s): {row['elapsed_s']} s for {args.rows} requests, ideal "
                      f"{row['ideal_s']} s -> efficiency {row['efficiency']}; peak parallel "
                      f"{row['peak_parallel']}/{args.limit}; paid duplicates "
                      f"{row['paid_duplicates']}; {row['polls_per_task']} polls/task; median "
                      f"request {row['p50_request_s']} s")
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
