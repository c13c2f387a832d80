"""Replicate's own parameters: the typed schema of its options and where its model catalogue lives.

Each option is named after the model input it becomes (``mode``, ``camera_fixed``,
``prompt_optimizer``, ...): ``wire`` copies it into the prediction's ``input`` as it is. Which model
takes which option and value is the catalogue's business (``models.toml`` beside this file,
extendable by users); this schema only types what a row gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODELS_FILE", "ReplicateOptions"]

MODELS_FILE = Path(__file__).with_name("models.toml")


class ReplicateOptions(BaseModel):
    """Replicate's options, as columns of the prompts table (or ``-O name=value`` run-wide)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: str | None = Field(default=None, description="Kling: standard/pro (v3) or std/pro (o1)")
    multi_prompt: str | None = Field(default=None, description="Kling v3: JSON array of shots")
    reference_images: list[str] | None = Field(default=None, description="image URLs (Veo 3.1, Seedance 2, Kling o1)")
    cfg_scale: float | None = Field(default=None, ge=0.0, le=1.0, description="Kling v2.0")
    camera_fixed: bool | None = Field(default=None, description="Seedance: keep the camera still")
    fps: int | None = Field(default=None, ge=1, description="Seedance 1 pro: frames per second")
    prompt_optimizer: bool | None = Field(default=None, description="Hailuo: let it rewrite the prompt")
    enable_prompt_expansion: bool | None = Field(default=None, description="Wan: let it expand the prompt")
    loop: bool | None = Field(default=None, description="Luma Ray: end where it starts")
    concepts: list[str] | None = Field(default=None, description="Luma Ray: camera moves")
    effect: str | None = Field(default=None, description="PixVerse: an effect name")

    @field_validator("mode", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("multi_prompt", mode="before")
    @classmethod
    def _json_string(cls, v: Any) -> Any:
        """Replicate takes the shots as a JSON *string*; a list given from Python is written so."""
        if isinstance(v, list):
            return json.dumps(v)
        if isinstance(v, str):
            try:
                shots = json.loads(v)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON array, e.g. [{"prompt": "...", "duration": 5}]') from None
            if not isinstance(shots, list):
                raise ValueError('must be a JSON array, e.g. [{"prompt": "...", "duration": 5}]')
        return v

    @field_validator("reference_images", "concepts", mode="before")
    @classmethod
    def _list_text(cls, v: Any) -> Any:
        """A table cell holds a JSON array (``["https://…"]``) or comma-separated values."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError('must be a JSON array, e.g. ["https://…"]') from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return v
