"""Replicate: the provider (``client``), its wire format (``wire``), finding predictions in its list
(``listing``), options and model catalogue (``options``, ``models.toml``)."""

from .client import DEFAULT_BASE_URL, ReplicateProvider

__all__ = ["DEFAULT_BASE_URL", "ReplicateProvider"]
