"""Google (Gemini API): Gemini Omni Flash video through the Interactions API. The provider
(``client``), its wire format (``wire``), images and kept videos (``media``), options and model
catalogue (``options``, ``models.toml``)."""

from .client import DEFAULT_BASE_URL, GoogleProvider

__all__ = ["DEFAULT_BASE_URL", "GoogleProvider"]
