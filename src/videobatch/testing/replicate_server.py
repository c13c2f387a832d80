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

import contextlib
from collections.abc import Iterator
from typing import Any

from . import _serving
from .replicate_app import ReplicateApp, create_app
from .replicate_sim import SimConfig

__all__ = ["ReplicateApp", "ServerHandle", "create_app", "main", "running_server"]

_DESCRIPTION = "A Replicate-compatible HTTP server for tests and benchmarks, with fault injection and counters."


class ServerHandle(_serving.ServerHandle):
    """A running server: its ``url`` (the API is under ``api_url``), counters, and configuration."""

    def __init__(self, url: str, config: SimConfig) -> None:
        super().__init__(url, config)
        self.api_url = f"{url}/v1"


@contextlib.contextmanager
def running_server(*, process: bool = False, faults: str | dict[str, Any] | None = None,
                   log_level: str = "critical", **settings: Any) -> Iterator[ServerHandle]:
    """Start a server on a free loopback port; stop it on exit.

    ``settings`` are ``SimConfig`` fields. ``process=True`` runs it as a separate Python process
    (for tests that kill the client process: the server outlives it); otherwise a thread here.
    """
    config = SimConfig()
    config.update(settings)
    with _serving.running(create_app, config, faults, name="replicate", process=process,
                          log_level=log_level) as url:
        yield ServerHandle(url, config)


def main(argv: list[str] | None = None) -> None:
    """``python -m videobatch.testing.replicate_server``: serve until interrupted."""
    parser = _serving.server_parser("replicate", _DESCRIPTION)
    add = parser.add_argument
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
    args = parser.parse_args(argv)

    config = _serving.settings_from(args, SimConfig(), (
        "latency", "jitter", "boot", "max_running", "rps", "token", "retention", "slow_seconds",
        "foreign_predictions", "page_size",
    ))
    if args.no_retry_after:
        config.retry_after = False
    if args.output_list:
        config.output_list = True
    _serving.serve_forever(create_app(config, _serving.faults_from(args.faults)), name="replicate",
                           host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
