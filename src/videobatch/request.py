"""The provider-neutral request one row asks for, validated with pydantic.

Every provider receives a ``VideoRequest``; how it is put on the wire is the provider's business.
Errors raised here carry an ``allowed`` hint (in the pydantic error context) that the input
validation shows next to the problem.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .models import DEFAULT_MODEL, known_models, resolve_model

__all__ = ["REQUEST_FIELDS", "VideoRequest", "request_errors"]


def _not_allowed(value: Any, allowed: str, what: str) -> PydanticCustomError:
    return PydanticCustomError(
        "not_allowed", "{what} {value} is not allowed", {"what": what, "value": repr(value),
                                                         "allowed": allowed}
    )


class VideoRequest(BaseModel):
    """What to generate for one row. Field names are the optional columns of the prompts table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = ""
    negative_prompt: str | None = None
    model: str = DEFAULT_MODEL
    duration: int = 5
    aspect_ratio: str = "16:9"
    mode: str = "std"
    cfg_scale: float | None = None
    image: str | None = None
    image_tail: str | None = None
    camera_control: dict[str, Any] | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_text(cls, v: Any) -> Any:
        if v is None:
            return ""
        if isinstance(v, float) and math.isnan(v):
            return ""
        return v.strip() if isinstance(v, str) else v

    @field_validator("model", mode="before")
    @classmethod
    def _known_model(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        spec = resolve_model(v)
        if spec is None:
            raise _not_allowed(v, ", ".join(known_models()), "model")
        return spec.name

    @field_validator("duration", mode="before")
    @classmethod
    def _whole_seconds(cls, v: Any) -> Any:
        # CSV cells arrive as "5", 5.0 or "5s"; all mean 5 seconds.
        if isinstance(v, str):
            v = v.strip().removesuffix("s").strip()
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise PydanticCustomError(
                "duration", "duration must be a whole number of seconds, got {value}",
                {"value": repr(v), "allowed": "5 or 10"},
            ) from None
        if not f.is_integer():
            raise PydanticCustomError(
                "duration", "duration must be a whole number of seconds, got {value}",
                {"value": repr(v), "allowed": "5 or 10"},
            )
        return int(f)

    @field_validator("camera_control", mode="before")
    @classmethod
    def _json_object(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise PydanticCustomError(
                    "json", "camera_control must be a JSON object",
                    {"allowed": '{"type": "simple", "config": {"zoom": 5}}'},
                ) from None
        return v

    @field_validator("cfg_scale")
    @classmethod
    def _unit_interval(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise _not_allowed(v, "a number from 0 to 1", "cfg_scale")
        return v

    @model_validator(mode="after")
    def _fits_model(self) -> VideoRequest:
        """Every cross-field problem of the row at once (one error per problem, ``many`` if several)."""
        spec = resolve_model(self.model)
        assert spec is not None  # checked by the field validator
        found: list[dict[str, str]] = []
        if not self.prompt and not self.image:
            found.append({"field": "prompt", "message": "prompt is empty",
                          "allowed": "any non-empty text (or an image for image-to-video)"})
        checks: list[tuple[str, Any, tuple[Any, ...]]] = [
            ("duration", self.duration, spec.durations),
            ("aspect_ratio", self.aspect_ratio, spec.aspect_ratios),
            ("mode", self.mode, spec.modes),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                found.append({"field": name,
                              "message": f"{name} {value!r} is not allowed for model {spec.name}",
                              "allowed": ", ".join(map(str, allowed))})
        if self.cfg_scale is not None and not spec.cfg_scale:
            found.append({"field": "cfg_scale", "message": f"model {spec.name} does not accept cfg_scale",
                          "allowed": "leave cfg_scale empty, or choose kling-v1/v1-5/v1-6"})
        if self.camera_control is not None and not spec.camera_control:
            found.append({"field": "camera_control",
                          "message": f"model {spec.name} does not accept camera_control",
                          "allowed": "kling-v1"})
        if len(found) == 1:
            one = found[0]
            raise PydanticCustomError("not_allowed", one["message"].replace("{", "{{").replace("}", "}}"),
                                      {"allowed": one["allowed"], "field": one["field"]})
        if found:
            raise PydanticCustomError("many", "{count} problems", {"count": len(found), "problems": found})
        return self

    def summary(self, width: int = 60) -> str:
        """A one-line description for dry runs and logs."""
        text = self.prompt if len(self.prompt) <= width else self.prompt[: width - 1] + "…"
        extra = " +image" if self.image else ""
        return f"{self.model} {self.mode} {self.duration}s {self.aspect_ratio}{extra}: {text}"


REQUEST_FIELDS: tuple[str, ...] = tuple(VideoRequest.model_fields)


def request_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """``exc.errors()`` with a row's several cross-field problems (type ``many``) spelled out one by
    one, each shaped like a pydantic error: ``loc`` (the field), ``msg``, ``ctx['allowed']``."""
    out: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False):
        if error["type"] != "many":
            out.append(dict(error))
            continue
        for one in error["ctx"]["problems"]:
            out.append({"type": "not_allowed", "loc": (), "msg": one["message"], "input": None,
                        "ctx": {"allowed": one["allowed"], "field": one["field"]}})
    return out
