"""Read CSV/DataFrame/list, validate every row with pydantic, assign stable row keys;
report all bad rows at once (by row number, CSV line and column), before anything is submitted.

``load_prompts`` is the only entry point. It returns ``Prompts``: the user's table untouched, one
validated ``VideoRequest`` per row and one stable key per row (the ``id`` column, else a hash of the
resolved request). Anything wrong raises one ``InputError`` listing every problem.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import hashlib
import io
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from json.encoder import encode_basestring  # the string spelling json.dumps uses with ensure_ascii=False
from typing import Any

import pandas as pd
from pydantic import ValidationError

from ._jobs import RESULT_COLUMNS, gc_paused
from .errors import ConfigError, InputError, Problem
from .request import REQUEST_FIELDS, VideoRequest, request_errors

__all__ = ["ID_COLUMN", "Prompts", "canonical_json", "load_prompts"]

ID_COLUMN = "id"
"""The optional column whose values become the row keys (verbatim, stripped)."""

# Request columns pandas may read as numbers from a CSV; every other request column (and ``id``) is
# read as text, so a prompt like "123" or an id like "007" stays exactly as typed.
_NUMERIC_FIELDS = frozenset({"duration", "cfg_scale"})

# What to show as "allowed" when pydantic's own error carries no hint.
_HINTS = {
    "prompt": "text",
    "negative_prompt": "text",
    "model": "a model name",
    "duration": "5 or 10",
    "cfg_scale": "a number from 0 to 1",
    "image": "an image URL or base64 text",
    "image_tail": "an image URL or base64 text",
    "camera_control": 'a JSON object such as {"type": "simple", "config": {"zoom": 5}}',
}

_OTHER_FORMATS = {
    ".xlsx": "read_excel", ".xlsm": "read_excel", ".xls": "read_excel", ".ods": "read_excel",
    ".parquet": "read_parquet", ".feather": "read_feather", ".json": "read_json",
}
_NO_HEADER = (
    "the file has no header line: the first line must name the columns, e.g. id,prompt,duration"
)
_QUOTING_HINT = (
    "text containing commas, quotes or line breaks must be in double quotes, "
    'with quotes inside it doubled ("")'
)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(obj: Any) -> str:
    """The one JSON spelling of ``obj`` used for hashing: sorted keys, no spaces, UTF-8 text.

    Same text as ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``.
    """
    return _CANONICAL.encode(obj)


def _request_json(request: VideoRequest) -> str:
    return canonical_json(request.model_dump(mode="json", exclude_none=True))


# Fields that decide a request's JSON "shape": rows with equal values here differ only in the prompt.
# (Rows with an image or camera control are spelled one by one: those values are big or nested.)
_SHAPE_FIELDS = tuple(n for n in REQUEST_FIELDS if n not in ("prompt", "image", "image_tail", "camera_control"))
_PROMPT_KEY = '"prompt":'


def _shape(request: VideoRequest) -> tuple[Any, ...] | None:
    """What a request's JSON looks like apart from its prompt text; None: spell it one by one."""
    values = request.__dict__
    if (type(values.get("prompt")) is not str or values.get("image") is not None
            or values.get("image_tail") is not None or values.get("camera_control") is not None):
        return None
    shape = tuple(map(values.get, _SHAPE_FIELDS))
    types = tuple(map(type, shape))  # keeps 1, 1.0 and True apart
    if float in types:  # and repr keeps 0.0 and -0.0 apart
        return shape, types, tuple(map(repr, shape))
    return shape, types


