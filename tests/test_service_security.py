"""The service against a hostile client (issue 13): no file read and no internal call on a
client's say-so, bounded bodies, short 422s, no 500 for odd text, no false 503 under load.

Real parts: a redis-server, the API on uvicorn (in a thread, or as ``python -m videobatch serve``
when its memory or its log is measured), worker processes driving the project's Kling-compatible
server. Refusals are checked for side effects with Redis's dataset digest. "Nothing read" is
proved with named pipes: opening one for reading blocks until a writer comes, so a server that
tried to read the image would hang instead of answering.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from image_server import ImageServer
from outputs_server import running as running_receiver
from service_fixtures import (
    LOOPBACK_ALLOWED,
    TOKEN,
    RedisServer,
    free_port,
    hermetic_policy,
    needs_redis,
    queue_directly,
    running_api,
    running_redis,
    wait_until,
    worker_argv,
    worker_env,
    workers,
)
from videobatch._jobs import Job
from videobatch.request import VideoRequest
from videobatch.service.images import ImageGate, ImageRules
from videobatch.service.limits import ServiceLimits
from videobatch.testing import running_server

pytestmark = needs_redis

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PNG_B64 = base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A named pipe: reading it blocks forever (nobody writes)."""
    path = tmp_path_factory.mktemp("files") / "secret.png"
    os.mkfifo(path)
    return str(path)


def refused_unchanged(client: httpx.Client, server: RedisServer, path: str,
                      body: dict[str, Any]) -> httpx.Response:
    before = server.digest()
    answer = client.post(path, json=body)
    assert answer.status_code == 422, answer.text
    assert server.digest() == before
    return answer


# ------------------------------------------------------------------------ 1. no file reads
LOCAL = ["/proc/self/environ", "/etc/passwd", "file:///etc/passwd", "FILE:///etc/hostname",
         "../../../../etc/passwd", "~/.ssh/id_rsa", "etc/passwd", "/nonexistent/missing.png",
         "C:\\Windows\\win.ini"]


@pytest.mark.parametrize("field", ["image", "end_image", "image_tail"])
@pytest.mark.parametrize("value", LOCAL)
def test_local_paths_are_refused_alike_whether_the_file_exists_or_not(client, redis_server, field, value):
    answer = refused_unchanged(client, redis_server, "/api/v1/videos", {"prompt": "x", field: value})
    detail = answer.json()["detail"]
    assert [p["loc"][-1] for p in detail] == [field]
    assert "local file paths and file:// URLs are not accepted over HTTP" in detail[0]["msg"]
    existing = client.post("/api/v1/videos", json={"prompt": "x", field: "/etc/passwd"})
    assert answer.json() == existing.json()  # nothing to tell an existing file from a missing one


def test_nothing_is_read_not_even_opened(client, redis_server, pipe):
    started = time.monotonic()
    refused_unchanged(client, redis_server, "/api/v1/videos", {"prompt": "x", "image": pipe})
    refused_unchanged(client, redis_server, "/api/v1/batches",
                      {"rows": [{"prompt": "x", "image": pipe}, {"prompt": "y", "end_image": pipe}]})
    refused_unchanged(client, redis_server, "/api/v1/batches",
                      {"rows": [{"prompt": "x"}], "defaults": {"image": pipe}})
    csv = f"prompt,image\nx,{pipe}\n".encode()
    before = redis_server.digest()
    answer = client.post("/api/v1/batches/csv", files={"file": ("p.csv", csv, "text/csv")})
    assert answer.status_code == 422 and answer.json()["detail"][0]["column"] == "image"
    assert redis_server.digest() == before
    assert time.monotonic() - started < 5


def test_image_bytes_are_stored_as_a_data_url(client):
    for value in (PNG_B64, f"data:image/png;base64,{PNG_B64}", f"data:;base64,{PNG_B64}"):
        created = client.post("/api/v1/videos", json={"prompt": "x", "image": value})
        assert created.status_code == 202, created.text
        seen = client.get(f"/api/v1/videos/{created.json()['request_id']}").json()
        assert seen["request"]["image"] == f"data:image/png;base64,{PNG_B64}"
    batch = client.post("/api/v1/batches", json={"rows": [{"prompt": "a", "image_tail": PNG_B64}]})
    assert batch.status_code == 202, batch.text
    seen = client.get(f"/api/v1/videos/{batch.json()['request_ids'][0]}").json()
    assert seen["request"]["end_image"] == f"data:image/png;base64,{PNG_B64}"
    not_image = base64.b64encode(b"#!/bin/sh\nrm -rf /\n" * 4).decode()
    for bad in (not_image, "data:text/plain,hello", "data:image/png;base64,***"):
        answer = client.post("/api/v1/videos", json={"prompt": "x", "image": bad})
        assert answer.status_code == 422, bad


