"""What every simulated provider's settings share: checked when made and on every change (a test's
``/_test/config`` call, or ``update`` from Python), a change that fails its check undone whole."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar

__all__ = ["ServerSettings", "one_of"]


class ServerSettings:
    """Base of the test servers' ``SimConfig`` dataclasses. A subclass says what is out of range
    in ``check`` (raise ValueError) and which settings are kept as tuples (``tuples``: lists
    over HTTP)."""

    tuples: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError for a setting out of range."""

    def update(self, values: dict[str, Any]) -> None:
        """Change some settings at once; an unknown name, or values that fail ``check``, change
        nothing."""
        names = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown server setting {unknown[0]!r}")
        old = {name: getattr(self, name) for name in values}
        for name, value in values.items():
            setattr(self, name, tuple(value) if name in self.tuples and value is not None else value)
        try:
            self.check()
        except ValueError:
            for name, value in old.items():
                setattr(self, name, value)
            raise


def one_of(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, not {value!r}")
