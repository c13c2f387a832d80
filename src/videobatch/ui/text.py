"""Words and numbers for people, shared by every view (text bar, dashboard, command line): the
end-of-run summary and durations."""

from __future__ import annotations

from collections import Counter

from .._jobs import State

__all__ = ["duration", "summary"]


def summary(
    counts: Counter[State],
    elapsed: float,
    failures: list[tuple[str, str | None, str | None]],
    *,
    cancelled: bool = False,
    stopped_by: str | None = None,
    where: list[str] | None = None,
    max_failures: int = 20,
    unknown: list[tuple[str, str | None]] | None = None,
) -> str:
    """The text printed at the end of a CLI run: counts, wall time, failures with reasons, and rows
    whose outcome is unknown (``(key, error)``: what to check, and how to send them again)."""
    total = sum(counts.values())
    lines = [
        f"{counts[State.COMPLETED]}/{total} completed, {counts[State.FAILED]} failed"
        + "".join(f", {counts[s]} {s.value}" for s in (State.UNKNOWN, State.PENDING,
                                                        State.SUBMITTING, State.GENERATING,
                                                        State.CANCELLED)
                  if counts[s])
        + f" in {duration(elapsed)}"
    ]
    if cancelled:
        lines.append("Interrupted: run the same command again to resume (nothing is paid twice).")
    if stopped_by:
        lines.append(f"Stopped: {stopped_by}")
    if failures:
        by_reason: Counter[str] = Counter(kind or "error" for _, kind, _ in failures)
        lines.append("Failures by reason: " + ", ".join(f"{k} ×{n}" for k, n in
                                                        by_reason.most_common()))
        for key, kind, message in failures[:max_failures]:
            lines.append(f"  {key}: [{kind}] {message}")
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (see the results file)")
    if unknown:
        lines.append(f"Outcome unknown for {len(unknown)} row(s): a paid request may exist for each "
                     "(checked again on every resume, never sent again on its own):")
        for key, message in unknown[:max_failures]:
            lines.append(f"  {key}: {message}")
        if len(unknown) > max_failures:
            lines.append(f"  ... and {len(unknown) - max_failures} more (see the results file)")
    for line in where or []:
        lines.append(line)
    return "\n".join(lines)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"
