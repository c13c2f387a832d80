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

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _serving
from ._serving import ServerHandle
from .runway_app import RunwayApp, create_app
from .runway_sim import DELETED, SimConfig

__all__ = ["API_SECRET", "RunwayApp", "ServerHandle", "create_app", "main", "running_server"]

API_SECRET = SimConfig.api_secret  # the key a default server accepts
_DESCRIPTION = ("A Runway-compatible HTTP server (developer API, X-Runway-Version 2024-11-06) for "
                "tests and benchmarks, with fault injection and counters.")


@contextlib.contextmanager
def running_server(*, process: bool = False, faults: str | dict[str, Any] | None = None,
                   log_level: str = "critical", **settings: Any) -> Iterator[ServerHandle]:
    """Start a server on a free loopback port; stop it on exit.

    ``settings`` are ``SimConfig`` fields. ``process=True`` runs it as a separate Python process
    (for tests that kill the client process: the server outlives it); otherwise a thread here.
    """
    config = SimConfig()
    config.update(settings)
    with _serving.running(create_app, config, faults, name="runway", process=process,
                          log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.runway_server``: serve until interrupted."""
    parser = _serving.server_parser("runway", _DESCRIPTION)
    add = parser.add_argument
    add("--latency", type=float, help="seconds a task runs")
    add("--jitter", type=float, help="± fraction of the latency")
    add("--max-concurrent", type=int, help="running tasks per model (THROTTLED beyond)")
    add("--max-daily", type=int, help="tasks per model per 24 h (429 beyond)")
    add("--credits", type=float, help="credit balance (400 'not enough credits' beyond)")
    add("--no-retry-after", action="store_true", help="send 429s without Retry-After")
    add("--api-secret", help="the key the server accepts")
    add("--slow-seconds", type=float, help="how late a 'slow' fault answers")
    add("--deleted", choices=DELETED, help="GET after DELETE cancelled a task: 404 or CANCELLED")
    args = parser.parse_args(argv)

    config = _serving.settings_from(args, SimConfig(), (
        "latency", "jitter", "max_concurrent", "max_daily", "credits", "api_secret",
        "slow_seconds", "deleted",
    ))
    if args.no_retry_after:
        config.retry_after = False
    _serving.serve_forever(create_app(config, _serving.faults_from(args.faults)), name="runway",
                           host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
