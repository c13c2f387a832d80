"""videobatch: turn a table of prompts into generated videos, concurrently and crash-safely.

    import videobatch
    df = videobatch.run("prompts.csv", provider="local", checkpoint="run.parquet")

The public surface is what ``__all__`` lists; everything else may change between releases.
"""

from __future__ import annotations

from . import providers
from .api import Batch, arun, run
from .errors import (
    AccountError,
    AuthError,
    CheckpointError,
    ConfigError,
    DownloadError,
    IllegalTransition,
    InputError,
    NotFoundError,
    Problem,
    ProviderError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
    VideobatchError,
)
from .events import Event, Progress
from .inputs import Prompts, load_prompts
from .jobs import Job, State
from .providers import Provider, get_provider, register
from .request import VideoRequest
from .results import results


def __getattr__(name: str) -> object:
    # Delivery helpers load on first use: they pull in PyAV and HTTP code a plain run may not need.
    lazy = {"Downloader": "downloads", "download_missing": "downloads", "WebhookNotifier": "webhooks",
            "verify_signature": "webhooks", "write_report": "report"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{lazy[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AccountError",
    "AuthError",
    "Batch",
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "Downloader",
    "Event",
    "IllegalTransition",
    "InputError",
    "Job",
    "NotFoundError",
    "Problem",
    "Progress",
    "Prompts",
    "Provider",
    "ProviderError",
    "RateLimited",
    "RejectedError",
    "SlotsBusy",
    "State",
    "TransientError",
    "VideoRequest",
    "VideobatchError",
    "WebhookNotifier",
    "arun",
    "download_missing",
    "get_provider",
    "load_prompts",
    "providers",
    "register",
    "results",
    "run",
    "verify_signature",
    "write_report",
]
