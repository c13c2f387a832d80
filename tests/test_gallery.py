"""The dashboard's gallery: every finished clip in row order, a page at a time, with its id or row
number and prompt; one player; failures grouped by reason. And what it costs the browser: for a
2,000-row batch the widget messages stay under 2 MB and no widget is made per row (counted on a
recording comm, the way a kernel would send them)."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import comm
from comm.base_comm import BaseComm

import videobatch
from videobatch._events import Event, Tally
from videobatch._jobs import Job, State
from videobatch.request import VideoRequest
from videobatch.ui.dashboard import Dashboard
from videobatch.ui.gallery import Gallery
from videobatch.ui.gallery_html import PLACEHOLDER_SVG, failures_html, pager_text

MB = 1024 * 1024


def _job(i: int, key: str | None = None, prompt: str | None = None) -> Job:
    return Job(key=key or f"shot-{i}", index=i,
               request=VideoRequest(prompt=prompt or f"a paper boat number {i}"))


def _done(job: Job, url: str | None = None, **extras: Any) -> Job:
    job.state = State.COMPLETED
    job.video_url = url or f"https://cdn.example/{job.key}.mp4"
    job.extras.update(extras)
    return job


def _failed(job: Job, kind: str, error: str = "refused") -> Job:
    job.state, job.error_kind, job.error = State.FAILED, kind, error
    return job


# ------------------------------------------------------------------------------------ the model
def test_pages_hold_every_clip_in_row_order_named_by_id_or_number():
    gallery = Gallery(per_page=4)
    jobs = [_job(i) for i in range(10)]
    for i in (3, 0, 1, 2, 9, 5, 4, 8, 6, 7):  # finishing out of order
        gallery.track(_done(jobs[i]).snapshot())
    page, groups = gallery.view(lambda r: r.key)
    assert [t.key for t in page.tiles] == ["shot-0", "shot-1", "shot-2", "shot-3"]
    assert (page.page, page.pages, page.total, page.first) == (0, 3, 10, 1)
    assert groups == ()
    assert pager_text(page) == "Clips 1–4 of 10 (row order) · page 1 / 3"
    gallery.turn(+1)
    gallery.turn(+5)  # never past the last page
    page, _ = gallery.view(lambda r: r.key)
    assert [t.key for t in page.tiles] == ["shot-8", "shot-9"] and page.first == 9
    gallery.turn(-9)
    assert gallery.view(lambda r: r.key)[0].page == 0

    gallery.play("shot-2")
    page, _ = gallery.view(lambda r: f"row {r.index + 1}")
    assert page.playing is not None and page.playing.label == "row 3"
    assert page.playing.prompt == "a paper boat number 2"
    gallery.play("no-such-row")  # ignored
    assert gallery.view(lambda r: r.key)[0].playing.key == "shot-2"  # type: ignore[union-attr]
    gallery.play(None)
    assert gallery.view(lambda r: r.key)[0].playing is None


def test_failures_are_grouped_by_reason_with_their_rows_and_follow_retries():
    gallery = Gallery(per_page=24, rows_per_reason=3)
    jobs = [_job(i, key=f"{i:016x}") for i in range(12)]  # a table without ids: hash keys
    for job in jobs[:7]:
        gallery.track(_failed(job, "rejected", f"[row {job.key!r}] content policy").snapshot())
    for job in jobs[7:9]:
        gallery.track(_failed(job, "timeout", "took too long").snapshot())
    gallery.track(_done(jobs[9]).snapshot())

    def label(row: Any) -> str:
        return f"row {row.index + 1}"

    _, groups = gallery.view(label)
    assert [(g.kind, g.count) for g in groups] == [("rejected", 7), ("timeout", 2)]
    assert [r.label for r in groups[0].rows] == ["row 1", "row 2", "row 3"]
    assert groups[0].rows[0].error == "[row 1] content policy"
    html = failures_html(groups, 9)
    assert "9 failed rows" in html and "<b>rejected</b> × 7" in html and "… and 4 more" in html
    assert all(job.key not in html for job in jobs)  # rows by number, never by hash

    # Retried: the row leaves its group (and the group goes when empty).
    for job in jobs[7:9]:
        job.state = State.PENDING
        gallery.track(job.snapshot())
    _, groups = gallery.view(label)
    assert [(g.kind, g.count) for g in groups] == [("rejected", 7)]


# ------------------------------------------------------------------------------- the widgets
def _started(dash: Dashboard, jobs: list[Job]) -> Tally:
    progress = Tally(total=len(jobs))
    progress.counts[State.PENDING] = len(jobs)
    dash(Event("start", progress.snapshot()))
    return progress


def _finish(dash: Dashboard, progress: Tally, jobs: list[Job]) -> None:
    for job in jobs:  # each row already in its final state: what its last transition reports
        progress.counts[State.PENDING] -= 1
        progress.counts[job.state] += 1
        dash(Event("transition", progress.snapshot(), job.snapshot(), old=State.GENERATING,
                   new=job.state))
    dash(Event("finish", progress.snapshot()))


def test_tiles_show_posters_or_a_placeholder_and_a_click_plays_that_clip_only(tmp_path):
    poster = tmp_path / "poster.png"
    poster.write_bytes(b"\x89PNG fake poster")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"fake mp4 bytes")
    jobs = [_done(_job(0), clip.as_uri(), thumbnail=str(poster)), _done(_job(1)),
            *[_done(_job(i)) for i in range(2, 7)], _failed(_job(7), "rejected")]
    dash = Dashboard(display=False, per_page=3)
    view = dash.view
    assert view is not None
    before = len(view.gallery.grid.children)
    _finish(dash, _started(dash, jobs), jobs)
    gallery = view.gallery
    assert before == 0 and len(gallery.grid.children) == 3
    tiles = gallery._tiles
    assert (tiles[0].image.format, tiles[0].image.value) == ("png", b"\x89PNG fake poster")
    assert (tiles[1].image.format, tiles[1].image.value) == ("svg+xml", PLACEHOLDER_SVG)
    assert [t.button.description for t in tiles] == ["shot-0", "shot-1", "shot-2"]
    assert "a paper boat number 1" in tiles[1].caption.value
    assert "Clips 1–3 of 7" in gallery.head.value and gallery.prev.disabled
    assert "<b>rejected</b> × 1" in gallery.failures.value
    assert gallery.stage.layout.display == "none" and gallery.player.value == b""

    tiles[0].button.click()  # the local clip goes to the one player
    assert gallery.player.value == b"fake mp4 bytes" and gallery.stage.layout.display == "flex"
    assert "shot-0" in gallery.player_caption.value
    tiles[1].button.click()  # a remote clip: the browser loads its URL
    assert (gallery.player.format, gallery.player.value) == ("url", b"https://cdn.example/shot-1.mp4")
    gallery.close.click()
    assert gallery.stage.layout.display == "none" and gallery.player.value == b""

    made = {id(w) for t in tiles for w in (t.box, t.image, t.button, t.caption)}
    gallery.next.click()
    gallery.next.click()
    assert [t.button.description for t in tiles[:1]] == ["shot-6"]
    assert len(gallery.grid.children) == 1 and gallery.next.disabled
    assert {id(w) for t in tiles for w in (t.box, t.image, t.button, t.caption)} == made


# ---------------------------------------------------------------- what goes to the browser
class RecordingComm(BaseComm):
    """A kernel comm that counts what it would send to the front end (JSON and binary buffers)."""

    sent: ClassVar[list[int]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None,
                    buffers: Any = None, **keys: Any) -> None:
        size = len(json.dumps(data, default=str)) + sum(len(memoryview(b).cast("B"))
                                                        for b in buffers or ())
        RecordingComm.sent.append(size)


def _alive() -> set[str]:
    from ipywidgets.widgets.widget import _instances

    return set(_instances)


def test_a_2000_row_batch_sends_under_2mb_and_makes_no_widget_per_row(tmp_path, monkeypatch):
    """2,000 rows on the offline provider (one shared placeholder clip, ``render=False``), each
    finished clip given a poster as downloads would: the dashboard and every message its widgets
    send stay under 2 MB, paging and playing included, and the widgets alive after the run are
    exactly those the dashboard made before it (none per row, none leaked)."""
    from videobatch.delivery.thumbnails import png_bytes
    from videobatch.providers.local.render import render_clip

    RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    displayed: list[int] = []

    def fake_display(obj: Any, **kwargs: Any) -> Any:
        if isinstance(obj, dict):
            displayed.append(len(json.dumps(obj)))
        return FakeHandle(displayed)

    monkeypatch.setattr("videobatch.ui.dashboard._display", fake_display)
    clip = tmp_path / "poster-source.mp4"
    render_clip(clip, "a poster", seconds=0.5, fps=4)
    poster = tmp_path / "poster.png"
    poster.write_bytes(png_bytes(clip))

    class Posters:
        """What downloads do for each finished clip: record its poster frame (here at once,
        before the dashboard hears of the transition: it must keep the poster all the same)."""

        def bind(self, context: Any) -> None:
            self.context = context

        def __call__(self, event: Event) -> None:
            if event.kind == "transition" and event.new is State.COMPLETED and event.row:
                self.context.annotate(event.row, thumbnail=str(poster))

    widgets_before = _alive()
    dash = Dashboard(display=True)  # redraws at most every 0.3 s, as in a notebook
    made = _alive() - widgets_before
    rows = [f"a paper boat number {i} [reject]" if i % 50 == 7 else f"a paper boat number {i}"
            for i in range(2000)]
    batch = videobatch.Batch(rows, provider="local", latency=0.0, render=False, max_parallel=50,
                             failure_rate=0.05, progress=False, observers=[Posters(), dash],
                             checkpoint=tmp_path / "run.parquet")
    dash.batch = batch
    started = time.monotonic()
    df = batch.wait()
    assert time.monotonic() - started < 60
    completed = int((df["status"] == "completed").sum())
    assert completed > 1800 and (df["status"] == "failed").sum() == 2000 - completed
    view = dash.view
    assert view is not None
    gallery = view.gallery
    assert f"of {completed:,} (row order)" in gallery.head.value
    assert len(gallery.grid.children) == 24
    assert gallery._tiles[0].image.format == "jpeg"  # the poster, made small
    assert "<b>rejected</b> × 40" in gallery.failures.value
    assert "generation_failed" in gallery.failures.value

    for _ in range(3):  # a person pages through, and plays a clip
        gallery.next.click()
    gallery._tiles[5].button.click()
    assert len(gallery.player.value) > 1000
    gallery.prev.click()

    sent = sum(RecordingComm.sent) + sum(displayed)
    print(f"\n2,000 rows: {sum(RecordingComm.sent):,} bytes of widget messages "
          f"({len(RecordingComm.sent)} messages), {sum(displayed):,} bytes of displayed "
          f"outputs, {len(made)} widgets")
    assert sent <= 2 * MB, sent
    assert _alive() - widgets_before == made  # nothing made per row, nothing leaked
    assert len(made) <= 250  # about 8 per tile (24 tiles), a fixed number


class FakeHandle:
    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def update(self, obj: Any, **_: Any) -> None:
        self.sizes.append(len(json.dumps(obj)))



# ------------------------------------------------------------- the static view beside the widgets
def test_the_cell_keeps_a_static_not_live_view_beside_the_widgets(tmp_path, monkeypatch):
    """Displayed: the widgets (widget view + a line of text/plain), then the static view (text/html
    with a display id), kept up to date at most every few seconds while running and always at the
    end. It says it is not live, has no buttons and no players; the widgets carry the rule that
    hides it while they are connected, and hide themselves once disconnected."""
    from videobatch.ui.static_view import WIDGET_VIEW

    shown: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []

    class Handle:
        def update(self, obj: Any, **_: Any) -> None:
            if "vb-static" in obj["text/html"]:  # (not the end-of-run summary)
                updates.append(obj)

    def fake_display(obj: Any, **kwargs: Any) -> Any:
        shown.append({"obj": obj, **kwargs})
        return Handle()

    monkeypatch.setattr("videobatch.ui.dashboard._display", fake_display)
    dash = Dashboard(display=True, interval=0.05)
    rows = ["a blocked kite [reject]", *[f"a paper boat number {i}" for i in range(5)]]
    batch = videobatch.Batch(rows, provider="local", latency=0.05, progress=False,
                             observers=[dash], checkpoint=tmp_path / "run.parquet")
    dash.batch = batch
    view = dash.view
    assert view is not None
    widgets, static = shown[0], shown[1]
    assert widgets["obj"][WIDGET_VIEW]["model_id"] == view.box.model_id and widgets["raw"]
    assert "static view" in widgets["obj"]["text/plain"] and "text/html" not in widgets["obj"]
    assert static["display_id"] is True and "vb-static" in static["obj"]["text/html"]
    uid = dash._static.uid
    assert f"vb-live-{uid}" in view.box._dom_classes
    assert f".vb-static-{uid}" in view.style.value and "jupyter-widgets-disconnected" in view.style.value

    batch.wait()
    final = updates[-1]
    html = final["text/html"]
    assert f'class="vb-static vb-static-{uid}"' in html
    assert "Not live: the last state of this dashboard (ended at" in html
    assert "<b>5 / 6</b> done" not in html and "<b>6 / 6</b> done" in html
    assert "<b>rejected</b> × 1" in html and "5 finished clips" in html
    assert "<button" not in html and "<video" not in html and "<img" not in html
    assert final["text/plain"].startswith("(not live) Finished: 5/6 completed, 1 failed")
    assert len(html) < 6000
    assert len(updates) <= 4  # throttled while running, then the end
