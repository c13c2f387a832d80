"""videobatch: turn a table of prompts into generated videos, concurrently and crash-safely."""

from __future__ import annotations

__version__ = "0.1.0"
