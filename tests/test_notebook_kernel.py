"""videobatch in a real Jupyter kernel (jupyter_client drives an ipykernel, and every output
message is collected, also those a background run sends after its cell finished):

- without ipywidgets, ``import videobatch`` shows no third-party warning but one line naming the
  ``notebook`` extra, and the text bar of ``Batch.start()`` is one piece (made when the run
  starts: nothing is printed ahead of the cell's own result);
- a videobatch error shows as its list of problems, without the library traceback;
- the dashboard's Cancel, Retry failed and Resume cancelled, pressed on the kernel's own loop as
  a click would, pay for what they say, and the summary the cell shows is updated to agree with
  ``batch.results()``.
"""

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
    the cell finished (a background run writes there). ``seq`` numbers them as they arrived."""
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
        elif kind in ("stream", "execute_result", "display_data", "update_display_data", "error"):
            msg["seq"] = sum(map(len, outputs.values()))
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


def test_dashboard_buttons_on_the_kernel_loop_pay_for_what_they_say(kernel):
    setup, cancel, retry, resume, check = _run(kernel, [
        "import asyncio, videobatch\n"
        "from videobatch.providers.local import read_submissions\n"
        "from videobatch.ui.dashboard import Dashboard\n"
        "def paid():\n"
        "    return sum(e['outcome'] in ('accepted', 'rejected') for e in read_submissions())\n"
        "rows = ['a blocked kite [reject]', 'a blocked swan [reject]',"
        " *[f'a paper boat {i}' for i in range(8)]]\n"
        "dash = Dashboard()\n"
        "batch = videobatch.Batch(rows, 'local', latency=0.4, max_parallel=2, progress=False,"
        " observers=[dash], checkpoint='run.parquet')\n"
        "dash.batch = batch\n"
        "batch.start();",
        "while not (batch.counts()['failed'] == 2 and batch.counts()['generating'] == 2):\n"
        "    await asyncio.sleep(0.01)\n"
        "dash.view.cancel.click()\n"
        "await batch.wait()\n"
        "before = paid()\n"
        "print(dash.view.retry.description, '|', dash.view.resume.description, '|',"
        " dash.model.snapshot().status)",
        "dash.view.retry.click()\n"
        "await batch.wait()\n"
        "await asyncio.sleep(0.1)  # the run's outcome reaches the dashboard right after\n"
        "print(paid() - before, batch.counts()['cancelled'], dash.model.snapshot().status)",
        "dash.view.resume.click()\n"
        "await batch.wait()\n"
        "await asyncio.sleep(0.1)\n"
        "print(paid() - before, batch.counts()['completed'], dash.model.snapshot().status)",
        "from videobatch.ui.dashboard_model import summary_text\n"
        "print(summary_text(dash.model.snapshot()) == dash._bundle(dash.model.snapshot())"
        "['text/plain'])\n"
        "print(batch.results()['status'].value_counts().to_dict())",
    ])
    for cell in (setup, cancel, retry, resume, check):
        assert not [m for m in cell if m["msg_type"] == "error"], cell
    price, cancelled = _text(cancel).strip().split(" | ")[1], 6
    assert _text(cancel).startswith("Retry 2 failed · est. $")
    assert price.startswith(f"Resume {cancelled} cancelled · est. $")
    assert _text(cancel).strip().endswith("| Cancelled")
    assert _text(retry).split() == ["2", str(cancelled), "Finished"]  # failed rows only
    assert _text(resume).split() == [str(2 + cancelled), "8", "Finished"]

    # A summary goes into the cell that awaited each run; every summary shown, also the first
    # one (Cancelled), ends up showing the batch as it now is, as batch.results() does.
    shown = sorted((m for cell in (setup, cancel, retry, resume) for m in cell
                    if m["msg_type"] in ("display_data", "update_display_data")
                    and "vb-summary" in m["content"]["data"].get("text/html", "")),
                   key=lambda m: m["seq"])
    latest = {m["content"]["transient"]["display_id"]: m["content"]["data"]["text/plain"]
              for m in shown}
    assert len(latest) == 3  # one per run
    assert shown[0]["content"]["data"]["text/plain"].startswith("Cancelled: 0/10 completed")
    for text in latest.values():
        assert text.startswith("Finished: 8/10 completed, 2 failed in"), text
    assert _text(check).splitlines() == ["True", "{'completed': 8, 'failed': 2}"]
