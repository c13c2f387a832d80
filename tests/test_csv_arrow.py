"""A CSV read by Arrow must be the table pandas.read_csv makes of it, or not be used at all: every
case here is read both ways, and wherever Arrow answers, its table (as a DataFrame) equals
pandas' frame exactly, types included."""

from __future__ import annotations

import csv
import io
import random

import pandas as pd
import pyarrow as pa
import pytest

import videobatch
from videobatch._csv_arrow import read_typed
from videobatch._input_check import validate_rows
from videobatch._input_read import _text_columns
from videobatch._inputs import load_prompts

CASES = {
    "plain": "prompt,duration,notes\na,5,x\nb,10,y\n",
    "an empty number cell": "prompt,duration,n\na,5,1\nb,,2\n",
    "whole numbers carried": "prompt,count\na,1\nb,2\n",
    "whole numbers with a blank": "prompt,count\na,1\nb,\n",
    "leading zeros": "prompt,code\na,007\nb,010\n",
    "a plus sign": "prompt,code\na,+5\nb,6\n",
    "negative": "prompt,code\na,-5\nb,6\n",
    "decimals": "prompt,x\na,1.5\nb,2\n",
    "numbers and text": "prompt,x\na,5\nb,abc\n",
    "booleans": "prompt,ok\na,True\nb,false\n",
    "booleans with a blank": "prompt,ok\na,True\nb,\n",
    "booleans and text": "prompt,ok\na,True\nb,maybe\n",
    "booleans and numbers": "prompt,ok\na,True\nb,1\n",
    "quoted": 'prompt,notes\n"a, b","say ""hi"""\n"multi\nline",x\n',
    "a quoted empty cell": 'prompt,notes\na,""\nb,x\n',
    "CRLF": "prompt,notes\r\na,x\r\nb,y\r\n",
    "no final newline": "prompt,notes\na,x\nb,y",
    "a blank line": "prompt,notes\na,x\n\nb,y\n",
    "a line of spaces": "prompt,notes\na,x\n   \nb,y\n",
    "a line of spaces, one column": "prompt\na\n   \nb\n",
    "a short row": "prompt,notes,z\na,x\nb,y,z\n",
    "a row of commas": "prompt,notes\na,x\n,\n",
    "spaces around header names": " prompt , notes \na,x\n",
    "an empty header name": "prompt,,x\na,b,c\n",
    "no rows": "prompt,notes\n",
    "nan as text": "prompt,x\na,nan\nb,abc\n",
    "nan only": "prompt,x\na,nan\nb,NaN\n",
    "infinity": "prompt,x\na,inf\nb,5\n",
    "ids": "id,prompt\n007,a\n8,b\n",
    "an empty column": "prompt,x,model\na,,\nb,,\n",
    "a number with a space": "prompt,x\na, 5\nb,6\n",
    "past int64": "prompt,x\na,12345678901234567890\nb,6\n",
    "unicode": "prompt,notes\nçà,日本\nb,🙂\n",
    "a quote inside a cell": 'prompt,notes\nab"c,x\nb,y\n',
    "a quote left open": 'id,prompt\n1,"never closed\n2,b\n',
    "a quote left open, even count": 'id,prompt\n1,ab"c\n2,"never closed\n3,b\n',
    "request text columns": "prompt,aspect_ratio,seed\na,16:9,1\nb,,2\n",
    "dates": "prompt,d\na,2026-01-05\nb,2026-01-06\n",
    "spaces kept": "prompt,notes\na ,x \nb,y\n",
    "exponents": "prompt,x\na,1e5\nb,2\n",
    "a dangling exponent": "prompt,x\na,1e\nb,2\n",
}


def _both(text: str) -> tuple[pd.DataFrame | None, pd.DataFrame | Exception]:
    raw = text.encode()
    header = next(csv.reader(io.StringIO(text)))
    table = read_typed(raw, header, {name.strip() for name in _text_columns(header)})
    try:
        expected = pd.read_csv(io.BytesIO(raw), encoding="utf-8", dtype=_text_columns(header),
                               keep_default_na=False, na_values=[""], index_col=False)
        expected.columns = pd.Index([str(c).strip() for c in expected.columns])
    except (ValueError, pd.errors.ParserError) as exc:
        return (None if table is None else table.to_pandas()), exc
    return (None if table is None else table.to_pandas()), expected


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_arrow_reads_as_pandas_or_not_at_all(text):
    got, expected = _both(text)
    if got is None:
        return  # pandas reads it
    assert isinstance(expected, pd.DataFrame), f"pandas refuses this file ({expected}), Arrow read it"
    pd.testing.assert_frame_equal(got, expected)


