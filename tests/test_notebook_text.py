"""Notebooks as text, in a real Jupyter kernel. Without ipywidgets, ``import videobatch`` shows no
third-party warning but one line naming the ``notebook`` extra, and the text bar of a batch started
with ``Batch.start()`` is one piece: nothing is printed before the cell's own output (the bar is
made when the run starts), and what follows ends on the finished bar. A videobatch error shows
as its list of problems, without the library traceback."""

from __future__ import annotations

import queue
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

HIDE_WIDGETS = 'import sys\nsys.modules["ipywidgets"] = None  # as if it were not installed\n'


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup files
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60, cwd=str(tmp_path))
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _run(kc: Any, cells: list[str]) -> list[list[dict[str, Any]]]:
    """Execute ``cells`` in order; every output message of each, also those that arrive after
    the cell finished (a background run writes there)."""
    ids = [kc.execute(code) for code in cells]
    outputs: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    idle: set[str] = set()
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=60 if len(idle) < len(ids) else 1.0)
        except queue.Empty:
            if len(idle) < len(ids):
                raise
            break  # every cell is done and nothing more arrived
        parent = msg["parent_header"].get("msg_id")
        if parent not in outputs:
            continue
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            idle.add(parent)
        elif kind in ("stream", "execute_result", "display_data", "error"):
            outputs[parent].append(msg)
    return [outputs[i] for i in ids]


def _text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["content"].get("text", "") for m in messages if m["msg_type"] == "stream")


def test_without_ipywidgets_one_line_says_so_and_the_bar_is_one_piece(kernel):
    imported, started, waited = _run(kernel, [
        HIDE_WIDGETS + "import videobatch",
        'batch = videobatch.Batch([f"a paper boat {i}" for i in range(6)], "local", latency=0.2,'
        " max_parallel=2)\nbatch.start()",
        "df = await batch.wait()\nprint(batch.counts()['completed'])",
    ])
    everything = "".join(_text(cell) for cell in (imported, started, waited))
    assert "IProgress" not in everything and "TqdmWarning" not in everything
    notes = [line for line in _text(imported).splitlines() if line.strip()]
    assert notes == ['videobatch: the live notebook dashboard needs ipywidgets: '
                     'pip install "videobatch[notebook]" (until then runs show a text progress bar)']
    assert not [m for m in imported if m["msg_type"] == "error"]

    # The start cell: its result first, then the bar, all of it in one stream (stderr).
    kinds = [(m["msg_type"], m["content"].get("name")) for m in started]
    assert kinds[0] == ("execute_result", None), kinds
    assert set(kinds[1:]) == {("stream", "stderr")}, kinds
    final = [part for part in _text(started).replace("\n", "\r").split("\r") if part.strip()][-1]
    assert "6/6 done, Finished" in final and "completed=6" in final
    assert "ETA" not in final and "rows/s" not in final
    assert _text(waited).strip() == "6"


def test_an_input_error_shows_as_its_list_without_the_library_traceback(kernel):
    (cell,) = _run(kernel, [
        "import videobatch\n"
        'videobatch.run([{"prompt": ""}, {"prompt": "ok", "duration": 30}], "local")'])
    errors = [m["content"] for m in cell if m["msg_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "InputError"
    shown = "\n".join(errors[0]["traceback"])
    assert "InputError\x1b[0m: list: 2 problems in 2 rows, nothing was submitted" in shown
    assert "row 1: column 'prompt': prompt is empty" in shown
    assert "row 2: column 'duration': duration 30 is not allowed" in shown
    assert "File " not in shown and "site-packages" not in shown and "_api.py" not in shown
    assert len(errors[0]["traceback"]) == 4