def test_image_urls_must_not_name_internal_addresses(client, redis_server):
    for url in ("http://127.0.0.1:6379/x.png", "http://localhost/x.png", "https://internal.test/x.png",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]/x.png"):
        answer = refused_unchanged(client, redis_server, "/api/v1/videos", {"prompt": "x", "image": url})
        assert "image URL refused" in answer.text, url
    ok = client.post("/api/v1/videos", json={"prompt": "x", "image": "HTTPS://public.test/a.png"})
    assert ok.status_code == 202, ok.text
    seen = client.get(f"/api/v1/videos/{ok.json()['request_id']}").json()
    assert seen["request"]["image"] == "https://public.test/a.png"


def test_files_of_the_operators_image_folder_may_be_named(redis_server, tmp_path, pipe):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "cat.png").write_bytes(PNG)
    (folder / "sub" / "dog.png").write_bytes(PNG)
    (folder / "escape.png").symlink_to("/etc/passwd")
    (folder / "pipe.png").symlink_to(pipe)  # inside by name only: its real path is outside
    images = ImageRules(folder, hermetic_policy())
    with running_api(redis_server.url, images=images) as handle, handle.client() as c:
        for name, stored in (("cat.png", folder / "cat.png"), ("sub/dog.png", folder / "sub" / "dog.png"),
                             (str(folder / "cat.png"), folder / "cat.png")):
            created = c.post("/api/v1/videos", json={"prompt": "x", "image": name})
            assert created.status_code == 202, (name, created.text)
            seen = c.get(f"/api/v1/videos/{created.json()['request_id']}").json()
            assert seen["request"]["image"] == os.path.realpath(stored)
        outside = [c.post("/api/v1/videos", json={"prompt": "x", "image": v}).json()
                   for v in ("../../../../etc/passwd", "/etc/passwd", "escape.png", "pipe.png",
                             "/nonexistent.png", "file://" + str(folder / "cat.png"))]
        assert all(o == outside[0] for o in outside), outside
        assert "image folder" in outside[0]["detail"][0]["msg"]
        missing = c.post("/api/v1/videos", json={"prompt": "x", "image": "nope.png"})
        assert missing.status_code == 422 and "no such file" in missing.text


def test_the_worker_refuses_a_local_path_that_reached_redis_another_way(tmp_path, pipe):
    """Rows written straight into Redis (not through the API): the worker reads no file, calls
    no loopback webhook; the rows fail with a reason, nothing is paid, the worker lives on."""
    with running_redis(tmp_path / "redis") as redis_server, \
            running_server(latency=0.05, max_parallel=4) as kling, running_receiver() as receiver:
        r = redis_server.client()
        rows = {"environ": VideoRequest(prompt="x", image="/proc/self/environ"),
                "pipe": VideoRequest(prompt="x", end_image=pipe),
                "relative": VideoRequest(prompt="x", image="secret.png"),
                "loopback-url": VideoRequest(prompt="x", image="http://127.0.0.1:6379/a.png"),
                "fine": VideoRequest(prompt="a fine one")}
        for rid, request in rows.items():
            queue_directly(r, rid, request, webhook_url=receiver.hook_url("own"))
        with workers([worker_argv(redis_server.url, kling, account_limit=4)], tmp_path,
                     worker_env()) as (worker,):
            wait_until(lambda: all(r.hget(f"vb:job:{rid}", "status") in ("completed", "failed")
                                   for rid in rows), 30, "the rows to end", every=0.1)
            wait_until(lambda: all(r.hget(f"vb:job:{rid}", "x:webhook_status") for rid in rows), 30,
                       "the webhooks to be given up")
            assert worker.proc.poll() is None, worker.log()[-3000:]
        counters = kling.counters()
        hooks = receiver.seen("POST", "/hooks/")
        status = {rid: r.hget(f"vb:job:{rid}", "status") for rid in rows}
        errors = {rid: r.hget(f"vb:job:{rid}", "error") or "" for rid in rows}
        hook_error = json.loads(r.hget("vb:job:fine", "x:webhook_error") or '""')
        r.close()
    assert status == {"environ": "failed", "pipe": "failed", "relative": "failed",
                      "loopback-url": "failed", "fine": "completed"}
    for rid in ("environ", "pipe", "relative"):
        assert "image folder" in errors[rid] and "reads no other file" in errors[rid], errors[rid]
    assert "127.0.0.1" in errors["loopback-url"]
    assert counters["accepted"] == 1  # only the fine row reached the provider
    assert hooks == []  # the receiver is on loopback, which no client may name
    assert "refused" in hook_error


