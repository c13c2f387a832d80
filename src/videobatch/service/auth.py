"""Who may call the gateway: bearer tokens, checked before a body is read, and the tenant each stands for.

Tokens come from ``VIDEOBATCH_API_TOKENS`` (comma-separated) or ``create_app(tokens=...)``; with
none configured every ``/api/`` request is refused. A request without a valid token gets 401 from
``BearerGate`` before FastAPI parses its body, so a refused request touches nothing. The
``Token`` dependency checks again inside the route (and puts bearer auth in the OpenAPI spec). A
token's tenant is a hash of it, so what is stored per tenant (Idempotency-Keys) never holds the
token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BearerGate", "Token", "configured_tokens", "tenant_of", "token_ok"]

_REFUSED = "missing or invalid bearer token"


def configured_tokens(tokens: Sequence[str] | None = None) -> list[str]:
    """The accepted tokens: ``tokens`` if given, else ``VIDEOBATCH_API_TOKENS``; blanks dropped."""
    given = tokens if tokens is not None else os.environ.get("VIDEOBATCH_API_TOKENS", "").split(",")
    return [t.strip() for t in given if t.strip()]


def token_ok(token: str, tokens: list[str]) -> bool:
    """Whether ``token`` is one of ``tokens`` (compared in constant time; empty never is)."""
    given = token.encode()
    return bool(given) and any(hmac.compare_digest(given, t.encode()) for t in tokens)


def tenant_of(token: str) -> str:
    """The tenant a token stands for, as stored in Redis keys (a hash, never the token)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class BearerGate:
    """Refuses ``/api/`` requests without a valid bearer token before anything else runs
    (FastAPI would parse and validate the body before its dependencies)."""

    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token_ok(token.strip(), self.tokens):
                response = JSONResponse({"detail": _REFUSED},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# Module level: FastAPI resolves the (string) annotations of dependencies against module globals.
_BEARER = HTTPBearer(auto_error=False)


async def _authorized(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> str:
    """The caller's token (checked again here; it also puts bearer auth in the spec)."""
    token = credentials.credentials if credentials else ""
    if not token_ok(token, request.app.state.tokens):
        raise HTTPException(status_code=401, detail=_REFUSED, headers={"WWW-Authenticate": "Bearer"})
    return token


Token = Annotated[str, Depends(_authorized)]
