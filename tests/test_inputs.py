"""inputs: reading CSV/DataFrame/list, validating every row, stable keys, all problems at once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from videobatch import _input_check as check_module
from videobatch import _input_keys as keys_module
from videobatch import _input_read as read_module
from videobatch._inputs import Prompts, canonical_json, load_prompts
from videobatch.catalog import Catalog
from videobatch.errors import ConfigError, InputError, Problem
from videobatch.providers.kling.options import MODELS_FILE, KlingOptions
from videobatch.request import REQUEST_FIELDS, RequestRules, VideoRequest

DATA = Path(__file__).resolve().parents[1] / "data" / "prompts.csv"
# Kling's rules as a run uses them (its packaged catalogue, no user file)
KLING = RequestRules("kling", KlingOptions, Catalog.load("kling", MODELS_FILE, user=False))


def kling(source: object, **kwargs: object) -> Prompts:
    return load_prompts(source, rules=KLING, **kwargs)  # type: ignore[arg-type]


def write(tmp_path: Path, text: str, name: str = "prompts.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_of(source: object, **kwargs: object) -> list[Problem]:
    """The problems found in ``source`` checked against Kling's rules (unless ``rules=`` says)."""
    kwargs.setdefault("rules", KLING)
    with pytest.raises(InputError) as info:
        load_prompts(source, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------------------------ good inputs


def test_csv_reads_requests_keys_and_metadata(tmp_path):
    path = write(tmp_path, (
        "id,prompt,duration,aspect_ratio,mode,campaign\n"
        'a-1,"A fox, running",10,9:16,pro,spring\n'
        "a-2,A lighthouse at dusk,,,,brand\n"
    ))
    prompts = kling(path)
    assert prompts.source == path
    assert len(prompts) == 2
    assert prompts.keys == ["a-1", "a-2"]
    first, second = prompts.requests
    assert (first.prompt, first.duration, first.aspect_ratio, first.options) == (
        "A fox, running", 10, "9:16", {"mode": "pro"})
    # a request holds what the row gave; the provider fills in its model's defaults when sending
    assert (second.duration, second.aspect_ratio, second.options, second.model) == (None, None, None, None)
    assert list(prompts.frame.columns) == ["id", "prompt", "duration", "aspect_ratio", "mode",
                                           "campaign"]
    assert prompts.frame["campaign"].tolist() == ["spring", "brand"]
    assert isinstance(prompts.frame.index, pd.RangeIndex)


def test_shipped_example_csv_loads_cleanly():
    prompts = load_prompts(DATA)
    assert 18 <= len(prompts) <= 22
    assert len(set(prompts.keys)) == len(prompts)
    assert all(key.startswith("spot-") for key in prompts.keys)
    assert {"campaign", "negative_prompt"} <= set(prompts.frame.columns)
    assert {r.aspect_ratio for r in prompts.requests} == {"16:9", "9:16", "1:1"}
    assert {r.options["mode"] for r in prompts.requests} == {"std", "pro"}  # (no rules: read as options)
    assert len(kling(DATA)) == len(prompts)
    assert {r.duration for r in prompts.requests} == {5, 10}


def test_csv_with_bom_crlf_and_padded_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf id , prompt \r\nx,Caf\xc3\xa9 at dawn\r\n")
    prompts = load_prompts(path)
    assert list(prompts.frame.columns) == ["id", "prompt"]
    assert prompts.keys == ["x"]
    assert prompts.requests[0].prompt == "Café at dawn"


def test_prompt_na_and_none_stay_text(tmp_path):
    path = write(tmp_path, "prompt,note\nNA,NA\nNone,null\n")
    prompts = load_prompts(path)
    assert [r.prompt for r in prompts.requests] == ["NA", "None"]
    assert prompts.frame["note"].tolist() == ["NA", "null"]


def test_csv_text_columns_keep_their_spelling(tmp_path):
    path = write(tmp_path, "id,prompt\n007,123\n")
    prompts = load_prompts(path)
    assert prompts.keys == ["007"]
    assert prompts.requests[0].prompt == "123"


def test_dataframe_columns_dtypes_and_index_are_kept():
    df = pd.DataFrame(
        {
            "prompt": ["a red kite", "a blue kite"],
            "budget": pd.array([3, None], dtype="Int64"),
            "tier": pd.Categorical(["gold", "silver"]),
            "when": pd.to_datetime(["2024-05-01", "2024-05-02"]),
            "duration": [10, 5],
        },
        index=pd.Index(["r-a", "r-b"], name="ref"),
    )
    prompts = load_prompts(df)
    assert prompts.source == "DataFrame"
    assert prompts.frame.dtypes.to_dict() == df.dtypes.to_dict()
    assert prompts.frame.index.equals(df.index)
    pd.testing.assert_frame_equal(prompts.frame, df)
    assert [r.duration for r in prompts.requests] == [10, 5]
    df.loc["r-a", "prompt"] = "changed afterwards"
    assert prompts.frame.loc["r-a", "prompt"] == "a red kite"


def test_list_of_strings():
    prompts = load_prompts(["a heron in fog", "a neon city"])
    assert prompts.source == "list"
    assert [r.prompt for r in prompts.requests] == ["a heron in fog", "a neon city"]
    assert list(prompts.frame.columns) == ["prompt"]


def test_list_of_dicts_and_mixed_list():
    prompts = load_prompts([
        {"prompt": "waves", "shot": "wide"},
        "plain text prompt",
        {"duration": 10, "prompt": "dunes", "owner": "ana"},
    ])
    assert list(prompts.frame.columns) == ["prompt", "shot", "duration", "owner"]
    assert [r.duration for r in prompts.requests] == [None, None, 10]
    assert prompts.frame["owner"].tolist()[2] == "ana"


def test_model_alias_resolves():
    prompts = kling([{"prompt": "a koi pond", "model": "Kling-V2.6"}])
    assert prompts.requests[0].model == "kling-v2-6"


def test_image_column_makes_prompt_column_optional():
    prompts = load_prompts([{"image": "https://example.com/a.png"}])
    assert prompts.requests[0].image == "https://example.com/a.png"


# ---------------------------------------------------------------------------------------- defaults


def test_defaults_apply_to_missing_columns_and_empty_cells(tmp_path):
    path = write(tmp_path, (
        "prompt,duration,mode,negative_prompt\n"
        "a,,pro,\n"      # empty cells take the defaults
        "b,5,  ,   \n"    # whitespace is empty too
        "c,10,std,grainy\n"
    ))
    prompts = kling(
        path, defaults={"duration": 10, "mode": "std", "aspect_ratio": "1:1",
                        "negative_prompt": "blurry"}
    )
    a, b, c = prompts.requests
    assert (a.duration, a.options, a.negative_prompt) == (10, {"mode": "pro"}, "blurry")
    assert (b.duration, b.options, b.negative_prompt) == (5, {"mode": "std"}, "blurry")
    assert (c.duration, c.options, c.negative_prompt) == (10, {"mode": "std"}, "grainy")
    assert {r.aspect_ratio for r in prompts.requests} == {"1:1"}


def test_none_and_nan_cells_take_defaults():
    df = pd.DataFrame({"prompt": ["a", "b"], "mode": [None, "std"], "duration": [float("nan"), 5]})
    prompts = kling(df, defaults={"mode": "pro", "duration": 10})
    assert [(r.options, r.duration) for r in prompts.requests] == [({"mode": "pro"}, 10), ({"mode": "std"}, 5)]


def test_without_a_default_nothing_is_filled_in_until_the_provider_sends_it():
    request = kling([{"prompt": "x", "mode": ""}]).requests[0]
    assert (request.model, request.options, request.duration) == (None, None, None)
    card = KLING.card(request.model)
    assert card is not None and card.complete(request.values())["mode"] == "pro"  # kling-v2-6's default


def test_unknown_default_key_is_a_config_error():
    with pytest.raises(ConfigError) as info:
        load_prompts(["x"], defaults={"durration": 10})
    text = str(info.value)
    assert "'durration'" in text
    assert "did you mean 'duration'" in text
    for name in REQUEST_FIELDS:
        assert name in text


def test_unusable_default_value_is_a_config_error():
    with pytest.raises(ConfigError, match="defaults: model: kling has no model 'kling-v9'"):
        kling(["x"], defaults={"model": "kling-v9"})
    with pytest.raises(ConfigError, match="defaults: duration: duration must be a whole number"):
        kling(["x"], defaults={"duration": "long"})


def test_prompt_default_makes_prompt_column_optional():
    prompts = load_prompts(pd.DataFrame({"image": ["u.png", "v.png"]}),
                           defaults={"prompt": "slow zoom in"})
    assert [r.prompt for r in prompts.requests] == ["slow zoom in"] * 2


def test_row_problem_caused_by_a_default_says_so():
    problem = only(problems_of([{"prompt": "x"}, {"prompt": "y", "duration": 5}],
                               defaults={"duration": 7}))
    assert (problem.row, problem.column) == (1, "duration")
    assert "from defaults" in problem.message


def test_prompts_object_passes_through_or_revalidates_with_defaults():
    prompts = load_prompts(["a", "b"])
    assert load_prompts(prompts) is prompts
    again = kling(prompts, defaults={"mode": "pro"})
    assert [r.options for r in again.requests] == [{"mode": "pro"}, {"mode": "pro"}]
    assert again.source == "list"


# -------------------------------------------------------------------------------------- row keys


def test_same_input_gives_same_keys(tmp_path):
    path = write(tmp_path, "prompt,mode\na cat,std\na dog,pro\n")
    assert load_prompts(path).keys == load_prompts(path).keys
    assert load_prompts(path).keys == load_prompts(pd.read_csv(path)).keys


def test_identical_rows_get_distinct_keys():
    keys = load_prompts(["same", "same", "other", "same"]).keys
    assert len(set(keys)) == 4
    assert all(len(key) == 16 for key in keys)


def test_hashed_key_recipe():
    request = load_prompts(["same"]).requests[0]
    body = canonical_json(request.model_dump(exclude_none=True))
    expected = [hashlib.sha256(f"{body}#{n}".encode()).hexdigest()[:16] for n in (0, 1)]
    assert load_prompts(["same", "same"]).keys == expected


def test_id_column_is_used_verbatim():
    prompts = load_prompts(pd.DataFrame({"id": ["  spot-A ", "Spot-a", 7], "prompt": list("xyz")}))
    assert prompts.keys == ["spot-A", "Spot-a", "7"]


def test_integer_ids_become_text_keys():
    prompts = load_prompts(pd.DataFrame({"id": [7, 8], "prompt": ["x", "y"]}))
    assert prompts.keys == ["7", "8"]


def test_giving_a_value_changes_hashed_keys_a_catalogue_default_does_not():
    plain = kling(["a", "b"]).keys
    assert kling(["a", "b"], defaults={"mode": "pro"}).keys != plain
    # Keys hash what the rows give, not the model's defaults: a catalogue whose defaults change
    # (a new default model, say) leaves every row's key, and so its checkpointed result, as it was.
    changed = Catalog.load("kling", MODELS_FILE, user=False)
    changed.default_model = "kling-v3"
    assert kling(["a", "b"]).keys == load_prompts(
        ["a", "b"], rules=RequestRules("kling", KlingOptions, changed)).keys


def test_alias_and_canonical_model_name_give_the_same_key():
    alias = kling([{"prompt": "x", "model": "kling-v2.6"}]).keys
    assert alias == kling([{"prompt": "x", "model": "kling-v2-6"}]).keys


def test_fingerprint_is_stable_and_follows_the_requests():
    base = load_prompts(["a", "b"]).fingerprint()
    assert base == load_prompts(["a", "b"]).fingerprint()
    assert len(base) == 64
    assert load_prompts(["a", "c"]).fingerprint() != base
    assert load_prompts(["a", "b"], defaults={"duration": 10}).fingerprint() != base
    with_ids = load_prompts(pd.DataFrame({"id": ["1", "2"], "prompt": ["a", "b"]}))
    renamed = load_prompts(pd.DataFrame({"id": ["1", "3"], "prompt": ["a", "b"]}))
    assert with_ids.fingerprint() != renamed.fingerprint()


@pytest.mark.parametrize("ids", [None, ["7", 'say "hi"', "back\\slash", "tab\there", "é 🎬"]])
def test_fingerprint_is_the_sha256_of_each_rows_key_and_json(ids):
    # Hashed keys are joined by Arrow, ids that JSON escapes are spelled in Python: the same bytes.
    frame = pd.DataFrame({"prompt": ['a "quoted" fox', "back\\slash", "new\nline", "é 🎬", "x\x01"]})
    if ids is not None:
        frame.insert(0, "id", ids)
    prompts = load_prompts(frame)
    lines = "".join(f"[{json.dumps(key, ensure_ascii=False)},{text}]\n"
                    for key, text in zip(prompts.keys, prompts.request_json(), strict=True))
    assert prompts.fingerprint() == hashlib.sha256(lines.encode()).hexdigest()
    # chunked as a big table's column is, and with one row's key spelled with an escape
    keys, texts = prompts.keys, prompts.request_json()
    column = keys_module._text_column(texts, chunk=2)
    assert keys_module._fingerprint(keys, column) == prompts.fingerprint()
    odd = [*keys[:-1], keys[-1] + '"']
    odd_lines = "".join(f"[{json.dumps(key, ensure_ascii=False)},{text}]\n"
                        for key, text in zip(odd, texts, strict=True))
    assert keys_module._fingerprint(odd, column) == hashlib.sha256(odd_lines.encode()).hexdigest()


def test_canonical_json_matches_the_documented_spelling():
    obj = {"b": [1, 2.5, None], "a": "é", "c": {"z": 1, "y": True}}
    expected = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(obj) == expected == '{"a":"é","b":[1,2.5,null],"c":{"y":true,"z":1}}'


ODD_ROWS = [
    {"prompt": '  héllo "quoted" \\ back  ', "cfg_scale": -0.0, "model": "v1"},
    {"prompt": "x", "cfg_scale": 0.0, "model": "v1"},
    {"prompt": "x", "cfg_scale": 0.0, "model": "v1"},
    {"prompt": "emoji 🎬 \u2028 line", "duration": 10.0, "negative_prompt": '"prompt":"no"'},
    {"prompt": "ab", "duration": "10s", "aspect_ratio": "1:1"},
    {"prompt": "cam", "model": "kling-v1", "camera_control": '{"type":"simple","config":{"zoom":5}}'},
    {"prompt": "img", "image": "https://x/y.png", "image_tail": "https://x/z.png"},
    {"prompt": "t", "duration": 5, "mode": "pro"},
    {"prompt": "t", "duration": 5.0, "mode": "pro", "cfg_scale": 1},
    {"prompt": "", "image": "https://x/y.png"},
]


def test_request_json_is_the_canonical_json_of_each_request():
    # request_json() spells rows of one shape from a template: it must equal the plain recipe.
    prompts = load_prompts(ODD_ROWS + [{"prompt": f"row {i} \\ \"{i}\""} for i in range(5)])
    expected = [canonical_json(r.model_dump(mode="json", exclude_none=True)) for r in prompts.requests]
    assert prompts.request_json() == expected
    assert keys_module.request_texts(prompts.requests) == expected


def test_rows_checked_once_per_combination_equal_rows_checked_one_by_one():
    # Rows sharing every cell but the prompt are validated once; each must still be exactly what
    # pydantic builds for that row alone.
    rows = [{"prompt": f" shot {i} ", "duration": [None, 10, "5s"][i % 3], "audio": [None, "on", True][i % 3],
             "model": "kling-v2.6", "voice_list": '[{"voice_id": "v1"}]' if i == 4 else None} for i in range(9)]
    rows.append({"image": "https://x/a.png", "model": "kling-v2-6"})
    prompts = kling(rows, defaults={"mode": "pro"})
    frame = pd.DataFrame(rows)
    for request, (_, row) in zip(prompts.requests, frame.iterrows(), strict=True):
        given = {k: v for k, v in row.items() if not check_module.is_blank(v)}
        alone = VideoRequest.model_validate({"mode": "pro", **given}, context={"rules": KLING})
        assert request == alone
        assert request.model_fields_set == alone.model_fields_set
        assert request.model_dump_json() == alone.model_dump_json()
    assert prompts.requests[4].options == {"mode": "pro", "voice_list": [{"voice_id": "v1"}]}  # typed
    assert prompts.requests[0].model == "kling-v2-6"  # one spelling per model


def test_prompts_repr_is_short():
    assert repr(load_prompts(["a"] * 3)) == "Prompts(3 rows from 'list')"


# ----------------------------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("row", "column", "fragment", "allowed"),
    [
        ({"prompt": "   "}, "prompt", "prompt is empty", "non-empty text"),
        ({"prompt": "x", "model": "kling-v9"}, "model", "kling has no model 'kling-v9'", "kling-v2-6"),
        ({"prompt": "x", "model": "kling-v1.6"}, "model", "retired on 2026-09-15; use kling-v3", "kling-v3"),
        ({"prompt": "x", "duration": "long"}, "duration", "whole number of seconds", "whole number"),
        ({"prompt": "x", "duration": 7}, "duration", "duration 7 is not allowed for kling model kling-v2-6",
         "5, 10"),
        ({"prompt": "x", "model": "kling-v3", "duration": 16}, "duration", "not allowed", "3 to 15 seconds"),
        ({"prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio", "'4:3' is not allowed", "16:9"),
        ({"prompt": "x", "mode": "turbo"}, "mode", "mode 'turbo' is not one of", "std, pro"),
        ({"prompt": "x", "model": "kling-v2-5-turbo", "audio": "on"}, "audio", "does not take audio", "leave it"),
        ({"prompt": "x", "image": "https://x/a.png", "end_image": "https://x/b.png", "mode": "std"},
         "end_image", "end_image needs mode pro", "set mode to pro"),
        ({"prompt": "x", "cfg_scale": 0.5}, "cfg_scale", "has no option 'cfg_scale'", "mode"),
        ({"prompt": "x", "voice_list": "[{", "audio": "on"}, "voice_list", "must be JSON", "see the provider"),
    ],
)
def test_bad_value_names_row_column_and_allowed(row, column, fragment, allowed):
    problem = only(problems_of(["fine", row]))
    assert (problem.row, problem.column, problem.line) == (2, column, None)
    assert fragment in problem.message
    assert problem.allowed is not None
    assert allowed in problem.allowed


def test_all_bad_rows_are_reported_at_once_with_lines(tmp_path):
    path = write(tmp_path, (
        "id,prompt,duration,aspect_ratio,model\n"
        "1,ok,5,16:9,\n"
        "2,,5,16:9,\n"
        "3,ok,7,16:9,\n"
        "4,ok,5,4:3,\n"
        "5,ok,5,16:9,sora\n"
        "6,ok,5,16:9,kling-v2.5-turbo\n"
    ))
    with pytest.raises(InputError) as info:
        kling(path)
    found = [(p.row, p.line, p.column) for p in info.value.problems]
    assert found == [(2, 3, "prompt"), (3, 4, "duration"), (4, 5, "aspect_ratio"),
                     (5, 6, "model")]
    assert info.value.source == path
    text = str(info.value)
    assert "4 problems" in text
    assert "row 3 (line 4), column 'duration'" in text


def test_line_numbers_follow_embedded_newlines_and_blank_lines(tmp_path):
    path = write(tmp_path, 'prompt,mode\n"two\nlines",std\n\nok,fast\n')
    problem = only(problems_of(path))
    assert (problem.row, problem.line, problem.column) == (2, 5, "mode")


def test_dataframe_problem_mentions_the_index_label():
    df = pd.DataFrame({"prompt": ["ok", ""]}, index=[10, 42])
    problem = only(problems_of(df))
    assert problem.row == 2
    assert "[index 42]" in problem.message


def test_missing_prompt_column(tmp_path):
    problem = only(problems_of(write(tmp_path, "id,Prompt\n1,a fox\n")))
    assert (problem.row, problem.column) == (None, "prompt")
    assert "no 'prompt' column" in problem.message
    assert "did you mean 'Prompt'" in problem.message


def test_semicolon_csv_gets_a_separator_hint(tmp_path):
    problem = only(problems_of(write(tmp_path, "id;prompt\n1;a fox\n")))
    assert "separated by ';'" in problem.message


def test_reserved_result_column(tmp_path):
    problem = only(problems_of(write(tmp_path, "prompt,status\na,todo\n")))
    assert (problem.row, problem.column) == (None, "status")
    assert "reserved for results; rename" in problem.message


def test_duplicate_header_column(tmp_path):
    problem = only(problems_of(write(tmp_path, "prompt,mode, mode\na,std,pro\n")))
    assert problem.column == "mode"
    assert "appears 2 times" in problem.message


def test_duplicate_request_column_in_a_dataframe():
    df = pd.DataFrame([["a", "b"]], columns=["prompt", "prompt"])
    problem = only(problems_of(df))
    assert (problem.row, problem.column) == (None, "prompt")
    assert "appears 2 times" in problem.message


def test_duplicate_ids_name_every_row_sharing_them(tmp_path):
    path = write(tmp_path, "id,prompt\nx,a\ny,b\nx,c\nz,d\nx,e\ny,f\n")
    problems = problems_of(path)
    assert [(p.row, p.column) for p in problems] == [(3, "id"), (6, "id")]
    assert "'x' is used by rows 1, 3, 5" in problems[0].message
    assert "'y' is used by rows 2, 6" in problems[1].message
    assert problems[0].line == 4


def test_empty_id_cell(tmp_path):
    problem = only(problems_of(write(tmp_path, "id,prompt\na,x\n  ,y\n")))
    assert (problem.row, problem.line, problem.column) == (2, 3, "id")
    assert "id is empty" in problem.message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("id,prompt\n1,a fox, running\n2,fine\n3,a, b, c\n", [(1, 2), (3, 4)]),
        ("id,prompt\n1,fine\n2,a fox, running\n\n3,a, b\n", [(2, 3), (3, 5)]),
    ],
)
def test_too_many_cells_in_a_row_points_at_quoting(tmp_path, text, where):
    problems = problems_of(write(tmp_path, text))
    assert [(p.row, p.line) for p in problems] == where
    assert "double quotes" in problems[0].message


