"""Which delivery observers a batch gets from its options: streamed downloads and per-row webhooks,
each imported only when wanted (they pull in PyAV and HTTP code a plain run may not need)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .._events import Observer
from .._inputs import Prompts
from ..errors import InputError

__all__ = ["outputs_for"]


def outputs_for(prompts: Prompts, *, download: str | os.PathLike[str] | None,
                download_concurrency: int, download_name: str | None, webhook: str | None,
                webhook_secret: str | None, given: Sequence[Observer]) -> list[Observer]:
    """Observers that deliver the results of ``prompts``' rows.

    A notifier or downloader the caller passed in ``given`` is used instead of a default one.
    Webhook addresses in the table are checked here: bad input costs nothing (InputError).
    """
    outputs: list[Observer] = []
    if download is not None:
        from .downloads import Downloader

        if not any(isinstance(o, Downloader) for o in given):
            outputs.append(Downloader(download, concurrency=download_concurrency,
                                      name_template=download_name, frame=prompts.frame))
    if webhook is not None or "webhook_url" in prompts.columns:
        frame = prompts.frame
        from .webhooks import WebhookNotifier, check_urls

        if any(isinstance(o, WebhookNotifier) for o in given):
            return outputs
        problems = check_urls(frame)
        if problems:  # refused before the first request
            raise InputError(problems, source=prompts.source)
        outputs.append(WebhookNotifier(webhook, secret=webhook_secret, frame=frame))
    return outputs