# ------------------------------------------------------------------------ 2. no internal calls
@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/", "http://localhost:8080/hook",
                                 "http://[::1]/", "http://10.0.0.5/hook", "http://192.168.0.1/",
                                 "http://169.254.169.254/latest/", "http://[fd00:ec2::254]/",
                                 "https://internal.test/hook", "http://0x7f000001/"])
def test_webhooks_to_internal_addresses_are_refused(client, redis_server, url):
    answer = refused_unchanged(client, redis_server, "/api/v1/videos",
                               {"prompt": "x", "webhook_url": url})
    assert "webhook URL refused" in answer.text
    refused_unchanged(client, redis_server, "/api/v1/batches",
                      {"rows": [{"prompt": "x"}], "webhook_url": url})
    refused_unchanged(client, redis_server, "/api/v1/batches",
                      {"rows": [{"prompt": "x", "webhook_url": url}]})
    before = redis_server.digest()
    csv = client.post("/api/v1/batches/csv", files={"file": ("p.csv", b"prompt\nx\n", "text/csv")},
                      data={"webhook_url": url})
    assert csv.status_code == 422 and redis_server.digest() == before


def test_an_unparsable_url_is_422_not_500(client, redis_server):
    for cell, reason in (("webhook_url", "must start with http"), ("image", "names no host")):
        answer = refused_unchanged(client, redis_server, "/api/v1/videos",
                                   {"prompt": "x", cell: "http://[bad/x"})
        assert reason in answer.text
    for cell in ("webhook_url", "image"):
        answer = refused_unchanged(client, redis_server, "/api/v1/batches",
                                   {"rows": [{"prompt": "x", cell: "http://[bad/x"}]})
        assert answer.json()["detail"][0]["column"] == cell


def test_an_allowlisted_receiver_is_accepted(redis_server):
    with running_api(redis_server.url, allow=("127.0.0.1/32",)) as handle, handle.client() as c:
        assert c.post("/api/v1/videos", json={"prompt": "x", "webhook_url": "http://127.0.0.1:9/h"}
                      ).status_code == 202
        assert c.post("/api/v1/videos", json={"prompt": "x", "webhook_url": "http://10.0.0.5/h"}
                      ).status_code == 422


