"""What kind of image some bytes are: the one sniffing rule every part shares (vocabulary).

Providers judge a row's image from its first bytes before sending it (Google sends the MIME type
with the bytes), and the service judges image bytes a client uploads the same way: only JPEG, PNG
and WebP are taken there (``image_mime``). The check before paying knows more formats
(``image_type``): a provider that takes fewer still refuses the others in its own check.
"""

from __future__ import annotations

__all__ = ["WEB_IMAGES", "image_mime", "image_type"]

WEB_IMAGES = frozenset({"image/jpeg", "image/png", "image/webp"})  # what providers and the service take


def image_type(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes (at least 16): JPEG, PNG, WebP, GIF, BMP,
    TIFF, AVIF or HEIC; None when it is none of them."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:2] == b"BM" and len(head) >= 14:
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heif"):
            return "image/heic"
    return None


def image_mime(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes (at least 12), or None when it is not a
    JPEG, PNG or WebP file (``WEB_IMAGES``)."""
    kind = image_type(head)
    return kind if kind in WEB_IMAGES else None
