"""``python -m videobatch.testing``: run the Kling-compatible test server (same options)."""

from __future__ import annotations

from .kling_server import main

main()
