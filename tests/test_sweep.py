"""sweeps: every row times the product of the swept values; ids from the source row's key plus the
variant's values (never from positions), so the same sweep run again maps to the same checkpoint
rows; a column the table already has is refused; the plan gives the total cost before anything
runs; the command's --sweep does the same from a file."""

from __future__ import annotations

import pandas as pd
import pytest

import videobatch
from videobatch.cli.main import main
from videobatch.errors import InputError
from videobatch.providers import get_provider

ROWS = pd.DataFrame({"id": ["fox", "heron"], "prompt": ["a red fox in snow", "a heron at dawn"]})


def test_rows_times_the_product_of_the_values_with_ids_naming_each_variant():
    grid = videobatch.sweep(ROWS, model=["local-v1", "local-v2"], duration=[4, 8], seed=range(3))
    assert len(grid) == 2 * 2 * 2 * 3
    assert list(grid.columns) == ["id", "prompt", "model", "duration", "seed"]
    assert grid["id"].tolist()[:3] == ["fox|model=local-v1|duration=4|seed=0",
                                       "fox|model=local-v1|duration=4|seed=1",
                                       "fox|model=local-v1|duration=4|seed=2"]
    assert grid["id"].is_unique
    assert (grid.groupby("prompt").size() == 12).all()
    assert grid["duration"].tolist()[:6] == [4, 4, 4, 8, 8, 8]
    assert ROWS.columns.tolist() == ["id", "prompt"]  # the caller's table is untouched


def test_keys_come_from_the_rows_not_their_positions():
    rows = pd.DataFrame({"prompt": ["a fox", "a cat", "a fox"], "style": ["noir", "anime", "noir"]})
    grid = videobatch.sweep(rows, seed=[1, 2])
    assert grid["id"].is_unique  # identical rows are told apart
    reordered = rows.iloc[[1, 0, 2], ::-1]  # rows and columns in another order
    again = videobatch.sweep(reordered, seed=[1, 2])
    assert set(again["id"]) == set(grid["id"])
    cat = grid.loc[grid["prompt"] == "a cat", "id"].tolist()
    assert again.loc[again["prompt"] == "a cat", "id"].tolist() == cat
    duplicated_index = pd.concat([rows, rows.iloc[:1].assign(prompt="a newt")])  # index 0 twice
    assert len(videobatch.sweep(duplicated_index, seed=[1, 2])) == 8


def test_a_sweep_run_again_pays_only_for_new_variants(tmp_path):
    checkpoint = tmp_path / "run.parquet"
    options = {"checkpoint": checkpoint, "progress": False, "latency": 0}
    first = videobatch.run(videobatch.sweep(ROWS, seed=[1, 2]), "local", **options)
    assert (first["status"] == "completed").all() and len(first) == 4
    same = videobatch.plan(videobatch.sweep(ROWS, seed=[1, 2]), "local", checkpoint=checkpoint)
    assert same.paid == 0 and len(same.kept) == 4
    grown = pd.concat([ROWS.iloc[::-1], pd.DataFrame({"id": ["newt"], "prompt": ["a newt"]})])
    plan = videobatch.plan(videobatch.sweep(grown, seed=[1, 2, 3]), "local", checkpoint=checkpoint,
                           force=True)
    assert len(plan.kept) == 4  # the four variants already made, found by key
    assert sorted(plan.send) == sorted(["fox|seed=3", "heron|seed=3", "newt|seed=1", "newt|seed=2",
                                        "newt|seed=3"])


def test_the_plan_gives_the_total_cost_before_anything_runs():
    grid = videobatch.sweep(ROWS, model=["local-v1", "local-v2"], duration=[4, 8])
    plan = videobatch.plan(grid, "local")
    provider = get_provider("local")
    each = [provider.estimate_cost(videobatch.VideoRequest(prompt="x", model=m, duration=d))
            for m in ("local-v1", "local-v2") for d in (4, 8)]
    assert plan.paid == 8 and len(plan.groups) == 4
    assert plan.estimated == pytest.approx(2 * sum(c for c in each if c is not None))


def test_a_column_the_table_has_is_refused_with_every_other_problem():
    with pytest.raises(InputError) as info:
        videobatch.sweep(ROWS.assign(duration=5), duration=[5, 10], id=["x"], seed=[], mode=[1, 1.0],
                         audio=[None])
    found = {p.column: p.message for p in info.value.problems}
    assert "already has a 'duration' column" in found["duration"]
    assert "makes each variant's id itself" in found["id"]
    assert "non-empty list" in found["seed"]
    assert "lists 1 more than once" in found["mode"]
    assert "not a value a cell can hold" in found["audio"]
    with pytest.raises(InputError, match="nothing to sweep"):
        videobatch.sweep(ROWS)
    with pytest.raises(InputError, match="id is empty"):
        videobatch.sweep(pd.DataFrame({"id": ["a", ""], "prompt": ["x", "y"]}), seed=[1])


def test_a_single_value_and_names_that_are_not_identifiers():
    grid = videobatch.sweep(["a fox"], {"time of day": ["dawn", "dusk"]}, model="local-v2")
    assert grid["time of day"].tolist() == ["dawn", "dusk"]
    assert grid["model"].tolist() == ["local-v2", "local-v2"]


def test_a_sweep_of_a_template(tmp_path):
    subjects = pd.DataFrame({"id": ["fox"], "subject": ["a red fox"], "prompt": ["{subject}, {style}"]})
    grid = videobatch.sweep(subjects, style=["film noir", "watercolour"])
    df = videobatch.run(grid, "local", template=True, progress=False, latency=0)
    assert df["prompt"].tolist() == ["a red fox, film noir", "a red fox, watercolour"]


def test_the_command_sweeps_plans_and_resumes(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    ROWS.to_csv(csv, index=False)
    args = [str(csv), "--sweep", "model=local-v1,local-v2", "--sweep", "duration=4,8", "-P", "latency=0",
            "-q"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 rows valid; 8 would be submitted" in out
    assert "2 × local-v2 720p 8s" in out
    assert "estimated cost: about $0.96" in out  # the total, before anything runs
    assert main(args) == 0
    results = pd.read_csv(tmp_path / "p.results.csv")
    assert len(results) == 8 and (results["status"] == "completed").all()
    assert "fox|model=local-v2|duration=8" in results["id"].tolist()
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0  # the same command again: nothing new to pay
    assert "0 would be submitted" in capsys.readouterr().out


@pytest.mark.parametrize(("flag", "expected"), [
    ("--sweep=model", "--sweep expects NAME=VALUE,VALUE"),
    ("--sweep=id=1,2", "makes each variant's id itself"),
    ("--sweep=prompt=x,y", "already has a 'prompt' column"),
])
def test_the_command_refuses_a_bad_sweep(tmp_path, capsys, flag, expected):
    csv = tmp_path / "p.csv"
    ROWS.to_csv(csv, index=False)
    assert main([str(csv), flag, "--dry-run"]) == 2
    assert expected in capsys.readouterr().err


def test_a_name_swept_twice_on_the_command_line_is_refused(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    ROWS.to_csv(csv, index=False)
    assert main([str(csv), "--sweep", "seed=1", "--sweep", "seed=2", "--dry-run"]) == 2
    assert "--sweep seed=1,2" in capsys.readouterr().err
