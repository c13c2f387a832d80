"""Where a command meets the machine it runs on.

Whatever the environment does — a full disk, a read-only folder, SIGTERM, a reader that closes the
pipe (``| head``) — ends in one clear line on stderr and the right exit code, never a traceback:

- SIGTERM is Ctrl-C: the run stops submitting, writes its results and checkpoint, says how to
  resume and exits 130 (one code for "interrupted, run the same command again").
- An ``OSError`` that reaches the command (the checkpoint store, a results file, a report) is
  explained by its errno in one line: what, where, what to do; exit 2.
- A closed stdout/stderr never stops the work: what cannot be shown is dropped, the command runs to
  its end and exits with its own code; one note on stderr says the output was cut.
- Log records about such a failure of the machine are not printed with a traceback (the one line
  says it); ``-v`` shows them in full.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import FrameType
from typing import Any, TextIO, cast

from ._checks import os_reason
from ._options import ExitCode

__all__ = ["describe_os_error", "guarded", "log_to_stderr"]

# errnos that say "the machine", not "a bug": reported in one line, logged without a traceback
_MACHINE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
            errno.EISDIR, errno.ENOENT, errno.EIO, errno.EMFILE, errno.ENFILE}


def describe_os_error(exc: OSError, *, where: object = None,
                      then: str = "run the same command again") -> str:
    """``exc`` in one line: what went wrong, where (its file name, else ``where``), what to do."""
    place = exc.filename if exc.filename is not None else where
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what, fix = "cannot write", "free some space"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what, fix = "cannot write", "make it writable or choose another place"
    else:
        what, fix = "cannot use", "fix that"
    target = f"{what} {place}" if place is not None else f"{what} a file"
    return f"{target}: {os_reason(exc)}; {fix}, then {then}"


# ---------------------------------------------------------------------- logging
class _SaidOnce(logging.Filter):
    """Drop records carrying a failure of the machine: the command reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, OSError) and exc.errno in _MACHINE)


_installed: list[tuple[logging.Logger, logging.Handler, int, bool]] = []


def log_to_stderr(verbose: bool) -> None:
    """Show videobatch's log on stderr: warnings, or with ``verbose`` also retries and failures
    with their tracebacks. Undone when the command ends (``guarded``)."""
    logger = logging.getLogger("videobatch")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    if not verbose:
        handler.addFilter(_SaidOnce())
    _installed.append((logger, handler, logger.level, logger.propagate))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _restore_logging() -> None:
    while _installed:
        logger, handler, level, propagate = _installed.pop()
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# ---------------------------------------------------------------------- stdout / stderr
class _PipeGuard:
    """A text stream that a vanished reader cannot break: after EPIPE, writes go nowhere."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.broken = True
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # not a real file (e.g. captured by a test)
            return
        # What is still buffered, and the interpreter's last flush at exit, go to /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# ---------------------------------------------------------------------- signals
def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM does what Ctrl-C does: whoever handles SIGINT now (asyncio.run cancels the run,
    else KeyboardInterrupt) handles it."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- the boundary
def guarded(command: Callable[[Sequence[str]], int], argv: Sequence[str]) -> int:
    """Run ``command(argv)`` at the boundary described above; its exit code."""
    saved = sys.stdout, sys.stderr
    out, err = _PipeGuard(sys.stdout), _PipeGuard(sys.stderr)
    sys.stdout, sys.stderr = cast(TextIO, out), cast(TextIO, err)
    try:
        with _sigterm_as_ctrl_c():
            try:
                code = command(argv)
            except KeyboardInterrupt:
                print("Interrupted: run the same command again to resume (nothing is paid twice).",
                      file=sys.stderr)
                code = ExitCode.INTERRUPTED
            except OSError as exc:
                print(f"error: {describe_os_error(exc)}", file=sys.stderr)
                code = ExitCode.USAGE
        return int(code)
    finally:
        out.flush()
        if out.broken:
            print("note: standard output was closed by its reader (e.g. `| head`): the rest of the "
                  "output was dropped; the command itself ran to its end", file=sys.stderr)
        err.flush()
        _restore_logging()
        sys.stdout, sys.stderr = saved
