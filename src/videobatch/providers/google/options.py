"""Google's own parameters: the typed schema of its options and where its model catalogue lives.

Which model takes which option is the catalogue's business (``models.toml`` beside this file,
extendable by users); this schema only types the values a row gives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MODELS_FILE", "GoogleOptions"]

MODELS_FILE = Path(__file__).with_name("models.toml")


class GoogleOptions(BaseModel):
    """Google's options, as columns of the prompts table (or ``-O name=value`` run-wide)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, str] | None = Field(
        default=None, description='billing labels sent with the interaction, e.g. {"team": "promo"}')

    @field_validator("labels", mode="before")
    @classmethod
    def _json_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return json.loads(v)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON object of strings, e.g. {"team": "promo"}') from None
        return v
