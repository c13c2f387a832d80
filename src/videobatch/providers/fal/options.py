"""fal's own parameters: the typed schema of its options and where its model catalogue lives.

fal hosts many models, each with its own input schema; which endpoint takes which option and value
is the catalogue's business (``models.toml`` beside this file, extendable by users). This schema
only types the values a row gives, so they reach the wire as fal's model inputs read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODELS_FILE", "FalOptions"]

MODELS_FILE = Path(__file__).with_name("models.toml")


class FalOptions(BaseModel):
    """Model inputs some fal endpoints take besides the shared fields (columns of the prompts
    table, or ``-O name=value`` run-wide). Each is sent under its own name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cfg_scale: float | None = Field(default=None, ge=0.0, le=1.0, description="Kling: prompt adherence")
    shot_type: str | None = Field(default=None, description="Kling v3/o3: customize or intelligent")
    auto_fix: bool | None = Field(default=None, description="Veo 3.1: rewrite a blocked prompt")
    safety_tolerance: str | None = Field(default=None, description='Veo 3.1: "1" (strict) to "6"')
    enable_prompt_expansion: bool | None = Field(default=None, description="Wan: expand the prompt")
    enable_safety_checker: bool | None = Field(default=None, description="Wan: safety checker")
    prompt_optimizer: bool | None = Field(default=None, description="MiniMax Hailuo: optimise the prompt")
    fps: int | None = Field(default=None, description="LTX 2.3: frames per second")
    bitrate_mode: str | None = Field(default=None, description="Seedance 2.0: standard or high")

    @field_validator("shot_type", "bitrate_mode", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("safety_tolerance", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return str(v).strip() if isinstance(v, int | str) else v