def _requests_json(requests: Sequence[VideoRequest]) -> list[str]:
    """Each request's canonical JSON: the same text as ``_request_json``, made ~20x faster.

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
                template = templates[shape] = _template(request)
            except TypeError:  # an unhashable value (a request built without validation)
                pass
        if template is None:
            out.append(_request_json(request))
        else:
            out.append(f"{template[0]}{encode_basestring(request.prompt)}{template[1]}")
    return out


def _template(request: VideoRequest) -> tuple[str, str] | None:
    text = _request_json(request)
    head, key, tail = text.partition(_PROMPT_KEY)
    spelled = encode_basestring(request.prompt)
    if not key or not tail.startswith(spelled):
        return None
    template = (head + key, tail[len(spelled):])
    return template if template[0] + spelled + template[1] == text else None


@dataclass(frozen=True, eq=False, repr=False)
class Prompts:
    """A validated prompts table: the user's rows, one request and one stable key per row."""

    frame: pd.DataFrame  # the user's columns as given, input order, user's index kept
    requests: list[VideoRequest]  # one per row, validated, defaults applied
    keys: list[str]  # one stable key per row
    source: str  # the CSV path as given, "DataFrame" or "list"
    _fingerprint: str | None = field(default=None, init=False, compare=False)
    _json_cache: list[str] | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        if not len(self.frame) == len(self.requests) == len(self.keys):
            raise ValueError("Prompts: frame, requests and keys must have one entry per row")

    def __len__(self) -> int:
        return len(self.requests)

    def __repr__(self) -> str:
        return f"Prompts({len(self)} rows from {self.source!r})"

    def request_json(self) -> list[str]:
        """Each row's request as canonical JSON (computed once; the checkpoint stores these)."""
        if self._json_cache is None:
            object.__setattr__(self, "_json_cache", _requests_json(self.requests))
        assert self._json_cache is not None
        return self._json_cache

    def fingerprint(self) -> str:
        """sha256 hex over every row's key and canonical request JSON, in order.

        Two tables with the same fingerprint ask for the same videos under the same keys.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            keys, texts = self.keys, self.request_json()
            if len(keys) != len(texts):
                raise ValueError("Prompts: keys and requests must have one entry per row")
            for start in range(0, len(keys), 4096):  # hashed in chunks: the same bytes, fewer calls
                digest.update("".join([
                    f"[{encode_basestring(key) if type(key) is str else canonical_json(key)},{text}]\n"
                    for key, text in zip(keys[start:start + 4096], texts[start:start + 4096], strict=True)
                ]).encode())
            object.__setattr__(self, "_fingerprint", digest.hexdigest())
        assert self._fingerprint is not None
        return self._fingerprint


@gc_paused()
def load_prompts(
    source: str | os.PathLike[str] | pd.DataFrame | Sequence[str | Mapping[str, Any]] | Prompts,
    *,
    defaults: Mapping[str, Any] | None = None,
) -> Prompts:
    """Read and validate a prompts table.

    ``source``: a CSV path, a pandas DataFrame, a list of prompt texts and/or dicts of columns, or
    an existing ``Prompts`` (returned as is without ``defaults``, re-validated from its frame with
    them). ``defaults``: run-wide values for request fields, used where a row's cell is empty or
    its column is missing.

    Raises ``InputError`` listing every problem of the table, ``ConfigError`` for bad ``defaults``.
    """
    if isinstance(source, Prompts) and defaults is None:
        return source
    run_defaults = _check_defaults(defaults)
    given: object = source  # checked at run time: callers pass anything
    if isinstance(given, Prompts):
        return _validate(given.frame, given.source, run_defaults, csv_text=None)
    if isinstance(given, pd.DataFrame):
        return _validate(given.copy(), "DataFrame", run_defaults, csv_text=None)
    if isinstance(given, str | os.PathLike):
        name = os.fspath(given)
        frame, text = _read_csv(name)
        return _validate(frame, name, run_defaults, csv_text=text)
    if isinstance(given, Sequence) and not isinstance(given, bytes | bytearray):
        return _validate(_frame_from_list(given), "list", run_defaults, csv_text=None)
    raise InputError([Problem(None, None, _unsupported_type(given))], source="input")


# ---------------------------------------------------------------------------------------- defaults


def _check_defaults(defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run-wide defaults with blanks dropped; ConfigError for unknown keys or unusable values."""
    if not defaults:
        return {}
    unknown = [key for key in defaults if key not in REQUEST_FIELDS]
    if unknown:
        hints = [_did_you_mean(str(key), REQUEST_FIELDS) for key in unknown]
        raise ConfigError(
            f"defaults: unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}{''.join(hints)}; "
            f"allowed keys: {', '.join(REQUEST_FIELDS)}"
        )
    cleaned = {key: _cell(value) for key, value in defaults.items() if not _is_blank(value)}
    try:
        VideoRequest.model_validate({"prompt": "check", **cleaned})
    except ValidationError as exc:
        # A field error is wrong whatever the rows say; a model-level error (e.g. duration 7 for
        # the default model) depends on each row's values and is reported per row instead.
        wrong = [p for p in _problems_from(exc, row=None, field_errors_only=True)
                 if p.column in cleaned]
        if wrong:
            raise ConfigError("defaults: " + "; ".join(
                f"{p.column}: {p.message}" + (f" (allowed: {p.allowed})" if p.allowed else "")
                for p in wrong
            )) from None
    return cleaned


