"""Kling's own parameters: the typed schema of its options and where its model catalogue lives.

Which model takes which option and value (``mode`` std/pro, ``voice_list`` only with audio, ...) is
the catalogue's business (``models.toml`` beside this file, extendable by users); this schema only
types the values a row gives, so they reach the wire as Kling reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODELS_FILE", "KlingOptions"]

MODELS_FILE = Path(__file__).with_name("models.toml")


class KlingOptions(BaseModel):
    """Kling's options, as columns of the prompts table (or ``-O name=value`` run-wide)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str | None = Field(default=None, description="std (720p) or pro (1080p); the model's default otherwise")
    voice_list: list[dict[str, str]] | None = Field(default=None, max_length=2, description='[{"voice_id": "..."}]')
    watermark: bool | None = Field(default=None, description="ask Kling for a watermarked copy too")
    # Which of Kling's two API designs a model is sent to: each card's catalogue entry says
    # (``legacy``: /v1 with model_name; ``newer``: the model in the path, settings/options body).
    api: str | None = Field(default=None, description="legacy (/v1) or newer (model in the path)")
    multi_shot: bool | None = Field(default=None, description="newer design: split a prompt "
                                    "written as 'shot 1, ...; shot 2, ...' into shots")
    # Options of the retired v1 family, kept so their old rows read (their models are refused).
    cfg_scale: float | None = Field(default=None, ge=0.0, le=1.0)
    camera_control: dict[str, Any] | None = None

    @field_validator("mode", "api", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("voice_list", "camera_control", mode="before")
    @classmethod
    def _json_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise ValueError("must be JSON, e.g. [{\"voice_id\": \"...\"}]") from None
        return v
