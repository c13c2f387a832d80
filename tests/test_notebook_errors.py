"""Errors for people (issue 14): in a notebook a ``VideobatchError`` shows as a short list of what
went wrong and what to do — every problem of every row, rows named by id or row number, never by
hash — instead of the library's traceback. (The real kernel's side: tests/test_notebook_text.py.)"""

from __future__ import annotations

import pandas as pd
import pytest

import videobatch
from fakes import ScriptedProvider
from videobatch._jobs import Job, State
from videobatch.errors import ConfigError, IllegalTransition, InputError
from videobatch.request import VideoRequest
from videobatch.ui.errors_view import error_html, error_lines


def test_input_errors_list_every_problem_of_every_row_grouped_by_row():
    rows = [{"prompt": "", "duration": 30} if i % 2 else {"prompt": "fine"} for i in range(120)]
    with pytest.raises(InputError) as caught:
        videobatch.run(rows, "local", progress=False)
    error = caught.value
    assert len(error.problems) == 120  # 60 rows, 2 problems each
    lines = error._render_traceback_()
    assert lines[0].endswith("InputError\x1b[0m: list: 120 problems in 60 rows, nothing was submitted")
    assert lines[-1] == "Fix these rows (or pass run-wide defaults) and run again."
    for i in range(1, 120, 2):  # every bad row, by its number, with both of its problems
        at = lines.index(f"  row {i + 1}:")
        assert lines[at + 1].startswith("    - column 'prompt': prompt is empty")
        assert lines[at + 2].startswith("    - column 'duration': duration 30 is not allowed")
    assert len(lines) == 2 + 60 * 3  # short: no traceback, no repeated row numbers
    assert not any("File " in line or "site-packages" in line for line in lines)
    page = error._repr_html_()
    assert page.count("<li>row ") == 60 and "prompt is empty" in page


def test_a_provider_error_names_its_row_by_number_or_id_never_by_hash():
    with pytest.raises(videobatch.AuthError) as caught:
        videobatch.run(["a fox", "a cat [auth]"], ScriptedProvider(max_parallel=1), progress=False)
    error = caught.value
    key = error.row_key
    assert key and len(key) == 16  # a list input: rows are keyed by a hash
    lines = error_lines(error)
    assert lines[0] == "AuthError: [row 2] bad key"
    assert "The results so far are in .results" in lines[1]
    assert key not in "\n".join(error._render_traceback_()) + error._repr_html_()

    table = pd.DataFrame({"id": ["shot-1", "shot-2"], "prompt": ["a fox", "a cat [auth]"]})
    with pytest.raises(videobatch.AuthError) as caught:
        videobatch.run(table, ScriptedProvider(max_parallel=1), progress=False)
    assert error_lines(caught.value)[0] == "AuthError: [row 'shot-2'] bad key"


def test_other_errors_are_one_short_paragraph_and_bugs_keep_their_traceback():
    def write_catalogue() -> None:
        try:
            raise OSError("disk full")
        except OSError as exc:
            raise ConfigError("cannot write the catalogue\nfree some space and run again") from exc

    with pytest.raises(ConfigError) as caught:
        write_catalogue()
    assert error_lines(caught.value) == ["ConfigError: cannot write the catalogue",
                                         "free some space and run again",
                                         "(because of OSError: disk full)"]
    assert "<b style=\"color:#c62828\">ConfigError</b>" in error_html(caught.value)

    job = Job(key="k", index=0, request=VideoRequest(prompt="x"), state=State.COMPLETED)
    with pytest.raises(IllegalTransition) as caught:
        job.transition(State.PENDING)
    lines = caught.value._render_traceback_()
    assert lines[0] == "Traceback (most recent call last):" and any("File " in x for x in lines)
