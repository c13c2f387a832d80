"""The one exception tree of videobatch: what went wrong, for which row, and what to do.

    VideobatchError                   base of everything videobatch raises on purpose
    ├── InputError                    bad prompts table; nothing was submitted (.problems lists every bad row)
    ├── ConfigError                   bad settings: unknown provider, missing/malformed credentials, bad option
    ├── CheckpointError               checkpoint unreadable, or made from different rows/settings (force to merge)
    ├── IllegalTransition             a job was asked to move between states it may not (a bug, not user error)
    ├── DownloadError                 a finished video could not be fetched or verified; the row stays completed
    └── ProviderError                 the provider answered with an error (.row_key, .provider_code)
        ├── AuthError                 credentials refused: the whole run stops; fix the keys and re-run
        ├── AccountError              balance/quota/whitelist problem: submitting stops; in-flight rows finish
        ├── RejectedError             this row was refused for good (bad parameter, content policy): row fails
        ├── NotFoundError             the provider has no such task
        ├── KeyAlreadyUsed            a create was refused because its idempotency key already has a task
        └── TransientError            worth retrying later (.retry_after seconds, .maybe_accepted)
            ├── RateLimited           too many requests: back off
            └── SlotsBusy             every parallel-task slot of the account is taken: back off, lower concurrency

Catch ``VideobatchError`` to handle everything, or a leaf to handle one case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._text import storable_if_text

__all__ = [
    "AccountError",
    "AuthError",
    "CheckpointError",
    "ConfigError",
    "DownloadError",
    "IllegalTransition",
    "InputError",
    "KeyAlreadyUsed",
    "ModelRefused",
    "NotFoundError",
    "Problem",
    "ProviderError",
    "RateLimited",
    "RejectedError",
    "SlotsBusy",
    "TransientError",
    "VideobatchError",
]


class VideobatchError(Exception):
    """Base class of every error videobatch raises on purpose.

    In a notebook it shows as a short list of what went wrong and what to do, without the
    library's traceback (the view is ``videobatch.ui.errors_view``, which registers itself with
    ``show_in_notebook_with``: this module knows no user interface).
    """

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the traceback."""
        if _NOTEBOOK_VIEW is None:
            return [f"{type(self).__name__}: {self}"]
        return _NOTEBOOK_VIEW[0](self)

    def _repr_html_(self) -> str | None:
        """The error as HTML, when a notebook displays the error object itself."""
        return None if _NOTEBOOK_VIEW is None else _NOTEBOOK_VIEW[1](self)


# How a notebook shows these errors (lines instead of a traceback, and HTML): see the class.
_NOTEBOOK_VIEW: tuple[Callable[[VideobatchError], list[str]], Callable[[VideobatchError], str]] | None = None


