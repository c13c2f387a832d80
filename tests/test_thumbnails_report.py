"""Poster frames and the HTML contact sheet, rendered by a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

import videobatch
from videobatch._inputs import load_prompts
from videobatch.delivery.downloads import Downloader
from videobatch.delivery.report import write_report
from videobatch.delivery.thumbnails import poster_frame
from videobatch.providers.local.render import render_clip

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NASTY = 'a <script>alert("x")</script> & "quotes" \'too\''


def read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def test_poster_frame_is_a_scaled_png_of_the_clip(tmp_path):
    clip = render_clip(tmp_path / "c.mp4", "a green field", seconds=1.0, fps=12, aspect_ratio="16:9")
    png = poster_frame(clip, tmp_path / "thumbs" / "c.png", width=160)
    pixels = read_png(png)
    assert pixels.shape == (90, 160, 3)
    assert pixels.std() > 5  # a picture, not a flat fill
    assert [p.name for p in png.parent.iterdir()] == ["c.png"]  # no temp file left
    with pytest.raises(Exception):  # noqa: B017, PT011 - PyAV raises its own error types
        poster_frame(tmp_path / "thumbs" / "c.png.missing", tmp_path / "x.png")


def run_with_downloads(tmp_path: Path) -> tuple[Path, Path]:
    prompts = load_prompts([{"prompt": "a red kite over the sea", "team": "sky"},
                            {"prompt": NASTY, "team": "<b>ops</b>"},
                            {"prompt": "a forest at night", "team": "land"},
                            {"prompt": "a banned thing [reject]", "team": "x"}])
    videos = tmp_path / "videos"
    checkpoint = tmp_path / "run.parquet"
    videobatch.run(prompts, "local", checkpoint=checkpoint, latency=0.05, progress=False,
                   observers=[Downloader(videos, frame=prompts.frame)])
    return checkpoint, videos


def test_report_is_escaped_and_links_local_files(tmp_path):
    checkpoint, videos = run_with_downloads(tmp_path)
    page = write_report(checkpoint, videos / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert "<b>ops</b>" not in page and "&lt;b&gt;ops&lt;/b&gt;" in page
    assert page.count('class="card"') == 4 and page.count('<img class="thumb"') == 3
    assert 'src="thumbnails/' in page and 'href="' in page and "content policy" in page
    assert "model=local-v1 · duration=5 · aspect_ratio=16:9 · mode=std" in page  # as sent: defaults in
    embedded = write_report(checkpoint, tmp_path / "portable.html", embed=True).read_text()
    assert embedded.count('src="data:image/png;base64,') == 3


def test_report_from_a_dataframe_makes_missing_thumbnails(tmp_path):
    df = videobatch.run(["a yellow submarine"], "local", latency=0.05, progress=False)
    path = write_report(df, tmp_path / "sheet" / "report.html")
    assert (tmp_path / "sheet" / "thumbnails" / f"{df['key'][0]}.png").exists()
    assert "a yellow submarine" in path.read_text()


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={cwd / 'chromium-profile'}", "--window-size=1200,900"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium_with_thumbnails_loaded(tmp_path):
    checkpoint, videos = run_with_downloads(tmp_path)
    report = write_report(checkpoint, videos / "report.html")

    dom = chromium("--dump-dom", report.as_uri(), cwd=tmp_path)
    match = re.search(r'data-thumbs="(\d+)/(\d+)"', dom.stdout)
    assert match, dom.stderr[-2000:]
    assert match.groups() == ("3", "3")  # every <img> decoded with a natural width > 0

    shot = tmp_path / "report.png"  # kept by pytest under its basetemp for a look
    res = chromium(f"--screenshot={shot}", report.as_uri(), cwd=tmp_path)
    assert shot.exists(), res.stderr[-2000:]
    pixels = read_png(shot).astype(int)
    assert pixels.shape[:2] == (900, 1200)
    # Thumbnails are saturated colour fields; text, borders and a broken-image icon are not.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 60).sum() > 3 * 150 * 80
