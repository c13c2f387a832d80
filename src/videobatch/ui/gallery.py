"""The gallery's data: every finished clip of a batch in row order, one page at a time, which clip
plays, and the failed rows grouped by reason (the data it hands out, ``Tile``, ``GalleryPage`` and
``FailureGroup``, is in ``videobatch.ui.dashboard_snapshot``). Plain data, no widgets.

``Gallery.track(row)`` is O(1) per event (rows are kept by key; the row order is sorted only when a
page is asked for and a clip arrived out of order, which the runner's near-ordered completions make
cheap). ``Gallery.view(label)`` copies out only what is on screen: the tiles of the current page and
a few rows per failure reason, so a 200,000-row batch costs a page per redraw, not a batch.
``videobatch.ui.gallery_view`` draws it; ``videobatch.ui.dashboard_model`` feeds it.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable

from .._jobs import RowSnapshot, State
from .dashboard_snapshot import FailureGroup, GalleryPage, Row, Tile, excerpt

__all__ = ["PER_PAGE", "ROWS_PER_REASON", "Gallery", "caption"]

PER_PAGE = 24
ROWS_PER_REASON = 8  # failed rows listed under each reason (the rest are counted)


class Gallery:
    """Every finished clip and failed row, by key; a page and a playing clip are picked here."""

    def __init__(self, per_page: int = PER_PAGE, rows_per_reason: int = ROWS_PER_REASON) -> None:
        self.per_page = max(1, per_page)
        self.rows_per_reason = rows_per_reason
        self._lock = threading.Lock()
        self._clips: dict[str, RowSnapshot] = {}
        self._order: list[tuple[int, str]] = []  # (row index, key), sorted on demand
        self._sorted = True
        self._stale = False  # a clip left: rebuild the order from ``_clips``
        self._failed: dict[str, dict[str, RowSnapshot]] = {}  # reason -> key -> row
        self._reason: dict[str, str] = {}  # key -> its reason, for failed rows
        self._page = 0
        self._playing: str | None = None

    def __len__(self) -> int:
        return len(self._clips)

    def clear(self) -> None:
        with self._lock:
            self._clips.clear()
            self._order.clear()
            self._sorted, self._stale = True, False
            self._failed.clear()
            self._reason.clear()

    def track(self, row: RowSnapshot) -> None:
        """Follow one row's newest snapshot (any state)."""
        with self._lock:
            key = row.key
            if row.state is State.COMPLETED and row.video_url:
                if key not in self._clips:
                    if self._order and row.index < self._order[-1][0]:
                        self._sorted = False
                    self._order.append((row.index, key))
                before = self._clips.get(key)
                if before is not None and before.generation == row.generation \
                        and not before.extras.keys() <= row.extras.keys():
                    # An observer annotated the row (a poster) while its transition was still
                    # being told to the others: keep what the newer snapshot knew.
                    row = row.with_extras(**{**before.extras, **row.extras})
                self._clips[key] = row  # newest snapshot (a poster may arrive later)
            elif key in self._clips:
                del self._clips[key]
                self._stale = True
            old = self._reason.pop(key, None)
            if old is not None:
                group = self._failed[old]
                group.pop(key, None)
                if not group:
                    del self._failed[old]
            if row.state is State.FAILED:
                reason = row.error_kind or "error"
                self._reason[key] = reason
                self._failed.setdefault(reason, {})[key] = row

    # ------------------------------------------------------------------ what the user picks
    def turn(self, pages: int) -> None:
        """Go ``pages`` forward (negative: back), within the pages there are."""
        with self._lock:
            self._page = max(0, min(self._page + pages, self._pages() - 1))

    def go(self, page: int) -> None:
        with self._lock:
            self._page = max(0, min(page, self._pages() - 1))

    def play(self, key: str | None) -> None:
        """Put the clip of row ``key`` in the player (None: close the player)."""
        with self._lock:
            self._playing = key if key is None or key in self._clips else self._playing

    def _pages(self) -> int:
        return max(1, -(-len(self._clips) // self.per_page))

    # ------------------------------------------------------------------ what is on screen
    def view(self, label: Callable[[RowSnapshot], str]) -> tuple[GalleryPage, tuple[FailureGroup, ...]]:
        """The current page and the failure groups (most rows first), named by ``label``."""
        with self._lock:
            if self._stale:
                self._order = [(row.index, key) for key, row in self._clips.items()]
                self._stale, self._sorted = False, False
            if not self._sorted:
                self._order.sort()
                self._sorted = True
            pages = self._pages()
            self._page = min(self._page, pages - 1)
            start = self._page * self.per_page
            tiles = tuple(Tile.of(self._clips[key], label(self._clips[key]))
                          for _, key in self._order[start:start + self.per_page])
            playing = self._clips.get(self._playing) if self._playing else None
            page = GalleryPage(tiles, self._page, pages, len(self._clips),
                               start + 1 if tiles else 0,
                               Tile.of(playing, label(playing)) if playing is not None else None)
            groups = []
            for kind, rows in sorted(self._failed.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                shown = heapq.nsmallest(self.rows_per_reason, rows.values(), key=lambda r: r.index)
                groups.append(FailureGroup(kind, len(rows),
                                           tuple(Row.of(r, label(r)) for r in shown)))
            return page, tuple(groups)


def caption(tile: Tile, width: int = 60) -> str:
    """A tile's caption text: ``row 7 · a red fox in the snow…``."""
    return f"{tile.label} · {excerpt(tile.prompt, width)}"
