"""videobatch: turn a table of prompts into generated videos, concurrently and crash-safely.

    import videobatch
    df = videobatch.run("prompts.csv", provider="local", checkpoint="run.parquet")
    grid = videobatch.sweep("subjects.csv", model=["kling-v2-6", "kling-v3"], duration=[5, 10])

The public surface is what ``__all__`` lists; everything else may change between releases.
"""

from __future__ import annotations

import sys as _sys

from . import providers
from ._api import Batch
from ._events import Event, Progress
from ._inputs import Prompts, load_prompts
from ._jobs import Job, State
from ._plan import Plan
from ._results import results
from ._run import arun, plan, run
from ._sweep import sweep
from .errors import (
    AccountError,
    AuthError,
    CheckpointError,
    ConfigError,
    DownloadError,
    IllegalTransition,
    InputError,
    ModelRefused,
    NotFoundError,
    Problem,
    ProviderError,
    RateLimited,
    RejectedError,
    SlotsBusy,
    TransientError,
    VideobatchError,
)
from .providers import Provider, get_provider, register
from .request import VideoRequest
from .ui.progress import missing_widgets_note as _missing_widgets_note

if (_note := _missing_widgets_note()) is not None:  # in Jupyter without ipywidgets: say so once
    print(_note, file=_sys.stderr)


def __getattr__(name: str) -> object:
    # Delivery helpers load on first use: they pull in PyAV and HTTP code a plain run may not need.
    lazy = {"Downloader": "delivery.downloads", "download_missing": "delivery.downloads",
            "WebhookNotifier": "delivery.webhooks",
            "verify_signature": "delivery.webhooks", "write_report": "delivery.report"}
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{lazy[name]}"), name)
    if name == "__version__":  # from the installed package's metadata (a 50 ms read: on demand)
        from importlib import metadata

        try:
            return metadata.version("videobatch")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    "ModelRefused",
    "NotFoundError",
    "Plan",
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
    "plan",
    "providers",
    "register",
    "results",
    "run",
    "sweep",
    "verify_signature",
    "write_report",
]
