"""The gallery's widgets: a page of poster thumbnails with captions, prev/next, one player, and the
failures panel. Only what is on screen goes to the browser.

The tiles are a fixed pool made once (``per_page`` of them) and re-filled when the page changes:
a batch of any size makes no widget per row, and a widget's bytes are re-sent only when its value
changes. A thumbnail is the poster PNG downloads made (``download=``), scaled down to a small JPEG,
or a light placeholder; the clip itself is sent only when its tile is clicked, into the one player.
``videobatch.ui.dashboard_view`` holds a ``GalleryView``; the dashboard wires its clicks.
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import Any

from .dashboard_snapshot import FailureGroup, GalleryPage, Tile, excerpt
from .gallery_html import PLACEHOLDER_SVG, failures_html, pager_text, tile_caption_html

__all__ = ["GalleryView"]

THUMB_WIDTH = 240  # pixels: sharp at the tile's 160 CSS pixels on most screens
MAX_POSTER = 256 * 1024  # an unreadable poster bigger than this shows the placeholder
MAX_CLIP = 64 * 1024 * 1024  # a local clip bigger than this is not sent to the player


def _small_jpeg(path: str, width: int = THUMB_WIDTH) -> bytes:
    """The poster scaled to ``width`` pixels and encoded as JPEG (a few KB instead of ~50)."""
    import av  # PyAV, as the poster frames themselves (videobatch.delivery.thumbnails)

    with av.open(path, "r") as container:
        frame = next(container.decode(video=0))
    height = max(2, round(frame.height * width / max(1, frame.width) / 2) * 2)
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    small = frame.reformat(width=width, height=height, format="yuvj420p")
    return b"".join(bytes(p) for p in [*codec.encode(small), *codec.encode(None)])


def _poster(path: str | None) -> tuple[str, bytes]:
    """``(format, bytes)`` of a tile's image: its poster (made small) if it is on disk, else the
    light placeholder."""
    if path:
        try:
            return "jpeg", _small_jpeg(path)
        except Exception:  # not an image PyAV reads: the file as it is, if small
            try:
                if os.path.getsize(path) <= MAX_POSTER:
                    with open(path, "rb") as f:
                        return "png", f.read()
            except OSError:
                pass
    return "svg+xml", PLACEHOLDER_SVG


class _TileWidgets:
    """One tile of the pool: image, play button (the row's id or number), caption."""

    def __init__(self, w: Any, on_click: Callable[[int], None], slot: int, layouts: Any) -> None:
        self.image = w.Image(format="svg+xml", value=PLACEHOLDER_SVG, layout=layouts["image"])
        self.button = w.Button(description="", icon="play", layout=layouts["button"])
        self.button.on_click(lambda _: on_click(slot))
        self.caption = w.HTML(layout=layouts["caption"])
        self.box = w.VBox([self.image, self.button, self.caption], layout=layouts["tile"])
        self.box.add_class("vb-tile")
        self.key: str | None = None
        self.poster: str | None = None

    def show(self, tile: Tile) -> None:
        if (tile.key, tile.poster) != (self.key, self.poster):
            fmt, data = _poster(tile.poster)
            self.image.format, self.image.value = fmt, data
            self.key, self.poster = tile.key, tile.poster
        self.button.description = tile.label
        self.button.tooltip = f"Play {tile.label}: {excerpt(tile.prompt, 200)}"
        self.caption.value = tile_caption_html(tile)


class GalleryView:
    """The gallery's widgets; ``render(page, groups, failed)`` re-fills them from a snapshot."""

    def __init__(self, w: Any, per_page: int, *, on_turn: Callable[[int], None],
                 on_play: Callable[[str | None], None]) -> None:
        self.w = w
        self._on_play = on_play
        layouts = {"image": w.Layout(width="160px", height="90px", object_fit="contain"),
                   "button": w.Layout(width="160px"),
                   "caption": w.Layout(width="160px"),
                   "tile": w.Layout(width="168px", margin="0 6px 8px 0")}
        self._tiles = [_TileWidgets(w, self._clicked, i, layouts) for i in range(per_page)]
        self._keys: list[str] = []
        self.head = w.HTML()
        self.prev = w.Button(description="Previous", icon="chevron-left", disabled=True,
                             layout=w.Layout(width="auto"))
        self.next = w.Button(description="Next", icon="chevron-right", disabled=True,
                             layout=w.Layout(width="auto"))
        self.prev.on_click(lambda _: on_turn(-1))
        self.next.on_click(lambda _: on_turn(+1))
        self.grid = w.Box(layout=w.Layout(display="flex", flex_flow="row wrap"))
        self.grid.add_class("vb-grid")
        self.player = w.Video(format="mp4", autoplay=True, loop=False, controls=True,
                              layout=w.Layout(max_width="480px", max_height="320px"))
        self.player_caption = w.HTML()
        self.close = w.Button(description="Close", icon="times", layout=w.Layout(width="auto"))
        self.close.on_click(lambda _: on_play(None))
        self.stage = w.VBox([self.player_caption, self.player, self.close],
                            layout=w.Layout(display="none", margin="4px 0 8px 0"))
        self.stage.add_class("vb-player")
        self.failures = w.HTML()
        self._playing: str | None = None
        self.box = w.VBox([w.HBox([self.head, self.prev, self.next]), self.stage, self.grid,
                           self.failures])
        self.box.add_class("vb-gallery")

    def _clicked(self, slot: int) -> None:
        if slot < len(self._keys):
            self._on_play(self._keys[slot])

    def render(self, page: GalleryPage, groups: tuple[FailureGroup, ...], failed: int) -> None:
        self.head.value = f'<span style="color:#555">{html.escape(pager_text(page))}</span>'
        self.prev.disabled = page.page == 0
        self.next.disabled = page.page >= page.pages - 1
        keys = [tile.key for tile in page.tiles]
        for tile, widgets in zip(page.tiles, self._tiles, strict=False):
            widgets.show(tile)
        if keys != self._keys or len(self.grid.children) != len(keys):
            self.grid.children = [t.box for t in self._tiles[: len(keys)]]
            self._keys = keys
        self.failures.value = failures_html(groups, failed)
        self._stage(page.playing)

    def _stage(self, tile: Tile | None) -> None:
        """The one player: the picked clip, sent now (and only it); hidden when none is picked."""
        key = tile.key if tile is not None else None
        if key == self._playing:
            return
        self._playing = key
        if tile is None:
            self.stage.layout.display = "none"
            self.player.value = b""
            return
        note = ""
        if tile.file is not None:
            try:
                if os.path.getsize(tile.file) > MAX_CLIP:
                    raise OSError(f"{os.path.basename(tile.file)} is too big to play here")
                with open(tile.file, "rb") as f:
                    self.player.format, self.player.value = "mp4", f.read()
            except OSError as exc:
                self.player.value = b""
                note = f" · <i>cannot play: {html.escape(str(exc))}</i>"
        else:
            self.player.format, self.player.value = "url", tile.video_url.encode()
        self.player_caption.value = (f"<b>{html.escape(tile.label)}</b> · "
                                     f"{html.escape(tile.prompt)}{note}")
        self.stage.layout.display = "flex"
