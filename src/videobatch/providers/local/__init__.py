"""The offline provider ``local``: a simulated account on disk (``provider``) that renders real MP4s (``render``)."""

from .provider import LocalProvider

__all__ = ["LocalProvider"]
