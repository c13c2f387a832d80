"""The API's access log without secrets: every query-string value is written as ``***``.

The API takes its bearer token only from the ``Authorization`` header, never from the URL; but a
client that puts a token (or any secret) in a query string would have it written to uvicorn's
access log. ``python -m videobatch serve`` installs ``RedactQuery`` on that log, so a logged line
shows the path and the query's parameter names only: ``GET /api/v1/videos/1?token=*** HTTP/1.1``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["RedactQuery", "log_config"]


def redacted(target: str) -> str:
    """``target`` (a path with a query string) with every query value replaced by ``***``."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    if not names and query:
        return f"{path}?***"
    return f"{path}?" + "&".join(f"{name}=***" for name in names)


class RedactQuery(logging.Filter):
    """A logging filter: query values in a record's arguments (uvicorn's access lines) as ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redacted(a) if isinstance(a, str) and "?" in a else a
                                for a in record.args)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration with ``RedactQuery`` on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": RedactQuery}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config
