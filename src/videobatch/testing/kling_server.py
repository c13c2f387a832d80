"""Run the Kling-compatible test server: in a thread or a child process (``running_server``), or
from the command line (``main``).

The HTTP app itself (routes, auth, faults) is ``kling_app``, the simulated account ``kling_sim``;
``KlingApp`` and ``create_app`` are re-exported here, where they have always been importable.

Command line::

    python -m videobatch.testing.kling_server --port 8123 --latency 2 --max-parallel 10 \\
        --faults "rate_limit=0.05,lost=0.02,fail=0.05" --lookup refused --foreign-tasks 50

From Python::

    with running_server(latency=0.2, max_parallel=3) as server:      # thread in this process
        ... server.url, server.counters(), server.configure(lost="next:1")
    with running_server(process=True, lookup="ignored") as server:   # survives a killed client
        ... server.tasks()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _serving
from ._serving import ServerHandle
from .kling_app import KlingApp, create_app
from .kling_config import LIST_ORDERS, LOOKUPS, SimConfig

__all__ = ["KlingApp", "ServerHandle", "create_app", "main", "running_server"]

# What --help says the server is (the whole server, not just this module's part of it).
_DESCRIPTION = "A Kling-compatible HTTP server for tests and benchmarks, with fault injection and counters."


@contextlib.contextmanager
def running_server(*, process: bool = False, faults: str | dict[str, Any] | None = None,
                   log_level: str = "critical", **settings: Any) -> Iterator[ServerHandle]:
    """Start a server on a free loopback port; stop it on exit.

    ``settings`` are ``SimConfig`` fields. ``process=True`` runs it as a separate Python process
    (for tests that kill the client process: the server outlives it); otherwise a thread here.
    """
    config = SimConfig()
    config.update(settings)
    with _serving.running(create_app, config, faults, name="kling", process=process,
                          log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.kling_server``: serve until interrupted."""
    parser = _serving.server_parser("kling", _DESCRIPTION)
    add = parser.add_argument
    add("--latency", type=float, help="seconds from create to the end of a task")
    add("--jitter", type=float, help="± fraction of the latency")
    add("--max-parallel", type=int, help="parallel-task limit (1303 beyond)")
    add("--rps", type=float, help="API requests per second (1302 beyond)")
    add("--no-retry-after", action="store_true", help="send 1302 without Retry-After")
    add("--access-key")
    add("--secret-key")
    add("--max-tasks", type=int, help="resource pack size in tasks (1102 beyond)")
    add("--slow-seconds", type=float, help="how late a 'slow' fault answers")
    add("--lookup", choices=LOOKUPS, help="GET ?external_task_id=: answered (default), refused "
        "(400 / 1201) or ignored (a plain list page)")
    add("--foreign-tasks", type=int, help="other systems' tasks on the account (in list pages)")
    add("--list-order", choices=LIST_ORDERS, help="list pages newest (default) or oldest first")
    add("--deduction-scale", type=float, help="units deducted per task × this (default 1: Kling's "
        "published prices)")
    args = parser.parse_args(argv)

    config = _serving.settings_from(args, SimConfig(), (
        "latency", "jitter", "max_parallel", "rps", "access_key", "secret_key", "max_tasks",
        "slow_seconds", "lookup", "foreign_tasks", "list_order", "deduction_scale",
    ))
    if args.no_retry_after:
        config.retry_after = False
    _serving.serve_forever(create_app(config, _serving.faults_from(args.faults)), name="kling",
                           host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
