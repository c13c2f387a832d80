"""What a task costs on the Kling test server: the units deducted for it, as Kling reports them.

The server's own price table, from Kling's published prices (docs/providers/kling.md §2), not from
the client's catalogue, so a catalogue that misprices a model shows up as an actual cost that
differs from the estimate. Per-second models (kling-v3, kling-3.0, kling-3.0-turbo) cost units per
second of the requested duration by mode or resolution, sound and a specified voice; per-clip
models (kling-v2-6, kling-v2-5-turbo, kling-2.6) the 5 s or 10 s tier. A combination Kling
publishes no price for (kling-v2-6 std, kling-2.6 at 720p) reports no deduction at all.

A succeeded task carries the figure: ``final_unit_deduction`` on ``/v1`` (a string, "3" or "6.4",
as Kling's documentation types it: ``string``), ``billing: [{charge_type: "unit", amount}]`` in the
newer design's shape. A failed task reports none (Kling does not say what it charges for one).
``SimConfig.deduction_scale`` multiplies every figure, so a test can make the actual cost differ
from the catalogue's estimate (Kling bills what it bills).
"""

from __future__ import annotations

from typing import Any

__all__ = ["per_task", "text"]

# model -> {(mode or resolution, sound, voice): units per second}
_PER_SECOND: dict[str, dict[tuple[str, bool, bool], float]] = {
    "kling-v3": {("std", False, False): 0.6, ("std", True, False): 0.9, ("std", True, True): 1.1,
                 ("pro", False, False): 0.8, ("pro", True, False): 1.2, ("pro", True, True): 1.4},
    "kling-3.0": {("720p", False, False): 0.6, ("720p", True, False): 0.9,
                  ("1080p", False, False): 0.8, ("1080p", True, False): 1.2,
                  ("4k", False, False): 3.0, ("4k", True, False): 3.0},
    "kling-3.0-turbo": {("720p", False, False): 0.8, ("1080p", False, False): 1.0},
}
# model -> {(mode or resolution, sound, voice): {seconds: units}}
_PER_CLIP: dict[str, dict[tuple[str, bool, bool], dict[int, float]]] = {
    "kling-v2-6": {("pro", False, False): {5: 2.5, 10: 5.0}, ("pro", True, False): {5: 5.0, 10: 10.0},
                   ("pro", True, True): {5: 6.0, 10: 12.0}},
    "kling-v2-5-turbo": {("pro", False, False): {5: 2.5, 10: 5.0},
                         ("std", False, False): {5: 1.5, 10: 3.0}},
    "kling-2.6": {("1080p", False, False): {5: 2.5, 10: 5.0}, ("1080p", True, False): {5: 5.0, 10: 10.0}},
}


def _terms(design: str, body: dict[str, Any]) -> tuple[str, bool, bool, int]:
    """(mode or resolution, sound, voice, seconds) of a create body of ``design``."""
    if design == "newer":
        raw = body.get("settings")
        settings: dict[str, Any] = raw if isinstance(raw, dict) else {}
        return (str(settings.get("resolution", "720p")), settings.get("audio") == "native", False,
                int(settings.get("duration", 5)))
    sound = body.get("sound") == "on"
    return (str(body.get("mode", "std")), sound, sound and bool(body.get("voice_list")),
            int(body.get("duration", "5")))


def per_task(design: str, model: str, body: dict[str, Any], scale: float = 1.0) -> float | None:
    """Units Kling deducts for a task of ``model`` created with ``body`` (None: no price known)."""
    tier, sound, voice, seconds = _terms(design, body)
    if model in _PER_SECOND:
        rate = _PER_SECOND[model].get((tier, sound, voice))
        units = None if rate is None else rate * seconds
    else:
        units = _PER_CLIP.get(model, {}).get((tier, sound, voice), {}).get(seconds)
    return None if units is None else round(units * scale, 4)


def text(units: float) -> str:
    """Units as Kling writes them: a string, ``"3"``, ``"6.4"``."""
    return f"{units:g}"
