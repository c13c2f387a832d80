"""Kling's task callbacks: a task that ends moves its row at once; polling stays the fallback.

    POST /callbacks/kling      (public: Kling cannot send a tenant's token)

Workers send ``callback_url`` on creates when one is configured (``-P callback_url=https://<public
host>/callbacks/kling``). Kling POSTs the task object (bare, or wrapped in its envelope) on each
status change. With a webhook secret (``VIDEOBATCH_KLING_WEBHOOK_SECRET``, ``whsec_<base64>``, from
Kling's console) a callback must carry valid Standard Webhooks headers — ``webhook-id``,
``webhook-timestamp`` (within ``TOLERANCE`` s of now) and ``webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`` — or it is refused (401).

A callback never completes a row by itself: it only asks the workers (Redis pub/sub) to poll that
task now (``videobatch._polling.nudge``), and the row moves on Kling's own answer. So a forged or
replayed callback costs at most one status request a second per task; a task no worker watches (not
ours, or already done) is ignored. The answer is 204 either way, telling nobody which tasks are ours.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, HTTPException, Request, Response

from .._polling import nudge
from .records import Keys

__all__ = ["SECRET_ENV", "listen", "router", "task_ended", "verify"]

log = logging.getLogger(__name__)

SECRET_ENV = "VIDEOBATCH_KLING_WEBHOOK_SECRET"  # noqa: S105 (a variable's name)
TOLERANCE = 300.0  # seconds a signed callback's timestamp may be off
ENDED = {"succeed", "failed", "succeeded"}  # legacy and newer designs' end states


def channel(keys: Keys) -> str:
    return f"{keys.prefix}callbacks:kling"


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """Whether ``body`` carries a valid Standard Webhooks signature made with ``secret``."""
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        sent = int(stamp)
    except (binascii.Error, ValueError):
        return False
    if not msg_id or not key or abs((time.time() if now is None else now) - sent) > TOLERANCE:
        return False
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
    return any(version == "v1" and hmac.compare_digest(value, expected)
               for version, _, value in (s.partition(",") for s in signatures.split()))


def task_ended(body: bytes) -> str | None:
    """The id of the task a callback says has ended (None: it has not, or the body is not one)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]  # some copies wrap the task in Kling's envelope
    if not isinstance(data, dict):
        return None
    task_id = data.get("task_id") or data.get("id")
    status = data.get("task_status") or data.get("status")
    if not isinstance(task_id, str | int) or str(status).lower() not in ENDED:
        return None
    return str(task_id)[:200]


def router(secret: str | None = None) -> APIRouter:
    """The callback route; ``secret`` defaults to ``$VIDEOBATCH_KLING_WEBHOOK_SECRET``."""
    secret = secret if secret is not None else os.environ.get(SECRET_ENV) or None
    routes = APIRouter()

    @routes.post("/callbacks/kling", status_code=204, include_in_schema=False)
    async def kling_callback(request: Request) -> Response:
        body = await request.body()
        if secret is not None and not verify(secret, request.headers, body):
            raise HTTPException(status_code=401, detail="callback signature missing or invalid")
        task_id = task_ended(body)
        if task_id is not None:
            state = request.app.state
            await state.redis.publish(channel(state.keys), task_id)
        return Response(status_code=204)

    return routes


async def listen(client: aioredis.Redis, keys: Keys) -> None:
    """A worker's side: nudge this process's pollers for every task a callback says has ended,
    until cancelled (Redis away: try again every few seconds; polling goes on meanwhile)."""
    while True:
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(channel(keys))
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        data = message.get("data")
                        nudge(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis lost: callbacks wait, polls do not
            log.warning("callback listener: %s; trying again in 5 s", exc)
            await asyncio.sleep(5.0)
