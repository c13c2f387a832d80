"""Run the Replicate-compatible test server: in a thread or a child process (``running_server``), or
from the command line (``main``).

The HTTP app (routes, auth, faults) is ``replicate_app``, the simulated account ``replicate_sim``,
the models it knows ``replicate_models``.

Command line::

    python -m videobatch.testing.replicate_server --port 8123 --latency 2 --max-running 10 \\
        --faults "rate_limit=0.05,lost=0.02,fail=0.05" --foreign-predictions 50

From Python::

    with running_server(latency=0.2, max_running=3) as server:       # thread in this process
        ... server.url, server.counters(), server.configure(lost="next:1")
    with running_server(process=True) as server:                      # survives a killed client
        ... server.tasks()

Point the provider at ``f"{server.url}/v1"`` (``base_url``) with ``SimConfig.token`` as its token.
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
from .replicate_app import ReplicateApp, create_app
from .replicate_sim import SimConfig

__all__ = ["ReplicateApp", "ServerHandle", "create_app", "main", "running_server"]

_DESCRIPTION = "A Replicate-compatible HTTP server for tests and benchmarks, with fault injection and counters."


class ServerHandle:
    """A running server: its ``url`` (the API is under ``api_url``), counters, and configuration."""

    def __init__(self, url: str, config: SimConfig) -> None:
        self.url = url
        self.api_url = f"{url}/v1"
        self.config = config

    def counters(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/_test/counters", timeout=10).json()
        return data

    def tasks(self) -> list[dict[str, Any]]:
        """Every prediction on the account, oldest first (``GET /_test/tasks``)."""
        data: list[dict[str, Any]] = httpx.get(f"{self.url}/_test/tasks", timeout=10).json()
        return data

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings and fault rules, e.g. ``configure(max_running=2, lost="next:1")``;
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
        argv = ["-m", "videobatch.testing.replicate_server", "--port", "0",
                "--config-json", json.dumps(asdict(config)), "--log-level", log_level]
        if faults:
            argv += ["--faults", faults if isinstance(faults, str) else json.dumps(faults)]
        with in_process(argv, name="replicate", ready_path="/_test/counters") as url:
            yield ServerHandle(url, config)
        return
    with in_thread(create_app(config, faults), name="replicate", log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.replicate_server``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m videobatch.testing.replicate_server",
                                     description=_DESCRIPTION)
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    add("--latency", type=float, help="seconds a prediction runs")
    add("--jitter", type=float, help="± fraction of the latency")
    add("--boot", type=float, help="seconds a prediction spends starting before it can run")
    add("--max-running", type=int, help="predictions running at once (the rest queue in 'starting')")
    add("--rps", type=float, help="API requests per second (429 beyond)")
    add("--no-retry-after", action="store_true", help="send 429 without Retry-After")
    add("--token", help="the API token it accepts")
    add("--retention", type=float, help="seconds until a prediction's input and output are deleted")
    add("--output-list", action="store_true", help="output as a list of URLs, not one string")
    add("--slow-seconds", type=float, help="how late a 'slow' fault answers")
    add("--foreign-predictions", type=int, help="other systems' predictions on the account")
    add("--page-size", type=int, help="predictions per list page (100)")
    add("--seed", type=int)
    add("--faults", help="kind[@scope]=rate|next:N,... (see videobatch.testing.faults)")
    add("--config-json", help="SimConfig fields as JSON (used by running_server)")
    add("--log-level", default="warning")
    args = parser.parse_args(argv)

    config = SimConfig()
    if args.config_json:
        config.update(json.loads(args.config_json))
    for name in ("latency", "jitter", "boot", "max_running", "rps", "token", "retention", "slow_seconds",
                 "foreign_predictions", "page_size", "seed"):
        value = getattr(args, name)
        if value is not None:
            config.update({name: value})
    if args.no_retry_after:
        config.retry_after = False
    if args.output_list:
        config.output_list = True
    spec: str | None = args.faults
    faults: str | dict[str, Any] | None = spec
    if spec and spec.lstrip().startswith("{"):
        faults = json.loads(spec)
    serve_forever(create_app(config, faults), name="replicate", host=args.host, port=args.port,
                  log_level=args.log_level)


if __name__ == "__main__":
    main()
