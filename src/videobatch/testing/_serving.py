"""Serving a provider-compatible test app on loopback: in a thread, in a child process, or from a
command line; and the handle tests hold on a running one. Every test server (``<name>_server``)
uses these, so each keeps only its contract, its simulated account, its settings and its faults.

A server's app is ``create_app(config, faults)`` with ``config`` a dataclass of its settings (with
``update(dict)``); it answers ``/_test/counters``, ``/_test/tasks``, ``/_test/config`` and
``/_test/reset``.

A child process prints one banner line, ``<name> test server: <url>``, before it serves; the parent
reads it and waits until ``<url><ready_path>`` answers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import httpx
import uvicorn

__all__ = ["ServerHandle", "bind", "faults_from", "in_process", "in_thread", "running", "serve_forever",
           "server_parser", "settings_from", "uvicorn_server"]

Faults = str | dict[str, Any] | None  # a spec string (``kind[@scope]=value,...``) or rules as a mapping


class ServerHandle:
    """A running test server: its ``url``, the settings it started with, its counters, and
    run-time configuration."""

    def __init__(self, url: str, config: Any) -> None:
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
        """Change settings and fault rules, e.g. ``configure(max_parallel=2, lost="next:1")``;
        rules whose names are not identifiers go in ``faults={"lost@create": 1}``."""
        response = httpx.post(f"{self.url}/_test/config", json=changes, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.url}/_test/reset", timeout=10).raise_for_status()


@contextlib.contextmanager
def running(create_app: Callable[[Any, Faults], Any], config: Any, faults: Faults, *, name: str,
            process: bool, log_level: str) -> Iterator[str]:
    """Serve ``create_app(config, faults)`` on a free loopback port; yields its URL. ``process``:
    as ``python -m videobatch.testing.<name>_server`` in a child process (it outlives a killed
    client), else in a thread."""
    if not process:
        with in_thread(create_app(config, faults), name=name, log_level=log_level) as url:
            yield url
        return
    argv = ["-m", f"videobatch.testing.{name}_server", "--port", "0",
            "--config-json", json.dumps(dataclasses.asdict(config)), "--log-level", log_level]
    if faults:
        argv += ["--faults", faults if isinstance(faults, str) else json.dumps(faults)]
    with in_process(argv, name=name, ready_path="/_test/counters") as url:
        yield url


def server_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The command line every test server (``videobatch.testing.<name>_server``) shares; each adds
    its own settings."""
    parser = argparse.ArgumentParser(prog=f"python -m videobatch.testing.{name}_server",
                                     description=description)
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8000, help="0 picks a free port (printed on start)")
    add("--seed", type=int)
    add("--faults", help="kind[@scope]=rate|next:N,... (see videobatch.testing.faults)")
    add("--config-json", help="SimConfig fields as JSON (used by running_server)")
    add("--log-level", default="warning")
    return parser


def settings_from(args: argparse.Namespace, config: Any, names: Iterable[str]) -> Any:
    """``config`` updated from ``--config-json``, then from the flags ``names`` that were given."""
    if args.config_json:
        config.update(json.loads(args.config_json))
    for name in (*names, "seed"):
        value = getattr(args, name)
        if value is not None:
            config.update({name: value})
    return config


def faults_from(spec: str | None) -> Faults:
    """``--faults`` as given: a spec string, or JSON rules (as ``running`` passes them)."""
    return json.loads(spec) if spec and spec.lstrip().startswith("{") else spec


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket (port 0: a free one)."""
    # IPPROTO_TCP named explicitly: asyncio then turns Nagle's algorithm off (TCP_NODELAY) on the
    # accepted connections; without it every answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def uvicorn_server(app: Any, log_level: str) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, access_log=False,
                                         lifespan="off", timeout_keep_alive=30,
                                         timeout_graceful_shutdown=1))


@contextlib.contextmanager
def in_thread(app: Any, *, name: str, log_level: str = "critical") -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a daemon thread; yields its URL."""
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn_server(app, log_level)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"{name}-test-server")
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {name} test server did not start")
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def in_process(argv: Sequence[str], *, name: str, ready_path: str) -> Iterator[str]:
    """Run ``python <argv>`` (a server's ``main`` with ``--port 0``) as a child process that
    outlives a killed client; yields its URL once ``ready_path`` answers; stops it on exit."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(f"{name} test server: "):
            raise RuntimeError(f"the {name} test server did not start (said {line!r})")
        url = line.split()[-1]
        deadline = time.monotonic() + 20
        while True:  # the address is printed before uvicorn listens on it
            try:
                httpx.get(f"{url}{ready_path}", timeout=1.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {name} test server at {url} did not start") from None
                time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def serve_forever(app: Any, *, name: str, host: str, port: int, log_level: str) -> None:
    """Print the banner ``in_process`` reads, then serve until interrupted."""
    sock = bind(host, port)
    print(f"{name} test server: http://{host}:{sock.getsockname()[1]}", flush=True)
    uvicorn_server(app, log_level).run(sockets=[sock])
