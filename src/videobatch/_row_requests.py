"""Each valid row's request, built when it is asked for: what validation hands to ``Prompts``.

Rows usually differ only in their prompt. Validation (``_input_check``) checks each combination
of the other cells once; ``RowRequests`` keeps that combination's request and each row's prompt,
and builds a row's ``VideoRequest`` (the object pydantic would have built for the row) when it is
asked for. A run's jobs ask when the run reaches them (``Job.fresh``), so a 200,000-row table
starts its first submit without 200,000 request objects (about 0.3 s and 45 MB).

Whatever needs only the values a row shares with its combination (the provider, an image, the
model) reads ``distinct(requests)``: one request per combination, plus each row checked alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from json.encoder import encode_basestring  # the string spelling json.dumps uses with ensure_ascii=False
from typing import Any, overload

import pyarrow as pa
import pyarrow.compute as pc

from ._input_keys import escaped_rows, request_text, spelled_in
from .request import VideoRequest

__all__ = ["RowRequests", "distinct"]

# A combination's request minus its prompt: its values (a key-sharing dict holding a stand-in
# prompt), fields-set, extra and private parts. Built requests share all but their own dict.
Shared = tuple[dict[str, Any], set[str], Any, Any]

_new_object = object.__new__
_set_attribute = object.__setattr__


class RowRequests(Sequence[VideoRequest]):
    """One request per row, in row order; a row's request is built each time it is asked for
    (frozen objects: equal each time)."""

    __slots__ = ("_combo", "_first", "_items", "_own", "_shared", "_templates")

    def __init__(self, shared: list[Shared], first: list[int], combo: list[int], items: list[Any],
                 templates: list[tuple[str, str] | None] | None = None) -> None:
        """``shared``: each combination's request but the prompt, ``first``: its first row,
        ``templates``: its JSON before and after the prompt's spelling (None: none); ``combo``:
        each row's combination (-1: the row's request is its own), ``items``: each row's prompt,
        or its own request."""
        templates = [None] * len(shared) if templates is None else templates
        if not len(shared) == len(first) == len(templates) or not len(combo) == len(items):
            raise ValueError("RowRequests: one first row and template per combination, one item per row")
        self._shared, self._first, self._combo, self._items = shared, first, combo, items
        self._templates = templates
        self._own = [row for row, number in enumerate(combo) if number < 0] if -1 in combo else []

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> VideoRequest: ...

    @overload
    def __getitem__(self, index: slice) -> list[VideoRequest]: ...

    def __getitem__(self, index: int | slice) -> VideoRequest | list[VideoRequest]:
        if isinstance(index, slice):
            return [self._build(i) for i in range(*index.indices(len(self._items)))]
        if index < 0:
            index += len(self._items)
        if not 0 <= index < len(self._items):
            raise IndexError("row index out of range")
        return self._build(index)

    def __iter__(self) -> Iterator[VideoRequest]:
        return map(self._build, range(len(self._items)))

    def _build(self, row: int) -> VideoRequest:
        combination = self._combo[row]
        if combination < 0:
            own: VideoRequest = self._items[row]
            return own
        values, fields_set, extra, private = self._shared[combination]
        # What model_validate builds for the row: the combination's values with the row's prompt.
        # The dict is a copy of the combination's key-sharing dict (half the memory of a new one).
        mine = values.copy()
        mine["prompt"] = self._items[row]
        request = _new_object(VideoRequest)
        _set_attribute(request, "__dict__", mine)
        _set_attribute(request, "__pydantic_fields_set__", fields_set)
        _set_attribute(request, "__pydantic_extra__", extra)
        _set_attribute(request, "__pydantic_private__", private)
        return request

    def texts(self, chunk: int = 65536) -> pa.ChunkedArray:
        """Each row's canonical request JSON (``request_text``) as an Arrow string column.

        Rows of a combination with a template are spelled column-wise by Arrow: its JSON before
        the prompt, the prompt in quotes (JSON escapes only ``"``, ``\\`` and control characters:
        rows holding one are escaped by Python), its JSON after. Other rows are spelled one by one.
        """
        chunks = [self._texts(start, min(start + chunk, len(self))) for start in range(0, len(self), chunk)]
        return pa.chunked_array(chunks, pa.string())

    def _texts(self, start: int, end: int) -> pa.Array:
        combos, prompts = self._combo[start:end], self._items[start:end]
        templates = self._templates
        spelled = None
        if not self._own or -1 not in combos:
            try:
                spelled = pa.array(prompts, pa.string())
            except (pa.ArrowException, UnicodeError):  # not all text (e.g. no prompt), or not UTF-8
                spelled = None
        if spelled is None or spelled.null_count or any(templates[c] is None for c in set(combos)):
            return pa.array([request_text(self._build(row)) if (c := self._combo[row]) < 0
                             or (template := templates[c]) is None
                             else spelled_in(template, self._items[row])
                             for row in range(start, end)], pa.string())
        escape = escaped_rows(spelled)
        if escape is not None:
            escaped = [encode_basestring(prompts[row])[1:-1] for row in pc.indices_nonzero(escape).to_pylist()]
            spelled = pc.replace_with_mask(spelled, escape, pa.array(escaped, pa.string()))
        numbers = pa.array(combos, pa.int32())
        heads = pa.array([t[0] if t else "" for t in templates], pa.string()).take(numbers)
        tails = pa.array([t[1] if t else "" for t in templates], pa.string()).take(numbers)
        return pc.binary_join_element_wise(heads, '"', spelled, '"', tails, "")

    def distinct(self) -> list[VideoRequest]:
        """One request per combination (its first row's) and every row's own request."""
        return [*map(self._build, self._first), *(self._items[row] for row in self._own)]

    def __eq__(self, other: object) -> bool:
        """Equal to a list or ``RowRequests`` of equal requests in the same order (as a list is)."""
        if not isinstance(other, RowRequests | list):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"RowRequests({len(self)} rows, {len(self._shared)} combinations)"


def distinct(requests: Sequence[VideoRequest]) -> Iterable[VideoRequest]:
    """Requests that hold every value of ``requests`` but their prompts: for ``RowRequests``, one
    per combination and each row's own; any other sequence is returned as it is."""
    return requests.distinct() if isinstance(requests, RowRequests) else requests
