"""Test doubles that speak real protocols: a Kling-compatible HTTP server with fault injection.

Needs the ``testing`` extra (starlette, uvicorn). Start one with ``running_server(...)`` or
``python -m videobatch.testing.kling_server --port N``.
"""

from __future__ import annotations

from .faults import FaultRule, Faults, parse_rules
from .kling_server import KlingApp, ServerHandle, create_app, running_server
from .kling_sim import SimConfig

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
