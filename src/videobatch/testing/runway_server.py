"""Run the Runway-compatible test server: in a thread or a child process (``running_server``), or
from the command line (``main``). The HTTP app is ``runway_app``, the simulated organization
``runway_sim``.

Command line::

    python -m videobatch.testing.runway_server --port 8124 --latency 2 --max-concurrent 3 \\
        --faults "server_error=0.05,lost=0.02,fail=0.05" --max-daily 200

From Python::

    with running_server(latency=0.2, max_concurrent=3) as server:      # thread in this process
        ... server.url, server.counters(), server.configure(lost="next:1")
    with running_server(process=True) as server:                       # survives a killed client
        ... server.tasks()
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import httpx

from ._serving import in_process, in_thread, serve_forever
from .runway_app import RunwayApp, create_app
from .runway_sim import DELETED, SimConfig

__all__ = ["API_SECRET", "RunwayApp", "ServerHandle", "create_app", "main", "running_server"]

API_SECRET = SimConfig.api_secret  # the key a default server accepts
_DESCRIPTION = ("A Runway-compatible HTTP server (developer API, X-Runway-Version 2024-11-06) for "
                "tests and benchmarks, with fault injection and counters.")


class ServerHandle:
    """A running server: its ``url``, its counters, and run-time configuration."""

    def __init__(self, url: str, config: SimConfig) -> None:
        self.url = url
        self.config = config

    def counters(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/_test/counters", timeout=10).json()
        return data

    def tasks(self) -> list[dict[str, Any]]:
        """Every task on the account, oldest first (``GET /_test/tasks``)."""
        data: list[dict[str, Any]] = httpx.get(f"{self.url}/_test/tasks", timeout=10).json()
        return data

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings and fault rules, e.g. ``configure(max_concurrent=1, lost="next:1")``;
        rules whose names are not identifiers go in ``faults={"lost@create": 1}``."""
        response = httpx.post(f"{self.url}/_test/config", json=changes, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.url}/_test/reset", timeout=10).raise_for_status()


@contextlib.contextmanager
def running_server(*, process: bool = False, faults: str | dict[str, Any] | None = None,
                   log_level: str = "critical", **settings: Any) -> Iterator[ServerHandle]:
    """Start a server on a free loopback port; stop it on exit.

    ``settings`` are ``SimConfig`` fields. ``process=True`` runs it as a separate Python process
    (for tests that kill the client process: the server outlives it); otherwise a thread here.
    """
    config = SimConfig()
    config.update(settings)
    if process:
        argv = ["-m", "videobatch.testing.runway_server", "--port", "0",
                "--config-json", json.dumps(asdict(config)), "--log-level", log_level]
        if faults:
            argv += ["--faults", faults if isinstance(faults, str) else json.dumps(faults)]
        with in_process(argv, name="runway", ready_path="/_test/counters") as url:
            yield ServerHandle(url, config)
        return
    with in_thread(create_app(config, faults), name="runway", log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.runway_server``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m videobatch.testing.runway_server",
                                     description=_DESCRIPTION)
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    add("--latency", type=float, help="seconds a task runs")
    add("--jitter", type=float, help="± fraction of the latency")
    add("--max-concurrent", type=int, help="running tasks per model (THROTTLED beyond)")
    add("--max-daily", type=int, help="tasks per model per 24 h (429 beyond)")
    add("--credits", type=float, help="credit balance (400 'not enough credits' beyond)")
    add("--no-retry-after", action="store_true", help="send 429s without Retry-After")
    add("--api-secret", help="the key the server accepts")
    add("--slow-seconds", type=float, help="how late a 'slow' fault answers")
    add("--deleted", choices=DELETED, help="GET after DELETE cancelled a task: 404 or CANCELLED")
    add("--seed", type=int)
    add("--faults", help="kind[@scope]=rate|next:N,... (see videobatch.testing.faults)")
    add("--config-json", help="SimConfig fields as JSON (used by running_server)")
    add("--log-level", default="warning")
    args = parser.parse_args(argv)

    config = SimConfig()
    if args.config_json:
        config.update(json.loads(args.config_json))
    for name in ("latency", "jitter", "max_concurrent", "max_daily", "credits", "api_secret",
                 "slow_seconds", "deleted", "seed"):
        value = getattr(args, name)
        if value is not None:
            config.update({name: value})
    if args.no_retry_after:
        config.retry_after = False
    spec: str | None = args.faults
    faults: str | dict[str, Any] | None = spec
    if spec and spec.lstrip().startswith("{"):
        faults = json.loads(spec)
    serve_forever(create_app(config, faults), name="runway", host=args.host, port=args.port,
                  log_level=args.log_level)


if __name__ == "__main__":
    main()
