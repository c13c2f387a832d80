"""The models the Replicate-compatible test server knows, and what inputs each takes.

From the doc's section 7 (``docs/providers/replicate.md``), not from the client's catalogue, so a
misread catalogue shows up as a refusal: input names, the enum values and ranges the doc gives; a
value it leaves open is any string. Unknown input keys are refused: the doc is unsure whether
Replicate ignores them, and refusing catches a client that misnames a field.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODELS", "NEEDS_IMAGE", "fits"]

S, B, U, L, N = "text", "bool", "url", "list", "number"
_K3 = ("16:9", "9:16", "1:1")
_VEO = {"prompt": S, "aspect_ratio": ("16:9", "9:16"), "duration": (4, 6, 8), "image": U, "last_frame": U,
        "negative_prompt": S, "resolution": ("720p", "1080p"), "generate_audio": B, "seed": "int"}
_SEEDANCE_2 = {"prompt": S, "image": U, "last_frame_image": U, "reference_images": L, "reference_videos": L,
               "reference_audios": L, "duration": range(-1, 16), "resolution": S, "aspect_ratio": S,
               "generate_audio": B, "seed": "int"}
_LUMA = {"prompt": S, "duration": (5, 9), "aspect_ratio": S, "loop": B, "concepts": L, "start_image": U,
         "end_image": U, "start_image_url": U, "end_image_url": U}
# model -> input name -> what it takes: a tuple (one of), a range (whole numbers), or a kind.
MODELS: dict[str, dict[str, Any]] = {
    "kwaivgi/kling-v3-video": {"prompt": S, "negative_prompt": S, "start_image": U, "end_image": U,
                               "mode": ("standard", "pro"), "aspect_ratio": _K3, "duration": range(3, 16),
                               "generate_audio": B, "multi_prompt": S},
    "kwaivgi/kling-o1": {"prompt": S, "start_image": U, "end_image": U, "reference_images": L,
                         "reference_video": U, "video_reference_type": ("feature", "base"),
                         "keep_original_sound": B, "mode": ("pro", "std"), "aspect_ratio": S,
                         "duration": range(3, 11)},
    "kwaivgi/kling-v2.6": {"prompt": S, "negative_prompt": S, "start_image": U, "aspect_ratio": _K3,
                           "duration": (5, 10), "generate_audio": B},
    "kwaivgi/kling-v2.5-turbo-pro": {"prompt": S, "negative_prompt": S, "start_image": U, "image": U,
                                     "aspect_ratio": _K3, "duration": (5, 10), "guidance_scale": N},
    "kwaivgi/kling-v2.0": {"prompt": S, "aspect_ratio": S, "cfg_scale": N, "duration": (5, 10),
                           "start_image": U},
    "google/veo-3.1": {**_VEO, "reference_images": L},
    "google/veo-3.1-fast": _VEO,
    "openai/sora-2": {"prompt": S, "seconds": range(4, 13), "aspect_ratio": ("portrait", "landscape"),
                      "input_reference": U, "openai_api_key": S},
    "openai/sora-2-pro": {"prompt": S, "seconds": range(4, 21), "aspect_ratio": ("portrait", "landscape"),
                          "input_reference": U, "openai_api_key": S, "resolution": ("standard", "high")},
    "bytedance/seedance-2.0": _SEEDANCE_2,
    "bytedance/seedance-2.0-fast": _SEEDANCE_2,
    "bytedance/seedance-1.5-pro": {"prompt": S, "image": U, "duration": range(4, 13),
                                   "resolution": ("480p", "720p", "1080p"), "generate_audio": B,
                                   "camera_fixed": B},
    "bytedance/seedance-1-pro": {"prompt": S, "image": U, "last_frame_image": U, "duration": range(2, 13),
                                 "resolution": ("480p", "720p", "1080p"),
                                 "aspect_ratio": ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "9:21"),
                                 "fps": "int", "camera_fixed": B, "seed": "int"},
    "minimax/hailuo-02": {"prompt": S, "first_frame_image": U, "last_frame_image": U, "duration": (6, 10),
                          "resolution": ("512p", "768p", "1080p"), "prompt_optimizer": B},
    "wan-video/wan-2.5-t2v": {"prompt": S, "negative_prompt": S, "size": S, "resolution": S,
                              "duration": (5, 10), "audio": U, "enable_prompt_expansion": B, "seed": "int"},
    "wan-video/wan-2.5-i2v": {"image": U, "prompt": S, "resolution": ("480p", "720p", "1080p"),
                              "duration": range(1, 11), "audio": U, "negative_prompt": S,
                              "enable_prompt_expansion": B, "seed": "int"},
    "luma/ray-2-720p": _LUMA,
    "luma/ray-flash-2-720p": _LUMA,
    "pixverse/pixverse-v5": {"prompt": S, "image": U, "last_frame_image": U,
                             "quality": ("360p", "540p", "720p", "1080p"), "aspect_ratio": S,
                             "duration": (5, 8), "negative_prompt": S, "seed": "int", "effect": S},
}
NEEDS_IMAGE = {"wan-video/wan-2.5-i2v": "image"}


def fits(rule: Any, value: Any) -> bool:
    if isinstance(rule, tuple):
        return value in rule and not isinstance(value, bool)
    if isinstance(rule, range):
        return isinstance(value, int) and not isinstance(value, bool) and value in rule
    if rule == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if rule == N:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if rule == B:
        return isinstance(value, bool)
    if rule == U:
        return isinstance(value, str) and value.startswith(("https://", "http://", "data:"))
    if rule == L:
        return isinstance(value, list)
    return isinstance(value, str)
