"""The Kling AI provider: puts a ``VideoRequest`` on Kling's HTTP API and reads the task back.

One job: translate between videobatch's provider interface and Kling's wire contract
(``shared/kling-api.md``). Retries, slots, rate limiting and reconciliation belong to the runner;
this module only says, for every answer, which ``videobatch.errors`` class it is.

Wire decisions where the contract was *unsure* (checked against Kling's public docs and the public
clients that call it; none of them documents every point, so the client is lenient in what it reads):

* **Lookup by external_task_id**: ``GET /v1/videos/{kind}?external_task_id=<id>`` — a query
  parameter on the collection path. Kling's docs list ``task_id`` (path) and ``external_task_id``
  as "choose one of the two"; the public clients that spell the request out (Go, Kotlin, apidoc
  mirrors of the official page) all send it as a query parameter. ``data`` is read as one task
  object, or as a list from which the task whose ``task_info.external_task_id`` matches is taken
  (so a server that ignores the parameter and answers with a list page still works, safely).
  "Not found" is HTTP 404 / code 1203, or an empty ``data``.
* **List endpoint**: ``GET /v1/videos/{kind}?pageNum=N&pageSize=M`` (pageNum 1…1000, pageSize
  1…500), ``data`` a list of task objects, newest first.
* **Duplicate external_task_id**: Kling documents only that the id must be unique per account, not
  the exact refusal. Any 1200/1201 refusal of a create whose message mentions ``external_task_id``
  is treated as "this key was already used": the task is looked up with ``find`` and adopted. If the
  lookup finds nothing, the refusal stands (a RejectedError), so nothing is ever paid twice.
  (The project's test server answers 400 / 1201 "Invalid parameters: external_task_id '…' already
  exists".)
* **image2video** bodies carry no ``aspect_ratio`` (the image decides it); ``image``/``image_tail``
  are URLs passed through, or local files sent as bare base64 (no ``data:`` prefix).
* Result URLs expire 30 days after the task was created: ``expires_at = created_at + 30 days``.
* The task path needs the kind (text2video / image2video): it is remembered per task id from
  submit/find/list answers; an unknown id (after a restart) is tried as text2video, then image2video.
* ``status_many`` reads list pages (pageSize 500, newest first) when at least ``list_threshold``
  (3) tasks are asked, never more pages than the single GETs they replace, then single GETs for
  any task not seen; a rate-limit or server error on the list is reported for every task asked.

Credentials are checked in ``check()`` (and again before the first request), never at import or
construction, so ``describe()`` and cost estimates work without keys. Keys and tokens are held in
``_Secret`` wrappers whose repr is ``'***'``; no message, repr or ``describe()`` shows them.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn
from urllib.parse import quote

import httpx
import jwt

from ...errors import (
    AccountError,
    AuthError,
    ConfigError,
    NotFoundError,
    Problem,
    ProviderError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from ...models import resolve_model
from ...request import VideoRequest
from ..base import Limits, PollHint, Provider, TaskState, TaskStatus, Video
from . import images

__all__ = ["DEFAULT_BASE_URL", "KlingProvider"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.klingai.com"
ACCESS_ENV, SECRET_ENV, BASE_URL_ENV = "KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL"
TOKEN_TTL = 1800  # seconds a JWT is valid
TOKEN_RENEW_BEFORE = 300  # renew this long before it expires
RESULT_TTL = 30 * 24 * 3600  # Kling deletes result files after 30 days
MAX_TEXT = 2500  # characters of prompt / negative_prompt
TEXT2VIDEO, IMAGE2VIDEO = "text2video", "image2video"
KINDS = (TEXT2VIDEO, IMAGE2VIDEO)
_STATES = {
    "submitted": TaskState.QUEUED,
    "processing": TaskState.RUNNING,
    "succeed": TaskState.SUCCEEDED,
    "failed": TaskState.FAILED,
}
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no whitespace

_now = time.time  # the clock; tests replace it
# PyJWT ≥ 2.10 warns about HMAC keys under 32 bytes; older versions have no such class.
_SHORT_KEY_WARNING: type[Warning] = getattr(
    getattr(jwt, "warnings", None), "InsecureKeyLengthWarning", RuntimeWarning
)


class _Secret:
    """A credential held in memory: its repr is ``'***'`` and it refuses to be pickled."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("Kling credentials cannot be pickled")