# ---------------------------------------------------------------------------------------- reading


def _read_csv(name: str) -> tuple[pd.DataFrame, str]:
    """The CSV at ``name`` as a DataFrame (header names stripped), and its text."""
    raw = _read_bytes(name)
    reader = _OTHER_FORMATS.get(os.path.splitext(name)[1].lower())
    if reader:
        raise _table_error(name, f"this is not a CSV file: save it as CSV (UTF-8), or load it with "
                                 f"pandas.{reader}(path) and pass the DataFrame")
    text = _decode(raw, name)
    header, first_rows = _scan(text, limit=1)
    if header is None and first_rows is not None:
        raise _table_error(name, _NO_HEADER)
    if header is not None:
        _check_header([cell.strip() for cell in header], name)
        if first_rows and first_rows[0][1] > len(header):
            # pandas would silently drop the first row's extra cells: refuse every such row
            _check_widths(_scan(text)[1] or first_rows, len(header), name)
    try:
        # From the bytes (checked above to be UTF-8): a StringIO would copy the text at 4 bytes a
        # character first; pandas parses UTF-8 bytes either way.
        frame = pd.read_csv(
            io.BytesIO(raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw),
            encoding="utf-8", dtype=_text_columns(header), keep_default_na=False,
            na_values=[""], index_col=False,
        )
    except pd.errors.EmptyDataError:
        raise _table_error(name, _NO_HEADER) from None
    except (pd.errors.ParserError, ValueError) as exc:
        header, rows = _scan(text)
        if header is not None and rows:
            _check_widths(rows, len(header), name)  # one problem per row with too many cells
        reason = str(exc).strip().removeprefix("Error tokenizing data. C error: ")
        raise _table_error(name, f"cannot parse the CSV ({reason}); {_QUOTING_HINT}") from None
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    return frame, text


def _text_columns(header: list[str] | None) -> dict[str, str]:
    """Request columns (but numbers) and ``id`` are read as text, so 'NA', '123', '007' stay."""
    return {
        raw: "str"
        for raw in header or ()
        if raw.strip() == ID_COLUMN
        or (raw.strip() in REQUEST_FIELDS and raw.strip() not in _NUMERIC_FIELDS)
    }


