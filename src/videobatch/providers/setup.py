"""What every provider's constructor needs: keys held in memory only, and numeric settings that may
arrive as strings (``-P key=value``), refused with a message naming the provider and the option.
"""

from __future__ import annotations

from typing import Any, NoReturn

from ..errors import ConfigError

__all__ = ["Secret", "number"]


class Secret:
    """A key (or token) held in memory: its repr is ``'***'`` and it refuses to be pickled.
    ``what`` names it in that refusal (e.g. "the fal key")."""

    __slots__ = ("_value", "_what")

    def __init__(self, value: str, what: str = "credentials") -> None:
        self._value = value
        self._what = what

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{self._what} cannot be pickled")


def number(provider: str, name: str, value: Any, kind: type[int] | type[float], minimum: float) -> Any:
    """``value`` as ``kind`` (an int or a float), at least ``minimum``; ConfigError otherwise."""
    try:
        result = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{provider} option {name}={value!r} is not a number") from None
    if result < minimum:
        raise ConfigError(f"{provider} option {name}={value!r} must be at least {minimum}")
    return result
