"""Run the Google-compatible test server: in a thread or a child process (``running_server``), or
from the command line (``main``).

The HTTP app (routes, auth, faults) is ``google_app``, the simulated project ``google_sim``.

Command line::

    python -m videobatch.testing.google_server --port 8124 --latency 2 --max-parallel 5 \\
        --over-limit queue --faults "rate_limit=0.05,lost=0.02,fail=0.05"

From Python::

    with running_server(latency=0.2, max_parallel=3) as server:      # thread in this process
        ... server.url, server.counters(), server.configure(lost="next:1")
    with running_server(process=True) as server:                      # survives a killed client
        ... server.tasks()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _serving
from ._serving import ServerHandle
from .google_app import GoogleApp, create_app
from .google_sim import DELIVERIES, OVER_LIMIT, SimConfig

__all__ = ["GoogleApp", "ServerHandle", "SimConfig", "create_app", "main", "running_server"]

_DESCRIPTION = ("A Gemini-API-compatible HTTP server (Interactions API video generation) for tests "
                "and benchmarks, with fault injection and counters.")


@contextlib.contextmanager
def running_server(*, process: bool = False, faults: str | dict[str, Any] | None = None,
                   log_level: str = "critical", **settings: Any) -> Iterator[ServerHandle]:
    """Start a server on a free loopback port; stop it on exit.

    ``settings`` are ``SimConfig`` fields. ``process=True`` runs it as a separate Python process
    (for tests that kill the client process: the server outlives it); otherwise a thread here.
    """
    config = SimConfig()
    config.update(settings)
    with _serving.running(create_app, config, faults, name="google", process=process,
                          log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.google_server``: serve until interrupted."""
    parser = _serving.server_parser("google", _DESCRIPTION)
    add = parser.add_argument
    add("--api-key", help="the key x-goog-api-key must carry")
    add("--latency", type=float, help="seconds from create to the end of an interaction")
    add("--jitter", type=float, help="± fraction of the latency")
    add("--max-parallel", type=int, help="interactions in flight at once")
    add("--over-limit", choices=OVER_LIMIT, help="beyond max-parallel: 429 (refuse, default) "
        "or wait for a slot (queue)")
    add("--rps", type=float, help="API requests per second (429 beyond)")
    add("--retry-delay", type=float, help="the retryDelay of 429 answers (0: none)")
    add("--get-delivery", choices=DELIVERIES, help="how GET shows a uri-delivery job's video "
        "(inline base64 by default, as the preview guide warns)")
    add("--file-processing", type=float, help="seconds a generated file stays PROCESSING")
    add("--slow-seconds", type=float, help="how late a 'slow' fault answers")
    args = parser.parse_args(argv)

    config = _serving.settings_from(args, SimConfig(), (
        "api_key", "latency", "jitter", "max_parallel", "over_limit", "rps", "retry_delay",
        "get_delivery", "file_processing", "slow_seconds",
    ))
    _serving.serve_forever(create_app(config, _serving.faults_from(args.faults)), name="google",
                           host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
