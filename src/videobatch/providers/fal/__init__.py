"""fal.ai: the provider (``client``), its wire format (``wire``), the listing that finds lost
submits (``listing``), options and model catalogue (``options``, ``models.toml``)."""

from .client import DEFAULT_API_URL, DEFAULT_BASE_URL, FalProvider

__all__ = ["DEFAULT_API_URL", "DEFAULT_BASE_URL", "FalProvider"]
