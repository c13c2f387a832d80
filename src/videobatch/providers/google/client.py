"""The Google provider: Gemini Omni Flash video generation on the Gemini API's Interactions API.

One job: videobatch's provider interface on top of the contract in ``docs/providers/google.md``
(the only video path left on the Gemini API since the Veo ids were retired on 2026-10-22).
``wire`` writes create bodies and maps answers and errors; ``media`` judges images and keeps the
finished videos on this machine. Every request goes out through the paced client
(``Provider.http_client``); a 429's ``retryDelay`` slows the run's limiter (``wire.too_fast``).

Decisions where the contract is thin or *unsure* (see "How videobatch uses it" in the doc):

* **No idempotency key, no lookup, no listing.** A create whose answer may be lost (timeout,
  dropped connection, 5xx, unreadable 200) raises ``TransientError(maybe_accepted=True)``; the
  runner never resends it, and the row ends ``unknown``. The key goes along only as
  ``webhook_config.user_metadata.videobatch_row`` so a webhook event or the console can show it.
* **The API key** comes from ``api_key=``, else ``GOOGLE_API_KEY``, else ``GEMINI_API_KEY`` (the
  official SDKs' order: ``GOOGLE_API_KEY`` wins, with a warning when both are set). It is sent
  only in the ``x-goog-api-key`` header, only to ``base_url``; never in a URL, message or repr.
* **Videos** are written to a local directory (``video_dir``) and reported as ``file://`` URLs:
  inline base64 is decoded; a Files API URI is downloaded with the key from ``base_url`` (its file
  id only: the key never goes to a host named in an answer), once the file is ``ACTIVE``, and the
  storage redirect is followed *without* the key.
* **Cancel** stops only a ``queued`` interaction. A running one is left to finish: whether a
  cancelled running job is billed is unsure, and finishing it delivers what may already be paid
  for. Whether a cancelled queued one is billed is unsure too, and it may start between the look
  and the cancel, so a cancel never says "stopped unpaid": it says "stopped, perhaps charged"
  (None), the row fails, and only the user's ``retry`` pays again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from ...errors import ConfigError, Problem, ProviderError, RejectedError, TransientError
from ...media import image_mime
from ...request import VideoRequest
from ..base import Capabilities, Limits, PollHint, Provider, TaskState, TaskStatus, Video
from ..setup import Secret, number
from . import media, wire
from .options import MODELS_FILE, GoogleOptions

__all__ = ["DEFAULT_BASE_URL", "GoogleProvider"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
INTERACTIONS = f"/{wire.API_VERSION}/interactions"
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # what a URL image may weigh when fetched




def _api_key(given: str | None) -> Secret | None:
    if given is not None and given.strip():
        return Secret(given.strip(), "the Google API key")
    found = {name: (os.environ.get(name) or "").strip() for name in wire.ENV_NAMES}
    if all(found.values()):
        log.warning("google: both GOOGLE_API_KEY and GEMINI_API_KEY are set; using GOOGLE_API_KEY "
                    "(as Google's SDKs do)")
    value = next((v for v in found.values() if v), "")
    return Secret(value, "the Google API key") if value else None


class GoogleProvider(Provider):
    """Gemini Omni Flash text-to-video and image-to-video (first and last frame).

    Options (strings are accepted, as from ``-P key=value``): ``api_key`` (default: env
    GOOGLE_API_KEY, else GEMINI_API_KEY), ``base_url`` (default the Gemini API), ``max_parallel``
    (interactions in flight), ``max_rps`` (API requests per second), ``http_timeout`` (HTTP
    seconds; ``timeout`` when constructing directly), ``webhook_url`` (sent as
    ``webhook_config.uris``), ``video_dir`` (where finished videos are written; default
    $VIDEOBATCH_GOOGLE_VIDEO_DIR or ~/.cache/videobatch/google), ``first_poll`` /
    ``poll_interval`` / ``max_poll_interval`` (seconds), and ``transport`` (tests).
    """

    name: ClassVar[str] = "google"
    # No client id of ours is kept, nothing looks tasks up or lists them; interactions can be
    # cancelled and can call webhooks. One GET per interaction (no batch status).
    capabilities: ClassVar[Capabilities] = Capabilities(
        idempotency_key=False, lookup=False, listing=False, cancel=True, webhooks=True,
        batch_status=False)
    option_schema = GoogleOptions
    models_file = MODELS_FILE

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_parallel: int | str = 5,
        max_rps: float | str | None = 1.0,
        timeout: float | str = 60.0,
        http_timeout: float | str | None = None,
        webhook_url: str | None = None,
        video_dir: str | Path | None = None,
        first_poll: float | str = 20.0,
        poll_interval: float | str = 10.0,
        max_poll_interval: float | str = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._key = _api_key(api_key)
        url = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"google base_url {url!r} is not an http(s) URL")
        self.base_url = url
        self.timeout = float(number("google", "http_timeout", timeout if http_timeout is None
                                     else http_timeout, float, 0.001))
        rps = None if max_rps in (None, "", "none", "None") else number("google", "max_rps", max_rps, float, 0.001)
        self.limits = Limits(int(number("google", "max_parallel", max_parallel, int, 1)), rps)
        interval = float(number("google", "poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(number("google", "first_poll", first_poll, float, 0.0)), min_interval=interval,
            max_interval=max(interval, float(number("google", "max_poll_interval", max_poll_interval,
                                                      float, 0.001))))
        self.webhook_url = webhook_url or None
        # absolute: the results carry file:// URLs, which a relative folder cannot give
        self.videos = media.VideoStore((Path(video_dir).expanduser() if video_dir
                                        else media.default_video_dir()).absolute())
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._durations: dict[str, float] = {}  # interaction id -> seconds asked for

    # -- the provider interface ----------------------------------------------------------------

    def _header(self) -> dict[str, str]:
        if self._key is None:
            raise ConfigError("Google API key missing: set the environment variable GEMINI_API_KEY "
                              "(or GOOGLE_API_KEY, which wins when both are set), or pass "
                              "api_key=... Keys are made in Google AI Studio.")
        return {"x-goog-api-key": self._key.reveal()}

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._header()
        problems: list[Problem] = []
        for row, req in enumerate(requests, start=1):
            if req.audio is False:
                problems.append(Problem(row, "audio", "Gemini Omni always generates audio; it "
                                        "cannot be turned off", allowed="on, or leave it empty"))
            if req.end_image and not req.image:
                problems.append(Problem(row, "end_image", "a last frame needs a first frame "
                                        "(image) with Gemini Omni", allowed="an image as well"))
            for column in ("image", "end_image"):
                value = getattr(req, column)
                message = media.image_problem(value) if value else None
                if message:
                    problems.append(Problem(row, column, message, allowed=media.ALLOWED))
        return problems

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        resolved = self.resolve(request)
        images = [("FIRST_FRAME", request.image), ("LAST_FRAME", request.end_image)]
        parts = [(tag, *await self._image(tag, value)) for tag, value in images if value]
        body = wire.create_body(resolved, request.prompt, parts, idempotency_key,
                                self.webhook_url)
        data = await self._call("POST", INTERACTIONS, body=body, submitting=True,
                                model=resolved.model)
        if not isinstance(data, dict) or not data.get("id"):
            raise TransientError("Google answered the create without an interaction id",
                                 maybe_accepted=True)
        if resolved.values.get("duration") is not None:
            self._durations[str(data["id"])] = float(resolved.values["duration"])
        return await self._status_of(data)

    async def status(self, task_id: str) -> TaskStatus:
        return await self._status_of(await self._get(task_id))

    async def cancel(self, task_id: str) -> bool | None:
        """Stops a queued interaction: None (stopped, perhaps billed: Google does not say)."""
        if (await self._get(task_id)).get("status") != "queued":
            return False  # running or ended: left to finish (a running job may be billed)
        data = await self._call("POST", f"{INTERACTIONS}/{quote(task_id, safe='')}/cancel")
        return None if isinstance(data, dict) and data.get("status") == "cancelled" else False

    def too_fast(self, response: httpx.Response) -> float | None:
        return wire.too_fast(response)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "base_url": self.base_url}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<GoogleProvider base_url={self.base_url!r} max_parallel={self.limits.max_parallel}>"

    # -- reading interactions ------------------------------------------------------------------

    async def _get(self, task_id: str) -> dict[str, Any]:
        data = await self._call("GET", f"{INTERACTIONS}/{quote(task_id, safe='')}")
        if not isinstance(data, dict) or not data.get("id"):
            raise TransientError("Google answered without a readable interaction",
                                 maybe_accepted=False)
        return data

    async def _status_of(self, data: dict[str, Any]) -> TaskStatus:
        task_id, raw = str(data["id"]), str(data.get("status") or "queued")
        if raw in wire.DONE_FAILED:
            said = wire.error_of(data)
            return TaskStatus(task_id, TaskState.FAILED,
                              message=f"the interaction ended {raw}" + (f": {said}" if said else ""))
        if raw != "completed":
            return TaskStatus(task_id, wire.STATES.get(raw, TaskState.RUNNING))
        part = wire.video_part(data)
        if part is None:
            said = wire.error_of(data)
            return TaskStatus(task_id, TaskState.FAILED, message="the interaction completed "
                              "without a video (blocked by a safety filter?)"
                              + (f": {said}" if said else ""))
        path = self.videos.existing(task_id)
        if path is None:
            got = await self._keep(task_id, part)
            if not isinstance(got, Path):
                return got  # the file is still processing, or failed
            path = got
        video = Video(url=path.as_uri(), id=task_id, duration=self._durations.get(task_id))
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(video,))

    async def _keep(self, task_id: str, part: dict[str, Any]) -> Path | TaskStatus:
        """Write the interaction's video to the store: inline bytes, or the Files API file."""
        if part.get("data"):
            try:
                data = base64.b64decode(str(part["data"]), validate=True)
            except (binascii.Error, ValueError):
                raise TransientError(f"Google's inline video for {task_id} is not valid base64",
                                     maybe_accepted=False) from None
            return await asyncio.to_thread(self.videos.write, task_id, data)
        file_id = wire.file_id(str(part.get("uri")))
        if file_id is None:
            raise TransientError(f"Google's video for {task_id} is at {part.get('uri')!r}, which "
                                 "is not a Files API URI videobatch can download", maybe_accepted=False)
        info = await self._call("GET", f"/{wire.API_VERSION}/files/{file_id}")
        state = str(info.get("state") if isinstance(info, dict) else "")
        if state == "FAILED":
            return TaskStatus(task_id, TaskState.FAILED,
                              message=f"Google's video file {file_id} ended FAILED")
        if state != "ACTIVE":
            return TaskStatus(task_id, TaskState.RUNNING)  # PROCESSING: poll again
        return await self._download(task_id, file_id)

    async def _download(self, task_id: str, file_id: str) -> Path:
        """``files/{id}:download?alt=media`` with the key; its redirect is followed without it."""
        client = self._http()
        url: str | httpx.URL = f"/{wire.API_VERSION}/files/{file_id}:download?alt=media"
        headers: dict[str, str] = self._header()
        for _ in range(5):
            failure: ProviderError | None = None
            try:
                async with client.stream("GET", url, headers=headers) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = response.url.join(response.headers["location"])
                        headers = {}  # the storage link is signed: the key stays here
                        continue
                    if not response.is_success:
                        await response.aread()
                        if headers:
                            raise wire.map_error(response, submitting=False, model=None, now=0.0)
                        raise TransientError(f"fetching Google's video {file_id} from storage: "
                                             f"HTTP {response.status_code}", maybe_accepted=False,
                                             status_code=response.status_code)
                    part = self.videos.part(task_id)
                    with part.open("wb") as out:
                        async for chunk in response.aiter_bytes():
                            out.write(chunk)
                    return await asyncio.to_thread(self.videos.seal, task_id, part)
            except httpx.TransportError as exc:
                failure = wire.transport_error(exc, "GET", f"video file {file_id}", False)
            if failure is not None:
                raise failure
        raise TransientError(f"Google's video {file_id}: too many redirects", maybe_accepted=False)

    # -- images --------------------------------------------------------------------------------

    async def _image(self, tag: str, value: str) -> tuple[str, str]:
        """(base64, mime type) of an image cell; a URL is fetched here (without the API key)."""
        column = "image" if tag == "FIRST_FRAME" else "end_image"
        if media.is_url(value):
            try:
                response = await self._http().get(value.strip(), follow_redirects=True)
            except httpx.TransportError as exc:
                raise TransientError(f"{column} URL could not be fetched: {type(exc).__name__}",
                                     maybe_accepted=False) from None
            if not response.is_success or len(response.content) > MAX_IMAGE_BYTES:
                raise RejectedError(f"{column} URL answered HTTP {response.status_code} with "
                                    f"{len(response.content)} bytes; an image of at most 20 MB is needed")
            data = response.content
        else:
            data = await asyncio.to_thread(media.local_image, column, value)
        mime = image_mime(data[:16])
        if mime is None:
            raise RejectedError(f"{column} is not a JPEG, PNG or WebP image")
        return base64.b64encode(data).decode("ascii"), mime

    # -- wire ----------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            self._client = self.http_client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._transport,
                headers={"User-Agent": "videobatch-google", "Accept": "application/json"},
                limits=httpx.Limits(max_connections=max(10, 2 * self.limits.max_parallel)),
            )
            self._client_loop = loop
        return self._client

    async def _call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                    submitting: bool = False, model: str | None = None) -> Any:
        """One API request: the decoded JSON answer, else the mapped ``ProviderError``."""
        headers = self._header()
        failure: ProviderError | None = None
        try:
            response = await self._http().request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            failure = wire.transport_error(exc, method, path, submitting)
        if failure is not None:
            raise failure  # raised outside the except block: no chained request/headers
        log.debug("google %s %s -> HTTP %s", method, path, response.status_code)
        if not response.is_success:
            raise wire.map_error(response, submitting=submitting, model=model,
                                 now=time.time())
        try:
            return response.json()
        except ValueError:
            raise TransientError(f"Google answered {method} {path} with HTTP "
                                 f"{response.status_code} but no readable JSON",
                                 maybe_accepted=submitting, status_code=response.status_code) from None
