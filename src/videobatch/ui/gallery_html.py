"""The gallery's words as HTML, shared by the live widgets and the static view a saved notebook
keeps: the failures panel (failed rows grouped by reason, a few rows each, the rest counted), the
pager's line, and the light placeholder shown where a clip has no poster frame."""

from __future__ import annotations

import html

from .dashboard_snapshot import FailureGroup, GalleryPage, Tile, excerpt

__all__ = ["PLACEHOLDER_SVG", "failures_html", "pager_text", "tile_caption_html"]

# A light 16:9 tile with a play sign: what a clip without a poster shows until it is clicked.
PLACEHOLDER_SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" width="160" height="90" viewBox="0 0 160 90">'
                   b'<rect width="160" height="90" rx="4" fill="#eceff1"/>'
                   b'<circle cx="80" cy="45" r="17" fill="#cfd8dc"/>'
                   b'<path d="M74 36 L91 45 L74 54 Z" fill="#78909c"/></svg>')


def pager_text(page: GalleryPage) -> str:
    """``Clips 25–48 of 2,000 · page 2 / 84`` (or that there are none yet)."""
    if not page.total:
        return "No finished clips yet"
    last = page.first + len(page.tiles) - 1
    return (f"Clips {page.first:,}–{last:,} of {page.total:,} (row order)"
            + (f" · page {page.page + 1} / {page.pages}" if page.pages > 1 else ""))


def tile_caption_html(tile: Tile) -> str:
    """A tile's caption: its id or row number in bold, then the prompt, cut to two short lines."""
    return (f'<div class="vb-caption" title="{html.escape(tile.prompt)}" style="font-size:11px;'
            f'line-height:1.25;width:160px;white-space:normal;overflow:hidden;height:42px">'
            f"<b>{html.escape(tile.label)}</b> · {html.escape(excerpt(tile.prompt, 64))}</div>")


def failures_html(groups: tuple[FailureGroup, ...], failed: int) -> str:
    """Failed rows grouped by reason, most rows first: each reason with its count and first rows."""
    if not failed:
        return ""
    cells = "padding:1px 8px;text-align:left;vertical-align:top"
    parts = [f'<div class="vb-failures" style="margin-top:6px"><b style="color:#e53935">'
             f"{failed:,} failed row{'s' if failed != 1 else ''}</b>, by reason "
             "(Retry failed sends them again; batch.results() lists every one)"]
    for group in groups:
        rows = "".join(
            f'<tr><td style="{cells}">{html.escape(r.label)}</td>'
            f'<td style="{cells}">{html.escape(r.prompt)}</td>'
            f'<td style="{cells};color:#555">{html.escape(excerpt(r.error, 110))}</td></tr>'
            for r in group.rows)
        more = group.count - len(group.rows)
        tail = f'<div style="color:#555">… and {more:,} more</div>' if more > 0 else ""
        parts.append(f'<details class="vb-reason" data-kind="{html.escape(group.kind)}" open>'
                     f"<summary><b>{html.escape(group.kind)}</b> × {group.count:,}</summary>"
                     f'<table style="border-collapse:collapse;font-size:12px">{rows}</table>'
                     f"{tail}</details>")
    return "".join(parts) + "</div>"
