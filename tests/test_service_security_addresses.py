"""The service's address policy (``videobatch.service.addresses``): which addresses a client may
make the service call, and the transport workers deliver webhooks with.

Real parts: loopback HTTP servers (one answers with a redirect, one counts what reaches it), the
real httpx/httpcore stack. No name is resolved through real DNS: ``localhost`` and ``*.test`` names
come from an injected resolver (``service_fixtures.hermetic_resolver``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from service_fixtures import hermetic_policy, hermetic_resolver
from videobatch._jobs import Job, State
from videobatch.delivery.webhooks import WebhookNotifier
from videobatch.errors import ConfigError
from videobatch.request import VideoRequest
from videobatch.service.addresses import AddressPolicy, guarded_transport
from videobatch.service.worker import _ServiceWebhooks

REFUSED = ["127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
           "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
           "fd00:ec2::254", "fc00::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
           "2002:7f00:1::", "64:ff9b::7f00:1", "ff02::1"]
GLOBAL = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused_by_default(address):
    reason = AddressPolicy().address_refusal(address)
    assert reason and address in reason and "VIDEOBATCH_SERVICE_ALLOW" in reason


@pytest.mark.parametrize("address", GLOBAL)
def test_global_addresses_pass(address):
    assert AddressPolicy().address_refusal(address) is None


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379/", "http://localhost/hook", "http://LOCALHOST./hook",
    "http://[::1]:8000/", "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",
    "https://internal.test/hook", "https://rebind.test/hook", "http://0x7f000001/",
    "http://user:pw@127.0.0.1/",
])
def test_urls_naming_or_resolving_to_internal_addresses_are_refused(url):
    policy = hermetic_policy()
    assert asyncio.run(policy.refusal(url)), url


def test_a_name_resolving_to_loopback_is_refused_every_address_counts():
    policy = hermetic_policy()
    assert "127.0.0.1" in (asyncio.run(policy.refusal("http://localhost:9/x")) or "")
    # one public and one loopback address: refused (the connection could go to either)
    assert "127.0.0.1" in (asyncio.run(policy.refusal("https://rebind.test/x")) or "")
    assert asyncio.run(policy.refusal("https://public.test/x")) is None
    # a name that does not resolve here is left to the worker (which cannot connect to it)
    assert asyncio.run(policy.refusal("https://example.invalid/x")) is None


def test_the_allowlist_takes_cidrs_and_host_names():
    policy = AddressPolicy(["10.1.0.0/16", " hooks.internal ", "::1", ""], resolver=hermetic_resolver)
    assert policy.address_refusal("10.1.2.3") is None
    assert policy.address_refusal("10.2.0.1")
    assert policy.address_refusal("::1") is None
    assert asyncio.run(policy.refusal("http://hooks.internal/x")) is None  # never resolved
    assert asyncio.run(policy.refusal("http://HOOKS.internal./x")) is None
    assert asyncio.run(policy.refusal("http://localhost/x"))  # 127.0.0.1 is not in the list
    with pytest.raises(ConfigError, match="VIDEOBATCH_SERVICE_ALLOW"):
        AddressPolicy(["10.0.0.0/33"])


def test_the_allowlist_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("VIDEOBATCH_SERVICE_ALLOW", "127.0.0.0/8,receiver.internal")
    policy = AddressPolicy.from_env(resolver=hermetic_resolver)
    assert asyncio.run(policy.refusal("http://127.0.0.1/x")) is None
    assert asyncio.run(policy.refusal("http://receiver.internal/x")) is None
    assert asyncio.run(policy.refusal("http://[::1]/x"))
    assert asyncio.run(policy.refusal("http://localhost/x"))  # every address counts: ::1 too
    assert "receiver.internal" in repr(policy)


# ------------------------------------------------------------------------ loopback servers
class _Counting(BaseHTTPRequestHandler):
    hits: list[str]
    location: str | None

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.hits.append(self.headers.get("Host", ""))
        if self.location:
            self.send_response(307)
            self.send_header("Location", self.location)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Server:
    def __init__(self, location: str | None = None) -> None:
        self.hits: list[str] = []
        handler = type("H", (_Counting,), {"hits": self.hits, "location": location})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def target() -> Iterator[Server]:
    with Server() as server:
        yield server


def _post(policy: AddressPolicy, url: str, *, follow: bool = False) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=guarded_transport(policy), follow_redirects=follow,
                                     timeout=5) as client:
            return await client.post(url, content=b"{}")
    return asyncio.run(go())


def test_the_guarded_transport_refuses_loopback_unless_allowed(target):
    with pytest.raises(httpx.ConnectError, match="address policy"):
        _post(hermetic_policy(), f"http://localhost:{target.port}/hook")
    with pytest.raises(httpx.ConnectError, match="address policy"):
        _post(hermetic_policy(), f"http://127.0.0.1:{target.port}/hook")
    assert target.hits == []
    allowed = hermetic_policy("127.0.0.1/32", "::1")
    assert _post(allowed, f"http://localhost:{target.port}/hook").status_code == 200
    assert target.hits == [f"localhost:{target.port}"]  # the URL's host is kept (Host, TLS name)


def test_the_transport_connects_to_the_address_it_checked_not_a_second_lookup(target):
    """DNS rebinding: a name that answers a public address to the check, then loopback."""
    answers = iter([["93.184.215.14"], ["127.0.0.1"], ["127.0.0.1"]])
    policy = AddressPolicy(resolver=lambda host: next(answers))

    async def deliver() -> None:
        assert await policy.refusal(f"http://flip.test:{target.port}/") is None  # the early check
        async with httpx.AsyncClient(transport=guarded_transport(policy), timeout=5) as client:
            with pytest.raises(httpx.ConnectError, match=r"127\.0\.0\.1"):
                await client.post(f"http://flip.test:{target.port}/", content=b"{}")

    asyncio.run(deliver())
    assert target.hits == []


def test_a_redirect_to_loopback_is_not_followed(target):
    # The receiver is allowed by host name; it redirects to a loopback address that is not.
    policy = AddressPolicy(["hooks.test"], resolver=lambda host: ["127.0.0.1"])
    loopback = f"http://127.0.0.1:{target.port}/internal"
    with Server(location=loopback) as redirecting:
        url = f"http://hooks.test:{redirecting.port}/hook"
        webhooks = _ServiceWebhooks(None, None, None, policy, None)  # type: ignore[arg-type]

        async def with_service_client() -> httpx.Response:
            async with webhooks.new_client() as client:
                return await client.post(url, content=b"{}")

        assert asyncio.run(with_service_client()).status_code == 307  # the workers': no redirects
        with pytest.raises(httpx.ConnectError, match="address policy"):
            _post(policy, url, follow=True)  # and were one followed, the hop is checked too
        assert len(redirecting.hits) == 2
    assert target.hits == []


def test_a_refused_webhook_fails_at_once_without_attempts(target):
    """``url_check`` on the notifier: a refused URL is never called, nor retried."""
    recorded: list[dict[str, Any]] = []

    class Context:
        run_id = "run-1"

        def annotate(self, row: Any, **extras: Any) -> Any:
            recorded.append(extras)
            return row

    policy = hermetic_policy()
    notifier = WebhookNotifier(f"http://localhost:{target.port}/hook", url_check=policy.refusal,
                               max_attempts=5, backoff_base=0.01)
    job = Job(key="r1", index=0, request=VideoRequest(prompt="x"))
    job.state = State.COMPLETED

    async def run() -> None:
        notifier.bind(Context())
        work = notifier.work(job.snapshot())
        assert work is not None
        await work

    asyncio.run(run())
    assert target.hits == []
    assert recorded and recorded[-1]["webhook_status"] == "failed"
    assert recorded[-1]["webhook_attempts"] == 0
    assert "127.0.0.1" in recorded[-1]["webhook_error"]