def test_malformed_csv(tmp_path):
    problem = only(problems_of(write(tmp_path, 'id,prompt\n1,"never closed\n2,b\n')))
    assert problem.row is None
    assert "cannot parse the CSV" in problem.message


# -------------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    problem = only(problems_of(str(tmp_path / "nope.csv")))
    assert "file not found" in problem.message


def test_directory_instead_of_file(tmp_path):
    problem = only(problems_of(tmp_path))
    assert "directory" in problem.message


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, "prompt\na\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # chmod does not stop root (tests may run as root), so refuse the open itself
    monkeypatch.setattr(read_module, "open", refuse, raising=False)
    problem = only(problems_of(path))
    assert "permission denied" in problem.message


def test_empty_file(tmp_path):
    problem = only(problems_of(write(tmp_path, "")))
    assert "empty (0 bytes)" in problem.message


def test_blank_file_has_no_header(tmp_path):
    problem = only(problems_of(write(tmp_path, "\n  \n")))
    assert "no header line" in problem.message


def test_header_only_csv_has_no_rows(tmp_path):
    problem = only(problems_of(write(tmp_path, "id,prompt\n")))
    assert problem.row is None
    assert "no rows" in problem.message


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("prompt\ncafé\n".encode("latin-1"))
    problem = only(problems_of(path))
    assert "not UTF-8" in problem.message
    assert "save it as UTF-8" in problem.message
    assert "byte offset 10" in problem.message
    assert problem.line == 2