def _number(name: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"kling option {name}={value!r} is not a number") from None
    if number < minimum:
        raise ConfigError(f"kling option {name}={value!r} must be at least {minimum}")
    return number


def _key_problem(value: str) -> str | None:
    if not _KEY_CHARS.match(value):
        return "it contains spaces or characters a key never has"
    if value[0] in "\"'<" or value[-1] in "\"'>":
        return "it is wrapped in quotes or angle brackets"
    if len(value) < 8:
        return "it is too short"
    return None


class KlingProvider(Provider):
    """Kling AI text-to-video and image-to-video.

    Options (strings are accepted, as from ``-P key=value``): ``access_key``, ``secret_key``
    (default: env KLING_ACCESS_KEY / KLING_SECRET_KEY), ``base_url`` (env KLING_BASE_URL, default
    the official API), ``max_parallel`` (the account's parallel-task limit), ``max_rps``,
    ``http_timeout`` (HTTP seconds; ``timeout`` when constructing directly), ``callback_url``,
    ``first_poll`` / ``poll_interval`` / ``max_poll_interval`` (seconds), ``list_threshold``
    (use the list endpoint from this many tasks on), ``page_size``, and ``transport`` (an
    ``httpx.AsyncBaseTransport``, for tests).
    """

    name: ClassVar[str] = "kling"
    batch_polling = True

    def __init__(
        self,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        base_url: str | None = None,
        max_parallel: int | str = 5,
        max_rps: float | str | None = 5.0,
        timeout: float | str = 30.0,
        http_timeout: float | str | None = None,
        callback_url: str | None = None,
        first_poll: float | str = 30.0,
        poll_interval: float | str = 5.0,
        max_poll_interval: float | str = 60.0,
        list_threshold: int | str = 3,
        page_size: int | str = 500,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._access = self._credential(access_key, ACCESS_ENV)
        self._secret = self._credential(secret_key, SECRET_ENV)
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"kling base_url {url!r} is not an http(s) URL; set {BASE_URL_ENV} or base_url="
            )
        self.base_url = url
        # ``http_timeout`` is the name to use through run()/the CLI, whose own ``timeout`` is per row.
        self.timeout = float(_number("http_timeout", timeout if http_timeout is None
                                     else http_timeout, float, 0.001))
        rps = None if max_rps in (None, "", "none", "None") else _number("max_rps", max_rps, float, 0.001)
        self.limits = Limits(int(_number("max_parallel", max_parallel, int, 1)), rps)
        interval = float(_number("poll_interval", poll_interval, float, 0.001))
        self.poll_hint = PollHint(
            first_poll=float(_number("first_poll", first_poll, float, 0.0)),
            min_interval=interval,
            max_interval=max(interval, float(_number("max_poll_interval", max_poll_interval,
                                                      float, 0.001))),
        )
        self.callback_url = callback_url or None
        self._list_threshold = int(_number("list_threshold", list_threshold, int, 1))
        self._page_size = min(500, int(_number("page_size", page_size, int, 1)))
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._token: _Secret | None = None
        self._token_exp = 0.0
        self._kinds: dict[str, str] = {}  # task_id -> text2video / image2video
        self._key_kinds: dict[str, str] = {}  # external_task_id -> kind

    # -- credentials -------------------------------------------------------------------------

    @staticmethod
    def _credential(value: str | None, env: str) -> _Secret | None:
        if value is None:
            value = os.environ.get(env)
        value = (value or "").strip()
        return _Secret(value) if value else None

    def _credentials(self) -> tuple[str, str]:
        """Both keys, or a ConfigError naming the variable to set (never showing a value)."""
        values: list[str] = []
        for secret, env, option in ((self._access, ACCESS_ENV, "access_key"),
                                    (self._secret, SECRET_ENV, "secret_key")):
            if secret is None:
                raise ConfigError(
                    f"Kling credentials missing: set the environment variable {env} "
                    f"(or pass {option}=...). Keys are in the Kling developer console."
                )
            problem = _key_problem(secret.reveal())
            if problem:
                raise ConfigError(
                    f"Kling credentials malformed: {env} ({option}) looks wrong: {problem}. "
                    "Copy the key again from the Kling developer console."
                )
            values.append(secret.reveal())
        return values[0], values[1]

    def _bearer(self, *, renew: bool = False) -> str:
        """A JWT for the Authorization header, reused until ~5 minutes before it expires."""
        access, secret = self._credentials()
        now = _now()
        if renew or self._token is None or now >= self._token_exp - TOKEN_RENEW_BEFORE:
            exp = int(now) + TOKEN_TTL
            claims = {"iss": access, "exp": exp, "nbf": int(now) - 5}
            with warnings.catch_warnings():
                # Kling issues the keys; a warning about their length helps no one.
                warnings.simplefilter("ignore", _SHORT_KEY_WARNING)
                token = jwt.encode(claims, secret, algorithm="HS256", headers={"typ": "JWT"})
            self._token = _Secret(token)
            self._token_exp = exp
        return self._token.reveal()

    # -- the provider interface --------------------------------------------------------------

    def check(self, requests: Sequence[VideoRequest]) -> list[Problem]:
        self._credentials()
        problems: list[Problem] = []
        for row, req in enumerate(requests, start=1):
            for column in ("prompt", "negative_prompt"):
                text = getattr(req, column) or ""
                if len(text) > MAX_TEXT:
                    problems.append(Problem(row, column, f"{column} is {len(text)} characters "
                                            "long, Kling accepts at most 2500",
                                            allowed="at most 2500 characters"))
            for column in ("image", "image_tail"):
                value = getattr(req, column)
                message = images.problem(value) if value else None
                if message:
                    problems.append(Problem(row, column, message, allowed=images.ALLOWED))
            if req.image_tail and req.camera_control is not None:
                problems.append(Problem(row, "camera_control", "Kling does not accept "
                                        "camera_control together with image_tail",
                                        allowed="one of image_tail or camera_control"))
        return problems

    async def submit(self, request: VideoRequest, idempotency_key: str) -> TaskStatus:
        kind, body = await self._body(request, idempotency_key)
        self._key_kinds[idempotency_key] = kind
        try:
            data = await self._call("POST", f"/v1/videos/{kind}", body=body, submitting=True,
                                    model=body["model_name"])
        except RejectedError as exc:
            if not _is_duplicate(exc):
                raise
            log.info("kling: external_task_id %s already used; adopting that task",
                     idempotency_key)
            found = await self.find(idempotency_key)
            if found is None:
                raise
            return found
        return self._task(data, kind, submitting=True, key=idempotency_key)

    async def status(self, task_id: str) -> TaskStatus:
        known = self._kinds.get(task_id)
        missing: NotFoundError | None = None
        for kind in (known,) if known else KINDS:
            try:
                data = await self._call("GET", f"/v1/videos/{kind}/{quote(task_id, safe='')}")
            except NotFoundError as exc:
                missing = exc
                continue
            if not data:
                missing = NotFoundError(f"Kling has no task {task_id!r}", provider_code=1203)
                continue
            return self._task(data, kind)
        assert missing is not None
        raise missing

    async def find(self, idempotency_key: str) -> TaskStatus | None:
        first = self._key_kinds.get(idempotency_key, TEXT2VIDEO)
        for kind in sorted(KINDS, key=lambda k: k != first):
            try:
                data = await self._call("GET", f"/v1/videos/{kind}",
                                        params={"external_task_id": idempotency_key})
            except NotFoundError:
                continue
            candidates = data if isinstance(data, list) else [data] if data else []
            for item in candidates:
                if not isinstance(item, dict):
                    continue
                seen = (item.get("task_info") or {}).get("external_task_id")
                if seen in (None, idempotency_key):
                    return self._task(item, kind, key=idempotency_key)
        return None

    async def status_many(
        self, task_ids: Sequence[str], riders: Sequence[str] = ()
    ) -> Mapping[str, TaskStatus | ProviderError]:
        """Status of many tasks: list-endpoint pages first (cheaper), single GETs for the rest.

        ``riders`` are reported when they appear on a page fetched for ``task_ids``; no request
        is spent on them otherwise.
        """
        ids = list(dict.fromkeys(task_ids))
        extra = [t for t in dict.fromkeys(riders) if t not in set(ids)]
        out: dict[str, TaskStatus | ProviderError] = {}
        missing = set(ids)
        for kind in KINDS:
            wanted = {t for t in missing if self._kinds.get(t) in (kind, None)}
            along = {t for t in extra if t not in out and self._kinds.get(t) in (kind, None)}
            # pages worth fewer requests than the single GETs they replace (riders come free)
            budget = max(1 if wanted and along else 0, -(-len(wanted) // self._list_threshold))
            page = 1
            while wanted and len(wanted) + len(along) >= self._list_threshold and page <= min(budget, 1000):
                try:
                    data = await self._call("GET", f"/v1/videos/{kind}",
                                            params={"pageNum": page, "pageSize": self._page_size})
                except (NotFoundError, RejectedError):
                    break  # no usable list endpoint: single GETs below
                except ProviderError as exc:  # rate limited, auth, 5xx: report, don't pile on
                    out.update({t: exc for t in missing})
                    return {t: out[t] for t in ids}
                items = data if isinstance(data, list) else []
                for item in items:
                    task_id = item.get("task_id") if isinstance(item, dict) else None
                    if task_id in wanted or task_id in along:
                        try:
                            out[task_id] = self._task(item, kind)
                        except ProviderError:
                            continue
                        wanted.discard(task_id)
                        along.discard(task_id)
                        missing.discard(task_id)
                if len(items) < self._page_size:
                    break
                page += 1
        if missing:
            out.update(await self._status_each([t for t in ids if t in missing]))
        return {t: out[t] for t in [*ids, *extra] if t in out}

    async def _status_each(self, task_ids: list[str]) -> dict[str, TaskStatus | ProviderError]:
        gate = asyncio.Semaphore(4)

        async def one(task_id: str) -> TaskStatus | ProviderError:
            async with gate:
                try:
                    return await self.status(task_id)
                except ProviderError as exc:
                    return exc

        answers = await asyncio.gather(*(one(t) for t in task_ids))
        return dict(zip(task_ids, answers, strict=True))

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "base_url": self.base_url}

    async def aclose(self) -> None:
        client, self._client, self._client_loop = self._client, None, None
        if client is not None and not client.is_closed:
            await client.aclose()

    def __repr__(self) -> str:
        return (f"<KlingProvider base_url={self.base_url!r} "
                f"max_parallel={self.limits.max_parallel}>")

    # -- wire ----------------------------------------------------------------------------------

    async def _body(self, request: VideoRequest, key: str) -> tuple[str, dict[str, Any]]:
        spec = resolve_model(request.model)
        kind = IMAGE2VIDEO if (request.image or request.image_tail) else TEXT2VIDEO
        body: dict[str, Any] = {
            "model_name": spec.name if spec else request.model,
            "mode": request.mode,
            "duration": str(request.duration),
        }
        if kind == TEXT2VIDEO:
            body["aspect_ratio"] = request.aspect_ratio
        if request.prompt:
            body["prompt"] = request.prompt
        if request.negative_prompt:
            body["negative_prompt"] = request.negative_prompt
        if request.cfg_scale is not None:
            body["cfg_scale"] = request.cfg_scale
        if request.camera_control is not None:
            body["camera_control"] = request.camera_control
        for column in ("image", "image_tail"):
            value = getattr(request, column)
            if value:
                body[column] = await images.wire_value(column, value)
        if self.callback_url:
            body["callback_url"] = self.callback_url
        body["external_task_id"] = key
        return kind, body

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._client_loop is not loop:
            # A client is bound to the event loop it was made in; a new run may bring a new loop.
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=self._transport,
                headers={"User-Agent": "videobatch-kling", "Accept": "application/json"},
                limits=httpx.Limits(max_connections=max(10, 2 * self.limits.max_parallel)),
            )
            self._client_loop = loop
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        submitting: bool = False,
        model: str | None = None,
    ) -> Any:
        """One API request: the envelope's ``data`` on success, else the mapped ProviderError.

        The only retry here is a single token renewal after code 1004 (token expired).
        """
        renewed = False
        while True:
            headers = {"Authorization": f"Bearer {self._bearer(renew=renewed)}"}
            failure: ProviderError | None = None
            try:
                response = await self._http().request(method, path, json=body, params=params,
                                                      headers=headers)
            except httpx.TransportError as exc:
                failure = _transport_error(exc, method, path, submitting)
            if failure is not None:
                raise failure  # raised outside the except block: no chained request/headers
            envelope = _envelope(response)
            code = _code(envelope)
            log.debug("kling %s %s -> HTTP %s code %s", method, path, response.status_code, code)
            if response.is_success and envelope is not None and code == 0:
                return envelope.get("data")
            if code == 1004 and not renewed:
                renewed = True
                continue
            raise _map_error(response, envelope, code, submitting=submitting, model=model)

    def _task(self, data: Any, kind: str, *, submitting: bool = False,
              key: str | None = None) -> TaskStatus:
        if not isinstance(data, dict) or not data.get("task_id"):
            raise TransientError("Kling answered without a readable task object",
                                 maybe_accepted=submitting)
        task_id = str(data["task_id"])
        self._kinds[task_id] = kind
        raw = str(data.get("task_status") or "submitted")
        state = _STATES.get(raw, TaskState.RUNNING)
        created = _seconds(data.get("created_at"))
        videos: list[Video] = []
        for item in ((data.get("task_result") or {}).get("videos") or []):
            if isinstance(item, dict) and item.get("url"):
                videos.append(Video(url=str(item["url"]), id=_text(item.get("id")),
                                    duration=_float(item.get("duration"))))
        info = data.get("task_info") or {}
        return TaskStatus(
            task_id=task_id,
            state=state,
            videos=tuple(videos),
            message=_text(data.get("task_status_msg")) if state is TaskState.FAILED else None,
            created_at=created,
            finished_at=_seconds(data.get("updated_at")) if state.done else None,
            expires_at=created + RESULT_TTL if (created is not None and videos) else None,
            idempotency_key=_text(info.get("external_task_id") if isinstance(info, dict)
                                  else None) or key,
        )


