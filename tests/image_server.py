"""A loopback HTTP server of images and non-images, for the checks made before paying (library and
service): an image, a 404, an HTML page, one that never answers, a redirect, a slow answer."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def png_bytes() -> bytes:
    """A real 1x1 PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


PNG = png_bytes()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)


class ImageServer:
    """Loopback server: /cat.png an image, /missing.png 404, /page.html an HTML page, /hang (with
    any query) never
    answers, /moved redirects to /cat.png, /as-text a JPEG sent as text/plain, /slow/N an image
    after ``slow`` seconds. Counts requests per path and the most answered at once."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.busy = 0
        self.peak = 0
        self.slow = 0.3
        self.stop = threading.Event()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.hits[self.path] += 1
                    server.busy += 1
                    server.peak = max(server.peak, server.busy)
                try:
                    self.answer()
                finally:
                    with server.lock:
                        server.busy -= 1

            def answer(self) -> None:
                path = self.path
                if path.split("?")[0] == "/hang":
                    server.stop.wait(30)
                    return
                if path == "/moved":
                    self.send(302, b"", "text/plain", Location="/cat.png")
                elif path == "/missing.png":
                    self.send(404, b"not found", "text/plain")
                elif path == "/page.html":
                    self.send(200, b"<!doctype html><html><body>hello</body></html>", "text/html")
                elif path == "/as-text":
                    self.send(200, JPEG, "text/plain")
                elif path.startswith("/slow/"):
                    time.sleep(server.slow)
                    self.send(200, PNG, "image/png")
                else:
                    self.send(200, PNG, "image/png")

            def send(self, status: int, body: bytes, kind: str, **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
