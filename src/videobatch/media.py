"""What kind of image some bytes are: the one sniffing rule every part shares (vocabulary).

Providers judge a row's image from its first bytes before sending it (Google sends the MIME type
with the bytes), and the service judges image bytes a client uploads the same way: only JPEG, PNG
and WebP are images here.
"""

from __future__ import annotations

__all__ = ["image_mime"]


def image_mime(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes (at least 12), or None when it is not a
    JPEG, PNG or WebP file."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
