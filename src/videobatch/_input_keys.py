"""Row keys and request texts: each row's canonical request JSON, its stable key (the ``id`` column,
else a hash of that JSON) and the table's fingerprint, held together in ``Prompts``.

The checkpoint stores these texts and keys; two tables with the same fingerprint ask for the same
videos under the same keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from json.encoder import encode_basestring  # the string spelling json.dumps uses with ensure_ascii=False
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._input_table import Table, column_names, to_frame
from .request import REQUEST_FIELDS, VideoRequest

__all__ = ["ID_COLUMN", "KEYS", "Prompts", "canonical_json", "escaped_rows", "first_release_text", "hashed_keys",
           "prompt_template", "request_text", "request_texts", "spelled_in"]

KEYS = 2  # how row keys are made: 2 from the row's given values; 1 (no mark) the first release's way
ID_COLUMN = "id"
"""The optional column whose values become the row keys (verbatim, stripped)."""


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj`` used for hashing: sorted keys, no spaces, UTF-8 text.

    Same text as ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
    """
    return _CANONICAL.encode(obj)


def request_text(request: VideoRequest) -> str:
    return canonical_json(request.model_dump(mode="json", exclude_none=True))


# Fields that decide a request's JSON "shape": rows with equal values here differ only in the prompt.
# (Rows with an image are spelled one by one: those values are big; options are shaped separately.)
_SHAPE_FIELDS = tuple(n for n in REQUEST_FIELDS if n not in ("prompt", "image", "end_image"))
_PROMPT_KEY = '"prompt":'
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'  # what JSON escapes in a string (ensure_ascii=False)
_SCALAR_TYPES = frozenset({str, int, float, bool})


def _shape(request: VideoRequest) -> tuple[Any, ...] | None:
    """What a request's JSON looks like apart from its prompt text; None: spell it one by one."""
    values = request.__dict__
    if (type(values.get("prompt")) is not str or values.get("image") is not None
            or values.get("end_image") is not None):
        return None
    options = values.get("options")
    if options:
        if not all(type(v) in _SCALAR_TYPES for v in options.values()):
            return None  # nested values (a voice list): spelled one by one
        shown = tuple(sorted((name, type(v), repr(v)) for name, v in options.items()))
    else:
        shown = ()
    shape = tuple(map(values.get, _SHAPE_FIELDS))
    types = tuple(map(type, shape))  # keeps 1, 1.0 and True apart
    if float in types:  # and repr keeps 0.0 and -0.0 apart
        return shape, types, tuple(map(repr, shape)), shown
    return shape, types, shown


# ---------------------------------------------------------------- the first release's row keys
# Checkpoints written before requests became provider-neutral keyed each row by a hash of its request
# *with Kling's defaults of then filled in*. To resume them with nothing paid again, rows are keyed
# the same way for such a checkpoint (``Prompts.first_release``); new checkpoints say ``keys: 2``.
_FIRST_DEFAULTS = {"model": "kling-v1-6", "duration": 5, "aspect_ratio": "16:9", "mode": "std"}
_FIRST_ALIASES = {
    alias: name for name, aliases in {
        "kling-v1": ("kling-v1.0", "v1"), "kling-v1-5": ("kling-v1.5", "v1.5"),
        "kling-v1-6": ("kling-v1.6", "v1.6"), "kling-v2-master": ("kling-v2", "kling-v2.0", "v2-master"),
        "kling-v2-1": ("kling-v2.1", "v2.1"), "kling-v2-1-master": ("kling-v2.1-master", "v2.1-master"),
        "kling-v2-5-turbo": ("kling-v2.5-turbo", "v2.5-turbo"),
    }.items() for alias in (name, *aliases)
}


def first_release_text(request: VideoRequest) -> str:
    """The request JSON the first release hashed for this row (its defaults filled in)."""
    data: dict[str, Any] = request.model_dump(mode="json", exclude_none=True)
    options = data.pop("options", None) or {}
    data.update(options)
    if "end_image" in data:
        data["image_tail"] = data.pop("end_image")
    for name, default in _FIRST_DEFAULTS.items():
        data.setdefault(name, default)
    model = str(data["model"])
    data["model"] = _FIRST_ALIASES.get(model.lower(), model)
    return canonical_json(data)


