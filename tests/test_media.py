"""The one image-sniffing rule (``videobatch.media``), shared by the Google provider and the service."""

from __future__ import annotations

import asyncio
import base64

import pytest

from videobatch.media import image_mime
from videobatch.providers.google import media as google_media
from videobatch.service.images import ImageRules

HEADS = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "image/webp": b"RIFF\x24\x00\x00\x00WEBPVP8 ",
    None: b"GIF89a\x01\x00\x01\x00\x00\x00",
}


@pytest.mark.parametrize("mime", list(HEADS), ids=[str(m) for m in HEADS])
def test_both_users_judge_bytes_alike(mime):
    data = HEADS[mime] + b"\x00" * 32
    assert image_mime(data) == mime
    encoded = base64.b64encode(data).decode()
    google = google_media.image_problem(encoded)
    stored, why = asyncio.run(ImageRules().accepted(encoded))
    if mime is None:
        assert google and why and "JPEG, PNG or WebP" in google and "JPEG, PNG or WebP" in why
    else:
        assert google is None and stored == f"data:{mime};base64,{encoded}"
    assert image_mime(b"RIFF\x00\x00\x00\x00WAVE") is None and image_mime(b"") is None
