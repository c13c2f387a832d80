"""Test doubles that speak real protocols: a Kling-compatible HTTP server with fault injection.

Needs the ``testing`` extra (starlette, uvicorn). Start one with ``running_server(...)`` or
``python -m videobatch.testing.kling_server --port N``. The Replicate-compatible server lives in
``videobatch.testing.replicate_server`` (its own ``running_server``; not re-exported here, where the
names are Kling's). Names are imported on first use, so that
``python -m videobatch.testing.kling_server`` does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import FaultRule, Faults, parse_rules
    from .kling_app import KlingApp, create_app
    from .kling_config import SimConfig
    from .kling_server import ServerHandle, running_server

__all__ = [
    "FaultRule",
    "Faults",
    "KlingApp",
    "ServerHandle",
    "SimConfig",
    "create_app",
    "parse_rules",
    "running_server",
]

_HOMES = {"FaultRule": "faults", "Faults": "faults", "parse_rules": "faults",
          "KlingApp": "kling_app", "create_app": "kling_app", "ServerHandle": "kling_server",
          "running_server": "kling_server", "SimConfig": "kling_config"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