def test_broken_excel_file_gets_a_hint(tmp_path):
    path = tmp_path / "prompts.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    message = only(problems_of(path)).message
    assert "cannot read the Excel file" in message and "save it as .xlsx" in message


# -------------------------------------------------------------------------------- bad lists


def test_empty_list_and_empty_dataframe_have_no_rows():
    assert "no rows" in only(problems_of([])).message
    assert "no rows" in only(problems_of(pd.DataFrame())).message


def test_bad_list_items_are_all_reported():
    problems = problems_of(["ok", 3, {"prompt": "fine"}, None])
    assert [p.row for p in problems] == [2, 4]
    assert "prompt text or a dict" in problems[0].message


@pytest.mark.parametrize("source", [{"prompt": ["a"]}, 42, b"prompt\na\n", pd.Series(["a"])])
def test_unsupported_source_types(source):
    problem = only(problems_of(source))
    assert "pass a CSV path, a pandas DataFrame, or a list" in problem.message


def test_near_miss_column_name_warns():
    with pytest.warns(UserWarning, match="'Duration' is not used as 'duration'"):
        prompts = load_prompts([{"prompt": "x", "Duration": 10}])
    assert prompts.requests[0].duration is None
    with pytest.warns(UserWarning, match="'Voice List' is not used as 'voice_list'"):
        kling([{"prompt": "x", "Voice List": "[]"}])  # the provider's options too
    assert prompts.frame["Duration"].tolist() == [10]


