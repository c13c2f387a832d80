"""One rule for "retry" in every face (issue 14): ``Batch.retry_failed()``, the dashboard's Retry
button and ``python -m videobatch retry`` send failed rows only. Rows a cancel stopped are sent
again only when asked (``Batch.resume_cancelled()``, the Resume button, ``retry --cancelled``) or
when the same batch is run anew (a new ``Batch``/command on the checkpoint: a resume).

Paid submissions are counted where they arrive: the local provider's submissions log."""

from __future__ import annotations

import time

import videobatch
from videobatch._jobs import State
from videobatch.cli.commands import retry_main
from videobatch.providers.local import read_submissions

ROWS = ["a blocked kite [reject]", "a blocked swan [reject]",
        *[f"a paper boat number {i} on a pond" for i in range(10)]]
SLOW = {"latency": 0.4, "max_parallel": 2, "progress": False}


def _wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _paid(entries: list[dict]) -> list[dict]:
    """Submit calls that reached the provider and were accepted or refused (each may cost)."""
    return [e for e in entries if e["outcome"] in ("accepted", "rejected")]


def _cancelled_batch(tmp_path):
    """A batch cancelled while 2 rows generate: 2 failed, 2 in flight, the rest cancelled."""
    batch = videobatch.Batch(ROWS, "local", checkpoint=tmp_path / "run.parquet", **SLOW)
    batch.start()
    _wait_for(lambda: batch.counts()["failed"] == 2 and batch.counts()["generating"] == 2)
    batch.cancel()
    batch.wait()
    counts = batch.counts()
    assert counts["failed"] == 2 and counts["cancelled"] >= 6
    return batch, counts["cancelled"]


def test_retry_failed_after_a_cancel_pays_for_no_cancelled_row(tmp_path):
    batch, cancelled = _cancelled_batch(tmp_path)
    before = len(_paid(read_submissions()))
    cancelled_keys = {j.key for j in batch.jobs if j.state is State.CANCELLED}

    assert batch.retry_failed() == 2
    df = batch.wait()
    sent = _paid(read_submissions())[before:]
    assert len(sent) == 2 and all("[reject]" in e["prompt"] for e in sent)  # the failed rows only
    assert batch.counts()["cancelled"] == cancelled  # still stopped, as the user asked
    assert {j.key for j in batch.jobs if j.state is State.CANCELLED} == cancelled_keys
    assert (df["status"] == "cancelled").sum() == cancelled  # results() agrees with the rows
    assert list(batch.results()["status"]) == list(df["status"])

    # Starting the batch again sends nothing either: Cancel stopped the spending for good...
    batch.start()
    batch.wait()
    assert len(_paid(read_submissions())) == before + 2
    # ... until the user asks, explicitly.
    assert batch.resume_cancelled() == cancelled
    assert batch.counts()["cancelled"] == 0 and batch.counts()["pending"] == cancelled
    df = batch.wait()
    assert len(_paid(read_submissions())) == before + 2 + cancelled
    assert (df["status"] == "completed").sum() == len(ROWS) - 2
    assert batch.resume_cancelled() == 0


def test_a_new_batch_on_the_checkpoint_resumes_cancelled_rows(tmp_path):
    batch, cancelled = _cancelled_batch(tmp_path)
    del batch  # frees the checkpoint
    before = len(_paid(read_submissions()))
    again = videobatch.Batch(ROWS, "local", checkpoint=tmp_path / "run.parquet", **SLOW)
    df = again.wait()  # the same cell run again: a resume, documented to take cancelled rows
    assert (df["status"] == "completed").sum() == len(ROWS) - 2
    assert len(_paid(read_submissions())) == before + cancelled  # failed rows stay failed


def test_cli_retry_sends_failed_rows_only_unless_told(tmp_path, capsys):
    batch, cancelled = _cancelled_batch(tmp_path)
    del batch
    checkpoint = str(tmp_path / "run.parquet")
    before = len(_paid(read_submissions()))
    assert retry_main([checkpoint, "-q", "-P", "latency=0.05", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "2 failed row(s) to retry as new paid submissions" in out.out
    assert "2 row(s) in flight to finish (not paid again)" in out.out
    assert f"{cancelled} cancelled row(s) left as they are; --cancelled resumes them" in out.err

    assert retry_main([checkpoint, "-q", "-P", "latency=0.05"]) == 1  # the rejected rows fail again
    sent = _paid(read_submissions())[before:]
    assert len(sent) == 2 and all("[reject]" in e["prompt"] for e in sent)
    assert (videobatch.results(checkpoint)["status"] == "cancelled").sum() == cancelled

    assert retry_main([checkpoint, "-q", "-P", "latency=0.05", "--cancelled"]) == 1
    assert len(_paid(read_submissions())) == before + 4 + cancelled
    assert (videobatch.results(checkpoint)["status"] == "completed").sum() == len(ROWS) - 2


def test_resume_asked_while_a_run_goes_on_waits_for_the_next_run(tmp_path):
    batch, cancelled = _cancelled_batch(tmp_path)
    assert batch.retry_failed() == 2
    batch.start()  # runs the failed rows and the two in flight; cancelled rows stay out of it
    assert batch.running
    assert batch.resume_cancelled() == cancelled
    batch.wait()
    before = len(_paid(read_submissions()))
    assert batch.counts()["pending"] == cancelled  # put back to work once that run ended
    df = batch.start().wait()  # the next run takes them
    assert len(_paid(read_submissions())) == before + cancelled
    assert (df["status"] == "completed").sum() == len(ROWS) - 2