def test_the_usual_shot_list_is_read_by_arrow():
    """The fast path is taken where it matters: text, whole numbers with blanks, dates, ids."""
    text = ("id,prompt,duration,aspect_ratio,notes,take,shot_date\n"
            '007,"a fox, running",10,9:16,client approved,1,2026-01-05\n'
            'S2,a lake at dawn,,,"say ""hero""",,2026-01-06\n')
    got, expected = _both(text)
    assert got is not None
    pd.testing.assert_frame_equal(got, expected)


_TOKENS = ["1", "007", "-3", "+4", " 5", "6 ", "1.5", ".5", "1e3", "1e", "nan", "NaN", "inf",
           "-Infinity", "True", "false", "TRUE", "yes", "abc", "2026-01-05", "10:30", "", '""',
           "a b", "x,y", '"q, r"', "ü", "0", "99999999999999999999", "1_000", "0x10", "Ⅻ", "١٢",
           " 99999999999999999999", "1234567890123456", "-0", "00", "1.", "+.5e-3", "t", "F"]


@pytest.mark.filterwarnings("ignore::pandas.errors.ParserWarning")  # a row wider than the header
@pytest.mark.parametrize("seed", range(40))
def test_random_columns_read_as_pandas_or_not_at_all(seed):
    rng = random.Random(seed)
    rows = rng.randint(1, 6)
    columns = rng.randint(1, 4)
    header = ["prompt"] + [f"c{i}" for i in range(columns)]
    pool = rng.sample(_TOKENS, 4)  # few values per file: columns of one kind happen often
    lines = [",".join(header)]
    for _ in range(rows):
        lines.append(",".join(["p"] + [rng.choice(pool) for _ in range(columns)]))
    got, expected = _both("\n".join(lines) + "\n")
    if got is not None:
        assert isinstance(expected, pd.DataFrame), (lines, expected)
        pd.testing.assert_frame_equal(got, expected)


def test_prompts_from_a_csv_make_the_dataframe_only_when_asked(tmp_path):
    path = tmp_path / "shots.csv"
    path.write_text("prompt,duration,notes\na fox,10,x\na lake,,y\n")
    prompts = load_prompts(str(path))
    assert prompts.columns == ["prompt", "duration", "notes"]
    assert prompts._frame is None  # nothing asked for a DataFrame yet
    expected = pd.read_csv(path, dtype={"prompt": "str"}, keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(prompts.frame, expected)
    assert [r.duration for r in prompts.requests] == [10, None]


def test_a_csv_runs_results_carry_its_columns_as_pandas_reads_them(tmp_path):
    """End to end: the results in memory and those read back from the checkpoint hold the user's
    columns exactly as pandas reads the file (the Arrow path's table went through the snapshot)."""
    path = tmp_path / "shots.csv"
    path.write_text("id,prompt,duration,take,approved,shot_date,notes\n"
                    "S1,a fox in snow,10,1,True,2026-01-05,client approved\n"
                    'S2,"a lake, at dawn",,,False,2026-01-06,"say ""hero"""\n'
                    "S3,a comet,5,3,true,2026-01-07,\n")
    assert isinstance(load_prompts(str(path)).table, pa.Table)  # the Arrow path is the one tested
    checkpoint = tmp_path / "run.parquet"
    df = videobatch.run(str(path), "local", render=False, latency=0.01, jitter=0.0, progress=False,
                        checkpoint=checkpoint)
    expected = pd.read_csv(path, dtype={"id": "str", "prompt": "str"}, keep_default_na=False,
                           na_values=[""])
    assert (df["status"] == "completed").all()
    pd.testing.assert_frame_equal(df[expected.columns], expected)
    pd.testing.assert_frame_equal(videobatch.results(checkpoint)[expected.columns], expected)


def test_rows_of_an_arrow_table_check_as_its_dataframes_do():
    # Cells of every kind of whitespace beside letters that share their bytes, empty and null
    # cells, across chunks: validate_rows gives the same requests and problems either way.
    rng = random.Random(5)
    spaces = [c for c in map(chr, range(0x3001)) if c.isspace()]
    letters = ["a", "é", "ℂ", "〇", "˅", "\u2030", "\u0100", "🎬", "x y"]
    cells = []
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.05:
            cells.append(None)
        elif kind < 0.1:
            cells.append("")
        else:
            parts = [rng.choice(spaces if rng.random() < 0.3 else letters) for _ in range(rng.randint(1, 4))]
            cells.append("".join(parts))
    table = pa.table({"prompt": pa.chunked_array([cells[:1000], cells[1000:2500], cells[2500:]], pa.string())})
    for part in (table, table.slice(700, 1500)):
        from_frame, from_table = validate_rows(part.to_pandas(), {}), validate_rows(part, {})
        assert from_frame[0] == from_table[0] and from_frame[1] == from_table[1]  # requests, problems
        assert len(from_table[1]) > 50 and len(from_table[0]) > 1000
