"""Run the fal-compatible test server: in a thread or a child process (``running_server``), or from
the command line (``main``). The HTTP app is ``fal_app``, the simulated account ``fal_sim``.

Command line::

    python -m videobatch.testing.fal_server --port 8124 --latency 2 --max-parallel 4 \\
        --faults "rate_limit=0.05,lost=0.02,fail=0.05" --foreign-tasks 50

From Python::

    with running_server(latency=0.2, max_parallel=3) as server:      # thread in this process
        ... server.url, server.counters(), server.configure(lost="next:1")
    with running_server(process=True) as server:                     # survives a killed client
        ... server.tasks()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _serving
from ._serving import ServerHandle
from .fal_app import FalApp, create_app
from .fal_sim import LISTINGS, SimConfig

__all__ = ["FalApp", "ServerHandle", "create_app", "main", "running_server"]

_DESCRIPTION = "A fal-compatible queue API server for tests, with fault injection and counters."


@contextlib.contextmanager
def running_server(*, process: bool = False, faults: str | dict[str, Any] | None = None,
                   log_level: str = "critical", **settings: Any) -> Iterator[ServerHandle]:
    """Start a server on a free loopback port; stop it on exit. ``settings`` are ``SimConfig``
    fields; ``process=True`` runs it as a separate process (it outlives a killed client)."""
    config = SimConfig()
    config.update(settings)
    with _serving.running(create_app, config, faults, name="fal", process=process,
                          log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.fal_server``: serve until interrupted."""
    parser = _serving.server_parser("fal", _DESCRIPTION)
    add = parser.add_argument
    add("--latency", type=float, help="seconds a request takes when a slot is free")
    add("--jitter", type=float, help="± fraction of the latency")
    add("--max-parallel", type=int, help="the account's concurrency limit (queued beyond)")
    add("--rps", type=float, help="API requests per second (429 beyond)")
    add("--key", help="the API key the server accepts (Authorization: Key <key>)")
    add("--locked", action="store_true", help="the balance is exhausted: 403 to everything")
    add("--slow-seconds", type=float, help="how late a 'slow' fault answers")
    add("--result-ttl", type=float, help="seconds a result stays after completion")
    add("--listing", choices=LISTINGS, help="the by-endpoint listing shows finished requests "
        "only (default) or all")
    add("--foreign-tasks", type=int, help="other systems' finished requests on the account")
    args = parser.parse_args(argv)

    config = _serving.settings_from(args, SimConfig(), (
        "latency", "jitter", "max_parallel", "rps", "key", "slow_seconds", "result_ttl", "listing",
        "foreign_tasks",
    ))
    if args.locked:
        config.locked = True
    _serving.serve_forever(create_app(config, _serving.faults_from(args.faults)), name="fal",
                           host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
