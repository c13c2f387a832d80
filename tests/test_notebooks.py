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
MAX_EXECUTED = 200 * 1024  # bytes of an executed example notebook, as saved


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

    def run(path: Path, *, then: str | None = None) -> Any:
        """Execute a copy of ``path`` (and the code ``then`` after its last cell); the executed
        copy is saved next to the run (as Jupyter would save it) and must stay small."""
        nb = nbformat.read(path, as_version=4)
        if then is not None:
            nb.cells.append(nbformat.v4.new_code_cell(then))
        workdir = tmp_path / "notebooks"
        # Saved without widget state, as JupyterLab saves a notebook by default: where the widgets
        # cannot show, the static view beside them does.
        NotebookClient(nb, timeout=60, kernel_name="python3", startup_timeout=60,
                       store_widget_state=False,
                       resources={"metadata": {"path": str(workdir)}}).execute()
        saved = workdir / path.name
        nbformat.write(nb, saved)
        size = saved.stat().st_size
        print(f"{path.name} executed: {size:,} bytes")
        assert size <= MAX_EXECUTED, f"{path.name} executed is {size:,} bytes"
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
    assert {p.name for p in NOTEBOOKS} == {"quickstart.ipynb", "kling.ipynb", "compare-models.ipynb"}


def test_quickstart_notebook_runs(execute):
    nb = execute(ROOT / "notebooks" / "quickstart.ipynb")

    # the plan comes first: what the run will pay for, before it does
    assert "20 paid requests, estimated $" in _texts(_cell(nb, "plan = videobatch.plan("))
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

    # Beside the widgets, the static view of the last state: what the saved notebook shows where
    # the widgets cannot (reopened, kernel stopped), marked not live, without buttons.
    static = [out for out in run_cell.outputs if "vb-static" in out.get("data", {}).get("text/html", "")]
    assert len(static) == 1, [out.get("data", {}).keys() for out in run_cell.outputs]
    html = static[0]["data"]["text/html"]
    assert "Not live: the last state of this dashboard (ended at" in html
    assert "<b>20 / 20</b> done" in html and "20 finished clips" in html and "<button" not in html
    widgets = [out for out in run_cell.outputs if WIDGET_VIEW in out.get("data", {})]
    assert run_cell.outputs.index(widgets[0]) + 1 == run_cell.outputs.index(static[0])


def test_compare_models_notebook_runs(execute):
    """Every prompt on every current local model: priced per model before the run, then a grid with
    a clip in each prompt x model cell, captioned with a duration that model takes and its cost."""
    from videobatch.providers import catalog_of

    catalog = catalog_of("local")
    assert catalog is not None
    cards = {card.id: card for card in catalog.current()}
    assert len(cards) >= 2, "the local provider should pose as several models"
    nb = execute(ROOT / "notebooks" / "compare-models.ipynb")

    table = _texts(_cell(nb, "table = pd.DataFrame("))
    for model in cards:
        assert model in table

    priced = _texts(_cell(nb, "estimate_cost(request)"))
    estimates = {m[1]: (int(m[2]), float(m[3])) for m in
                 re.finditer(r"^([\w-]+): (\d+) clips, \d+ s, estimated \$(\d+\.\d\d)$", priced, re.M)}
    assert set(estimates) == set(cards), priced
    clips = {model: n for model, (n, _) in estimates.items()}
    assert len(set(clips.values())) == 1 and 4 <= clips[next(iter(cards))] <= 6  # 4-6 prompts each
    assert all(cost > 0 for _, cost in estimates.values())
    total = re.search(r"all models: (\d+) clips, estimated \$(\d+\.\d\d)", priced)
    assert total and int(total[1]) == sum(clips.values()), priced
    assert float(total[2]) == pytest.approx(sum(cost for _, cost in estimates.values()), abs=0.011)

    run_cell = _cell(nb, "df = videobatch.run(")
    assert any(WIDGET_VIEW in out.get("data", {}) for out in run_cell.outputs), "no dashboard"
    rows = total[1]
    assert f"{rows} of {rows} clips ready" in _texts(run_cell)
    assert f"{rows}/{rows} completed, 0 failed" in _texts(run_cell)

    grid = _texts(_cell(nb, "HTML(f\"<table>"))
    cells = re.findall(r"<td data-shot='([^']+)' data-model='([^']+)'>(.*?)</td>", grid, re.S)
    shots = {shot for shot, _, _ in cells}
    assert len(cells) == len(shots) * len(cards) == int(rows)  # every prompt x model, once
    assert {(s, m) for s, m, _ in cells} == {(s, m) for s in shots for m in cards}
    for shot, model, body in cells:
        assert body.count("<video") == 1 and "data:video/mp4;base64," in body, (shot, model)
        caption = re.search(r"<small>([\w-]+) · (\d+) s · est\. \$(\d+\.\d\d)</small>", body)
        assert caption and caption[1] == model, (shot, model, body[-200:])
        assert cards[model].takes_duration(int(caption[2])), (model, caption[2])
        assert float(caption[3]) == pytest.approx(estimates[model][1] / clips[model], abs=0.006)

    summary = _texts(_cell(nb, "summary = df.groupby("))
    for model, (n, cost) in estimates.items():
        assert re.search(rf"^{re.escape(model)}\s+{n}\s+{n}\s+{cost:.2f}\s+\d+\.\d+$", summary, re.M), summary


def test_kling_notebook_runs_against_the_test_server(execute):
    # After "Run All" the browser loads the previews: the test server must still be serving then.
    nb = execute(ROOT / "notebooks" / "kling.ipynb", then=(
        "import httpx\n"
        "urls = df.loc[df['status'] == 'completed', 'video_url']\n"
        "print('previews still load:', [httpx.get(u).status_code for u in urls])"))
    text = "\n".join(_texts(c) for c in nb.cells if c.cell_type == "code")
    assert "No Kling keys set: using the Kling-compatible test server at http://127.0.0.1:" in text
    assert re.search(r"3 rows, estimated cost \$\d+\.\d\d", text)
    assert "3 of 3 videos ready" in text
    assert "3/3 completed, 0 failed" in text
    assert "<video" in _texts(_cell(nb, "Video(df.loc"))
    assert "previews still load: [200, 200, 200]" in _texts(nb.cells[-1])
    assert not any("resources.close()" in c.source for c in nb.cells if c.cell_type == "code")
