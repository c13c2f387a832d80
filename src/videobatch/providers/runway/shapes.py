"""What Runway takes, judged before anything is paid: pixel sizes, prompt lengths and images.

Runway's ``ratio`` is a pixel size (``"1280:720"``), one of a per-model list (the catalogue's
``options.ratio.choices``). ``pick_ratio`` derives it from a row's neutral ``aspect_ratio`` (and
``resolution``, for models whose catalogue lists resolutions) by matching those choices: the size
whose W:H is within 3 % of the aspect ratio and whose pixel count is of the resolution's class
(≤ 0.5 Mpx 480p, ≤ 1.2 Mpx 720p, ≤ 2.5 Mpx 1080p, else 4k). A row may give ``ratio`` itself.

Images (``image``/``end_image``) go out as Runway reads them (docs/providers/runway.md §3.2): an
HTTPS URL on a domain name (≤ 2048 characters) or a ``runway://`` upload URI passed through, a
``data:image/...;base64,`` URI (≤ 5 MB) passed through, or a local JPEG/PNG/WebP file sent as such
a data URI. Anything else (http://, an IP address, GIF, too big, a missing file) is refused here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from ...catalog import ModelCard
from ...errors import RejectedError

__all__ = [
    "IMAGES_ALLOWED",
    "MAX_DATA_URI",
    "TEXT_RATIOS",
    "image_problem",
    "image_wire",
    "pick_ratio",
    "prompt_limit",
    "utf16_length",
]

# Text-to-video takes fewer sizes than image-to-video on these models (§7.1).
TEXT_RATIOS: dict[str, tuple[str, ...]] = {"gen4.5": ("1280:720", "720:1280")}
# Maximum promptText length in UTF-16 code units (§3.1); models not named: 1000, the smallest known.
_PROMPT_LIMITS = {"gen4.5": 1000, "veo3.1": 1000, "veo3.1_fast": 1000, "seedance2": 3500}
MAX_DATA_URI = 5 * 1024 * 1024
MAX_URL = 2048
IMAGES_ALLOWED = ("an https:// URL on a domain name (≤ 2048 characters), a runway:// URI, a "
                  "data:image/jpeg|png|webp;base64 URI of at most 5 MB, or such a local file")
_MIMES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
_TIERS = ((500_000, "480p"), (1_200_000, "720p"), (2_500_000, "1080p"))


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def prompt_limit(model: str | None) -> int:
    return _PROMPT_LIMITS.get(model or "", 1000)


def _size(ratio: str) -> tuple[int, int] | None:
    width, _, height = ratio.partition(":")
    return (int(width), int(height)) if width.isdigit() and height.isdigit() else None


def _aspect(text: str) -> float | None:
    width, sep, height = text.partition(":")
    try:
        return float(width) / float(height) if sep and float(height) > 0 else None
    except ValueError:
        return None


def tier(ratio: str) -> str | None:
    size = _size(ratio)
    if size is None:
        return None
    area = size[0] * size[1]
    return next((name for limit, name in _TIERS if area <= limit), "4k")


def pick_ratio(card: ModelCard, *, image: bool, aspect_ratio: str | None, resolution: str | None,
               given: str | None, aspect_given: bool) -> tuple[str | None, str | None]:
    """``(ratio, None)``: the pixel size to send; ``(None, why)``: the row cannot be sent.

    ``given``: the row's own ``ratio`` option (sent as is, but it must agree with an aspect ratio
    the row also gave); ``aspect_ratio``/``resolution``: the row's, defaults filled in.
    """
    spec = card.options.get("ratio")
    choices = tuple(str(c) for c in spec.choices) if spec is not None else ()
    if not image and card.id in TEXT_RATIOS:
        choices = tuple(c for c in choices if c in TEXT_RATIOS[card.id])
    mode = "image-to-video" if image else "text-to-video"
    if given is not None:
        if choices and given not in choices:
            return None, f"ratio {given} is not a size {card.id} takes for {mode} (it takes {', '.join(choices)})"
        want = _aspect(aspect_ratio or "") if aspect_given else None
        size = _size(given)
        if want is not None and size is not None and abs(size[0] / size[1] / want - 1) > 0.03:
            return None, f"ratio {given} does not have the aspect ratio {aspect_ratio} the row gives"
        return given, None
    if not choices:
        return None, None  # the model takes no ratio: none is sent
    want = _aspect(aspect_ratio or "")
    if want is None:
        return choices[0], None
    fits = [c for c in choices if (s := _size(c)) is not None and abs(s[0] / s[1] / want - 1) <= 0.03]
    if card.resolutions and resolution:
        fits = [c for c in fits if tier(c) == resolution]
    if fits:
        return fits[0], None
    at = f" at {resolution}" if card.resolutions and resolution else ""
    return None, (f"{card.id} has no {mode} size for aspect ratio {aspect_ratio}{at} "
                  f"(its sizes: {', '.join(f'{c} ({tier(c)})' for c in choices)})")


def _local(value: str) -> Path | None:
    try:
        path = Path(value).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None


def _mime(head: bytes) -> str | None:
    for magic, mime in _MIMES.items():
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_problem(value: str) -> str | None:
    """Why Runway would refuse this image value; None when it looks fine."""
    value = value.strip()
    lowered = value.lower()
    if lowered.startswith("runway://"):
        return None
    if lowered.startswith(("http://", "https://")):
        if not lowered.startswith("https://"):
            return "Runway takes only https:// image URLs"
        if len(value) > MAX_URL:
            return f"the image URL is {len(value)} characters long, Runway takes at most {MAX_URL}"
        host = urlsplit(value).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return None if host else "the image URL has no host"
        return "Runway takes image URLs on a domain name, not an IP address"
    if lowered.startswith("data:"):
        if len(value) > MAX_DATA_URI:
            return f"the data URI is {len(value) / 1024 / 1024:.1f} MB, Runway takes at most 5 MB"
        prefix, _, payload = value.partition(",")
        if prefix.lower() not in ("data:image/jpeg;base64", "data:image/png;base64", "data:image/webp;base64"):
            return "a data URI must be data:image/jpeg, png or webp;base64"
        try:
            base64.b64decode(payload[:4096 - 4096 % 4], validate=True)
        except (binascii.Error, ValueError):
            return "the data URI is not valid base64"
        return None
    path = _local(value)
    if path is None:
        return f"{value[:80]!r} is neither an https URL, a runway:// or data: URI, nor an existing file"
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError as exc:
        return f"file {value!r} cannot be read: {exc.strerror}"
    if _mime(head) is None:
        return f"file {value!r} is not a JPEG, PNG or WebP image (Runway takes no GIF)"
    encoded = 4 * -(-size // 3) + len("data:image/jpeg;base64,")
    if encoded > MAX_DATA_URI:
        return f"file {value!r} is {size / 1024 / 1024:.1f} MB, too big to send as a ≤ 5 MB data URI"
    return None


async def image_wire(column: str, value: str) -> str:
    """What goes on the wire for an image: the URL or URI as given, or a local file's data URI."""
    value = value.strip()
    if value.lower().startswith(("https://", "runway://", "data:")):
        return value
    path = _local(value)
    if path is None:
        raise RejectedError(f"{column} {value[:80]!r} is not an https URL, a URI or an existing file")
    try:
        content = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise RejectedError(f"{column} file {value!r} cannot be read: {exc.strerror}") from None
    mime = _mime(content[:16])
    if mime is None:
        raise RejectedError(f"{column} file {value!r} is not a JPEG, PNG or WebP image")
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"
