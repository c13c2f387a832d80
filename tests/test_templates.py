"""prompt templates: opt-in; each prompt's {column} placeholders filled from its own row ({{ and }}
literal); a missing column, an empty value or a malformed template is a problem of that row,
reported together with its other problems; the filled text is the row's prompt (key, checkpoint,
results), the template kept beside it."""

from __future__ import annotations

import pandas as pd
import pytest

import videobatch
from videobatch._inputs import load_prompts
from videobatch._templates import TEMPLATE_COLUMN, parse_template
from videobatch.cli.main import main
from videobatch.errors import InputError

ROWS = pd.DataFrame({
    "subject": ["a red fox", "a heron"],
    "time_of_day": ["dawn", "dusk"],
    "style": ["film grain", "watercolour"],
    "prompt": ["{subject} at {time_of_day}, {style}", "{subject} at {time_of_day} {{literally}}"],
})


def test_prompts_are_filled_from_their_own_rows():
    prompts = load_prompts(ROWS, template=True)
    assert [r.prompt for r in prompts.requests] == ["a red fox at dawn, film grain",
                                                    "a heron at dusk {literally}"]
    assert prompts.frame[TEMPLATE_COLUMN].tolist() == ROWS["prompt"].tolist()
    assert prompts.keys == load_prompts(ROWS, template=True).keys  # stable: same table, same keys
    assert prompts.keys == load_prompts([{"prompt": r.prompt} for r in prompts.requests]).keys


def test_templating_is_opt_in():
    plain = load_prompts(ROWS)
    assert plain.requests[0].prompt == "{subject} at {time_of_day}, {style}"


def test_a_results_table_passed_in_again_is_filled_the_same_way():
    once = load_prompts(ROWS, template=True)
    again = load_prompts(once.frame, template=True)  # prompt holds the text, prompt_template the template
    assert again.requests == once.requests and again.keys == once.keys


def test_every_problem_of_a_row_is_reported_together():
    rows = pd.DataFrame({
        "subject": ["a fox", None, "a cat", "a dog"],
        "prompt": ["{subjct} in snow", "{subject} in rain", "{subject!r} {", "{subject} {}"],
        "duration": [5, "seven", 5, 5],
    })
    with pytest.raises(InputError) as info:
        load_prompts(rows, template=True)
    found = [(p.row, p.column, p.message) for p in info.value.problems]
    assert (1, "prompt", "the template names {subjct}, but the table has no column 'subjct' "
                         "(did you mean 'subject'? names are matched exactly)") in found
    assert (2, "prompt", "the template names {subject}, but this row's 'subject' is empty") in found
    assert any(r == 2 and c == "duration" for r, c, _ in found)  # the row's other problem, too
    assert any(r == 3 and "malformed" in m and "{{ and }}" in m for r, _, m in found)
    assert any(r == 4 and "empty {}" in m for r, _, m in found)


def test_formats_and_lookups_are_not_templates():
    assert "not a plain column name" in (parse_template("{subject:>9}")[1] or "")
    assert "not a plain column name" in (parse_template("{subject!r}")[1] or "")
    parts, error = parse_template("{a.b} and {c[0]}")
    assert error is None and [name for _, name in parts if name] == ["a.b", "c[0]"]  # names, as typed
    rows = pd.DataFrame({"a.b": ["x"], "prompt": ["{a.b}!"]})
    assert load_prompts(rows, template=True).requests[0].prompt == "x!"


def test_defaults_fill_empty_cells_and_a_default_prompt_can_be_the_template():
    rows = pd.DataFrame({"subject": ["a fox", "a cat"], "duration": [5, None]})
    prompts = load_prompts(rows, defaults={"prompt": "{subject}, {duration} seconds", "duration": 10},
                           template=True)
    assert [r.prompt for r in prompts.requests] == ["a fox, 5 seconds", "a cat, 10 seconds"]


def test_a_template_run_plans_and_runs_the_filled_prompts(tmp_path):
    checkpoint = tmp_path / "run.parquet"
    plan = videobatch.plan(ROWS, "local", template=True, checkpoint=checkpoint)
    assert plan.paid == 2
    df = videobatch.run(ROWS, "local", template=True, checkpoint=checkpoint, progress=False, latency=0)
    assert df["prompt"].tolist() == ["a red fox at dawn, film grain", "a heron at dusk {literally}"]
    assert df[TEMPLATE_COLUMN].tolist() == ROWS["prompt"].tolist()
    again = videobatch.plan(ROWS, "local", template=True, checkpoint=checkpoint)
    assert again.paid == 0 and len(again.kept) == 2  # the same table again: nothing new to pay


def test_the_command_takes_template(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    ROWS.to_csv(csv, index=False)
    assert main([str(csv), "--template", "-P", "latency=0", "-q"]) == 0
    results = pd.read_csv(tmp_path / "p.results.csv")
    assert results["prompt"].tolist()[0] == "a red fox at dawn, film grain"
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt\n{nothing} here\n", encoding="utf-8")
    assert main([str(bad), "--template", "--dry-run"]) == 2
    assert "row 1 (line 2), column 'prompt': the template names {nothing}" in capsys.readouterr().err