def _read_bytes(name: str) -> bytes:
    try:
        with open(name, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise _table_error(name, f"file not found: {os.path.abspath(name)} (check the path; "
                                 "to pass prompt texts directly, pass a list of strings)") from None
    except IsADirectoryError:
        raise _table_error(name, "this is a directory, not a CSV file: pass the path of the "
                                 "file itself") from None
    except PermissionError:
        raise _table_error(name, "permission denied: cannot read the file (check its permissions, "
                                 "or whether it is a directory)") from None
    except OSError as exc:
        raise _table_error(name, f"cannot read the file: {exc.strerror or exc}") from None
    if not raw:
        raise _table_error(name, "the file is empty (0 bytes): add a header line with a 'prompt' "
                                 "column and one line per video")
    return raw


def _decode(raw: bytes, name: str) -> str:
    """Strict UTF-8 (a leading byte-order mark is fine); the first bad byte is located exactly."""
    offset = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        line = raw.count(b"\n", 0, at) + 1
        bad = raw[at : at + 1].hex()
        raise InputError(
            [Problem(None, None,
                     f"not UTF-8: byte 0x{bad} at byte offset {at} (line {line}) is not valid "
                     "UTF-8; save it as UTF-8 (in Excel: Save As > 'CSV UTF-8')", line=line)],
            source=name,
        ) from None


def _scan(
    text: str, limit: int | None = None
) -> tuple[list[str] | None, list[tuple[int, int]] | None]:
    """The header cells, and (first line, cell count) of each data row (up to ``limit`` rows),
    skipping blank lines as pandas does. Rows are None when the csv module cannot read the text
    (e.g. a cell over its 128 KiB limit): line numbers then fall back to row + 1."""
    reader = csv.reader(_lines(text))
    header: list[str] | None = None
    rows: list[tuple[int, int]] = []
    next_line = 1
    try:
        for cells in reader:
            first, next_line = next_line, reader.line_num + 1
            if not cells or (len(cells) == 1 and cells[0] and not cells[0].strip()):
                continue  # a blank line
            if header is None:
                header = cells
            elif limit is not None and len(rows) >= limit:
                break
            else:
                rows.append((first, len(cells)))
    except csv.Error:
        return header, None
    return header, rows


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _lines(text: str) -> Iterator[str]:
    """The lines ``io.StringIO(text, newline="")`` yields (ends kept), one at a time: no copy of
    the whole text (a StringIO holds 4 bytes a character)."""
    return (match.group() for match in _LINE.finditer(text))


def _check_header(names: list[str], source: str) -> None:
    seen: dict[str, list[int]] = {}
    for position, name in enumerate(names, 1):
        if name:
            seen.setdefault(name, []).append(position)
    problems = [
        Problem(None, name, f"appears {len(positions)} times in the header (columns "
                            f"{_join(positions)}); keep one or rename the others")
        for name, positions in seen.items()
        if len(positions) > 1
    ]
    if problems:
        raise InputError(problems, source=source)


def _check_widths(records: list[tuple[int, int]], width: int, source: str) -> None:
    """A row with more cells than the header would shift or lose data: refuse it."""
    problems = [
        Problem(row, None, f"has {cells} cells but the header has {width} columns; "
                           f"{_QUOTING_HINT}", line=line)
        for row, (line, cells) in enumerate(records, 1)
        if cells > width
    ]
    if problems:
        raise InputError(problems, source=source)


def _frame_from_list(items: Sequence[Any]) -> pd.DataFrame:
    """A str item is a prompt; a mapping is a row (columns: union of keys, first appearance)."""
    rows: list[dict[Any, Any]] = []
    problems: list[Problem] = []
    for row, item in enumerate(items, 1):
        if isinstance(item, str):
            rows.append({"prompt": item})
        elif isinstance(item, Mapping):
            rows.append(dict(item))
        else:
            problems.append(Problem(
                row, None, f"item is of type {type(item).__name__}; each item must be a prompt "
                           "text or a dict of columns such as {'prompt': 'a red fox', "
                           "'duration': 10}"))
    if problems:
        raise InputError(problems, source="list")
    return pd.DataFrame(rows)


def _unsupported_type(source: object) -> str:
    kind = type(source).__name__
    text = (f"cannot read prompts from a {kind}: pass a CSV path, a pandas DataFrame, or a list "
            "of prompt texts and/or dicts of columns")
    if isinstance(source, pd.Series):
        text += " (for a Series of prompts: series.to_frame('prompt'))"
    elif isinstance(source, Mapping):
        text += " (for a dict of columns: pandas.DataFrame(your_dict))"
    elif isinstance(source, bytes | bytearray):
        text += " (for CSV bytes: write them to a file, or decode them and use io.StringIO "
        text += "with pandas.read_csv)"
    return text


# ---------------------------------------------------------------------------------------- checking


def _validate(
    frame: pd.DataFrame,
    source: str,
    defaults: dict[str, Any],
    csv_text: str | None,
) -> Prompts:
    """Check the table and every row; raise one InputError with everything found."""
    problems, blocking = _table_problems(frame, defaults)
    requests: list[VideoRequest] = []
    keys: list[str] = []
    texts: list[str] = []
    if not blocking:
        requests, row_problems, texts = _validate_rows(frame, defaults)
        problems += row_problems
        if ID_COLUMN in frame.columns:
            keys, id_problems = _keys_from_ids(frame[ID_COLUMN].tolist())
            problems += id_problems
        elif not problems:
            keys = _hashed_keys(texts)
    if problems:
        problems = _locate(problems, frame, csv_text)
        raise InputError(problems, source=source)
    _warn_near_misses(frame, source)
    prompts = Prompts(frame=frame, requests=requests, keys=keys, source=source)
    object.__setattr__(prompts, "_json_cache", texts)  # the checkpoint stores the same texts
    return prompts


def _table_problems(frame: pd.DataFrame, defaults: Mapping[str, Any]) -> tuple[list[Problem], bool]:
    """Problems with the table as a whole, and whether rows cannot be checked because of them."""
    columns = list(frame.columns)
    problems: list[Problem] = []
    blocking = False
    if len(frame) == 0:
        problems.append(Problem(None, None, "no rows: the table has no data rows; add one row "
                                            "per video"))
        blocking = True
        if not columns:
            return problems, blocking
    needs_prompt = "prompt" not in defaults and "image" not in columns
    if "prompt" not in columns and needs_prompt:
        problems.append(_missing_prompt(columns))
        blocking = True
    counts = Counter(columns)
    for name, count in counts.items():
        if count > 1 and (name in REQUEST_FIELDS or name == ID_COLUMN):
            problems.append(Problem(None, str(name), f"appears {count} times; keep one column "
                                                     "with this name"))
            blocking = True
    problems += [
        Problem(None, str(name), "this name is reserved for results; rename the column "
                                 f"(e.g. 'input_{name}')")
        for name in counts
        if name in RESULT_COLUMNS
    ]
    return problems, blocking


def _missing_prompt(columns: list[Any]) -> Problem:
    names = [str(c) for c in columns]
    shown = ", ".join(map(repr, names[:10])) + (", ..." if len(names) > 10 else "")
    message = f"there is no 'prompt' column (columns found: {shown or 'none'})"
    close = [n for n in names if n.strip().lower() in ("prompt", "prompts")]
    close += [n for n in difflib.get_close_matches("prompt", names, n=2) if n not in close]
    if len(names) == 1 and (";" in names[0] or "\t" in names[0]):
        sep = "';'" if ";" in names[0] else "a tab"
        message += f"; the header seems to be separated by {sep}: save the file with commas"
    elif close:
        message += f"; did you mean {close[0]!r}? Column names are matched exactly"
    return Problem(None, "prompt", message, allowed="a column named exactly 'prompt'")


def _validate_rows(
    frame: pd.DataFrame, defaults: Mapping[str, Any]
) -> tuple[list[VideoRequest], list[Problem], list[str]]:
    """One VideoRequest per row (cell, else default, else field default), every row problem, and
    each valid row's canonical request JSON.

    Rows usually differ only in their prompt: pydantic checks each distinct combination of the
    other cells once, with a stand-in prompt (the checks look at the prompt only to see whether it
    is empty), and every row of a valid combination gets a copy with its own prompt. A row whose
    combination fails, whose prompt is not text, or with a camera_control is validated on its own,
    so its problems are exactly those pydantic reports for it.
    """
    fields = [name for name in REQUEST_FIELDS if name in frame.columns]
    columns = [[_cell(v) for v in frame[name].tolist()] for name in fields]
    rows = zip(*columns, strict=True) if columns else iter([()] * len(frame))
    prompt_at = fields.index("prompt") if "prompt" in fields else None
    default_prompt = defaults.get("prompt", _EMPTY)
    if type(default_prompt) is str:  # stripped like a cell (the validator strips it too)
        default_prompt = default_prompt.strip() or _EMPTY
    # What decides a row's combination: each cell, tagged so that 1, 1.0, True and 0.0, -0.0 differ.
    tagged = [_tagged(name, column) for name, column in zip(fields, columns, strict=True)
              if name != "prompt"]
    combos = zip(*tagged, strict=True) if tagged else iter([()] * len(frame))
    checked: dict[tuple[Any, ...], tuple[VideoRequest, tuple[str, str] | None] | None] = {}
    requests: list[VideoRequest] = []
    problems: list[Problem] = []
    texts: list[str] = []
    for row, (cells, combo) in enumerate(zip(rows, combos, strict=True), 1):
        prompt = cells[prompt_at] if prompt_at is not None else _EMPTY
        if prompt is _EMPTY:
            prompt = default_prompt
        entry = None
        if (prompt is _EMPTY or type(prompt) is str) and _SLOW not in combo:
            key = (combo, prompt is _EMPTY)
            try:
                entry = checked[key]
            except KeyError:
                entry = checked[key] = _check_combination(fields, cells, defaults, prompt is _EMPTY)
        if entry is not None:
            template, spelling = entry
            request = _with_prompt(template, template.prompt if prompt is _EMPTY else prompt)
            requests.append(request)
            texts.append(_request_json(request) if spelling is None
                         else f"{spelling[0]}{encode_basestring(request.prompt)}{spelling[1]}")
            continue
        given = {name: v for name, v in zip(fields, cells, strict=True) if v is not _EMPTY}
        try:
            request = VideoRequest.model_validate({**defaults, **given})
        except ValidationError as exc:
            problems += _problems_from(exc, row, from_defaults=defaults.keys() - given.keys())
        else:
            requests.append(request)
            texts.append(_request_json(request))
    return requests, problems, texts


_SLOW: Any = object()  # a cell that makes its row be validated on its own
_SCALARS = frozenset({int, float, bool})


def _tagged(name: str, column: list[Any]) -> list[Any]:
    if name == "camera_control":  # a nested value: each row on its own
        return [_EMPTY if v is _EMPTY else _SLOW for v in column]
    return [v if type(v) is str or v is _EMPTY
            else (type(v), repr(v)) if type(v) in _SCALARS else _SLOW
            for v in column]


def _check_combination(
    fields: list[str], cells: tuple[Any, ...], defaults: Mapping[str, Any], no_prompt: bool
) -> tuple[VideoRequest, tuple[str, str] | None] | None:
    """A validated request for these cells with a stand-in prompt ("x", or none), and its JSON
    split around the prompt; None if pydantic refuses the combination."""
    given = {name: v for name, v in zip(fields, cells, strict=True)
             if v is not _EMPTY and name != "prompt"}
    values = {**defaults, **given}
    if no_prompt:
        values.pop("prompt", None)
    else:
        values["prompt"] = "x"
    try:
        request = VideoRequest.model_validate(values)
    except ValidationError:
        return None
    if request.camera_control is not None:
        return None
    return request, _template(request)


_set_attribute = object.__setattr__


def _with_prompt(template: VideoRequest, prompt: str) -> VideoRequest:
    """``template`` with another prompt: what ``model_validate`` gives for a row that differs from
    the template's only in its (already stripped, non-empty) prompt text. Shares the template's
    fields-set (the model is frozen, nothing changes it)."""
    request = VideoRequest.__new__(VideoRequest)
    values = template.__dict__.copy()
    values["prompt"] = prompt
    _set_attribute(request, "__dict__", values)
    _set_attribute(request, "__pydantic_fields_set__", template.__pydantic_fields_set__)
    _set_attribute(request, "__pydantic_extra__", template.__pydantic_extra__)
    _set_attribute(request, "__pydantic_private__", template.__pydantic_private__)
    return request


def _problems_from(
    exc: ValidationError,
    row: int | None,
    from_defaults: Iterable[str] = (),
    *,
    field_errors_only: bool = False,
) -> list[Problem]:
    """Pydantic errors as Problems: column = field (or ctx['field']), hint = ctx['allowed']."""
    defaulted = set(from_defaults)
    problems = []
    for error in request_errors(exc):  # a row's several cross-field problems come one by one
        ctx = error.get("ctx") or {}
        loc = error["loc"]
        if field_errors_only and not loc:
            continue
        column = str(loc[0]) if loc else ctx.get("field")
        message = error["msg"]
        if loc and "allowed" not in ctx:
            message += f", got {_short(error['input'])}"
        if column in defaulted:
            message += " (the value comes from defaults)"
        allowed = ctx.get("allowed", _HINTS.get(column or ""))
        problems.append(Problem(row, column, message, None if allowed is None else str(allowed)))
    return problems


def _keys_from_ids(ids: list[Any]) -> tuple[list[str], list[Problem]]:
    """Row keys from the id column, with a problem per empty id and per id used more than once."""
    keys = [v.strip() if isinstance(v, str) else _id_text(v) for v in ids]
    problems = [
        Problem(row, ID_COLUMN, "id is empty",
                allowed="a unique text per row (or no id column at all, for automatic keys)")
        for row, key in enumerate(keys, 1)
        if not key
    ]
    repeated = {key for key, count in Counter(keys).items() if count > 1 and key}
    rows_by_key: dict[str, list[int]] = {key: [] for key in repeated}
    if repeated:
        for row, key in enumerate(keys, 1):
            if key in repeated:
                rows_by_key[key].append(row)
    problems += [
        Problem(rows[1], ID_COLUMN, f"id {key!r} is used by rows {_join(rows)}; ids must be "
                                    "unique", allowed="a unique text per row")
        for key, rows in rows_by_key.items()
    ]
    return keys, problems


def _hashed_keys(texts: list[str]) -> list[str]:
    """sha256(request JSON + '#' + occurrence)[:16]: stable, and distinct for identical rows."""
    seen: dict[str, int] = {}
    keys = []
    sha256 = hashlib.sha256
    for body in texts:
        n = seen[body] = seen.get(body, -1) + 1
        keys.append(sha256(f"{body}#{n}".encode()).hexdigest()[:16])
    return keys


def _locate(problems: list[Problem], frame: pd.DataFrame, csv_text: str | None) -> list[Problem]:
    """Whole-table problems first, then by row; add CSV lines, or DataFrame index labels."""
    problems = sorted(problems, key=lambda p: (p.row is not None, p.row or 0))
    if csv_text is not None:
        rows = _scan(csv_text)[1]
        lines = [line for line, _ in rows] if rows and len(rows) == len(frame) else None
        return [
            p if p.row is None or p.line is not None
            else replace(p, line=lines[p.row - 1] if lines else p.row + 1)
            for p in problems
        ]
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return problems
    labels = index.tolist()
    return [
        p if p.row is None else replace(p, message=f"{p.message} [index {labels[p.row - 1]!r}]")
        for p in problems
    ]


def _warn_near_misses(frame: pd.DataFrame, source: str) -> None:
    """Warn about a column that looks like a request field but is not one (e.g. 'Duration')."""
    wanted = {_normalize(name): name for name in (*REQUEST_FIELDS, ID_COLUMN)}
    for column in frame.columns:
        if not isinstance(column, str) or column in wanted.values():
            continue
        meant = wanted.get(_normalize(column))
        if meant is not None and meant not in frame.columns:
            warnings.warn(
                f"{source}: column {column!r} is not used as {meant!r} (names are matched "
                f"exactly) and is only carried through; rename it to {meant!r} if you meant it",
                UserWarning,
                stacklevel=4,
            )


# ---------------------------------------------------------------------------------------- helpers


_EMPTY: Any = object()  # an empty cell: the default applies


def _cell(value: Any) -> Any:
    """A cell as a request value: text stripped; ``_EMPTY`` for an empty cell."""
    if isinstance(value, str):
        return value.strip() or _EMPTY
    if value is None or value is pd.NA or value is pd.NaT:
        return _EMPTY
    if isinstance(value, float) and value != value:  # NaN
        return _EMPTY
    return value


def _is_blank(value: Any) -> bool:
    """An empty cell: None, NaN, pd.NA/NaT, or text that is empty or only whitespace."""
    return _cell(value) is _EMPTY


def _id_text(value: Any) -> str:
    """An id as key text ('' when empty): 7 and 7.0 (an int column with blanks) both give '7'."""
    if _is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _normalize(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:20]))
    return shown + (f" and {len(numbers) - 20} more" if len(numbers) > 20 else "")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table_error(source: str, message: str) -> InputError:
    return InputError([Problem(None, None, message)], source=source)
