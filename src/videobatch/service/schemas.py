"""The gateway's HTTP bodies: what clients send and get back, with their limits (the OpenAPI spec).

Request bodies are checked in steps: here, their shape (unknown fields, text that is not valid
Unicode, a webhook URL that is not http(s)); then, in the routes, the service's limits
(``service.limits``: prompt length, metadata size, rows per batch), its image and address rules
(``service.images``, ``service.addresses``) and the library's own rules for rows
(``videobatch.request`` / ``load_prompts``), whose problems are answered by ``problems_response``
(422, every problem listed, by row for batches, never the input itself).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import Problem
from .limits import short_problems, unencodable

__all__ = [
    "BatchCounts",
    "BatchCreate",
    "BatchCreated",
    "VideoCreate",
    "VideoCreated",
    "VideoStatus",
    "check_webhook_url",
    "problems_response",
    "row_problems",
]


def _url_problem(url: str | None) -> str | None:
    try:
        parts = urlsplit(url or "")
    except ValueError:  # e.g. "http://[not-an-address]/"
        parts = urlsplit("")
    if url and (parts.scheme not in ("http", "https") or not parts.hostname):
        return "a webhook URL must start with http:// or https:// and name a host"
    return None


def check_webhook_url(value: str | None) -> str | None:
    """A webhook URL as given (blank: None), or ValueError saying what an acceptable one is."""
    value = (value or "").strip() or None
    problem = _url_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _valid_text(data: Any) -> Any:
    """Refuse text that cannot be stored as UTF-8 (a lone surrogate such as ``\\ud800``)."""
    where = unencodable(data)
    if where:
        raise ValueError(f"text at {where} is not valid Unicode (a lone surrogate); send UTF-8 text")
    return data


class VideoCreate(BaseModel):
    """One video request (the seed's fields plus the library's request fields)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field("", description="at most VIDEOBATCH_SERVICE_MAX_PROMPT_CHARS (2500) characters")
    negative_prompt: str | None = None
    model: str | None = Field(None, description="model name or alias, e.g. kling-v2-6")
    duration: int | None = Field(None, description="seconds (what the model takes)")
    aspect_ratio: str | None = None
    resolution: str | None = None
    seed: int | None = None
    audio: bool | None = None
    image: str | None = Field(None, description="an http(s) URL, a data:image/...;base64 URL or base64 "
                              "of a JPEG/PNG/WebP, or a file in the service's image folder")
    end_image: str | None = None
    options: dict[str, Any] | None = Field(None, description="the provider's own options, e.g. {\"mode\": \"pro\"}")
    # Spellings of the first release, still accepted: Kling's options and the end image.
    mode: str | None = None
    cfg_scale: float | None = None
    image_tail: str | None = None
    camera_control: dict[str, Any] | None = None
    webhook_url: str | None = Field(None, max_length=2048)
    metadata: dict[str, Any] | None = Field(None, description="at most VIDEOBATCH_SERVICE_MAX_METADATA_BYTES "
                                            "(16 KB) as JSON")

    _check_url = field_validator("webhook_url")(check_webhook_url)
    _check_text = model_validator(mode="before")(_valid_text)


class VideoCreated(BaseModel):
    request_id: str
    status: str
    message: str


class VideoStatus(BaseModel):
    request_id: str
    status: str
    video_url: str | None = None
    error: str | None = None
    error_kind: str | None = None
    task_id: str | None = None
    attempts: int = 0
    batch_id: str | None = None
    row_key: str | None = None
    created_at: float | None = None
    submitted_at: float | None = None
    completed_at: float | None = None
    expires_at: float | None = None
    cost_estimated: float | None = Field(None, description="USD: the estimate of its latest submission "
                                         "(the provider's catalogue price)")
    cost_actual: float | None = Field(None, description="USD: what the provider says its latest task "
                                      "cost, where it says (Kling does)")
    cost_units: float | None = Field(None, description="the same in the provider's own units, as it "
                                     "reported them (Kling: final_unit_deduction)")
    cost_spent: float | None = Field(None, description="USD: what all its submissions have or may have "
                                     "cost, actual where reported, else estimated")
    request: dict[str, Any] | None = Field(None, description="the validated request as given (model "
                                           "aliases resolved; the model's defaults apply when sent)")
    webhook_url: str | None = None
    webhook_status: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(min_length=1, description="at most VIDEOBATCH_SERVICE_MAX_ROWS "
                                       "(10,000) rows")
    defaults: dict[str, Any] | None = None
    webhook_url: str | None = Field(None, max_length=2048)

    _check_url = field_validator("webhook_url")(check_webhook_url)
    _check_text = model_validator(mode="before")(_valid_text)


class BatchCreated(BaseModel):
    batch_id: str
    total: int
    request_ids: list[str]


class BatchCounts(BaseModel):
    batch_id: str
    total: int
    counts: dict[str, int]
    done: bool
    spent: float = Field(0.0, description="USD its rows have cost or may have cost (actual where the "
                         "provider reported it, else estimated)")
    reserved: float = Field(0.0, description="USD estimated for submits whose answer has not come yet")


def problems_response(problems: list[dict[str, Any]]) -> JSONResponse:
    """The 422 answer listing the problems found (short: never the input itself)."""
    return JSONResponse(status_code=422, content={"detail": short_problems(problems)})


def row_problems(problems: list[Problem]) -> list[dict[str, Any]]:
    """The library's row problems as 422 entries, in row order."""
    return [{"row": p.row, "line": p.line, "column": p.column, "msg": p.message,
             "allowed": p.allowed} for p in sorted(problems, key=lambda p: (p.row or 0, p.column or ""))]
