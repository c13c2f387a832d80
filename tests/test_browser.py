"""The quickstart notebook as a person sees it: JupyterLab (headless, loopback, no token) opened in
Chromium driven by Playwright; run all cells, check the dashboard shows every row completed, a
gallery of every clip with its poster and caption, a clip that plays when its tile is clicked, the
failures panel; then restart the kernel, save, and reopen the notebook: where the widgets were, the
static view of the last state shows, marked not live, with no "model not found" and no buttons.
And a notebook written by the test, a batch started on the ``local`` provider: Cancel mid-run,
Retry failed, Resume cancelled, clicked as a person would; after each, the counts shown are the
checkpoint's, and the provider's submissions log says what was paid (no row twice, no cancelled
row by Retry).

Screenshots go to the test's temporary folder; ``VIDEOBATCH_UPDATE_DOCS=1 python -m pytest
tests/test_browser.py`` also copies them over the README's images: docs/dashboard.png,
docs/gallery.png, docs/failures.png and docs/static-view.png (the suite never rewrites tracked
files on its own).

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it): skipped only
when /usr/bin/chromium is absent. Nothing is downloaded: Playwright drives the system browser, and
JupyterLab is told not to look for news, updates or extensions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
DOCS = ROOT / "docs"
UPDATE_DOCS = os.environ.get("VIDEOBATCH_UPDATE_DOCS") == "1"
BROWSER_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-default-apps", "--disable-extensions",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--autoplay-policy=no-user-gesture-required"]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install -y chromium; .ci/run installs it)"),
    # JupyterLab's start, a notebook run and its shutdown: past the suite's 120 s on a busy machine
    pytest.mark.timeout(300),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab on a free loopback port, serving a copy of notebooks/ and data/; its URL."""
    shutil.copytree(ROOT / "data", tmp_path / "work" / "data")
    (tmp_path / "work" / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", tmp_path / "work" / "notebooks")
    config = tmp_path / "jupyter-config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"open_browser": False, "root_dir": str(tmp_path / "work"), "allow_root": True,
                      "disable_check_xsrf": True},
        "IdentityProvider": {"token": ""},
        # Offline: no news, no update check, no extension manager lookups on PyPI.
        "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                   "extension_manager": "readonly", "expose_app_in_browser": True},
    }))
    # Render every cell (no windowing), so what the test reads is what a person scrolls to.
    # No news toast (and no news fetch) either.
    for plugin, values in (("notebook-extension/tracker", {"windowingMode": "none"}),
                           ("apputils-extension/notification", {"fetchNews": "false"})):
        path = tmp_path / "lab-settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {**os.environ, "HOME": str(tmp_path / "home"), "JUPYTER_CONFIG_DIR": str(config),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
           "VIDEOBATCH_LOCAL_DIR": str(tmp_path / "local-provider")}
    for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY", "KLING_BASE_URL"):
        env.pop(name, None)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--ip=127.0.0.1",
                               f"--port={port}", "--port-retries=0"],
                              env=env, stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path / "work")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/status", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n"
                            + (tmp_path / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


KERNEL_IDLE = """() => {
    const panel = window.jupyterapp?.shell.currentWidget;
    return panel?.sessionContext?.session?.kernel?.status === 'idle';
}"""


def _opened(browser: Any, url: str, *, height: int) -> Any:
    """A page of ``browser`` showing the notebook at ``url``, its kernel ready."""
    page = browser.new_page(viewport={"width": 1100, "height": height})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    page.wait_for_function(KERNEL_IDLE)
    return page


def _visible_text(page: Any) -> str:
    return str(page.evaluate("() => document.querySelector('.jp-NotebookPanel').innerText"))


def test_quickstart_in_jupyterlab_shows_the_dashboard(jupyterlab: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots = {name: tmp_path / f"{name}.png" for name in
             ("dashboard", "gallery", "failures", "static-view")}
    notebook = f"{jupyterlab}/lab/tree/notebooks/quickstart.ipynb"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = _opened(browser, notebook, height=1500)
            page.evaluate("""async () => {
                await window.jupyterapp.commands.execute('application:toggle-left-area');
                await window.jupyterapp.commands.execute('notebook:run-all-cells');
            }""")
            page.wait_for_function("""() => [...document.querySelectorAll('.jp-OutputArea-output')]
                .some(el => /retried \\d+ rows: \\d+ of 20 completed/.test(el.textContent))""",
                                   timeout=120_000)

            dashboards = page.locator(".videobatch-dashboard")
            # run(): shown by the cell; Batch.start(): shown by the start() cell while the kernel
            # is free; the retry cell's run: a third one.
            assert dashboards.count() >= 3
            first = dashboards.first
            first.scroll_into_view_if_needed()
            text = first.inner_text()
            assert "20 / 20 done" in text and "completed 20" in text, text
            # The gallery: every clip on one page (24 a page), each with its poster and caption.
            tiles = first.locator(".vb-tile")
            assert tiles.count() == 20
            assert "Clips 1–20 of 20" in first.locator(".vb-gallery").inner_text()
            page.wait_for_function("""() => [...document.querySelector('.videobatch-dashboard')
                .querySelectorAll('.vb-tile img')].every(i => i.complete && i.naturalWidth > 0)""")
            assert "spot-01" in tiles.first.inner_text()  # its id, and its prompt
            assert not first.locator(".vb-player").is_visible()  # no clip is sent before a click
            # The static view beside the live widgets is hidden while they live.
            assert page.locator(".vb-static").count() >= 3
            assert not page.locator(".vb-static").first.is_visible()

            tiles.nth(2).locator("button").click()  # one player, that clip
            page.wait_for_function("""() => {
                const v = document.querySelector('.videobatch-dashboard .vb-player video');
                return v && v.readyState >= 2 && v.videoWidth > 0; }""")
            assert first.locator(".vb-player").inner_text().startswith("spot-03")
            summary = page.locator(".vb-summary").first.inner_text()
            assert "20/20 completed, 0 failed" in summary
            cell = page.locator(".jp-CodeCell", has=first).first
            cell.scroll_into_view_if_needed()
            page.wait_for_timeout(300)  # let the last repaint settle
            cell.screenshot(path=str(shots["dashboard"]))
            first.locator(".vb-gallery").screenshot(path=str(shots["gallery"]))

            # Failures by reason, in the dashboard of the run with failure_rate=0.2 (Batch.start).
            failures = page.locator(".videobatch-dashboard .vb-failures").first
            if failures.count():  # (about one run in a hundred has no failure)
                failures.scroll_into_view_if_needed()
                assert "by reason" in failures.inner_text()
                assert "generation_failed" in failures.inner_text()
                failures.screenshot(path=str(shots["failures"]))

            # The kernel restarts: the widgets are disconnected, their static view stands in.
            page.evaluate("""async () => {
                await window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart();
            }""")
            page.wait_for_function(KERNEL_IDLE)
            page.wait_for_function("() => !document.querySelector('.videobatch-dashboard')"
                                   "?.offsetParent")  # hidden
            static = page.locator(".vb-static").first
            assert static.is_visible() and "Not live" in static.inner_text()

            # Saved, the kernel stopped, reopened: no widget models anywhere.
            page.evaluate("""async () => {
                const panel = window.jupyterapp.shell.currentWidget;
                await panel.context.save();
                await panel.sessionContext.shutdown();
            }""")
            page.close()  # (no "leave page?" prompt: the notebook is saved)
            page = browser.new_page(viewport={"width": 1100, "height": 1500})
            page.set_default_timeout(60_000)
            page.goto(notebook)
            page.wait_for_selector(".vb-static")
            page.wait_for_timeout(3000)  # the widget manager gives up on the models it lacks
            statics = page.locator(".vb-static")
            assert statics.count() >= 3
            assert all(statics.nth(i).is_visible() for i in range(statics.count()))
            text = statics.first.inner_text()
            assert "Not live: the last state of this dashboard (ended at" in text, text
            assert "20 / 20 done" in text and "20 finished clips" in text
            visible = _visible_text(page)
            assert "model not found" not in visible and "Error displaying widget" not in visible
            assert page.locator(".videobatch-dashboard").count() == 0
            assert page.locator(".jp-NotebookPanel button:visible", has_text="Cancel").count() == 0
            statics.first.scroll_into_view_if_needed()
            page.locator(".jp-CodeCell", has=statics.first).first.screenshot(
                path=str(shots["static-view"]))
        finally:
            browser.close()
    assert shots["dashboard"].stat().st_size > 10_000
    if UPDATE_DOCS:
        for name, shot in shots.items():
            if shot.exists():
                shutil.copyfile(shot, DOCS / f"{name}.png")


# ------------------------------------------------------------- Cancel, Retry failed, Resume
ROWS = 30
REJECTED = 2  # rows the local provider refuses ("[reject]" in the prompt): failed, every time
CANCEL_CELL = """import videobatch

rows = ["a blocked kite [reject]", "a blocked swan [reject]",
        *[f"a paper boat number {{i}} on a pond" for i in range({paper})]]
batch = videobatch.Batch(rows, provider="local", checkpoint={checkpoint!r}, latency=2,
                         max_parallel=5)
batch.start()
"""
CHIPS = """() => Object.fromEntries([...document.querySelectorAll('.videobatch-dashboard .vb-stats span')]
    .map(s => s.textContent.trim().split(' ')).map(([k, v]) => [k, Number(v)]))"""

CUT = """() => [...document.querySelectorAll('.videobatch-dashboard .vb-buttons button')]
    .filter(b => b.scrollWidth > b.clientWidth).map(b => b.textContent)"""


def _notebook(cell: str) -> str:
    return json.dumps({"cells": [{"cell_type": "code", "execution_count": None, "id": "start",
                                  "metadata": {}, "outputs": [], "source": cell}],
                       "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                   "name": "python3"}},
                       "nbformat": 4, "nbformat_minor": 5})


def _paid(root: Path) -> list[dict[str, Any]]:
    """Submit calls that reached the provider and were accepted or refused (each may cost)."""
    from videobatch.providers.local import read_submissions

    return [e for e in read_submissions(root) if e["outcome"] in ("accepted", "rejected")]


def _stored(checkpoint: Path) -> dict[str, int]:
    """The checkpoint's counts, read once the run has closed it (the batch in the kernel gives
    its writer lock back). Read while the run folds its journal into a snapshot, another process
    can see an older state or an unreadable file: a race of the store's, reported, not tested."""
    import fcntl

    import videobatch

    deadline = time.monotonic() + 30
    with (checkpoint.parent / f"{checkpoint.name}.lock").open("a") as lock:
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the run never gave the checkpoint back"
                time.sleep(0.05)
        try:
            counts = videobatch.results(checkpoint)["status"].value_counts()
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return {state: int(n) for state, n in counts.items()}


def _shown(page: Any) -> dict[str, int]:
    """The counts on the dashboard's chips (a state without a chip has none)."""
    return {state: n for state, n in page.evaluate(CHIPS).items() if n}


def _status(page: Any) -> str:
    return str(page.locator(".videobatch-dashboard .vb-status").inner_text())


def test_cancel_retry_resume_in_jupyterlab(jupyterlab: str, tmp_path: Path) -> None:
    """Cancel mid-run, then Retry failed (the failed rows only: no cancelled row is paid for),
    then Resume cancelled; after each, the counts shown are the checkpoint's and the provider's
    submissions log says what was paid."""
    from playwright.sync_api import sync_playwright

    checkpoint = tmp_path / "cancel.checkpoint.parquet"
    (tmp_path / "work" / "cancel.ipynb").write_text(_notebook(CANCEL_CELL.format(
        paper=ROWS - REJECTED, checkpoint=str(checkpoint))))
    root = tmp_path / "local-provider"  # the fixture's VIDEOBATCH_LOCAL_DIR

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = _opened(browser, f"{jupyterlab}/lab/tree/cancel.ipynb", height=1200)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            dash = page.locator(".videobatch-dashboard")
            buttons = dash.locator(".vb-buttons")

            # 1. Cancel while rows generate (the rejected ones have failed at once).
            page.wait_for_function(f"""() => {{ const c = ({CHIPS})();
                return c.failed === {REJECTED} && c.generating > 0 && c.pending > 0; }}""")
            dash.get_by_role("button", name=re.compile(r"Cancel \(\d+ not sent\)")).click()
            page.wait_for_function("() => document.querySelector('.videobatch-dashboard "
                                   ".vb-status')?.textContent === 'Cancelled'")
            shown = _shown(page)
            stored = _stored(checkpoint)
            assert shown == stored, (shown, stored)
            cancelled = stored["cancelled"]
            assert cancelled > 0 and stored["failed"] == REJECTED
            done = stored.get("completed", 0) + REJECTED  # cancelled rows are not done
            assert f"{done} / {ROWS} done" in dash.locator(".vb-pace").inner_text()
            assert "Cancelling" not in buttons.inner_text()  # the run is over: no "Cancelling…"
            # Each button says what it will do in full: no caption cut to "Retry 2 f…".
            assert page.evaluate(CUT) == [], "button captions cut off"
            paid = len(_paid(root))
            # Every row but the cancelled ones, once (a row caught mid-submit may not have been).
            assert ROWS - cancelled - stored.get("submitting", 0) <= paid <= ROWS - cancelled

            # 2. Retry failed: the two failed rows, nothing else, are sent again; the rows that
            # were in flight finish on this run without being paid again.
            retry = dash.locator("button", has_text=f"Retry {REJECTED} failed")
            retry.click()
            page.wait_for_function("() => document.querySelector('.videobatch-dashboard "
                                   ".vb-buttons')?.innerText.includes('is the live table')")
            shown = _shown(page)
            stored = _stored(checkpoint)
            assert shown == stored, (shown, stored)
            assert stored["cancelled"] == cancelled and stored["failed"] == REJECTED
            assert "generating" not in stored and "pending" not in stored
            sent = _paid(root)[paid:]  # the failed rows; no cancelled row is sent again
            assert len(sent) == ROWS - cancelled - paid + REJECTED
            assert sum("[reject]" in e["prompt"] for e in sent) == REJECTED
            assert stored["completed"] == ROWS - REJECTED - cancelled  # in flight: finished

            # 3. Resume cancelled: each cancelled row is sent once, and the batch finishes.
            dash.locator("button", has_text=f"Resume {cancelled} cancelled").click()
            page.wait_for_function(f"""() => ({CHIPS})().completed === {ROWS - REJECTED}
                && document.querySelector('.videobatch-dashboard .vb-status').textContent
                   === 'Finished'
                && document.querySelector('.videobatch-dashboard .vb-buttons').innerText
                   .includes('is the live table')""", timeout=90_000)
            shown = _shown(page)
            stored = _stored(checkpoint)
            assert shown == stored == {"completed": ROWS - REJECTED, "failed": REJECTED}
            assert f"{ROWS} / {ROWS} done" in dash.locator(".vb-pace").inner_text()
            entries = _paid(root)
            assert len(entries) == ROWS + REJECTED  # every row once, the failed ones twice
            accepted = [e["idempotency_key"] for e in entries if e["outcome"] == "accepted"]
            assert len(accepted) == len(set(accepted)) == ROWS - REJECTED  # none paid twice
            page.screenshot(path=str(tmp_path / "cancel-retry-resume.png"))
        finally:
            browser.close()