def request_texts(requests: Sequence[VideoRequest]) -> list[str]:
    """Each request's canonical JSON: the same text as ``request_text``, made ~20x faster.

    The JSON of one request per shape is split around its prompt's spelling; every other request
    of that shape is the same text with its own prompt spelled in. (In canonical JSON a string
    value never contains an unescaped ``"prompt":``, so the first one is the key.)
    """
    out: list[str] = []
    templates: dict[tuple[Any, ...], tuple[str, str] | None] = {}
    for request in requests:
        template = None
        shape = _shape(request)
        if shape is not None:
            try:
                template = templates[shape]
            except KeyError:
                template = templates[shape] = prompt_template(request)
            except TypeError:  # an unhashable value (a request built without validation)
                pass
        out.append(request_text(request) if template is None else spelled_in(template, request.prompt))
    return out


def spelled_in(template: tuple[str, str], prompt: str) -> str:
    """A request's JSON: its shape's JSON before and after the prompt (``prompt_template``) around
    its own prompt, spelled as JSON spells it."""
    return f"{template[0]}{encode_basestring(prompt)}{template[1]}"


def prompt_template(request: VideoRequest) -> tuple[str, str] | None:
    text = request_text(request)
    head, key, tail = text.partition(_PROMPT_KEY)
    spelled = encode_basestring(request.prompt)
    if not key or not tail.startswith(spelled):
        return None
    template = (head + key, tail[len(spelled):])
    return template if template[0] + spelled + template[1] == text else None


class Prompts:
    """A validated prompts table: the user's rows, one request and one stable key per row.

    ``frame``: the user's columns as given, input order, the user's index kept; a DataFrame, or an
    Arrow table (a CSV read by Arrow), which ``frame`` turns into a DataFrame when first asked
    (``table`` is the table as given). ``source``: the CSV path as given, "DataFrame" or "list".
    """

    def __init__(self, frame: Table, requests: Sequence[VideoRequest], keys: list[str], source: str) -> None:
        if not len(frame) == len(requests) == len(keys):
            raise ValueError("Prompts: frame, requests and keys must have one entry per row")
        self.table = frame
        self.requests = requests  # one per row, validated, defaults applied (``RowRequests``)
        self.keys = keys  # one stable key per row
        self.source = source
        self._frame: pd.DataFrame | None = None if isinstance(frame, pa.Table) else frame
        self._fingerprint: str | None = None
        self._json_cache: list[str] | None = None
        self._json_column: pa.ChunkedArray | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The user's columns as a DataFrame (an Arrow table is converted when this is first asked:
        a run needs it only for its results and deliveries)."""
        if self._frame is None:
            self._frame = to_frame(self.table)
        return self._frame

    @property
    def columns(self) -> list[Any]:
        """The user's column names (no DataFrame is made to say)."""
        return column_names(self.table)

    def __len__(self) -> int:
        return len(self.requests)

    def __repr__(self) -> str:
        return f"Prompts({len(self)} rows from {self.source!r})"

    def request_json(self) -> list[str]:
        """Each row's request as canonical JSON (computed once; the checkpoint stores these)."""
        if self._json_cache is None:
            texts = (request_texts(self.requests) if self._json_column is None
                     else self._json_column.to_pylist())
            self._json_cache = texts
        assert self._json_cache is not None
        return self._json_cache

    def request_json_column(self) -> pa.ChunkedArray:
        """``request_json()`` as an Arrow string column (what the checkpoint writes)."""
        if self._json_column is None:
            self._json_column = _text_column(self.request_json())
        assert self._json_column is not None
        return self._json_column

    def fingerprint(self) -> str:
        """sha256 hex over every row's key and canonical request JSON, in order.

        Two tables with the same fingerprint ask for the same videos under the same keys.
        """
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.keys, self.request_json_column())
        assert self._fingerprint is not None
        return self._fingerprint

    def first_release(self) -> Prompts:
        """These rows keyed and spelled as the first release did (see ``first_release_text``):
        for resuming a checkpoint it wrote. Keys from an id column stay as they are."""
        texts = [first_release_text(request) for request in self.requests]
        keys = self.keys if ID_COLUMN in self.columns else hashed_keys(texts)
        old = Prompts(frame=self.table, requests=self.requests, keys=keys, source=self.source)
        old._keep_texts(texts)
        return old

    def _keep_texts(self, texts: list[str] | pa.ChunkedArray) -> None:
        """Take the request texts made while validating, keeping them only as an Arrow column
        (a 200k-row table: ~37 MB of Arrow buffers instead of ~46 MB of str objects for the whole
        run), and take the fingerprint."""
        self._json_column = texts if isinstance(texts, pa.ChunkedArray) else _text_column(texts)
        self._fingerprint = _fingerprint(self.keys, self._json_column)


