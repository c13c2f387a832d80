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
    Cancelled,
    CheckpointError,
    ConfigError,
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

__version__ = "0.1.0"

__all__ = [
    "AccountError",
    "AuthError",
    "Batch",
    "Cancelled",
    "CheckpointError",
    "ConfigError",
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
    "arun",
    "get_provider",
    "load_prompts",
    "providers",
    "register",
    "results",
    "run",
]