# ------------------------------------------------------------------------ 4. bounded bodies
def _raw_post(url: str, headers: list[str], body_bytes: int, *, chunked: bool) -> tuple[int, float]:
    """POST ``body_bytes`` zero bytes over a raw socket while reading the answer; (status, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {body_bytes}"
    head = "\r\n".join(["POST /api/v1/videos HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {TOKEN}",
                        "Content-Type: application/json", framing, *headers, "", ""])
    started = time.monotonic()
    sock.sendall(head.encode())

    def send() -> None:
        chunk = b"0" * 65536
        framed = (b"%x\r\n" % len(chunk)) + chunk + b"\r\n" if chunked else chunk
        with contextlib.suppress(OSError):  # the server answered and stopped listening
            for _ in range(body_bytes // len(chunk)):
                sock.sendall(framed)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    while b"\r\n" not in answer:
        data = sock.recv(4096)
        if not data:
            break
        answer += data
    elapsed = time.monotonic() - started
    sock.close()
    return int(answer.split(b" ")[1]), elapsed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_body_is_refused_within_a_second(api, redis_server, chunked):
    before = redis_server.digest()
    status, elapsed = _raw_post(api.url, [], 50 * 1024 * 1024, chunked=chunked)
    assert status == 413 and elapsed < 1.0, (status, elapsed)
    assert redis_server.digest() == before


def test_a_chunked_csv_upload_over_the_limit_is_413_unread(redis_server):
    boundary = "b0undary"

    def upload() -> Iterator[bytes]:
        yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.csv"\r\n'
               "Content-Type: text/csv\r\n\r\nprompt\n").encode()
        for _ in range(1000):  # 10 MB, no Content-Length: counted as it arrives
            yield b"a red fox\n" * 1000
        yield f"\r\n--{boundary}--\r\n".encode()

    before = redis_server.digest()
    with running_api(redis_server.url, limits=ServiceLimits(max_body_bytes=100_000)) as handle, \
            handle.client() as c:
        answer = c.post("/api/v1/batches/csv", content=upload(),
                        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413 and "over 100000 bytes" in answer.text
    assert redis_server.digest() == before


@pytest.mark.parametrize("body", [
    b'{"rows": [' + b",".join([b"{}"] * 3_400_000) + b"]}",  # 10 MB: 300 MB and 8 s to parse
    b'{"prompt": "x", "metadata": {"n": [' + b",".join([b"1000"] * 1_000_000) + b"]}}",
], ids=["empty rows", "metadata list"])
def test_a_json_body_of_millions_of_tiny_values_is_refused_before_it_is_parsed(client, redis_server, body):
    before = redis_server.digest()
    path = "/api/v1/batches" if body.startswith(b'{"rows"') else "/api/v1/videos"
    started = time.monotonic()
    answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "more than 500000 values" in answer.text, answer.text
    assert time.monotonic() - started < 1.5
    assert redis_server.digest() == before


def test_limits_on_metadata_rows_and_prompts(client, redis_server):
    marker = "SECRET-INPUT-MARKER"
    refusals = [
        ("/api/v1/videos", {"prompt": "x", "metadata": {"blob": marker * 1000}}, "metadata is"),
        ("/api/v1/videos", {"prompt": marker + "x" * 2500}, "at most 2500"),
        ("/api/v1/videos", {"prompt": "x", "negative_prompt": "n" * 2501}, "at most 2500"),
        ("/api/v1/batches", {"rows": [{"prompt": "x"}] * 10_001}, "at most 10000"),
        ("/api/v1/batches", {"rows": [{"prompt": "x", "blob": marker * 1000}]}, "metadata is"),
        ("/api/v1/batches", {"rows": [{"prompt": marker * 200}]}, "at most 2500"),
        ("/api/v1/videos", {"prompt": "x", "duration": marker * 1000}, "integer"),
        ("/api/v1/videos", {"prompt": "x", "model": marker * 1000}, "has no model"),
        ("/api/v1/videos", {"prompt": "x", marker * 100: 1}, "Extra inputs"),
    ]
    for path, body, reason in refusals:
        answer = refused_unchanged(client, redis_server, path, body)
        assert reason in answer.text, (reason, answer.text[:500])
        assert marker * 20 not in answer.text and len(answer.content) < 2000, answer.text[:500]
    assert client.post("/api/v1/videos", json={"prompt": "x" * 2500,
                                               "metadata": {"a": "b" * 16_000}}).status_code == 202


def test_a_huge_malformed_body_is_not_echoed(client):
    body = b'{"prompt": "x", "metadata": {"k": "' + b"y" * 5_000_000 + b'"'  # cut short
    answer = client.post("/api/v1/videos", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and len(answer.content) < 2000


def test_limits_are_settings(redis_server, monkeypatch):
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_ROWS", "3")
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_PROMPT_CHARS", "10")
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_METADATA_BYTES", "100")
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_BODY_BYTES", "1_000")
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_IMAGE_FETCHES", "2")
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_IMAGE_CHECK_SECONDS", "5")
    assert ServiceLimits.from_env() == ServiceLimits(1000, 100, 3, 10, 2, 5)
    with running_api(redis_server.url) as handle, handle.client() as c:
        assert c.post("/api/v1/batches", json={"rows": [{"prompt": "x"}] * 4}).status_code == 422
        assert c.post("/api/v1/batches", json={"rows": [{"prompt": "x"}] * 3}).status_code == 202
        assert c.post("/api/v1/videos", json={"prompt": "x" * 11}).status_code == 422
        assert c.post("/api/v1/videos", json={"prompt": "x", "metadata": {"a": "b" * 100}}).status_code == 422
        assert c.post("/api/v1/videos", json={"prompt": "x" * 1000}).status_code == 413
        csv = b"prompt\n" + b"x\n" * 4
        assert c.post("/api/v1/batches/csv", files={"file": ("p.csv", csv, "text/csv")}).status_code == 422
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_ROWS", "many")
    with pytest.raises(Exception, match="VIDEOBATCH_SERVICE_MAX_ROWS"):
        ServiceLimits.from_env()
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_ROWS", "3")
    monkeypatch.setenv("VIDEOBATCH_SERVICE_MAX_IMAGE_FETCHES", "0")  # would let no image be checked
    with pytest.raises(Exception, match="VIDEOBATCH_SERVICE_MAX_IMAGE_FETCHES"):
        ServiceLimits.from_env()


def _rss(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def served(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """``python -m videobatch serve`` as its own process (its memory and its log are its own)."""
    port = free_port()
    env = {**os.environ, "VIDEOBATCH_API_TOKENS": TOKEN, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "videobatch", "serve", "--port", str(port),
                                 "--redis-url", redis_server.url], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, 30, "python -m videobatch serve", every=0.1)
        yield base, proc, log
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_million_row_csv_is_refused_fast_in_little_memory(served, redis_server):
    base, proc, _ = served
    rows = b"prompt\n" + b"a red fox\n" * 1_000_000  # 10 MB: under the body limit, over the rows'
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as c:
        c.post("/api/v1/batches/csv", files={"file": ("warm.csv", b"prompt\nwarm\n", "text/csv")})
        before, digest = _rss(proc.pid, "VmRSS"), redis_server.digest()
        started = time.monotonic()
        answer = c.post("/api/v1/batches/csv", files={"file": ("big.csv", rows, "text/csv")})
        elapsed = time.monotonic() - started
    grown = _rss(proc.pid, "VmHWM") - before  # the peak since start, against the level before
    assert answer.status_code == 422 and "at most 10000" in answer.text, answer.text[:300]
    assert elapsed < 5, elapsed
    assert grown < 100 * 1024 * 1024, grown / 1e6
    assert redis_server.digest() == digest


# ------------------------------------------------------------------------ 7. smaller ones
def test_a_token_in_the_query_string_never_reaches_the_access_log(served):
    base, _, log = served
    answer = httpx.get(f"{base}/api/v1/videos/{'0' * 32}?token=QUERY-SECRET-1&format=x",
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert answer.status_code == 404
    assert httpx.get(f"{base}/api/v1/videos/1?access_token=QUERY-SECRET-2", timeout=5).status_code == 401
    wait_until(lambda: log.read_text().count("/api/v1/videos/") >= 2, 5, "the access log lines")
    text = log.read_text()
    assert "QUERY-SECRET" not in text and TOKEN not in text
    assert "?token=***&format=***" in text and "?access_token=***" in text


@pytest.mark.parametrize("raw", [
    b'{"prompt": "a \\ud800 b"}', b'{"prompt": "x", "metadata": {"\\udfff": 1}}',
    b'{"prompt": "x", "metadata": {"k": ["\\ud83d"]}}', b'{"prompt": "x", "webhook_url": "https://a.test/\\ud800"}',
])
def test_a_lone_surrogate_is_422_not_500(client, redis_server, raw):
    before = redis_server.digest()
    answer = client.post("/api/v1/videos", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "not valid Unicode" in answer.text
    rows = client.post("/api/v1/batches", content=b'{"rows": [' + raw + b"]}",
                       headers={"Content-Type": "application/json"})
    assert rows.status_code == 422, rows.text
    assert redis_server.digest() == before


# ------------------------------------------------------------------------ 5. no false 503
def test_many_concurrent_clients_wait_for_a_redis_connection_instead_of_503(redis_server):
    with running_api(redis_server.url, redis_connections=2) as handle:
        codes: list[int] = []

        def post() -> None:
            with handle.client() as c:
                for _ in range(5):
                    codes.append(c.post("/api/v1/videos", json={"prompt": "load"}).status_code)

        threads = [threading.Thread(target=post) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert codes == [202] * 150


def test_the_workers_rule_for_image_cells(tmp_path, pipe):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.png").write_bytes(PNG)
    (folder / "escape.png").symlink_to(pipe)
    rules = ImageRules(folder, hermetic_policy())
    inside = os.path.realpath(folder / "cat.png")
    for fine in (inside, f"data:image/png;base64,{PNG_B64}", "https://public.test/a.png",
                 "https://example.invalid/a.png"):
        assert rules.worker_refusal("image", fine) is None, fine
    for refused in ("cat.png", str(folder / "escape.png"), str(folder / ".." / "x.png"), pipe,
                    PNG_B64, "DATA:image/png;base64,AAAA", "HTTP://public.test/a.png",
                    "http://localhost/a.png", "http://[not-an-address]/a.png", "file://" + inside):
        assert rules.worker_refusal("image", refused), refused
    assert ImageRules(None, hermetic_policy()).worker_refusal("image", inside)


def test_the_image_gate_neither_submits_nor_matches_a_refused_request(tmp_path, pipe):
    # The worker's run gate (videobatch._gate): the runner asks it before every paid submit, and
    # before a request is read to match a listed task. A read of the pipe would hang.
    gate = ImageGate(ImageRules(None, hermetic_policy()))
    bad, fine = VideoRequest(prompt="x", image=pipe), VideoRequest(prompt="x")
    row = Job(key="req-1", index=0, request=bad)

    async def go() -> tuple[str | None, str | None, bool, bool]:
        return (await gate.refusal(row, bad), await gate.refusal(row, fine),
                await gate.readable(bad), await gate.readable(fine))

    refused, passed, bad_readable, fine_readable = asyncio.run(asyncio.wait_for(go(), 10))
    assert refused and "reads no other file" in refused
    assert passed is None and not bad_readable and fine_readable


def test_image_urls_are_fetched_through_the_address_policy_before_queueing(redis_server):
    # As the library checks images before paying, the API fetches each image URL a client sends
    # (first bytes only), through the address policy: here loopback is allowed for the test.
    with ImageServer() as images, running_api(redis_server.url, allow=(LOOPBACK_ALLOWED,),
                                              fetch_images=True) as api, api.client() as client:
        ok = client.post("/api/v1/videos", json={"prompt": "x", "image": f"{images.url}/cat.png"})
        assert ok.status_code == 202, ok.text
        for bad in ("/missing.png", "/page.html"):
            answer = refused_unchanged(client, redis_server, "/api/v1/videos",
                                       {"prompt": "x", "image": images.url + bad})
            assert "image" in answer.text and images.url not in answer.text, answer.text  # no URL echoed
        rows = [{"prompt": "a", "image": f"{images.url}/cat.png"},
                {"prompt": "b", "image": f"{images.url}/page.html"}]
        answer = refused_unchanged(client, redis_server, "/api/v1/batches", {"rows": rows})
        assert "row 2" in answer.text or '"row":2' in answer.text.replace(" ", ""), answer.text
        assert images.hits["/cat.png"] >= 2 and images.hits["/page.html"] >= 2
    # Not allowed by the policy: refused without any fetch.
    with ImageServer() as images, running_api(redis_server.url, fetch_images=True) as api, \
            api.client() as client:
        refused_unchanged(client, redis_server, "/api/v1/videos",
                          {"prompt": "x", "image": f"{images.url}/cat.png"})
        assert not images.hits


def test_a_tenants_slow_image_urls_hold_neither_the_api_nor_its_fetches(redis_server):
    # A client sends image URLs that never answer: its request is answered 422 once its image
    # checks have had their time (2 s here), and never more of them are fetched at once than the
    # tenant's gate allows (2 here), however many requests it sends together.
    limits = ServiceLimits(max_image_fetches=2, max_image_check_seconds=2)
    with ImageServer() as images, running_api(redis_server.url, allow=(LOOPBACK_ALLOWED,),
                                              fetch_images=True, limits=limits) as api:
        rows = [{"prompt": f"p{i}", "image": f"{images.url}/hang?{i}"} for i in range(6)]

        def post(n: int) -> httpx.Response:
            with api.client() as client:
                return client.post("/api/v1/batches", json={"rows": rows[n::2]})

        def fetched() -> int:
            return sum(n for path, n in images.hits.items() if path.startswith("/hang"))

        before = redis_server.digest()
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = pool.map(post, range(2))
            wait_until(lambda: fetched() >= 2, 5, "the first fetches")
            time.sleep(0.5)  # both requests are being checked; the gate holds the rest back
            assert fetched() == 2
            answers = list(answers)
        elapsed = time.monotonic() - started
        assert [a.status_code for a in answers] == [422, 422], answers[0].text
        assert "not checked" in answers[0].text and "not checked" in answers[1].text
        assert elapsed < 10  # two seconds of checks each, not 10 s per URL
        assert redis_server.digest() == before  # nothing stored, nothing queued