def show_in_notebook_with(lines: Callable[[VideobatchError], list[str]],
                          html: Callable[[VideobatchError], str]) -> None:
    """Make notebooks show ``VideobatchError``s with ``lines`` (in place of the traceback) and
    ``html`` (the error object displayed)."""
    global _NOTEBOOK_VIEW
    _NOTEBOOK_VIEW = (lines, html)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (row number, column), what, and what is allowed."""

    row: int | None  # 1-based data row number; None for a problem with the whole table
    column: str | None
    message: str
    allowed: str | None = None
    line: int | None = None  # line in the CSV file, when the input was a file

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.column:
            where.append(f"column {self.column!r}")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text


class InputError(VideobatchError):
    """The prompts table has problems; every problem is listed and nothing was submitted."""

    def __init__(self, problems: list[Problem], source: str = "input") -> None:
        self.problems = list(problems)
        self.source = source
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = len(self.problems) - 50
        if more > 0:
            shown += f"\n  ... and {more} more"
        n = len(self.problems)
        super().__init__(
            f"{source}: {n} problem{'s' if n != 1 else ''} found, nothing was submitted:\n{shown}\n"
            "Fix these rows (or pass run-wide defaults) and run again."
        )


class ConfigError(VideobatchError):
    """A setting is wrong or missing (provider name, credentials, option); the message says which."""


class CheckpointError(VideobatchError):
    """The checkpoint cannot be used as asked (unreadable, or made from different rows/settings)."""


class IllegalTransition(VideobatchError):
    """A job was asked to make a state change the state machine forbids."""


class DownloadError(VideobatchError):
    """A finished video could not be downloaded, or what arrived is not a complete video.

    The generated row stays completed (its URL is in the results); ``videobatch download`` fetches
    it later. ``permanent``: retrying will not help (404/410/403, unsupported URL); otherwise try
    again after ``retry_after`` seconds when the server said so.
    """

    def __init__(self, message: str, *, url: str | None = None, permanent: bool = False,
                 retry_after: float | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.permanent = permanent
        self.retry_after = retry_after
        self.status_code = status_code


class ProviderError(VideobatchError):
    """An error answer from a provider.

    ``kind`` is a short stable label recorded in the results' ``error_kind`` column.
    """

    kind = "provider_error"
    # When the error stopped a run: the results DataFrame as it stood (set by videobatch.run).
    results: Any = None

    def __init__(
        self,
        message: str,
        *,
        row_key: str | None = None,
        provider_code: Any = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        # (the provider's words are journaled: made storable, see videobatch._text)
        self.message = storable_if_text(message)
        self.row_key = row_key
        self.provider_code = storable_if_text(provider_code)
        self.status_code = status_code
        # the provider's id of the HTTP request, to quote to its support
        self.request_id = storable_if_text(request_id)
        super().__init__(self._render())

    def _render(self) -> str:
        parts = []
        if self.row_key is not None:
            parts.append(f"row {self.row_key!r}")
        if self.provider_code is not None:
            parts.append(f"code {self.provider_code}")
        prefix = f"[{', '.join(parts)}] " if parts else ""
        return prefix + self.message

    def for_row(self, row_key: str) -> ProviderError:
        """Attach the row key (used by the runner, which knows which row it was working on)."""
        if self.row_key is None:
            self.row_key = row_key
            self.args = (self._render(),)
        return self


class AuthError(ProviderError):
    """Credentials were refused. The run stops: fix the keys (the message says which) and re-run."""

    kind = "auth"


class AccountError(ProviderError):
    """The account cannot take more work (balance, quota, IP whitelist). Submitting stops."""

    kind = "account"


class RejectedError(ProviderError):
    """The provider refused this row for good (invalid parameter, content policy). Not retried."""

    kind = "rejected"


class ModelRefused(RejectedError):
    """The provider refused the row's *model*, not the row: the model is gone (retired) or the
    account may not use it. Nothing was created. After a few such refusals in a row the runner stops
    submitting that model's rows; they stay pending and unpaid, to resume once the model (or the
    catalogue) is fixed."""

    kind = "model_refused"

    def __init__(self, message: str, *, model: str | None = None, **where: Any) -> None:
        self.model = model
        super().__init__(message, **where)


class NotFoundError(ProviderError):
    """The provider has no task with that id."""

    kind = "not_found"


class KeyAlreadyUsed(ProviderError):
    """A create was refused because a task with this idempotency key already exists.

    The row was paid for earlier (a lost answer, a crash): the runner looks that task up and adopts
    it, and never sends the row again under a new key on its own. If no lookup or listing finds the
    task, the row's outcome is unknown (``State.UNKNOWN``) until one does or the user resubmits it.
    """

    kind = "key_already_used"


class TransientError(ProviderError):
    """A failure worth retrying (5xx, timeout, connection reset, garbage answer).

    ``retry_after``: seconds the provider asked us to wait, if it said so.
    ``maybe_accepted``: True when a *submit* may have reached the provider before failing (answer lost,
    timeout after sending, 5xx): the runner then looks the task up by its idempotency key before any
    new submit. False when the request certainly did not create a task (connection refused, 429).
    """

    kind = "transient"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        maybe_accepted: bool = True,
        **kwargs: Any,
    ) -> None:
        self.retry_after = retry_after
        self.maybe_accepted = maybe_accepted
        super().__init__(message, **kwargs)


class RateLimited(TransientError):
    """Too many requests: back off (honouring ``retry_after``). No task was created."""

    kind = "rate_limited"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("maybe_accepted", False)
        super().__init__(message, **kwargs)


class SlotsBusy(TransientError):
    """Every parallel-task slot of the account is taken: back off and lower concurrency."""

    kind = "slots_busy"

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("maybe_accepted", False)
        super().__init__(message, **kwargs)
