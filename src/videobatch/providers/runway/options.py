"""Runway's own parameters: the typed schema of its options and where its model catalogue lives.

Which model takes which option and value is the catalogue's business (``models.toml`` beside this
file, extendable by users): there ``options.ratio`` lists each model's pixel sizes, the strings
Runway's ``ratio`` field takes. This schema only types what a row gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODELS_FILE", "RunwayOptions"]

MODELS_FILE = Path(__file__).with_name("models.toml")


class RunwayOptions(BaseModel):
    """Runway's options, as columns of the prompts table (or ``-O name=value`` run-wide)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: str | None = Field(
        default=None,
        description="Runway's pixel size W:H (e.g. 1280:720), sent as is; by default it is "
                    "derived from aspect_ratio and resolution")
    public_figure_threshold: str | None = Field(
        default=None, description="contentModeration.publicFigureThreshold: auto or low")

    @field_validator("ratio", mode="before")
    @classmethod
    def _pixels(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip().replace("x", ":").replace("X", ":")
            width, sep, height = v.partition(":")
            if not (sep and width.isdigit() and height.isdigit()):
                raise ValueError("must be a pixel size W:H such as 1280:720")
        return v

    @field_validator("public_figure_threshold", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v