def test_prompts_requires_one_entry_per_row():
    with pytest.raises(ValueError, match="one entry per row"):
        Prompts(frame=pd.DataFrame({"prompt": ["a"]}), requests=[], keys=[], source="x")


def test_every_problem_of_a_row_at_once(tmp_path):
    """Empty prompt, duration 7, aspect 4:3 and mode "ultra" in one row: four problems, not one."""
    path = write(tmp_path, 'prompt,duration,aspect_ratio,mode\n"",7,4:3,ultra\nfine,5,16:9,std\n')
    problems = problems_of(path)
    assert sorted(p.column for p in problems) == ["aspect_ratio", "duration", "mode", "prompt"]
    assert all(p.row == 1 and p.line == 2 and p.allowed for p in problems)
    by_column = {p.column: p for p in problems}
    assert "'4:3'" in by_column["aspect_ratio"].message and "16:9" in by_column["aspect_ratio"].allowed
    assert "'ultra'" in by_column["mode"].message
    # the same from Python (a list of dicts)
    rows = [{"prompt": "", "duration": 7, "aspect_ratio": "4:3", "mode": "ultra"}]
    assert len(problems_of(rows)) == 4


@pytest.mark.parametrize("text", ["", "a", "a\n", "a\r\nb\rc\nd", "\r\r\n\n", "x\u2028y\x85z\x0bw\r", 'a,"b\r\nc"\nd'])
def test_lines_are_those_of_a_newline_preserving_stringio(text):
    import io

    assert list(read_module.text_lines(text)) == list(io.StringIO(text, newline=""))


