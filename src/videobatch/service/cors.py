"""Which web pages may call the API from a browser (CORS): none unless the operator lists them.

By default the API sends no CORS header at all, so a browser lets no page of another origin read
its answers (pages served by the API's own origin are unaffected). An operator lists the origins
of the web apps that may call it::

    VIDEOBATCH_SERVICE_CORS_ORIGINS=https://app.example.com,http://localhost:3000

Each entry is an exact origin (``scheme://host[:port]``, http or https, no path), or ``*`` alone
for any page. Credentials are never allowed: the API authenticates with a bearer token in the
``Authorization`` header, which a page must hold and send itself; a browser never adds a cookie or
a stored login for it, so even ``*`` does not let a page act with a visitor's credentials. Listed
origins may send ``Authorization``, ``Content-Type`` and ``Idempotency-Key`` with GET and POST,
and read ``Retry-After`` and ``Idempotent-Replayed``. A preflight (OPTIONS) is answered before the
token check, so it needs no token; an origin not listed gets no CORS header (its preflight a 400).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware

from ..errors import ConfigError

__all__ = ["CORS_ENV", "CorsPolicy"]

CORS_ENV = "VIDEOBATCH_SERVICE_CORS_ORIGINS"
_METHODS = ("GET", "POST")
_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
_EXPOSED = ("Retry-After", "Idempotent-Replayed")


def _origin(entry: str) -> str:
    """``entry`` as a browser sends it in ``Origin`` (scheme and host lower-case), or ConfigError."""
    parts = urlsplit(entry.rstrip("/"))
    problem = None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        problem = "give an origin like https://app.example.com (http or https, a host)"
    elif parts.path or parts.query or parts.fragment or parts.username or parts.password:
        problem = "an origin is scheme://host[:port] only: no path, query or user"
    else:
        try:
            port = parts.port
        except ValueError:
            problem = "its port is not a number from 0 to 65535"
        else:
            host = parts.netloc.rsplit("@", 1)[-1].lower()
            return f"{parts.scheme.lower()}://{host if port is not None else parts.hostname}"
    raise ConfigError(f"{CORS_ENV}: {entry!r}: {problem}")


@dataclass(frozen=True)
class CorsPolicy:
    """The origins allowed to call the API from a browser (empty: none; ``("*",)``: any)."""

    origins: tuple[str, ...] = ()

    @classmethod
    def of(cls, entries: Sequence[str]) -> CorsPolicy:
        """From a list of origins (checked and normalised; ConfigError names a bad one)."""
        given = [e.strip() for e in entries if e.strip()]
        if "*" in given:
            if len(given) > 1:
                raise ConfigError(f"{CORS_ENV}: '*' (any origin) goes alone, not with other origins")
            return cls(("*",))
        if "null" in given:
            raise ConfigError(f"{CORS_ENV}: 'null' is the origin of sandboxed frames and local "
                              "files, which any page can make: list real origins")
        return cls(tuple(dict.fromkeys(_origin(e) for e in given)))

    @classmethod
    def from_env(cls) -> CorsPolicy:
        """``VIDEOBATCH_SERVICE_CORS_ORIGINS`` (comma-separated; unset or empty: no origin)."""
        return cls.of(os.environ.get(CORS_ENV, "").split(","))

    def __bool__(self) -> bool:
        return bool(self.origins)

    def install(self, app: Starlette) -> None:
        """Answer CORS for the listed origins (nothing when none is). Install it last: it must be
        the outermost middleware, so that preflights and 401 answers carry its headers."""
        if self.origins:
            app.add_middleware(CORSMiddleware, allow_origins=self.origins, allow_methods=_METHODS,
                               allow_headers=_HEADERS, allow_credentials=False,
                               expose_headers=_EXPOSED, max_age=600)