def _fingerprint(keys: list[str], texts: pa.ChunkedArray) -> str:
    """sha256 over ``[key,text]\n`` of every row (``texts``: the request-text column), the key
    spelled as JSON. Keys JSON spells as they are (hashed keys): Arrow joins each row's bytes."""
    if len(keys) != len(texts):
        raise ValueError("Prompts: keys and requests must have one entry per row")
    digest = hashlib.sha256()
    spelled = _plain_texts(keys)
    if spelled is not None:
        start = 0
        for chunk in texts.chunks:  # a chunk's rows joined: one buffer holding their bytes in order
            lines = pc.binary_join_element_wise('["', spelled.slice(start, len(chunk)), '",', chunk,
                                                "]\n", "")
            start += len(chunk)
            digest.update(_value_bytes(lines))
        return digest.hexdigest()
    rows = texts.to_pylist()
    for start in range(0, len(keys), 4096):  # hashed in chunks: the same bytes, fewer calls
        digest.update("".join([
            f"[{encode_basestring(key) if type(key) is str else canonical_json(key)},{text}]\n"
            for key, text in zip(keys[start:start + 4096], rows[start:start + 4096], strict=True)
        ]).encode())
    return digest.hexdigest()


def _plain_texts(values: list[str]) -> pa.Array | None:
    """``values`` as an Arrow string array if each is text that JSON spells as it is (in quotes)."""
    try:
        array = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    return None if array.null_count or escaped_rows(array) is not None else array


def escaped_rows(array: pa.StringArray) -> pa.BooleanArray | None:
    """Which texts JSON spells with an escape (``"``, ``\\``, control characters), or None for
    none. In UTF-8 those bytes stand only for themselves, so the whole buffer is looked at first."""
    used = np.frombuffer(_value_bytes(array), np.uint8)
    if not ((used < 0x20) | (used == 0x22) | (used == 0x5C)).any():
        return None
    return pc.match_substring_regex(array, _NEEDS_ESCAPE)


def _value_bytes(array: pa.StringArray) -> memoryview:
    """The UTF-8 bytes of ``array``'s values, one after another (a view of its data buffer)."""
    if not len(array):
        return memoryview(b"")
    _, offsets, data = array.buffers()
    bounds = np.frombuffer(offsets, np.int32)[array.offset:array.offset + len(array) + 1]
    return memoryview(b"") if data is None else memoryview(data)[bounds[0]:bounds[-1]]


def _text_column(texts: list[str], chunk: int = 65536) -> pa.ChunkedArray:
    """Texts as an Arrow string column, built in chunks (no doubling buffer of the whole size)."""
    return pa.chunked_array([pa.array(texts[i:i + chunk], pa.string())
                             for i in range(0, len(texts), chunk)], pa.string())


def hashed_keys(texts: list[str] | pa.ChunkedArray) -> list[str]:
    """sha256(request JSON + '#' + occurrence)[:16]: stable, and distinct for identical rows."""
    sha256 = hashlib.sha256  # first 8 bytes in hex = the first 16 hex digits
    if isinstance(texts, pa.ChunkedArray):  # each row's bytes with "#0" made by Arrow
        keys = [sha256(body).digest()[:8].hex() for chunk in texts.chunks
                for body in pc.binary_join_element_wise(chunk, "#0", "").cast(pa.binary()).to_pylist()]
        if len(set(keys)) == len(keys):
            return keys
        texts = texts.to_pylist()
    keys = [sha256(f"{body}#0".encode()).digest()[:8].hex() for body in texts]
    if len(set(keys)) == len(keys):  # the usual case: no text twice, every occurrence the first
        return keys
    seen: dict[str, int] = {}
    for row, body in enumerate(texts):  # a text again: its later occurrences are keyed apart
        n = seen[body] = seen.get(body, -1) + 1
        if n:
            keys[row] = sha256(f"{body}#{n}".encode()).digest()[:8].hex()
    return keys
