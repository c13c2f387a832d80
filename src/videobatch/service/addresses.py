"""Which network addresses a client may make the service call: the one address policy.

A client names URLs the service (or its provider) will call: ``webhook_url`` and image URLs. By
default none of them may reach a non-global address: loopback (127.0.0.0/8, ::1), private
(RFC 1918, unique-local fc00::/7), link-local (169.254.0.0/16, fe80::/10, so the cloud metadata
services 169.254.169.254 and fd00:ec2::254 too), shared (100.64.0.0/10), unspecified, multicast,
reserved and documentation ranges (``ipaddress``'s ``is_global``), IPv4 written inside IPv6
(``::ffff:a.b.c.d``, 6to4, NAT64) judged as that IPv4. A host name is resolved and *every* address it
resolves to must pass. An operator allowlist (``VIDEOBATCH_SERVICE_ALLOW``: CIDRs and exact host
names, comma-separated) lets e.g. an internal webhook receiver through.

``AddressPolicy.refusal(url)`` says why a URL is refused (None: fine); a name that does not resolve
is not refused here (the worker checks again when it connects). ``guarded_transport`` is the httpx
transport workers deliver webhooks with: it resolves each host itself, checks every address, and
connects to the checked address, so a name cannot point elsewhere between check and connect (DNS
rebinding); every connection (a redirect too, were one followed) passes through it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from ..errors import ConfigError

__all__ = ["ALLOW_ENV", "AddressPolicy", "Resolver", "guarded_transport", "system_resolver"]

ALLOW_ENV = "VIDEOBATCH_SERVICE_ALLOW"
Resolver = Callable[[str], Sequence[str]]
"""A host name -> the IP addresses it resolves to (raises ``OSError`` when it does not)."""

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_6TO4 = ipaddress.ip_network("2002::/16")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HINT = f"; an operator may allow it with {ALLOW_ENV}"


def system_resolver(host: str) -> list[str]:
    """The addresses ``host`` resolves to on this machine (``getaddrinfo``)."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in infos))


def _plain(ip: IP) -> IP:
    """IPv4 carried inside an IPv6 address, as that IPv4; other addresses as they are."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _6TO4 and ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _kind(ip: IP) -> str | None:
    """What makes ``ip`` non-global (loopback, private, ...), or None for a public address."""
    ip = _plain(ip)
    for kind, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if flag:
            return kind
    return None if ip.is_global else "non-global"


class AddressPolicy:
    """Refuses URLs whose host is (or resolves to) a non-global address, but for ``allow``.

    ``allow``: CIDRs (``10.1.2.0/24``, ``::1/128``, a bare address) and exact host names
    (``hooks.internal``). ``resolver``: host name -> addresses (default: ``getaddrinfo``; tests
    inject one). ``timeout``: seconds a resolution may take before the name counts as unresolved.
    """

    def __init__(self, allow: Iterable[str] = (), *, resolver: Resolver | None = None,
                 timeout: float = 5.0) -> None:
        self.networks: list[Network] = []
        self.hosts: set[str] = set()
        for entry in (e.strip() for e in allow):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or " " in entry or ":" in entry:
                    raise ConfigError(f"{ALLOW_ENV}: {entry!r} is neither a CIDR (e.g. 10.0.0.0/8) "
                                      "nor a host name") from None
                self.hosts.add(entry.lower().rstrip("."))
        self.resolver = resolver or system_resolver
        self.timeout = timeout

    @classmethod
    def from_env(cls, *, resolver: Resolver | None = None) -> AddressPolicy:
        """The policy ``VIDEOBATCH_SERVICE_ALLOW`` (comma-separated CIDRs and host names) sets."""
        return cls(os.environ.get(ALLOW_ENV, "").split(","), resolver=resolver)

    def __repr__(self) -> str:
        allowed = [*map(str, self.networks), *sorted(self.hosts)]
        return f"<AddressPolicy allow={allowed}>"

    # ------------------------------------------------------------------ judging
    def address_refusal(self, address: str) -> str | None:
        """Why the service may not call ``address`` (an IP literal), or None."""
        ip = ipaddress.ip_address(address)
        kind = _kind(ip)
        if kind is None or any(_plain(ip) in net or ip in net for net in self.networks):
            return None
        return f"{address} is a {kind} address{_HINT}"

    def host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def literal(self, host: str) -> IP | None:
        """``host`` as an IP address if it is one, in any spelling a resolver takes as one
        (``0x7f000001``, ``127.1``, ``2130706433``), else None."""
        text = host.strip("[]").partition("%")[0]
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            pass
        if text and all(c in "0123456789abcdefxABCDEFX." for c in text):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(text))
            except OSError:
                return None
        return None

    def resolve_refusal(self, host: str) -> str | None:
        """Why ``host`` (a name or an IP literal) is refused; resolves names (blocking)."""
        host = host.lower().rstrip(".")
        if self.host_allowed(host):
            return None
        if self.literal(host) is not None:
            return self.address_refusal(str(self.literal(host)))
        try:
            addresses = self.resolver(host)
        except (OSError, UnicodeError):
            return None  # unresolved here: checked again when a worker connects
        for address in addresses:
            reason = self.address_refusal(address)
            if reason:
                return f"{host} resolves to {reason}"
        return None

    async def refusal(self, url: str, cache: dict[str, str | None] | None = None) -> str | None:
        """Why the service may not call ``url``, or None. Resolves its host in a thread, bounded
        by ``timeout`` (a name not resolved in time is left to the worker's check). ``cache``:
        answers by host, shared by the URLs of one request (a batch names few hosts, many times)."""
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not host:
            return "the URL names no host"
        host = host.rstrip(".")
        if cache is not None and host in cache:
            return cache[host]
        if self.host_allowed(host) or self.literal(host) is not None:
            reason = self.resolve_refusal(host)
        else:
            try:
                reason = await asyncio.wait_for(asyncio.to_thread(self.resolve_refusal, host),
                                                self.timeout)
            except TimeoutError:
                reason = None
        if cache is not None:
            cache[host] = reason
        return reason

    async def checked_addresses(self, host: str) -> list[str]:
        """The addresses to connect to for ``host``, all of them allowed; ``ConnectError`` if
        ``host`` does not resolve or any of its addresses is refused."""
        host = host.lower().rstrip(".")
        if self.literal(host) is not None:
            addresses = [str(self.literal(host))]
        else:
            try:
                addresses = list(await asyncio.wait_for(asyncio.to_thread(self.resolver, host),
                                                        self.timeout))
            except (OSError, UnicodeError, TimeoutError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        if not self.host_allowed(host):
            for address in addresses:
                reason = self.address_refusal(address)
                if reason:
                    raise httpcore.ConnectError(f"refused by the address policy: {host} is {reason}")
        return addresses


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows (the address
    it checked, not a second resolution). TLS still verifies the host name (httpcore does it on
    the stream, with the URL's host as server name)."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self.policy.checked_addresses(host):
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout,
                                                    local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed by the address policy")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: AddressPolicy, *, max_connections: int) -> None:
        super().__init__()
        # httpx's transport takes no network backend: the pool it wraps does.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=max_connections,
            network_backend=_GuardedBackend(policy))


def guarded_transport(policy: AddressPolicy, *, max_connections: int = 8) -> httpx.AsyncBaseTransport:
    """An httpx transport that connects only where ``policy`` allows (no proxy from the
    environment: a proxy would resolve the name itself)."""
    return _GuardedTransport(policy, max_connections=max_connections)
