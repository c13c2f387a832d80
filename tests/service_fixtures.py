"""Real parts for service-mode tests: a redis-server, the API on uvicorn, worker processes.

Nothing here is a fake: ``RedisServer`` runs Debian's ``redis-server`` on a free loopback port with
its own directory and AOF persistence (``appendfsync always``), and can be killed with SIGKILL and
started again on the same port and directory; ``running_api`` serves the real FastAPI app from a
thread; ``Worker`` runs ``python -m videobatch worker`` as a subprocess. Every process started here
is stopped by the context managers, also when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from videobatch.request import VideoRequest
from videobatch.service.addresses import AddressPolicy
from videobatch.service.api import create_app
from videobatch.service.queue import enqueue_fields
from videobatch.service.records import new_job_fields
from videobatch.testing import ServerHandle, SimConfig

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AK, SK = SimConfig.access_key, SimConfig.secret_key
# Fast polling for a server whose tasks take a fraction of a second.
FAST = {"first_poll": 0.1, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 200,
        "http_timeout": 1.0}

needs_redis = pytest.mark.skipif(not os.path.exists(REDIS_SERVER),
                                 reason="redis-server is not installed (.ci/run installs it)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class RedisServer:
    """One redis-server process with AOF persistence in ``directory``, on a loopback port
    (``persistent=False``: none at all, so a restart starts empty)."""

    def __init__(self, directory: Path, port: int | None = None, *, persistent: bool = True) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                *(["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                  else ["--appendonly", "no"]),
                "--save", "", "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
                "--enable-debug-command", "local"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        try:
            def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log()[-2000:]}")
                try:
                    return bool(client.ping())
                except redis.exceptions.RedisError:  # not listening yet, or loading the AOF
                    return False
            wait_until(ready, 20, "redis-server to accept connections", every=0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, exactly like a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def digest(self) -> str:
        """A digest of the whole dataset: equal digests, untouched data."""
        client = self.client()
        try:
            return str(client.execute_command("DEBUG", "DIGEST"))
        finally:
            client.close()

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""


def redis_statuses(server: RedisServer, ids: list[str]) -> list[str | None]:
    """The requests' statuses as Redis holds them (all None while Redis is away)."""
    r = server.client()
    try:
        pipe = r.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(f"vb:job:{rid}", "status")
        return list(pipe.execute())
    except redis.RedisError:  # Redis is restarting
        return [None] * len(ids)
    finally:
        r.close()


def queue_directly(r: redis.Redis, request_id: str, request: VideoRequest, **fields: Any) -> None:
    """A request written straight into Redis and its queue, as the API would (but unchecked)."""
    r.hset(f"vb:job:{request_id}", mapping=new_job_fields(request_id, request, **fields))
    r.xadd("vb:queue", enqueue_fields(request_id))


@contextlib.contextmanager
def running_redis(directory: Path, *, persistent: bool = True) -> Iterator[RedisServer]:
    server = RedisServer(directory, persistent=persistent)
    try:
        server.start()
        yield server
    finally:
        server.stop()


class ApiHandle:
    def __init__(self, url: str) -> None:
        self.url = url

    def client(self, token: str | None = TOKEN, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)


# Tests resolve no name through real DNS: ``localhost`` is loopback, ``*.test`` names resolve as
# listed here, every other name (``example.invalid``) does not resolve.
TEST_NAMES = {"localhost": ["127.0.0.1", "::1"], "public.test": ["93.184.215.14"],
              "internal.test": ["10.1.2.3"], "rebind.test": ["93.184.215.14", "127.0.0.1"]}
LOOPBACK_ALLOWED = "127.0.0.1/32"  # VIDEOBATCH_SERVICE_ALLOW for tests with loopback receivers


def hermetic_resolver(host: str) -> list[str]:
    if host.lower() in TEST_NAMES:
        return TEST_NAMES[host.lower()]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def hermetic_policy(*allow: str) -> AddressPolicy:
    return AddressPolicy(allow, resolver=hermetic_resolver)


@contextlib.contextmanager
def running_api(redis_url: str, *, tokens: list[str] | None = None,
                prefix: str = "vb:", provider: str = "local", allow: tuple[str, ...] = (),
                **options: Any) -> Iterator[ApiHandle]:
    """The service's FastAPI app (``tokens``: default [TOKEN]; ``provider``: the workers';
    ``allow``: the address allowlist; the test resolver; ``options`` as for ``create_app``) on
    uvicorn in a thread."""
    options.setdefault("addresses", hermetic_policy(*allow))
    options.setdefault("fetch_images", False)  # the test hosts (public.test) do not exist
    app = create_app(redis_url, tokens=tokens if tokens is not None else [TOKEN], prefix=prefix,
                     provider=provider, **options)
    with serving(app) as handle:
        yield handle


@contextlib.contextmanager
def serving(app: Any) -> Iterator[ApiHandle]:
    """Serve an ASGI app on uvicorn, in a thread, on a free loopback port."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without
    # it every answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", access_log=False,
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="service-api")
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 20, "the API to start")
        if not thread.is_alive():
            raise RuntimeError("the API did not start")
        yield ApiHandle(url)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


class Worker:
    """``python -m videobatch worker`` as a subprocess; its log goes to ``log_path``."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def worker_argv(redis_url: str, kling: ServerHandle, *, account_limit: int, lease: float = 2.0,
                concurrency: int | None = None, extra: list[str] | None = None) -> list[str]:
    argv = [sys.executable, "-m", "videobatch", "worker", "--redis-url", redis_url,
            "--provider", "kling", "-P", f"base_url={kling.url}", "--account-limit",
            str(account_limit), "--lease", str(lease), "-v"]
    for key, value in FAST.items():
        argv += ["-P", f"{key}={value}"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    return argv + (extra or [])


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLING_", "VIDEOBATCH_"))}
    env.update(KLING_ACCESS_KEY=AK, KLING_SECRET_KEY=SK, PYTHONUNBUFFERED="1", **extra)
    return env


@contextlib.contextmanager
def workers(argvs: list[list[str]], directory: Path, env: dict[str, str]) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        for n, argv in enumerate(argvs):
            started.append(Worker(argv, directory / f"worker-{n}.log", env))
        yield started
    finally:
        for worker in started:
            worker.stop()
