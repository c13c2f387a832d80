"""input formats: the same table as .csv, .tsv, .parquet, .jsonl, .json, .xlsx and a DataFrame reads
to the same rows and keys (ids and prompts typed like "007" stay text); a bad file, a bad line or a
missing extra is one clear input error; the command reads each format and keeps its checkpoint next
to the input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

from videobatch import _input_formats
from videobatch._inputs import load_prompts
from videobatch.cli.main import main
from videobatch.errors import InputError

TABLE = pd.DataFrame({
    "id": ["007", "b", "c"],
    "prompt": ["a red fox", "123", "a heron, at dawn"],
    "duration": [5, 10, 5],
    "campaign": ["spring", None, "fall"],
})


def write(table: pd.DataFrame, path: Path) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        table.to_csv(path, index=False)
    elif suffix == ".tsv":
        table.to_csv(path, sep="\t", index=False)
    elif suffix == ".parquet":
        table.to_parquet(path, index=False)
    elif suffix == ".jsonl":
        table.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        table.to_json(path, orient="records")
    elif suffix == ".xlsx":
        table.to_excel(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".tsv", ".parquet", ".jsonl", ".json", ".xlsx"])
def test_every_format_reads_as_the_csv_does(tmp_path, suffix):
    csv = load_prompts(write(TABLE, tmp_path / "p.csv"))
    other = load_prompts(write(TABLE, tmp_path / f"p{suffix}"))
    frame = load_prompts(TABLE)
    assert other.keys == csv.keys == frame.keys == ["007", "b", "c"]
    assert other.requests == csv.requests == frame.requests
    assert other.requests[1].prompt == "123" and other.requests[1].duration == 10
    assert other.source.endswith(f"p{suffix}")


def test_a_missing_excel_extra_says_how_to_install_it(tmp_path, monkeypatch):
    path = write(TABLE, tmp_path / "p.xlsx")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openpyxl" else real(name, *a))
    with pytest.raises(InputError) as info:
        load_prompts(path)
    assert "pip install 'videobatch[excel]'" in str(info.value)


def test_bad_files_are_one_clear_error(tmp_path):
    cases = {
        "p.parquet": (b"PAR1 this is not parquet", "cannot read the Parquet file"),
        "p.xlsx": (b"PK\x03\x04 not a workbook", "cannot read the Excel file"),
        "p.json": (b'{"prompt": "one object"}', "must be an array of objects"),
        "p.xls": (b"\xd0\xcf\x11\xe0", "save the old .xls workbook as .xlsx"),
        "p.tsv": (b"prompt\tduration\na fox\t5\textra\n", "has 3 cells but the header has 2"),
        "q.tsv": ("prompt\ncaf\xe9\n".encode("latin-1"), "not UTF-8"),
        "e.parquet": (b"", "the file is empty"),
    }
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError) as info:
            load_prompts(tmp_path / name)
        assert expected in str(info.value), name
    with pytest.raises(InputError, match="file not found"):
        load_prompts(tmp_path / "absent.parquet")


def test_every_bad_jsonl_line_is_reported_at_once(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a fox"}\n{"prompt": "a cat",}\n\n[1, 2]\n{"prompt": "a heron"}\n',
                    encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_prompts(path)
    assert [p.line for p in info.value.problems] == [2, 4]
    assert "line 2 is not valid JSON" in str(info.value)
    assert "line 4 is a JSON list, not an object" in str(info.value)


def test_jsonl_rows_keep_their_json_types_and_no_dates_are_guessed(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "2024-01-01", "prompt": "a fox", "seed": 7}) + "\n", encoding="utf-8")
    prompts = load_prompts(path)
    assert prompts.keys == ["2024-01-01"] and prompts.requests[0].seed == 7


@pytest.mark.parametrize("suffix", [".xlsx", ".jsonl", ".parquet"])
def test_the_command_reads_each_format_and_checkpoints_next_to_it(tmp_path, suffix, capsys):
    path = write(TABLE, tmp_path / f"prompts{suffix}")
    assert main([str(path), "-P", "latency=0", "-q"]) == 0
    assert (tmp_path / "prompts.checkpoint.parquet").exists()
    results = pd.read_csv(tmp_path / "prompts.results.csv", dtype={"id": str})
    assert results["id"].tolist() == ["007", "b", "c"]
    assert (results["status"] == "completed").all()


def test_the_formats_list_is_what_the_readers_know():
    for suffix in (".tsv", ".parquet", ".jsonl", ".json", ".xlsx"):
        assert suffix in _input_formats.INPUT_FORMATS
        assert suffix in _input_formats._READERS