def test_a_lone_surrogate_is_a_problem_of_its_row_not_a_crash():
    # Python strings (and JSON's "\ud800") can hold one; no UTF-8 request can. A list refuses it
    # before a table is made; a DataFrame's rows report it with their other problems, whether the
    # row's prompt was checked with its combination or alone.
    with pytest.raises(InputError) as listed:
        load_prompts(["fine", "bad \ud800", {"prompt": "x", "notes": "n\udfff"}])
    assert [(p.row, p.column) for p in listed.value.problems] == [(2, "prompt"), (3, "notes")]
    assert "lone surrogate" in str(listed.value)
    prompts = ["ok", "a {b} \ud800", "also ok", "é \udc00", "x"]
    frame = pd.DataFrame({"prompt": pd.Series(prompts, dtype=object),
                          "negative_prompt": pd.Series([None, None, "n \ud83d", None, None], dtype=object),
                          "duration": [None, None, None, None, "soon"]})
    with pytest.raises(InputError) as caught:
        load_prompts(frame)
    found = {(p.row, p.column) for p in caught.value.problems}
    assert found == {(2, "prompt"), (3, "negative_prompt"), (4, "prompt"), (5, "duration")}
    assert all(p.allowed == "Unicode text (encodable as UTF-8)" for p in caught.value.problems
               if p.column != "duration")
