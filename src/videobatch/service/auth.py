"""Who may call the gateway: bearer tokens, checked before a body is read, and the tenant each
stands for (``service.tenants``), with its per-minute request limit.

With no token configured every ``/api/`` request is refused. A request without a valid token gets
401 from ``BearerGate`` before FastAPI parses its body, so a refused request touches nothing. The
``Caller`` dependency checks again inside the route (and puts bearer auth in the OpenAPI spec),
gives the route the caller's ``Tenant``, and answers 429 (with ``Retry-After``) to a tenant over
its ``requests_per_minute``.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from .tenants import Tenant, Tenants

__all__ = ["BearerGate", "Caller"]

_REFUSED = "missing or invalid bearer token"


def _bearer(header: str) -> str:
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class BearerGate:
    """Refuses ``/api/`` requests without a valid bearer token before anything else runs
    (FastAPI would parse and validate the body before its dependencies)."""

    def __init__(self, app: ASGIApp, tenants: Tenants) -> None:
        self.app = app
        self.tenants = tenants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if self.tenants.of(_bearer(header)) is None:
                response = JSONResponse({"detail": _REFUSED},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# Module level: FastAPI resolves the (string) annotations of dependencies against module globals.
_BEARER = HTTPBearer(auto_error=False)


async def _authorized(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Tenant:
    """The caller's tenant (the token checked again here; it also puts bearer auth in the spec)."""
    state = request.app.state
    tenant: Tenant | None = state.tenants.of(credentials.credentials if credentials else "")
    if tenant is None:
        raise HTTPException(status_code=401, detail=_REFUSED, headers={"WWW-Authenticate": "Bearer"})
    if tenant.requests_per_minute:
        minute = int(time.time() // 60)
        key = state.keys.rate(tenant.id, minute)
        async with state.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        if int(count) > tenant.requests_per_minute:
            wait = max(1, int((minute + 1) * 60 - time.time()) + 1)
            raise HTTPException(status_code=429, headers={"Retry-After": str(wait)}, detail=(
                f"more than {tenant.requests_per_minute} requests this minute; retry in {wait} s"))
    return tenant


Caller = Annotated[Tenant, Depends(_authorized)]
