"""Kling AI: the provider (``client``), its image rules (``images``); the model catalogue is ``videobatch.models``."""

from .client import DEFAULT_BASE_URL, KlingProvider

__all__ = ["DEFAULT_BASE_URL", "KlingProvider"]
