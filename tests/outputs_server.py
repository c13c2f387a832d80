"""A loopback HTTP server for output tests: serves video files with faults, receives webhooks.

Files: ``server.add(name, data, fault=..., times=N)`` serves ``data`` at ``/files/<name>``, with
the fault applied to the first ``times`` requests (all when None), then served correctly:

- ``None``: 200 with Content-Length, ETag and Accept-Ranges; a Range request gets 206.
- ``"truncate"``: full Content-Length, half the body, then the connection is closed.
- ``"short_length"``: Content-Length 100 bytes short of the body (the client sees a cut file).
- ``"stall"``: half the body, then silence for ``stall`` seconds (for cancellation tests).
- ``"404"``, ``"410"``, ``"503"`` (with Retry-After: 0): that status, no body.
- ``"html"``: 200 with an HTML error page instead of the video.
- ``"no_range"``: ignores Range headers (always 200 with the whole body).

Webhooks: ``POST /hooks/<name>`` is recorded (headers and raw body); ``server.fail_hooks = N``
answers ``server.state.fail_status`` (500) to the first N attempts of each delivery id;
``server.state.hook_stall`` delays every answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Served:
    data: bytes
    fault: str | None = None
    times: int | None = None  # faulty responses left (None: always)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0


@dataclass
class State:
    files: dict[str, Served] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    hook_attempts: Counter[str] = field(default_factory=Counter)
    fail_hooks: int = 0
    fail_status: int = 500
    hook_stall: float = 0.0
    stall: float = 5.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _record(self, status: int, body: bytes = b"") -> None:
        with self.state.lock:
            self.state.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body, status))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        name = self.path.split("?")[0].removeprefix("/files/")
        with self.state.lock:
            served = self.state.files.get(name)
            fault = None
            if served is not None and served.fault and (served.times is None or served.times > 0):
                fault = served.fault
                if served.times is not None:
                    served.times -= 1
        if served is None:
            self._record(404)
            return self._send(404, b"no such file")
        data = served.data
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if fault in ("404", "410", "503"):
            self._record(int(fault))
            return self._send(int(fault), b"", {"Retry-After": "0"} if fault == "503" else {})
        if fault == "html":
            self._record(200)
            return self._send(200, b"<html><body>Access denied</body></html>", {"Content-Type": "text/html"})
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match.group(1)) if match and fault != "no_range" else 0
        if match and fault != "no_range" and self.headers.get("If-Range") not in (None, etag):
            start = 0
        body = data[start:]
        status = 206 if start else 200
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        length = len(body) - 100 if fault == "short_length" else len(body)
        self.send_header("Content-Length", str(length))
        if fault in ("truncate", "short_length", "stall"):
            self.send_header("Connection", "close")
        self.end_headers()
        if fault in ("truncate", "stall"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "stall":
                time.sleep(self.state.stall)
            self.close_connection = True
            return
        self.wfile.write(body)
        if fault == "short_length":
            self.close_connection = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        delivery = self.headers.get("X-Videobatch-Delivery", "")
        with self.state.lock:
            self.state.hook_attempts[delivery] += 1
            failing = self.state.hook_attempts[delivery] <= self.state.fail_hooks
        if self.state.hook_stall:
            time.sleep(self.state.hook_stall)
        status = self.state.fail_status if failing else 200
        self._record(status, body)
        self._send(status, b"nope" if failing else b"ok")


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up before its answer is written (a cancelled download, a webhook
        # sender that gave up) is part of what these tests do, not a server error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class OutputsServer:
    def __init__(self) -> None:
        self.state = State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, name: str, data: bytes, fault: str | None = None, times: int | None = None) -> str:
        with self.state.lock:
            self.state.files[name] = Served(data, fault, times)
        return f"{self.base}/files/{name}"

    def hook_url(self, name: str = "receiver") -> str:
        return f"{self.base}/hooks/{name}"

    @property
    def fail_hooks(self) -> int:
        return self.state.fail_hooks

    @fail_hooks.setter
    def fail_hooks(self, n: int) -> None:
        self.state.fail_hooks = n

    def seen(self, method: str | None = None, prefix: str = "") -> list[Seen]:
        with self.state.lock:
            return [s for s in self.state.seen
                    if (method is None or s.method == method) and s.path.startswith(prefix)]


@contextlib.contextmanager
def running() -> Iterator[OutputsServer]:
    server = OutputsServer()
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(5)
