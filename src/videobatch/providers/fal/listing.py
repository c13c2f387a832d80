"""Finding a fal request whose submit answer was lost, in the Platform API's request listing.

fal keeps no key of ours and has no lookup: the only way back to a request whose ``request_id`` never
reached us is ``GET {api}/models/requests/by-endpoint?endpoint_id=..&start=..&expand=payloads``,
which lists an endpoint's requests with their JSON input (when fal stored payloads, its default).
A listed request is matched to a row by its inputs: same endpoint, every field we would send equal
in its ``json_input``, sent no earlier than the row's window. It is adopted only when exactly one
listed request matches the row and that request matches no other row (two rows with the same
inputs are a tie: neither is adopted, so neither can be paid twice).

What this module assumes where the contract is *unsure*:

* **Only finished requests may be listed** (the fields ``ended_at`` / ``status_code`` and the status
  filter suggest it). So a scan never proves a row has no request (``complete`` is always False): a
  request still queued would not show. Such a row's outcome stays unknown until a later scan (every
  resume) finds it, or the user resubmits it. A listed request without ``ended_at`` is read as
  still running and polled.
* **The listing gives no status/response URLs**: an adopted request's URLs are built by fal's
  documented rule (owner/app of the endpoint id), the one place videobatch builds them.
* Clocks differ: the window reaches ``CLOCK_SLACK`` seconds further back than asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ...errors import TransientError
from ..base import TaskState, TaskStatus, Video
from .wire import URL_TTL, TaskRef, error_of

__all__ = ["CLOCK_SLACK", "MAX_ENDPOINTS", "PAGE_LIMIT", "item_status", "list_requests", "match"]

CLOCK_SLACK = 120.0  # seconds the window reaches back beyond ``since``
PAGE_LIMIT = 100  # fal's largest page
MAX_ENDPOINTS = 50  # endpoint ids one listing call may name

Fetch = Callable[[list[tuple[str, str]]], Awaitable[Any]]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def list_requests(fetch: Fetch, endpoints: list[str], since: float, *,
                        max_pages: int) -> list[dict[str, Any]]:
    """Every listed request of ``endpoints`` sent since ``since`` (less the slack), at most
    ``max_pages`` pages per group of endpoints. Raises what ``fetch`` raises."""
    found: list[dict[str, Any]] = []
    for first in range(0, len(endpoints), MAX_ENDPOINTS):
        group = endpoints[first:first + MAX_ENDPOINTS]
        cursor: str | None = None
        for _ in range(max_pages):
            params = [("endpoint_id", e) for e in group]
            params += [("start", iso(since - CLOCK_SLACK)), ("expand", "payloads"),
                       ("limit", str(PAGE_LIMIT))]
            if cursor:
                params.append(("cursor", cursor))
            data = await fetch(params)
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise TransientError("fal answered the request listing without an items list",
                                     maybe_accepted=False)
            found += [i for i in items if isinstance(i, dict) and i.get("request_id")]
            cursor = data.get("next_cursor") if data.get("has_more") else None
            if not cursor:
                break
    return found


def match(wanted: Mapping[str, tuple[str, dict[str, Any]]], items: list[dict[str, Any]],
          since: float) -> dict[str, dict[str, Any]]:
    """Key -> the one listed request matching it one-to-one. ``wanted``: key -> (endpoint, body)."""
    floor = since - CLOCK_SLACK
    by_key: dict[str, list[str]] = {}
    by_item: dict[str, list[str]] = {}
    listed = {str(i["request_id"]): i for i in items}
    for key, (endpoint, body) in wanted.items():
        for request_id, item in listed.items():
            sent = epoch(item.get("sent_at"))
            given = item.get("json_input")
            if item.get("endpoint_id") != endpoint or not isinstance(given, dict):
                continue
            if sent is not None and sent < floor:
                continue
            if all(k in given and given[k] == v for k, v in body.items()):
                by_key.setdefault(key, []).append(request_id)
                by_item.setdefault(request_id, []).append(key)
    return {key: listed[ids[0]] for key, ids in by_key.items()
            if len(ids) == 1 and len(by_item[ids[0]]) == 1}


def item_status(item: dict[str, Any], queue_url: str) -> TaskStatus:
    """A listed request as a TaskStatus (its URLs by the owner/app rule)."""
    ref = TaskRef.from_endpoint(queue_url, str(item.get("endpoint_id") or ""), str(item["request_id"]))
    task_id = ref.encode()
    created = epoch(item.get("sent_at"))
    ended = epoch(item.get("ended_at"))
    code = item.get("status_code")
    if ended is None or not isinstance(code, int):
        return TaskStatus(task_id, TaskState.RUNNING, created_at=created)
    output = item.get("json_output")
    if 200 <= code < 300:
        video = output.get("video") if isinstance(output, dict) else None
        url = video.get("url") if isinstance(video, dict) else None
        if not url:  # payloads not stored: the result endpoint still has it (while fal keeps it)
            return TaskStatus(task_id, TaskState.RUNNING, created_at=created)
        return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(Video(url=str(url), id=ref.request_id),),
                          created_at=created, finished_at=ended, expires_at=ended + URL_TTL)
    said = error_of(output) or f"HTTP {code}"
    if "content_policy_violation" in said:
        said = f"fal's content policy refused it: {said}"
    return TaskStatus(task_id, TaskState.FAILED, message=said, created_at=created, finished_at=ended)
