"""Paced HTTP for providers: every request a provider sends on the wire takes a rate token first.

- ``PacedTransport``: an ``httpx.AsyncBaseTransport`` around another one. Before it forwards a
  request it awaits ``RateLimiter.acquire()``; a redirect, a token renewal or a second endpoint tried
  is one more request and takes one more token. When an answer is HTTP 429, it reads the (small)
  body and asks ``too_fast`` how long the provider wants everyone to wait, then slows the same
  limiter with ``RateLimiter.penalize`` — once per answer, so nobody else needs to.
- ``paced_client``: an ``httpx.AsyncClient`` whose only way out is a ``PacedTransport`` (around the
  given transport, or a default ``httpx.AsyncHTTPTransport`` that honours the proxy environment
  variables as httpx does). Providers get it through ``Provider.http_client``.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import httpx

from ._pacing import RateLimiter
from ._retry import parse_retry_after

__all__ = ["PacedTransport", "TooFast", "default_too_fast", "paced_client"]

# An answer with HTTP status 429 (body read) -> seconds the account should pause, or None: the
# answer does not mean "requests come too fast" (a quota or slots answer, say).
TooFast = Callable[[httpx.Response], float | None]
LimiterSource = RateLimiter | Callable[[], RateLimiter]

# AsyncClient arguments that configure the connection pool, i.e. the transport it would build.
_TRANSPORT_OPTIONS = ("verify", "cert", "http1", "http2", "limits", "proxy")


def default_too_fast(response: httpx.Response) -> float | None:
    """HTTP 429 means "too fast": wait what ``Retry-After`` says, else one second."""
    if response.status_code != 429:
        return None
    wait = parse_retry_after(response.headers.get("Retry-After"))
    return 1.0 if wait is None else wait


class PacedTransport(httpx.AsyncBaseTransport):
    """Forwards each request to ``inner`` after taking a token from the limiter.

    ``limiter`` is a ``RateLimiter`` or a function returning the one to use *now* (so a client
    built before a run attached its limiter still paces with it).
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, limiter: LimiterSource, *,
                 too_fast: TooFast | None = default_too_fast) -> None:
        self._inner = inner
        self._limiter = limiter
        self._too_fast = too_fast

    def limiter(self) -> RateLimiter:
        source = self._limiter
        return source if isinstance(source, RateLimiter) else source()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limiter = self.limiter()
        await limiter.acquire()
        response = await self._inner.handle_async_request(request)
        if response.status_code != 429 or self._too_fast is None:
            return response
        seen = response
        try:
            response.content  # noqa: B018 - an answer made in memory (a mock) is read already
        except httpx.ResponseNotRead:
            # Off the network: read the raw body (this closes the stream), let ``too_fast`` see a
            # decoded copy, and hand the client an unread answer over the same bytes.
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
            seen = httpx.Response(response.status_code, headers=response.headers,
                                  stream=httpx.ByteStream(raw), request=request)
            await seen.aread()
            response = httpx.Response(response.status_code, headers=response.headers,
                                      stream=httpx.ByteStream(raw),
                                      extensions=response.extensions, request=request)
        wait = self._too_fast(seen)
        if wait:
            limiter.penalize(wait)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def paced_client(limiter: LimiterSource, *, transport: httpx.AsyncBaseTransport | None = None,
                 too_fast: TooFast | None = default_too_fast,
                 **options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (``options`` as for it) whose every request passes ``limiter``.

    ``transport``: what the paced transport forwards to (tests pass a mock); by default a plain
    ``httpx.AsyncHTTPTransport`` built from the pool options (``limits``, ``verify``, ``http2``,
    ``proxy``, ...), with the environment's proxy for ``base_url`` unless ``trust_env=False``.
    ``mounts`` is refused: a mounted transport would skip the pacing.
    """
    if "mounts" in options:
        raise TypeError("paced_client takes no mounts: requests sent through them would not be paced")
    pool = {name: options.pop(name) for name in _TRANSPORT_OPTIONS if name in options}
    if transport is None:
        if "proxy" not in pool and options.get("trust_env", True):
            pool["proxy"] = _environment_proxy(str(options.get("base_url", "")))
        transport = httpx.AsyncHTTPTransport(trust_env=options.get("trust_env", True), **pool)
    return httpx.AsyncClient(transport=PacedTransport(transport, limiter, too_fast=too_fast),
                             **options)


def _environment_proxy(base_url: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, ...) names for
    ``base_url``'s host, as httpx would pick it for a client without a transport of its own."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        return None
    if not url.host:
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"
