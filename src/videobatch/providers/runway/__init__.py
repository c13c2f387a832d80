"""Runway's developer API: the provider (``client``), its wire format (``wire``), what it takes
(``shapes``: pixel sizes, prompts, images), options and model catalogue (``options``,
``models.toml``)."""

from .client import DEFAULT_BASE_URL, RunwayProvider

__all__ = ["DEFAULT_BASE_URL", "RunwayProvider"]
