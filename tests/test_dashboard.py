"""The notebook dashboard: its model follows runner events, renders are throttled, buttons act on
the batch, and without a widget front-end it falls back to a tqdm bar."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter

import pytest

import videobatch
from videobatch._events import Event, Tally
from videobatch._jobs import Job, State
from videobatch.request import VideoRequest
from videobatch.ui import make_progress
from videobatch.ui import progress as progress_module
from videobatch.ui.dashboard import Dashboard, DashboardModel, summary_html, summary_text, table_html
from videobatch.ui.dashboard_model import stats_html
from videobatch.ui.progress import TqdmProgress
from videobatch.ui.text import duration

PROMPTS = [f"a paper boat number {i} drifting down a gutter" for i in range(6)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _job(i: int, prompt: str = "a red fox") -> Job:
    return Job(key=f"row-{i}", index=i, request=VideoRequest(prompt=prompt))


def _move(progress: Tally, job: Job, new: State, **fields: object) -> Event:
    """What the runner does: change the job, keep the counters, emit a transition."""
    old = job.state
    job.transition(new, **fields)
    progress.counts[old] -= 1
    progress.counts[new] += 1
    if job.terminal:
        progress.done_this_run += 1
    return Event("transition", progress.snapshot(), job.snapshot(), old=old, new=new)


def _run_rows(model: DashboardModel, progress: Tally, jobs: list[Job], *, fail: set[int]) -> None:
    for job in jobs:
        model.update(_move(progress, job, State.SUBMITTING, attempts=1))
        if job.index in fail:
            model.update(_move(progress, job, State.FAILED, error_kind="rejected",
                               error="prompt refused <by> policy"))
            continue
        model.update(_move(progress, job, State.GENERATING, task_id=f"t{job.index}"))
        model.update(_move(progress, job, State.COMPLETED, video_url=f"file:///v/{job.key}.mp4"))


# ------------------------------------------------------------------------------------ the model
def test_counts_recent_rows_clips_and_failures_follow_events():
    jobs = [_job(i) for i in range(8)]
    progress = Tally(total=len(jobs))
    progress.counts[State.PENDING] = len(jobs)
    model = DashboardModel(recent=5, clips=3, clock=FakeClock())
    model.update(Event("start", progress.snapshot()))
    _run_rows(model, progress, jobs, fail={2, 6})
    progress.slots_in_use, progress.slots_limit = 2, 5
    model.update(Event("slots", progress.snapshot()))

    snap = model.snapshot()
    assert snap.total == 8 and snap.done == 8 and snap.running
    assert snap.counts[State.COMPLETED] == 6 and snap.counts[State.FAILED] == 2
    assert snap.counts[State.PENDING] == 0
    assert (snap.slots_in_use, snap.slots_limit) == (2, 5)
    # Most recent first, bounded.
    assert [r.key for r in snap.rows] == ["row-7", "row-6", "row-5", "row-4", "row-3"]
    assert snap.rows[1].state is State.FAILED and snap.rows[1].attempts == 1
    assert snap.rows[1].error == "prompt refused <by> policy"
    # The latest finished clips, newest first.
    assert [r.key for r in snap.clips] == ["row-7", "row-5", "row-4"]
    assert snap.clips[0].video_url == "file:///v/row-7.mp4"
    assert sorted(r.key for r in snap.failures) == ["row-2", "row-6"]

    # A retried row leaves the failures and shows its new state.
    retried = jobs[2]
    model.update(_move(progress, retried, State.PENDING))
    snap = model.snapshot()
    assert [r.key for r in snap.failures] == ["row-6"]
    assert snap.rows[0].key == "row-2" and snap.rows[0].state is State.PENDING

    model.update(Event("finish", progress.snapshot()))
    final = model.snapshot()
    assert not final.running and final.slots_in_use == 0


def test_throughput_and_eta_come_from_the_run_pace():
    jobs = [_job(i) for i in range(100)]
    progress = Tally(total=100, started=time.monotonic() - 10.0)
    for job in jobs[:30]:  # finished in an earlier run
        job.state = State.COMPLETED
    for job in jobs[30:35]:  # in flight since an earlier run
        job.state = State.GENERATING
    progress.counts.update(j.state for j in jobs)
    progress.counts[State.PENDING] = 65
    model = DashboardModel(clock=FakeClock())
    model.update(Event("start", progress.snapshot()))
    for job in jobs[30:35]:  # resumed rows end at once: they say nothing about this run's pace
        model.update(_move(progress, job, State.COMPLETED, video_url="file:///v.mp4"))
    assert model.snapshot().throughput is None and model.snapshot().eta is None
    _run_rows(model, progress, jobs[35:55], fail={40})  # 20 rows sent and ended in this run
    snap = model.snapshot()
    assert snap.throughput == pytest.approx(2.0, rel=0.02)  # 20 rows in 10 s
    assert snap.eta == pytest.approx(22.5, rel=0.02)  # 45 rows left at 2 rows/s
    assert snap.elapsed == pytest.approx(10.0, abs=0.2)
    # (the tally's clock is the real one: on a busy machine a little more than 10 s may pass)
    html = stats_html(snap)
    assert f"{snap.throughput:.2f} rows/s" in html and f"ETA {duration(snap.eta)}" in html

    # Nothing finished yet in this run: no ETA rather than a made-up one.
    fresh = Tally(total=10)
    fresh.counts[State.PENDING] = 10
    model.update(Event("start", fresh.snapshot()))
    assert model.snapshot().eta is None

    # After the end the clock stops, and pace and ETA are gone (no "ETA 0.0s").
    model.update(Event("start", progress.snapshot()))
    _run_rows(model, progress, jobs[55:], fail=set())
    model.update(Event("finish", progress.snapshot()))
    final = model.snapshot()
    assert final.throughput is None and final.eta is None
    assert "ETA" not in stats_html(final) and "rows/s" not in stats_html(final)
    assert "took 10." in stats_html(final)
    first = final.elapsed
    time.sleep(0.02)
    assert model.snapshot().elapsed == first


def test_renders_are_throttled_for_a_big_batch():
    clock = FakeClock()
    total = 10_000
    jobs = [_job(i) for i in range(total)]
    progress = Tally(total=total)
    progress.counts[State.PENDING] = total
    model = DashboardModel(interval=0.25, clock=clock)
    model.update(Event("start", progress.snapshot()))
    model.snapshot()
    events = 0
    for job in jobs:  # 40,000 events over 20 simulated seconds
        for new, fields in ((State.SUBMITTING, {"attempts": 1}), (State.GENERATING, {}),
                            (State.COMPLETED, {"video_url": "file:///x.mp4"})):
            clock.now += 0.0005
            model.update(_move(progress, job, new, **fields))
            events += 1
            if model.due():
                model.snapshot()
    elapsed = clock.now - 1000.0
    assert events == 30_000
    assert model.renders <= elapsed / 0.25 + 2  # ~60 renders, not 30,000
    assert model.renders >= elapsed / 0.25 - 2  # and it does keep up
    assert model.snapshot().done == total


def test_due_waits_for_changes_or_the_heartbeat():
    clock = FakeClock()
    progress = Tally(total=3)
    progress.counts[State.PENDING] = 3
    model = DashboardModel(interval=0.3, heartbeat=1.0, clock=clock)
    model.update(Event("start", progress.snapshot()))
    assert model.due()
    model.snapshot()
    assert not model.due()  # nothing changed
    model.update(Event("slots", progress.snapshot()))
    assert not model.due()  # changed, but too soon
    clock.now += 0.31
    assert model.due()
    model.snapshot()
    clock.now += 0.5
    assert not model.due()  # quiet, heartbeat not due yet
    clock.now += 0.6
    assert model.due()  # heartbeat: elapsed and ETA move on
    model.snapshot()
    model.update(Event("finish", progress.snapshot()))
    model.snapshot()
    clock.now += 5
    assert not model.due()  # finished and drawn: no more renders


def test_html_escapes_user_text_and_summary_lists_failures():
    jobs = [_job(0, "<script>alert(1)</script> a cat"), _job(1)]
    progress = Tally(total=2)
    progress.counts[State.PENDING] = 2
    model = DashboardModel(clock=FakeClock())
    model.update(Event("start", progress.snapshot()))
    _run_rows(model, progress, jobs, fail={1})
    model.update(Event("finish", progress.snapshot()))
    snap = model.snapshot()
    table = table_html(snap)
    assert "<script>" not in table and "&lt;script&gt;" in table
    assert "&lt;by&gt;" in table
    text = summary_text(snap)
    assert text.startswith("Finished: 1/2 completed, 1 failed in")
    assert "row-1: [rejected] prompt refused <by> policy" in text
    html = summary_html(snap)
    assert "1/2 completed" in html and "<by>" not in html


def test_failures_shown_are_bounded_and_the_rest_counted():
    jobs = [_job(i) for i in range(30)]
    progress = Tally(total=len(jobs))
    progress.counts[State.PENDING] = len(jobs)
    model = DashboardModel(failures=5, clock=FakeClock())
    model.update(Event("start", progress.snapshot()))
    _run_rows(model, progress, jobs, fail=set(range(0, 30, 2)))
    model.update(Event("finish", progress.snapshot()))
    snap = model.snapshot()
    assert len(snap.failures) == 5 and snap.counts[State.FAILED] == 15
    assert summary_text(snap).splitlines()[-1] == "  ... and 10 more failed (see the results table)"


# ------------------------------------------------------------------------------- the widget view
class FakeBatch:
    def __init__(self, failed: int = 0, running: bool = True) -> None:
        self.jobs = [_job(i) for i in range(3)]
        self.provider = type("P", (), {"name": "fake"})()
        self.running = running
        self.failed = failed
        self.calls: list[str] = []

    def cancel(self) -> None:
        self.calls.append("cancel")

    def retry_failed(self) -> int:
        self.calls.append("retry_failed")
        count, self.failed = self.failed, 0
        return count

    def start(self) -> FakeBatch:
        self.calls.append("start")
        self.running = True
        return self


def test_cancel_button_cancels_the_batch():
    batch = FakeBatch()
    dash = Dashboard(batch, display=False)
    assert dash.view is not None
    dash.view.cancel.click()
    assert batch.calls == ["cancel"]
    assert dash.view.cancel.disabled
    assert "Cancelling" in dash.model.snapshot().note


def test_retry_button_during_a_run_requeues_without_restarting():
    batch = FakeBatch(failed=2, running=True)
    dash = Dashboard(batch, display=False)
    assert dash.view is not None
    dash.view.retry.click()
    assert batch.calls == ["retry_failed"]
    assert "2 failed rows queued again" in dash.model.snapshot().note


def test_retry_button_after_the_run_restarts_it_in_the_same_dashboard():
    batch = FakeBatch(failed=1, running=False)
    dash = Dashboard(batch, display=False)
    assert dash.view is not None
    dash.view.retry.click()
    assert batch.calls == ["retry_failed", "start"]
    assert Dashboard.for_batch(batch) is dash  # the restarted run reports to this dashboard
    assert Dashboard.for_batch(batch) is not dash  # ... only that once


def test_buttons_act_on_a_real_batch(tmp_path):
    # The rejected row goes first, so the run still has rows in flight when Retry is pressed
    # (pressed while the run is finishing, the row would wait for the next run instead).
    rows = ["a forbidden scene [reject]", *PROMPTS]
    dash = Dashboard(display=False, interval=0.05)
    batch = videobatch.Batch(rows, provider="local", latency=0.6, max_parallel=3, progress=False,
                             checkpoint=tmp_path / "run.parquet", observers=[dash])
    dash.batch = batch
    batch.start()  # on a private thread: no loop here
    rejected = batch.jobs[0]
    deadline = time.monotonic() + 10
    while rejected.state is not State.FAILED:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert batch.running
    assert dash.view is not None
    dash.view.retry.click()  # while the run goes on: the row joins it again
    df = batch.wait()
    assert rejected.generation == 1 and rejected.attempts == 2 and rejected.state is State.FAILED
    assert (df["status"] == "completed").sum() == len(PROMPTS)
    snap = dash.model.snapshot()
    assert not snap.running and snap.counts[State.COMPLETED] == len(PROMPTS)
    assert dash.view.bar.value == len(rows) and dash.view.bar.bar_style == "warning"
    assert len(dash.view.gallery.grid.children) == len(PROMPTS)  # every clip, on one page
    assert not dash.view.retry.disabled and dash.view.cancel.disabled

    # Cancel: a new run of the same checkpoint, stopped at once.
    dash = Dashboard(display=False)
    more = videobatch.Batch([*rows, "one more row"], provider="local", latency=5, progress=False,
                            checkpoint=tmp_path / "more.parquet", observers=[dash])
    dash.batch = more
    more.start()
    while more.counts()["generating"] == 0:
        time.sleep(0.01)
    started = time.monotonic()
    assert dash.view is not None
    dash.view.cancel.click()
    more.wait()
    assert time.monotonic() - started < 3
    assert not dash.model.running and dash.view.cancel.disabled
    assert "Stopped early: run the same cell again" in summary_text(dash.model.snapshot())


def test_renders_happen_on_the_runner_thread_under_a_running_loop():
    """``videobatch.run`` inside a running loop (a notebook cell) drives the batch on a private
    thread: the dashboard's timer lives on that thread's loop, so every render happens there."""
    threads: list[str] = []
    batch_holder: dict[str, Dashboard] = {}

    def observer_factory(batch: object, mode: object = True) -> Dashboard:
        dash = Dashboard(batch, display=False, interval=0.05)
        original = dash._render

        def render():  # record where each render happens
            threads.append(threading.current_thread().name)
            return original()

        dash._render = render  # type: ignore[method-assign]
        batch_holder["dash"] = dash
        return dash

    async def cell() -> object:
        return videobatch.run(PROMPTS, provider="local", latency=0.3, progress="dashboard")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("videobatch._api.make_progress", observer_factory)
        df = asyncio.run(cell())
    assert (df["status"] == "completed").all()
    dash = batch_holder["dash"]
    assert set(threads) == {"videobatch"}
    assert 2 <= len(threads) <= 0.6 / 0.05 + 5  # start, timer renders while running, final
    assert dash.view is not None and dash.view.bar.value == len(PROMPTS)


# --------------------------------------------------------------------------------- the fallback
def test_no_widget_frontend_gives_a_tqdm_bar(capsys):
    assert not progress_module.widget_frontend()  # pytest: no kernel
    dash = Dashboard()  # asked for by hand outside Jupyter: it quietly becomes a tqdm bar
    assert dash.view is None
    batch = videobatch.Batch(PROMPTS, provider="local", latency=0.01, progress=False,
                             observers=[dash])
    assert isinstance(make_progress(batch, True), TqdmProgress)
    assert isinstance(make_progress(batch, "auto"), TqdmProgress)
    with pytest.raises(ValueError, match="progress must be"):
        make_progress(batch, "fancy")
    df = batch.wait()
    assert (df["status"] == "completed").all()
    assert f"{len(PROMPTS)}/{len(PROMPTS)}" in capsys.readouterr().err


def test_widget_frontend_picks_the_dashboard(monkeypatch):
    monkeypatch.setattr(progress_module, "widget_frontend", lambda: True)  # what make_progress asks
    monkeypatch.setattr("videobatch.ui.dashboard.widget_frontend", lambda: False)  # don't display
    batch = videobatch.Batch(PROMPTS[:2], provider="local", latency=0.01)
    assert isinstance(make_progress(batch, True), Dashboard)
    assert isinstance(make_progress(batch, "tqdm"), TqdmProgress)
    assert isinstance(make_progress(batch, "dashboard"), Dashboard)


def test_counts_survive_resume_and_clips_of_earlier_runs_are_shown(tmp_path):
    checkpoint = tmp_path / "run.parquet"
    videobatch.run(PROMPTS, provider="local", latency=0.01, progress=False, checkpoint=checkpoint)
    dash = Dashboard(display=False, clips=3)
    batch = videobatch.Batch(PROMPTS, provider="local", latency=0.01, progress=False,
                             checkpoint=checkpoint, observers=[dash])
    dash.batch = batch
    batch.wait()
    snap = dash.model.snapshot()
    assert +snap.counts == Counter({State.COMPLETED: len(PROMPTS)})
    assert len(snap.clips) == 3 and snap.rows == ()
    assert dash.view is not None and len(dash.view.gallery.grid.children) == len(PROMPTS)


# ------------------------------------------------------------------------------ honest states
def _started(n: int, **kwargs: object) -> tuple[DashboardModel, Tally, list[Job]]:
    jobs = [_job(i) for i in range(n)]
    progress = Tally(total=n)
    progress.counts[State.PENDING] = n
    model = DashboardModel(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]
    model.update(Event("start", progress.snapshot()))
    return model, progress, jobs


def test_cancelled_rows_are_their_own_state_never_done():
    model, progress, jobs = _started(10)
    _run_rows(model, progress, jobs[:3], fail={2})
    model.update(_move(progress, jobs[3], State.SUBMITTING, attempts=1))
    model.update(_move(progress, jobs[3], State.GENERATING, task_id="t3"))
    model.cancel_asked()
    assert model.snapshot().status == "Cancelling…"
    for job in jobs[4:]:  # what the runner does to rows not started
        model.update(_move(progress, job, State.CANCELLED))
    model.update(Event("finish", progress.snapshot()))
    snap = model.snapshot()
    assert snap.done == 3 and snap.counts[State.CANCELLED] == 6  # not 9 "done"
    assert snap.status == "Cancelled" and snap.reason is None
    assert snap.throughput is None and snap.eta is None
    assert "<b>3 / 10</b> done" in stats_html(snap) and "cancelled 6" in stats_html(snap)
    text = summary_text(snap)
    assert text.startswith("Cancelled: 2/10 completed, 1 failed, 1 generating, 6 cancelled in")
    assert "6 cancelled rows were not sent: batch.resume_cancelled()" in text
    assert snap.resume.rows == 6 and snap.resume.label().startswith("Resume 6 cancelled")
    assert snap.retry.rows == 1 and snap.retry.label().startswith("Retry 1 failed")

    # The run's outcome arrives later and has the last word.
    model.conclude(cancelled=True, reason=None)
    assert model.snapshot().status == "Cancelled"


def test_status_says_running_stopped_with_the_reason_or_finished():
    model, progress, jobs = _started(4)
    assert model.snapshot().status == "Running"
    _run_rows(model, progress, jobs[:2], fail=set())
    model.update(Event("finish", progress.snapshot()))  # rows left pending: stopped by something
    snap = model.snapshot()
    assert (snap.status, snap.reason) == ("Stopped", "2 rows not finished")
    model.conclude(cancelled=False, reason="account: [code 1102] resource pack exhausted")
    snap = model.snapshot()
    assert snap.status == "Stopped" and "resource pack exhausted" in (snap.reason or "")
    assert "Stopped</b>: account: [code 1102] resource pack exhausted" in stats_html(snap)
    assert summary_text(snap).splitlines()[1] == "Why: account: [code 1102] resource pack exhausted"

    model, progress, jobs = _started(2)
    _run_rows(model, progress, jobs, fail={1})
    model.update(Event("finish", progress.snapshot()))
    model.conclude(cancelled=False, reason=None)
    assert model.snapshot().status == "Finished"


def test_unknown_rows_are_shown_with_what_to_check():
    model, progress, jobs = _started(3)
    model.update(_move(progress, jobs[0], State.SUBMITTING, attempts=1))
    model.update(_move(progress, jobs[0], State.UNKNOWN, error="submit answer lost; lookup failed"))
    _run_rows(model, progress, jobs[1:], fail=set())
    model.update(Event("finish", progress.snapshot()))
    snap = model.snapshot()
    assert snap.counts[State.UNKNOWN] == 1 and [r.key for r in snap.unknown] == ["row-0"]
    block = stats_html(snap)
    assert "Outcome unknown for 1 row</b> (row-0)" in block
    assert "check them in the provider&#x27;s console" in block
    assert "batch.retry(unknown=True)" in block
    text = summary_text(snap)
    assert "Outcome unknown for 1 row: a paid task may exist" in text
    assert "  row-0: submit answer lost; lookup failed" in text
    # Neither button ever takes a row of unknown outcome.
    assert snap.retry.rows == 0 and snap.resume.rows == 0


def test_rows_without_ids_are_named_by_number_never_by_hash():
    hashed = Job(key="3f9c0a1b2c3d4e5f", index=6, request=VideoRequest(prompt="a red fox"))
    named = Job(key="shot-7", index=6, request=VideoRequest(prompt="a red fox"))
    progress = Tally(total=2)
    progress.counts[State.PENDING] = 2
    model = DashboardModel(clock=FakeClock())
    model.update(Event("start", progress.snapshot()))
    for job in (hashed, named):
        model.update(_move(progress, job, State.SUBMITTING, attempts=1))
        model.update(_move(progress, job, State.FAILED, error_kind="rejected",
                           error=f"[row {job.key!r}, code 1301] content policy"))
    snap = model.snapshot()
    assert [r.label for r in snap.rows] == ["shot-7", "row 7"]
    assert snap.rows[1].error == "[row 7, code 1301] content policy"
    assert "3f9c0a1b2c3d4e5f" not in table_html(snap) + summary_text(snap)
    assert "row 7: [rejected] [row 7, code 1301] content policy" in summary_text(snap)
    # Told by the batch: a table with an id column keeps its ids, even hex-looking ones.
    model.describe_rows(label=lambda row: row.key)
    assert model.snapshot().rows[1].label == "3f9c0a1b2c3d4e5f"


def test_buttons_say_how_many_rows_and_what_they_cost_before_acting():
    prices = {"a red fox": 0.5, "a slow fox": 1.25}
    model, progress, jobs = _started(5, price=lambda request: prices.get(request.prompt))
    jobs[1].request = VideoRequest(prompt="a slow fox")
    _run_rows(model, progress, jobs[:2], fail={0, 1})
    # A row that timed out while its task was open waits for that task again: not paid again.
    model.update(_move(progress, jobs[2], State.SUBMITTING, attempts=1))
    model.update(_move(progress, jobs[2], State.GENERATING, task_id="t2"))
    model.update(_move(progress, jobs[2], State.FAILED, error_kind="timeout", error="took too long"))
    for job in jobs[3:]:
        model.update(_move(progress, job, State.CANCELLED))
    retry, resume = model.actions()
    assert (retry.rows, retry.paid, retry.rewait) == (3, 2, 1)
    assert retry.cost == pytest.approx(1.75)
    assert retry.label() == "Retry 3 failed (1 not paid again) · est. $1.75"
    assert "1 timed-out row waits for its still-open task (not paid again)" in retry.tooltip()
    assert resume.label() == "Resume 2 cancelled · est. $1.00"
    assert retry.done_text(3) == ("3 failed rows queued again: 2 new paid submissions "
                                  "(est. $1.75), 1 waiting for their open task (not paid again).")
    # Without prices the count is still said, and the cost is said to be unknown.
    model.describe_rows(price=None)
    assert model.actions()[0].label() == "Retry 3 failed (1 not paid again) · cost unknown"
    assert model.actions()[0].cost is None


def test_buttons_after_a_cancel_pay_for_what_they_say_and_every_view_agrees(tmp_path, monkeypatch):
    """Cancel, then Retry failed, then Resume cancelled, on a real batch: each button's caption
    counts and prices the rows before the click; the provider sees exactly those submissions; the
    dashboard, the summary it displayed and ``batch.results()`` agree after each run."""
    from videobatch.providers.local import read_submissions

    summaries: list[FakeHandle] = []

    def fake_display(obj: object, **kwargs: object) -> FakeHandle:
        handle = FakeHandle(obj)
        if kwargs.get("display_id") and "vb-summary" in obj["text/html"]:  # type: ignore[index]
            summaries.append(handle)  # (not the static view beside the widgets)
        return handle

    monkeypatch.setattr("videobatch.ui.dashboard._display", fake_display)
    rows = ["a blocked kite [reject]", "a blocked swan [reject]", *PROMPTS[:5], *PROMPTS[:5]]
    rows[7:] = [f"{p}, again" for p in rows[7:]]
    dash = Dashboard(display=True, interval=0.05)
    batch = videobatch.Batch(rows, provider="local", latency=0.4, max_parallel=2, progress=False,
                             checkpoint=tmp_path / "run.parquet", observers=[dash])
    dash.batch = batch
    assert dash.view is not None
    batch.start()
    deadline = time.monotonic() + 10
    while not (batch.counts()["failed"] == 2 and batch.counts()["generating"] == 2):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    dash._render()
    assert re.fullmatch(r"Cancel \(\d+ not sent\)", dash.view.cancel.description)
    dash.view.cancel.click()
    batch.wait()
    assert dash.view.cancel.description == "Cancel" and dash.view.cancel.disabled
    cancelled = batch.counts()["cancelled"]
    # The run is over: the note says what Cancel did, no "Cancelling" left behind.
    assert dash.model.snapshot().note == (f"Cancelled: {cancelled} rows not sent (nothing paid; "
                                          "Resume sends them); 2 in flight finish on the next "
                                          "run (not paid again).")

    def paid() -> int:
        return sum(1 for e in read_submissions() if e["outcome"] in ("accepted", "rejected"))

    def agree(status: str) -> None:
        snap = dash.model.snapshot()
        assert snap.status == status
        table = batch.results()["status"].value_counts().to_dict()
        assert {s.value: n for s, n in snap.counts.items() if n} == table
        assert len(summaries) == 1  # one summary in the cell, brought up to date
        assert summaries[0].obj["text/plain"] == summary_text(snap)

    assert cancelled == len(rows) - 4
    agree("Cancelled")
    price = batch.provider.estimate_cost
    cost = sum(price(j.request) for j in batch.jobs if j.state is State.CANCELLED)
    assert dash.view.retry.description == (
        f"Retry 2 failed · est. ${sum(price(j.request) for j in batch.jobs[:2]):,.2f}")
    assert dash.view.resume.description == f"Resume {cancelled} cancelled · est. ${cost:,.2f}"
    assert not dash.view.retry.disabled and not dash.view.resume.disabled

    before = paid()
    dash.view.retry.click()  # after the run: restarts it in this dashboard, failed rows only
    batch.wait()
    assert paid() == before + 2  # the two failed rows, nothing cancelled
    assert batch.counts()["cancelled"] == cancelled
    agree("Finished")
    assert dash.model.snapshot().note.startswith("Finished: ")

    dash.view.resume.click()  # now the cancelled rows, on the user's word
    batch.wait()
    assert paid() == before + 2 + cancelled
    agree("Finished")
    assert batch.counts()["completed"] == len(rows) - 2
    assert dash.view.resume.description == "Resume cancelled (none)"


class FakeHandle:
    """What ``IPython.display.display(..., display_id=True)`` returns: an output to update."""

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def update(self, obj: object, **_: object) -> None:
        self.obj = obj


# ---------------------------------------------------------------------------- the text bar
def test_text_bar_keeps_the_dashboards_rules():
    import io

    out = io.StringIO()
    jobs = [_job(i) for i in range(10)]
    for job in jobs[:4]:  # finished in an earlier run
        job.state = State.COMPLETED
    progress = Tally(total=10, started=time.monotonic() - 4.0)
    progress.counts.update(j.state for j in jobs)
    bar = TqdmProgress(10, file=out)
    assert out.getvalue() == "" and bar.bar is None  # nothing printed before the run starts
    bar(Event("start", progress.snapshot()))
    assert bar.bar is not None and bar.bar.n == 4
    for job in jobs[4:6]:
        for new in (State.SUBMITTING, State.GENERATING, State.COMPLETED):
            bar(_move(progress, job, new))
    bar.model.interval = 0  # draw now
    bar(_move(progress, jobs[6], State.SUBMITTING))
    running = out.getvalue().split("\r")[-1]
    assert "6/10 done, Running, 0.50 rows/s, ETA 8.0s" in running  # 2 rows in 4 s, 4 left
    bar.model.cancel_asked()
    for job in jobs[7:]:
        bar(_move(progress, job, State.CANCELLED))
    bar(Event("finish", progress.snapshot()))
    final = [line for line in out.getvalue().replace("\n", "\r").split("\r") if line][-1]
    assert "6/10 done, Cancelled, took 4." in final
    assert "submitting=1 completed=6 cancelled=3" in final
    assert "ETA" not in final and "rows/s" not in final


def test_a_run_the_account_stopped_says_so_with_the_reason_and_rows_by_number():
    from fakes import ScriptedProvider

    dash = Dashboard(display=False)
    rows = ["a fine fox", "a broke fox [account]", "a later fox", "another later fox"]
    batch = videobatch.Batch(rows, ScriptedProvider(max_parallel=1), progress=False,
                             observers=[dash])
    dash.batch = batch
    with pytest.raises(videobatch.AccountError):
        batch.wait()
    snap = dash.model.snapshot()
    assert snap.status == "Stopped" and not snap.running
    assert snap.reason is not None and snap.reason.startswith("account: ")
    assert "resource pack exhausted" in snap.reason
    assert "row 2" in snap.reason and batch.jobs[1].key not in snap.reason  # not the hash key
    assert {r.label for r in snap.rows} <= {"row 1", "row 2", "row 3", "row 4"}
    text = summary_text(snap)
    assert text.startswith("Stopped: 1/4 completed")
    assert all(job.key not in text + table_html(snap) for job in batch.jobs)


def test_retry_pressed_as_the_run_finishes_runs_the_rows_right_after_it():
    """A running batch that is already finishing does not take retried rows: it puts them back to
    work as it ends. The dashboard then starts the next run itself: the user pressed Retry."""
    from videobatch._settings import RunOutcome

    batch = FakeBatch(failed=1, running=True)
    dash = Dashboard(batch, display=False)
    assert dash.view is not None
    dash.view.retry.click()
    assert batch.calls == ["retry_failed"]

    async def run_ends() -> None:
        task = asyncio.get_running_loop().create_future()
        batch.running = False
        batch.jobs[0].state = State.PENDING  # what Batch does with rows retried while finishing
        task.set_result(RunOutcome(counts=Counter(), elapsed=1.0))
        dash._run_ended(task)  # type: ignore[arg-type]

    asyncio.run(run_ends())
    assert batch.calls == ["retry_failed", "start"]
    assert Dashboard.for_batch(batch) is dash

    # After a cancel, nothing starts on its own.
    batch = FakeBatch(failed=1, running=True)
    dash = Dashboard(batch, display=False)
    assert dash.view is not None
    dash.view.retry.click()

    async def cancelled() -> None:
        task = asyncio.get_running_loop().create_future()
        batch.running = False
        batch.jobs[0].state = State.PENDING
        task.set_result(RunOutcome(counts=Counter(), elapsed=1.0, cancelled=True))
        dash._run_ended(task)  # type: ignore[arg-type]

    asyncio.run(cancelled())
    assert batch.calls == ["retry_failed"]


# ------------------------------------------------------------------------------ cost in view
def test_the_estimated_cost_of_rows_sent_is_shown_per_provider_and_model(tmp_path):
    """Two models of the offline provider in one run, and a row refused before any task existed:
    the dashboard shows the estimated cost of the submissions sent, for each model, labelled as
    an estimate; a refused submit costs nothing, and the static view says the same."""
    from videobatch.ui.spend import spend_html

    table = [{"id": f"{model}-{i}", "prompt": f"a paper boat number {i}", "model": model,
              "duration": duration}
             for model, duration in (("local-v1", 5), ("local-v2", 8)) for i in range(3)]
    table.append({"id": "refused", "prompt": "a blocked kite [reject]", "model": "local-v1",
                  "duration": 5})
    dash = Dashboard(display=False)
    batch = videobatch.Batch(table, provider="local", latency=0.05, progress=False,
                             observers=[dash], checkpoint=tmp_path / "run.parquet")
    dash.batch = batch
    batch.wait()
    snap = dash.model.snapshot()
    by_model = {line.model: line for line in snap.spend}
    assert set(by_model) == {"local-v1", "local-v2"} and {line.provider for line in snap.spend} == {"local"}
    for model in by_model:
        sent = [j for j in batch.jobs if j.request.model == model and j.state is State.COMPLETED]
        expected = sum(batch.providers.estimate_cost(j.request) for j in sent)
        assert by_model[model].rows == 3  # the refused row made no task: not counted
        assert by_model[model].cost == pytest.approx(expected) and expected > 0
    total = sum(line.cost or 0 for line in snap.spend)
    line = spend_html(snap.spend, snap.figures)
    assert f"<b>Spent</b> ${total:,.2f} · reserved $0.00<br>" in line  # no budget set: none shown
    assert f"<b>Estimated</b> cost of the 6 submissions sent: <b>${total:,.2f}</b>" in line
    assert "local/local-v1: 3 = $" in line and "local/local-v2: 3 = $" in line
    assert line in stats_html(snap)
    assert dash.view is not None and line in dash.view.stats.value

    # A provider without prices: the figure is said to be unknown, never $0.
    dash.model.spend.pricer = None
    dash.model.spend.clear()
    for job in batch.jobs:
        dash.model.spend.track(job.snapshot())
    assert "sent: <b>unknown</b>" in spend_html(dash.model.spend.lines())
