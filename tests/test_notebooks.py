"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel, offline, without errors
and with the expected results (nbclient drives an ipykernel, as Jupyter would)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _texts(cell: Any) -> str:
    """All text a cell printed or displayed (stream text, text/plain, text/html)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        for mime in ("text/plain", "text/html"):
            if mime in out.get("data", {}):
                parts.append(out["data"][mime])
    return "\n".join(parts)


def _cell(nb: Any, needle: str) -> Any:
    return next(c for c in nb.cells if c.cell_type == "code" and needle in c.source)


@pytest.fixture
def execute(tmp_path, monkeypatch):
    """Run a notebook in a copy of the repository layout (notebooks/ next to data/), so
    checkpoints and clips land in tmp_path; no Kling keys, so nothing can reach the real API."""
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup files
    shutil.copytree(ROOT / "data", tmp_path / "data")
    (tmp_path / "notebooks").mkdir()

    def run(path: Path) -> Any:
        nb = nbformat.read(path, as_version=4)
        workdir = tmp_path / "notebooks"
        NotebookClient(nb, timeout=60, kernel_name="python3", startup_timeout=60,
                       resources={"metadata": {"path": str(workdir)}}).execute()
        return nb

    return run


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_every_notebook_is_checked():
    assert {p.name for p in NOTEBOOKS} == {"quickstart.ipynb", "kling.ipynb"}


def test_quickstart_notebook_runs(execute):
    nb = execute(ROOT / "notebooks" / "quickstart.ipynb")

    run_cell = _cell(nb, "df = videobatch.run(")
    assert any(WIDGET_VIEW in out.get("data", {}) for out in run_cell.outputs), "no dashboard"
    text = _texts(run_cell)
    assert "20 of 20 clips ready" in text
    assert "20/20 completed, 0 failed" in text  # the dashboard's final static summary
    assert "vb-summary" in text

    assert "<video" in _texts(_cell(nb, "Video(urlparse("))
    assert "second run: 20 of 20 completed, 20 in the checkpoint" in _texts(_cell(nb, "again ="))

    waited = _texts(_cell(nb, "vertical = await batch.wait()\nprint"))
    assert re.search(r"\d+/20 completed, \d+ failed", waited)
    retried = _texts(_cell(nb, "retried = batch.retry_failed()"))
    found = re.search(r"retried (\d+) rows: (\d+) of 20 completed", retried)
    assert found, retried
    assert int(found[2]) >= 20 - int(found[1])  # retries only add completed rows

    # The dashboard's widget state is saved with the notebook: its bar shows every row done.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "IntProgressModel"]
    assert any(b["value"] == b["max"] == 20 and b["bar_style"] == "success" for b in bars)


def test_kling_notebook_runs_against_the_test_server(execute):
    nb = execute(ROOT / "notebooks" / "kling.ipynb")
    text = "\n".join(_texts(c) for c in nb.cells if c.cell_type == "code")
    assert "No Kling keys set: using the Kling-compatible test server at http://127.0.0.1:" in text
    assert re.search(r"3 rows, estimated cost \$\d+\.\d\d", text)
    assert "3 of 3 videos ready" in text
    assert "3/3 completed, 0 failed" in text
    assert "<video" in _texts(_cell(nb, "Video(df.loc"))
