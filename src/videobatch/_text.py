"""Text from outside made storable: a lone surrogate becomes U+FFFD.

A provider's JSON may carry an escape such as ``"\\ud800"`` that decodes to half a character. No
UTF-8 file and no Parquet column can hold one, so such text, kept as it came, would stop the run at
its next journal line or snapshot. The shared vocabulary (``TaskStatus``, ``Video``,
``ProviderError``) passes what a provider says through ``storable`` when it is made.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

__all__ = ["make_storable", "plain", "storable", "storable_if_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_T = TypeVar("_T")


def storable(text: str) -> str:
    """``text`` with every surrogate code point replaced by U+FFFD (a Python ``str`` holding one
    cannot be written as UTF-8; a valid pair arrives from JSON already joined into one character)."""
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def storable_if_text(value: _T) -> _T:
    """``value`` through ``storable`` when it is text; anything else (a provider's code may be a
    number, an id may be missing) as it is."""
    return cast(_T, storable(value)) if isinstance(value, str) else value


def plain(*texts: object) -> bool:
    """Whether none of ``texts`` needs ``storable``: each is ASCII text (the usual case), or not
    text at all."""
    for text in texts:  # noqa: SIM110 (a loop: all() would build a generator on every status)
        if type(text) is str and not text.isascii():
            return False
    return True


def make_storable(frozen: Any, *names: str) -> None:
    """Pass the text attributes ``names`` of a just-made frozen dataclass through ``storable``
    (for its ``__post_init__``, once ``plain`` has said some need it)."""
    for name in names:
        object.__setattr__(frozen, name, storable_if_text(getattr(frozen, name)))
