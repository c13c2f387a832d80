"""The contact sheet: one self-contained ``report.html`` showing every row of a batch at a glance.

Each row becomes a card: poster thumbnail, key, status, prompt, parameters, a link to the video
(the downloaded file when there is one, else the provider's URL) and the error of a failed row.
The page has inline CSS and no external resource, so it opens straight from disk; thumbnails are
referenced by relative path (keep the report next to them) or embedded as data URIs
(``embed=True``, for a single file to mail around). All user text is HTML-escaped.

Missing thumbnails are made on the way (``videobatch.delivery.thumbnails``) from a downloaded file or a
``file://`` video URL; remote URLs are not fetched here (use ``--download`` for that).
"""

from __future__ import annotations

import base64
import html
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import url2pathname

import pandas as pd

from .._jobs import RESULT_COLUMNS
from ..errors import ConfigError
from ..request import RequestRules
from .thumbnails import poster_frame

__all__ = ["write_report"]

log = logging.getLogger("videobatch")

_OWN_EXTRAS = {"local_path", "bytes", "sha256", "thumbnail", "download_error", "webhook_status",
               "webhook_attempts", "webhook_error", "webhook_event", "webhook_url"}
_PARAMS = ("model", "duration", "aspect_ratio", "resolution", "audio", "negative_prompt")
_NOT_SHOWN = frozenset({"prompt", "image", "end_image", "seed"})  # shown elsewhere, or noise

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}.meta{color:#666;margin-bottom:16px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;overflow:hidden}
.thumb{display:block;aspect-ratio:16/9;background:#e8e8e8;width:100%;object-fit:contain}
.none{display:flex;align-items:center;justify-content:center;color:#888;aspect-ratio:16/9;background:#eee}
.body{padding:8px 10px}.key{font-family:monospace;font-size:12px;color:#555}
.prompt{margin:4px 0;word-wrap:break-word}.params{font-size:12px;color:#666}
.error{font-size:12px;color:#a00;word-wrap:break-word}
.badge{display:inline-block;padding:1px 6px;border-radius:9px;font-size:11px;color:#fff;background:#888}
.completed{background:#2a7d2a}.failed{background:#b22}.generating,.submitting{background:#c80}
img.broken{visibility:hidden}
"""
# Marks the page once images settled: body[data-thumbs="<loaded>/<total>"] (for tests and checks).
_SCRIPT = """addEventListener("load",function(){var i=[].slice.call(document.images);
document.body.dataset.thumbs=i.filter(function(x){return x.complete&&x.naturalWidth>0}).length+"/"+i.length});"""


def _text(value: Any) -> str:
    if value is None:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value)


def _local_file(url: str) -> Path | None:
    parts = urlsplit(url)
    return Path(url2pathname(parts.path)) if parts.scheme == "file" else None


def _href(target: Path | str, base: Path) -> str:
    """A link usable from ``base``: relative for local files, the URL itself for http(s)."""
    if isinstance(target, Path):
        try:
            rel = os.path.relpath(target, base)
        except ValueError:  # another drive (Windows)
            return target.as_uri()
        return quote(Path(rel).as_posix())
    return target if urlsplit(target).scheme in ("http", "https", "file") else ""


def _thumbnail(row: pd.Series, key: str, thumbs: Path, make: bool) -> Path | None:
    recorded = _text(row.get("thumbnail"))
    if recorded and Path(recorded).exists():
        return Path(recorded)
    video = Path(_text(row.get("local_path"))) if _text(row.get("local_path")) else None
    if video is None or not video.exists():
        video = _local_file(_text(row.get("video_url")))
    if not make or video is None or not video.exists():
        return None
    png = thumbs / (_safe_name(key) + ".png")
    if png.exists() and png.stat().st_mtime >= video.stat().st_mtime:
        return png
    try:
        return poster_frame(video, png)
    except Exception as exc:  # an unreadable clip gets a placeholder, not a broken report
        log.warning("row %s: no thumbnail from %s: %s", key, video, exc)
        return None


def _rules(provider: str) -> RequestRules | None:
    """The rules of the provider a checkpoint was made with (to show what each row was sent as)."""
    from ..providers import rules_of

    try:
        return rules_of(provider) if provider else None
    except ConfigError:  # a plug-in that is not installed here
        return None


def _safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key).strip(".") or "_"


def _params(row: pd.Series, inputs: list[str], request: dict[str, Any] | None) -> str:
    given = request or {}
    names = [*_PARAMS, *sorted(k for k in given if k not in _PARAMS and k not in _NOT_SHOWN)]
    shown = {k: given[k] for k in names if given.get(k) not in (None, "")}
    for col in inputs:
        if col not in ("prompt", "id") and col not in _OWN_EXTRAS and _text(row[col]):
            shown.setdefault(col, row[col])
    return " · ".join(f"{k}={_text(v)}" for k, v in shown.items())


def _card(row: pd.Series, inputs: list[str], base: Path, thumbs: Path, *, embed: bool,
          make: bool, request: dict[str, Any] | None) -> str:
    key = _text(row.get("key"))
    status = _text(row.get("status")) or "unknown"
    thumb = _thumbnail(row, key, thumbs, make)
    local = _text(row.get("local_path"))
    link = _href(Path(local), base) if local and Path(local).exists() else _href(_text(row.get("video_url")), base)
    if thumb is not None:
        src = ("data:image/png;base64," + base64.b64encode(thumb.read_bytes()).decode()) if embed \
            else _href(thumb, base)
        image = (f'<img class="thumb" src="{html.escape(src)}" alt="{html.escape(key)}" '
                 'onerror="this.classList.add(\'broken\')">')
    else:
        image = '<div class="none">no preview</div>'
    if link:
        image = f'<a href="{html.escape(link)}">{image}</a>'
    parts = [f'<div class="card" data-key="{html.escape(key)}" data-status="{html.escape(status)}">', image,
             '<div class="body">',
             f'<span class="badge {html.escape(status)}">{html.escape(status)}</span> '
             f'<span class="key">{html.escape(key)}</span>',
             f'<div class="prompt">{html.escape(_text(row.get("prompt")))}</div>',
             f'<div class="params">{html.escape(_params(row, inputs, request))}</div>']
    for column in ("error", "download_error"):
        if _text(row.get(column)):
            parts.append(f'<div class="error">{html.escape(_text(row.get(column)))}</div>')
    if link:
        parts.append(f'<div class="params"><a href="{html.escape(link)}">video</a></div>')
    parts.append("</div></div>")
    return "".join(parts)


def write_report(
    source: pd.DataFrame | str | os.PathLike[str],
    path: str | os.PathLike[str] = "report.html",
    *,
    title: str | None = None,
    thumbnails_dir: str | os.PathLike[str] | None = None,
    make_thumbnails: bool = True,
    embed: bool = False,
) -> Path:
    """Write the contact sheet for ``source`` (a results DataFrame or a checkpoint path).

    ``thumbnails_dir``: where missing posters are made (default ``<report dir>/thumbnails``).
    ``embed``: put thumbnails inside the HTML (one portable file; larger). Returns the path.
    """
    path = Path(path).absolute()
    requests: list[dict[str, Any]] | None = None
    if isinstance(source, pd.DataFrame):
        df = source
    else:
        from .._results import results_frame
        from .._store import load

        loaded = load(source)
        df = results_frame(loaded.frame, loaded.jobs)
        rules = _rules(str(loaded.meta.get("settings", {}).get("provider", "")))
        requests = [rules.resolved(j.request) if rules else j.request.values() for j in loaded.jobs]
        title = title or f"videobatch: {Path(source).name}"
    base = path.parent
    base.mkdir(parents=True, exist_ok=True)
    thumbs = Path(thumbnails_dir).absolute() if thumbnails_dir else base / "thumbnails"
    columns = [str(c) for c in df.columns]
    inputs = columns[: columns.index("status")] if "status" in columns else [
        c for c in columns if c not in RESULT_COLUMNS]
    cards = [
        _card(row, inputs, base, thumbs, embed=embed, make=make_thumbnails,
              request=requests[i] if requests is not None else None)
        for i, (_, row) in enumerate(df.iterrows())
    ]
    counts = Counter(_text(s) for s in df["status"]) if "status" in df.columns else Counter()
    summary = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    heading = html.escape(title or "videobatch report")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{heading}</title>"
        f"<style>{_CSS}</style></head><body><h1>{heading}</h1>"
        f"<div class=\"meta\">{len(df)} rows: {html.escape(summary)} · made "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</div>"
        f"<div class=\"grid\">\n{chr(10).join(cards)}\n</div><script>{_SCRIPT}</script></body></html>\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
