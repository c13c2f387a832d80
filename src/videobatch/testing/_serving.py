"""Serving a provider-compatible test app on loopback: in a thread, in a child process, or from a
command line. Every test server (Kling's, and the others built the same way) uses these, so each
keeps only its contract, its simulated account and its faults.

A child process prints one banner line, ``<name> test server: <url>``, before it serves; the parent
reads it and waits until ``<url><ready_path>`` answers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import uvicorn

__all__ = ["bind", "in_process", "in_thread", "serve_forever", "uvicorn_server"]


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
