"""Kling AI: the provider (``client``), its wire format (``wire``), image rules (``images``), options
and model catalogue (``options``, ``models.toml``)."""

from .client import DEFAULT_BASE_URL, KlingProvider

__all__ = ["DEFAULT_BASE_URL", "KlingProvider"]
