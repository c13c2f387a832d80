"""The quickstart notebook as a person sees it: JupyterLab (headless, loopback, no token) opened in
Chromium driven by Playwright; run all cells, check the dashboard shows every row completed and a
playable clip preview, and take a screenshot of it. The screenshot goes to the test's temporary
folder; ``VIDEOBATCH_UPDATE_DOCS=1 python -m pytest tests/test_browser.py`` also copies it over the
README's image, docs/dashboard.png (the suite never rewrites tracked files on its own).

Needs Debian's ``chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it): skipped only
when /usr/bin/chromium is absent. Nothing is downloaded: Playwright drives the system browser, and
JupyterLab is told not to look for news, updates or extensions.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
DOC_IMAGE = ROOT / "docs" / "dashboard.png"
UPDATE_DOCS = os.environ.get("VIDEOBATCH_UPDATE_DOCS") == "1"
BROWSER_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-default-apps", "--disable-extensions",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium "
                                       "(apt-get install -y chromium; .ci/run installs it)")


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


def test_quickstart_in_jupyterlab_shows_the_dashboard(jupyterlab: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    screenshot = tmp_path / "dashboard.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 1500})
            page.set_default_timeout(60_000)
            page.goto(f"{jupyterlab}/lab/tree/notebooks/quickstart.ipynb")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
            # The kernel is ready when the notebook's session reports it idle.
            page.wait_for_function("""() => {
                const panel = window.jupyterapp?.shell.currentWidget;
                return panel?.sessionContext?.session?.kernel?.status === 'idle';
            }""")
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
            clips = first.locator(".vb-clip video")
            assert clips.count() == 4
            # The preview really is a playable clip (decoded to its first frame).
            page.wait_for_function("""() => [...document.querySelector('.videobatch-dashboard')
                .querySelectorAll('.vb-clip video')].every(v => v.readyState >= 2 && v.videoWidth > 0)""")
            summary = page.locator(".vb-summary").first.inner_text()
            assert "20/20 completed, 0 failed" in summary

            cell = page.locator(".jp-CodeCell", has=first).first
            cell.scroll_into_view_if_needed()
            page.wait_for_timeout(300)  # let the last repaint settle
            cell.screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    if UPDATE_DOCS:
        shutil.copyfile(screenshot, DOC_IMAGE)