# -- answer parsing and error mapping ------------------------------------------------------------


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) and "code" in data else None


def _code(envelope: dict[str, Any] | None) -> int | None:
    if envelope is None:
        return None
    try:
        return int(envelope["code"])
    except (TypeError, ValueError):
        return None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - _now())


def _map_error(response: httpx.Response, envelope: dict[str, Any] | None, code: int | None, *,
               submitting: bool, model: str | None) -> ProviderError:
    status = response.status_code
    said = str(envelope.get("message") or "").strip() if envelope else ""
    if envelope is None:
        snippet = " ".join(response.text[:120].split())
        said = f"HTTP {status}, unreadable answer" + (f": {snippet!r}" if snippet else "")
    where: dict[str, Any] = {"provider_code": code, "status_code": status}
    retry_after = _retry_after(response)
    if (code is not None and 1000 <= code <= 1004) or (code is None and status == 401):
        hint = " Check this machine's clock too." if code in (1003, 1004) else ""
        return AuthError(f"Kling refused the credentials ({said}). Check {ACCESS_ENV} and "
                         f"{SECRET_ENV} (or the access_key/secret_key options): both must be "
                         f"the same key pair from the Kling developer console.{hint}", **where)
    if code in (1100, 1101, 1102):
        return AccountError(f"Kling account cannot take new tasks ({said}): the balance or "
                            "resource pack is the problem. Top it up, then resume the run.",
                            **where)
    if code == 1304:
        return AccountError(f"Kling refused this machine's IP address ({said}): add it to the "
                            "API key's IP whitelist, then resume the run.", **where)
    if code == 1103:
        return RejectedError(f"Kling denied access to model {model or '?'} ({said}); choose a "
                             "model your account may use.", **where)
    if code in (1300, 1301):
        return RejectedError(f"Kling's content policy refused this prompt: {said}", **where)
    if code == 1302 or (code is None and status == 429):
        return RateLimited(f"Kling says requests come too fast ({said})",
                           retry_after=retry_after, **where)
    if code == 1303:
        return SlotsBusy(f"every Kling parallel-task slot is taken ({said})",
                         retry_after=max(1.0, retry_after or 1.0), **where)
    if code == 1203 or (code is None and status == 404):
        return NotFoundError(f"Kling has no such task ({said})", **where)
    if status >= 500 or (code is not None and code >= 5000) or (envelope is None and status < 400):
        return TransientError(f"Kling server trouble ({said})", retry_after=retry_after,
                              maybe_accepted=submitting, **where)
    return RejectedError(f"Kling rejected the request: {said}", **where)


def _transport_error(exc: httpx.TransportError, method: str, path: str,
                     submitting: bool) -> TransientError:
    unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout |
                        httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError)
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = str(exc) or type(exc).__name__
    return TransientError(
        f"Kling {method} {path} {what}: {detail}"
        + ("" if unsent else " (the request may have arrived)"),
        maybe_accepted=submitting and not unsent,
    )


def _is_duplicate(exc: ProviderError) -> bool:
    return exc.provider_code in (1200, 1201) and "external_task_id" in exc.message.lower()


def _seconds(ms: Any) -> float | None:
    value = _float(ms)
    return value / 1000.0 if value is not None else None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
