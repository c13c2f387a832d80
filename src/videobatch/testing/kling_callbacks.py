"""The Kling test server's callbacks: POST a task's object to its ``callback_url`` when it ends.

On when ``SimConfig.callbacks`` is set (off by default: Kling calls back only where a URL is given,
and most tests want polling alone). The body is the bare task object, as Kling sends it; with
``SimConfig.callback_secret`` (``whsec_<base64>``) it carries Standard Webhooks headers
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``). ``sign`` is exposed so tests can forge or sign callbacks themselves.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx

from .kling_sim import SimConfig, SimTask

__all__ = ["CallbackSender", "sign"]


def sign(secret: str, body: bytes, msg_id: str | None = None, stamp: int | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` signed with ``secret``."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = int(time.time()) if stamp is None else stamp
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": f"v1,{base64.b64encode(mac).decode()}"}


class CallbackSender:
    """Sends each task's end to its callback URL (one try, as a test double; errors counted)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.sent = 0
        self.failed = 0
        self._pending: set[asyncio.Task[None]] = set()

    def schedule(self, task: SimTask, url: Any, files_url: str) -> None:
        if not self.config.callbacks or not isinstance(url, str) or not url.startswith("http"):
            return
        job = asyncio.get_running_loop().create_task(self._send(task, url, files_url))
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def _send(self, task: SimTask, url: str, files_url: str) -> None:
        await asyncio.sleep(max(0.0, task.done_at - time.monotonic()) + 0.01)
        body = json.dumps(task.to_json(time.monotonic(), files_url)).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.callback_secret:
            headers.update(sign(self.config.callback_secret, body))
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.post(url, content=body, headers=headers)
            ok = response.is_success
        except httpx.HTTPError:
            ok = False
        self.sent += ok
        self.failed += not ok
