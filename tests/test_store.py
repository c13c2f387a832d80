"""The checkpoint: real parquet + journal files, resume, torn writes, mismatch detection."""

from __future__ import annotations

import asyncio
import datetime
import gc
import json
import os
from collections import Counter

import pandas as pd
import pytest

import videobatch
from videobatch._inputs import load_prompts
from videobatch._jobs import State
from videobatch._journal import line as journal_line
from videobatch._results import results
from videobatch._store import Checkpoint, iter_records, load
from videobatch.errors import CheckpointError
from videobatch.providers.local.provider import read_submissions


def open_ckpt(path, rows, force=False, settings=None):
    return Checkpoint.open(path, load_prompts(rows), settings=settings or {"provider": "local"}, force=force)


def die(store):
    """What the OS does when a run's process is killed: its files close, its lock is dropped."""
    if store._fd is not None:
        os.close(store._fd)
        store._fd = None
    store._writer.release()


ROWS = [{"id": "a", "prompt": "a fox", "campaign": "x"}, {"id": "b", "prompt": "a crow", "campaign": "y"}]


def test_new_checkpoint_has_input_and_pending_rows(tmp_path):
    path = tmp_path / "run.parquet"
    open_ckpt(path, ROWS)
    assert path.exists()
    df = results(path)
    assert list(df["campaign"]) == ["x", "y"]
    assert list(df["status"]) == ["pending", "pending"]
    assert list(df["key"]) == ["a", "b"]


def test_journal_records_survive_without_snapshot(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    store.append(jobs[0].transition(State.GENERATING, task_id="t1", submitted_at=10.0))
    store.append(jobs[0].transition(State.COMPLETED, video_url="file:///v.mp4", completed_at=12.0))
    # no snapshot, no close: as if the process had been killed here
    loaded = load(path)
    job = loaded.jobs[0]
    assert (job.state, job.task_id, job.video_url, job.attempts) == (State.COMPLETED, "t1", "file:///v.mp4", 1)
    assert loaded.jobs[1].state is State.PENDING


def test_resume_keeps_states_and_run_id(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[1].transition(State.SUBMITTING, attempts=1))
    die(store)
    store2, jobs2 = open_ckpt(path, ROWS)
    assert store2.run_id == store.run_id
    assert jobs2[1].state is State.SUBMITTING and jobs2[1].attempts == 1
    assert jobs2[1].idempotency_key(store2.run_id) == jobs[1].idempotency_key(store.run_id)


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    segment = next(tmp_path.glob("run.parquet.journal.*"))
    with segment.open("ab") as fh:
        fh.write(b'{"k": "b", "s": "subm')  # the process died in the middle of a write
    loaded = load(path)
    assert loaded.jobs[0].state is State.SUBMITTING
    assert loaded.jobs[1].state is State.PENDING


def test_corrupt_middle_line_is_skipped_and_reported(tmp_path, caplog):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    segment = next(tmp_path.glob("run.parquet.journal.*"))
    segment.write_bytes(b"garbage\n" + segment.read_bytes())
    loaded = load(path)  # a damaged line is skipped, not a dead end
    assert loaded.jobs[0].state is State.SUBMITTING
    assert loaded.journal.skipped == [f"{segment.name} line 1"]
    assert "skipped 1 damaged journal line" in caplog.text and "repair" in caplog.text


def test_snapshot_folds_journal_and_removes_old_segments(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    asyncio.run(store.snapshot(jobs))
    assert list(iter_records(path)) == []
    store.append(jobs[0].transition(State.GENERATING, task_id="t1", submitted_at=1.0))
    asyncio.run(store.close(jobs))
    assert not list(tmp_path.glob(".run.parquet.*.tmp"))
    loaded = load(path)
    assert loaded.jobs[0].state is State.GENERATING and loaded.jobs[0].task_id == "t1"


def test_different_rows_are_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "run.parquet"
    open_ckpt(path, ROWS)
    changed = [ROWS[0], {"id": "b", "prompt": "a raven", "campaign": "y"}, {"id": "c", "prompt": "new"}]
    with pytest.raises(CheckpointError) as err:
        open_ckpt(path, changed)
    msg = str(err.value)
    assert "1 row(s) changed" in msg and "'b'" in msg and "1 row(s) new" in msg and "--force" in msg


def test_different_settings_are_refused(tmp_path):
    path = tmp_path / "run.parquet"
    open_ckpt(path, ROWS)
    with pytest.raises(CheckpointError, match="settings differ"):
        open_ckpt(path, ROWS, settings={"provider": "kling"})


def test_force_keeps_unchanged_rows_and_restarts_changed_ones(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    for j in jobs:
        store.append(j.transition(State.SUBMITTING, attempts=1))
        store.append(j.transition(State.GENERATING, task_id="t-" + j.key, submitted_at=1.0))
        store.append(j.transition(State.COMPLETED, video_url="u-" + j.key, completed_at=2.0))
    die(store)
    changed = [ROWS[0], {"id": "b", "prompt": "a raven", "campaign": "y"}, {"id": "c", "prompt": "new"}]
    store2, jobs2 = open_ckpt(path, changed, force=True)
    assert jobs2[0].state is State.COMPLETED and jobs2[0].video_url == "u-a"
    assert jobs2[1].state is State.PENDING and jobs2[1].generation == 1  # new idempotency key
    assert jobs2[1].idempotency_key(store2.run_id) != jobs[1].idempotency_key(store.run_id)
    assert jobs2[2].state is State.PENDING


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(CheckpointError, match="not a videobatch checkpoint"):
        load(path)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(CheckpointError, match="not readable"):
        load(tmp_path / "junk.parquet")


def test_journal_lines_are_plain_json(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    segment = next(tmp_path.glob("run.parquet.journal.*"))
    header, record = (json.loads(line) for line in segment.read_text().splitlines())
    assert header["vb"] == "journal" and "k" not in header  # readers before headers skip it
    assert record["k"] == "a" and record["s"] == "submitting"


def test_a_new_checkpoint_writes_the_same_job_columns_as_any_snapshot(tmp_path):
    from videobatch._snapshot import _dynamic_table, _fresh_table

    _, jobs = open_ckpt(tmp_path / "run.parquet", ROWS)
    assert _fresh_table(len(jobs)).equals(_dynamic_table(jobs))
    assert _fresh_table(0).equals(_dynamic_table([]))
    assert _fresh_table(len(jobs)).equals(_dynamic_table(load(tmp_path / "run.parquet").jobs))


def test_submitting_records_share_one_fsync_before_the_requests_leave(tmp_path, monkeypatch):
    path = tmp_path / "run.parquet"
    rows = [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(20)]
    store, jobs = open_ckpt(path, rows)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[-1])

    async def submit(job):
        store.append(job.transition(State.SUBMITTING, attempts=1))
        await store.durable()
        return len(synced)  # fsyncs done when this row may send its request

    async def main():
        return await asyncio.gather(*(submit(job) for job in jobs))

    seen = asyncio.run(main())
    assert synced and len(synced) == 1  # one fsync for the 20 rows that submitted together
    assert all(n >= 1 for n in seen)  # ...and none of them went on before it
    asyncio.run(store.durable())  # nothing new: no fsync
    assert len(synced) == 1


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))  # this run is writing now
    with pytest.raises(CheckpointError, match=r"being written by another run \(pid \d+\)"):
        open_ckpt(path, ROWS)
    asyncio.run(store.close(jobs))  # the run ends: the checkpoint is free again
    _, jobs2 = open_ckpt(path, ROWS)
    assert jobs2[0].state is State.SUBMITTING


# ---------------------------------------------------------------------- one Batch per checkpoint
LOCAL = {"progress": False, "render": False, "latency": 0.02}
SHOTS = [{"id": "a", "prompt": "a fox"}, {"id": "b", "prompt": "a crow [reject]"}, {"id": "c", "prompt": "an owl"}]


def paid() -> Counter:
    return Counter(s["idempotency_key"] for s in read_submissions() if s["outcome"] in ("accepted", "duplicate"))


def test_a_batch_holds_its_checkpoint_from_construction_to_the_end_of_its_run(tmp_path):
    path = tmp_path / "run.parquet"
    first = videobatch.Batch(SHOTS, "local", checkpoint=path, **LOCAL)
    # Built but not run yet: a second batch on the same file is refused before it could pay anything.
    with pytest.raises(CheckpointError, match=r"being written by another run \(pid \d+\); this process"):
        videobatch.Batch(SHOTS, "local", checkpoint=path, **LOCAL)
    assert read_submissions() == []
    first.wait()
    assert first.counts()["completed"] == 2 and first.counts()["failed"] == 1
    assert first.retry_failed() == 1  # a run, then a retry and another run of the same batch
    first.wait()
    assert first.counts()["failed"] == 1 and first.jobs[1].generation == 1
    # Its runs are over: the checkpoint is free. A batch built and dropped unrun gives it back too.
    unrun = videobatch.Batch(SHOTS, "local", checkpoint=path, **LOCAL)
    del unrun
    gc.collect()
    df = videobatch.run(SHOTS, "local", checkpoint=path, **LOCAL)
    assert list(df["status"]) == ["completed", "failed", "completed"]
    assert sorted(paid().values()) == [1, 1]  # a and c, each once (b is refused, never paid)


def test_a_batch_does_not_write_over_a_run_that_came_after_it(tmp_path):
    path = tmp_path / "run.parquet"
    first = videobatch.Batch(SHOTS, "local", checkpoint=path, **LOCAL)
    first.wait()
    later = videobatch.Batch(SHOTS, "local", checkpoint=path, **LOCAL)
    later.retry_failed()
    later.wait()  # the checkpoint now holds what `later` did, which `first` has not seen
    with pytest.raises(CheckpointError, match="written by another run since this batch last wrote it"):
        first.retry_failed()
    assert load(path).jobs[1].generation == 1  # later's retry, not overwritten by first's stale view


def test_an_unchanged_resume_keeps_the_snapshot_and_journals_after_it(tmp_path):
    # The snapshot on disk is still right: it is not rewritten at open; this run's records go to a
    # new segment (with its header record) after the existing ones, and loading replays them in order.
    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    with next(tmp_path.glob("run.parquet.journal.*")).open("ab") as fh:
        fh.write(b'{"k": "b", "s": "subm')  # torn by the crash
    die(store)
    written = path.stat().st_mtime_ns, path.read_bytes()
    store2, jobs2 = open_ckpt(path, ROWS)
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written
    assert jobs2[0].state is State.SUBMITTING and jobs2[1].state is State.PENDING
    store2.append(jobs2[0].transition(State.GENERATING, task_id="t1", submitted_at=10.0))
    store2.append(jobs2[1].transition(State.SUBMITTING, attempts=1))
    die(store2)
    segments = sorted(tmp_path.glob("run.parquet.journal.*"))
    assert len(segments) == 2
    header = json.loads(segments[-1].read_text().splitlines()[0])
    assert header["vb"] == "journal" and header["run_id"] == store.run_id and header["untouched"] is False
    store3, jobs3 = open_ckpt(path, ROWS)
    assert store3.run_id == store.run_id
    assert (jobs3[0].state, jobs3[0].task_id) == (State.GENERATING, "t1")
    assert jobs3[1].state is State.SUBMITTING
    asyncio.run(store3.close(jobs3))  # the next snapshot folds every segment
    assert [p.name for p in tmp_path.glob("run.parquet.journal.*")] == ["run.parquet.journal.4"]
    assert [j.state for j in load(path).jobs] == [State.GENERATING, State.SUBMITTING]


def test_an_unchanged_resume_has_exactly_the_jobs_load_gives(tmp_path):
    from videobatch._jobs import RESULT_FIELDS

    path = tmp_path / "run.parquet"
    rows = [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(6)]
    store, jobs = open_ckpt(path, rows)
    store.append(jobs[1].transition(State.SUBMITTING, attempts=1))
    store.append(jobs[2].transition(State.SUBMITTING, attempts=2))
    store.append(jobs[2].transition(State.GENERATING, task_id="t2", submitted_at=5.0))
    store.append(jobs[2].transition(State.COMPLETED, video_url="u2", completed_at=9.0, video_duration=5.1,
                                    expires_at=99.0, video_id="v2"))
    store.append(jobs[2].annotate(local_path="/x/r2.mp4"))
    store.append(jobs[3].transition(State.SUBMITTING, attempts=1))
    store.append(jobs[3].transition(State.FAILED, error_kind="rejected", error="no"))
    store.append(jobs[3].retry())
    asyncio.run(store.snapshot(jobs))  # some of it in the snapshot...
    store.append(jobs[4].transition(State.CANCELLED))  # ...and some only in the journal
    store.append(jobs[5].annotate(note="x"))  # extras only, still pending
    die(store)
    expected = load(path).jobs
    _, resumed = open_ckpt(path, rows)
    for old, new in zip(expected, resumed, strict=True):
        assert (new.key, new.index, new.state, new.extras) == (old.key, old.index, old.state, old.extras)
        assert [getattr(new, f) for f in RESULT_FIELDS] == [getattr(old, f) for f in RESULT_FIELDS]
        assert new.request.prompt == f"p{new.index}"
    assert resumed[2].state is State.COMPLETED and resumed[3].generation == 1


def test_a_changed_resume_after_unchanged_ones_replays_no_folded_record(tmp_path):
    # Resumes that died before any snapshot leave several segments; a --force open with a changed
    # row folds them all into its snapshot and journals after them, so none is replayed again.
    path = tmp_path / "run.parquet"
    store, _ = open_ckpt(path, ROWS)
    die(store)
    store2, jobs2 = open_ckpt(path, ROWS)
    store2.append(jobs2[1].transition(State.SUBMITTING, attempts=1))
    store2.append(jobs2[1].transition(State.GENERATING, task_id="t1", submitted_at=1.0))
    store2.append(jobs2[1].transition(State.COMPLETED, video_url="u", completed_at=2.0))
    die(store2)
    changed = [ROWS[0], {**ROWS[1], "prompt": "a different crow"}]
    store3, jobs3 = open_ckpt(path, changed, force=True)
    assert jobs3[1].state is State.PENDING and jobs3[1].generation == 1
    die(store3)
    assert [(j.state, j.generation) for j in load(path).jobs] == [(State.PENDING, 0), (State.PENDING, 1)]


def test_every_paid_request_leaves_after_its_submitting_record_is_fsynced(tmp_path, monkeypatch):
    # The invariant behind group commit: the intent to pay survives power loss before the request
    # is sent. fsync (in a thread, on a duplicate descriptor) notes how much of the journal it made
    # durable; at each submit the row's submitting record must lie within it.
    from fakes import ScriptedProvider

    path = tmp_path / "run.parquet"
    durable: dict[int, int] = {}  # inode -> bytes known fsynced
    real_fsync = os.fsync

    def fsync(fd):
        size, inode = os.fstat(fd).st_size, os.fstat(fd).st_ino
        real_fsync(fd)
        durable[inode] = max(durable.get(inode, 0), size)

    monkeypatch.setattr(os, "fsync", fsync)
    checked = []

    class Checking(ScriptedProvider):
        async def submit(self, request, idempotency_key):
            for segment in tmp_path.glob("run.parquet.journal.*"):
                data = segment.read_bytes()
                for line_end, line in _line_ends(data):
                    record = json.loads(line)
                    if record.get("s") == "submitting" and record["k"] == f"r{request.prompt[1:]}":
                        assert durable.get(segment.stat().st_ino, 0) >= line_end, request.prompt
                        checked.append(request.prompt)
            return await super().submit(request, idempotency_key)

    rows = [{"id": f"r{i}", "prompt": f"p{i}"} for i in range(30)]
    df = videobatch.run(rows, Checking(latency=0.01, max_parallel=10), checkpoint=path, progress=False)
    assert (df["status"] == "completed").all()
    assert sorted(set(checked)) == sorted(f"p{i}" for i in range(30))


def _line_ends(data: bytes):
    end = 0
    for line in data.split(b"\n")[:-1]:
        end += len(line) + 1
        if line.strip():
            yield end, line


@pytest.mark.parametrize("text", [
    '{"aspect_ratio":"16:9","duration":5,"model":"kling-v2-6","options":{"mode":"std"},"prompt":"a fox"}',
    '{"end_image":"https://x/b.png","image":"https://x/a.png","prompt":"","seed":7,"audio":true}',
    "{}",
])
def test_requests_rebuilt_from_the_checkpoint_are_what_model_construct_gives(text):
    from videobatch._snapshot import _request_from
    from videobatch.request import VideoRequest

    fast, slow = _request_from(text), VideoRequest.model_construct(**json.loads(text))
    assert fast == slow and fast.__dict__ == slow.__dict__ and list(fast.__dict__) == list(slow.__dict__)
    assert fast.model_fields_set == slow.model_fields_set
    assert (fast.__pydantic_extra__, fast.__pydantic_private__) == (slow.__pydantic_extra__, slow.__pydantic_private__)


def test_requests_the_first_release_wrote_are_read_in_today_s_terms():
    from videobatch._snapshot import _request_from

    old = _request_from('{"camera_control":{"type":"simple"},"cfg_scale":0.5,"image_tail":"https://x/b.png",'
                        '"mode":"pro","model":"kling-v1","prompt":"","unknown":1}')
    assert old.options == {"mode": "pro", "cfg_scale": 0.5, "camera_control": {"type": "simple"}}
    assert old.end_image == "https://x/b.png" and old.model == "kling-v1" and old.prompt == ""


def test_a_reader_never_sees_an_older_state_while_a_run_folds_its_journal(tmp_path, monkeypatch):
    # `status` / results() while a run goes on: the run commits a new snapshot (and drops the journal
    # segments the old one needed) between the reader's look at the snapshot and its replay.
    import videobatch._snapshot as snapshot_module

    path = tmp_path / "run.parquet"
    store, jobs = open_ckpt(path, ROWS)
    store.append(jobs[0].transition(State.SUBMITTING, attempts=1))
    store.append(jobs[0].transition(State.GENERATING, task_id="t1", submitted_at=10.0))
    store.append(jobs[0].transition(State.COMPLETED, video_url="file:///v.mp4", completed_at=12.0))
    replay = snapshot_module.replay
    folded = []

    def replay_after_a_fold(*args, **kwargs):
        if not folded:  # the writer's snapshot lands right now, under the reader
            folded.append(True)
            asyncio.run(store.snapshot(jobs))
        return replay(*args, **kwargs)

    monkeypatch.setattr(snapshot_module, "replay", replay_after_a_fold)
    loaded = load(path)
    assert folded and loaded.jobs[0].state is State.COMPLETED  # read again: not the stale pending
    assert loaded.jobs[0].video_url == "file:///v.mp4"
    store.release()


def test_a_journal_line_reads_back_as_the_record_it_was():
    record = {"k": 'r"1\\ \u2028 é 🎬 \x01', "s": "completed", "t": 1764333333.123456, "cost_actual": 0.1 + 0.2,
              "attempts": 3, "x": {"note": [1, None, True, "\r\n"]}, "video_url": None}
    data = journal_line(record)
    assert data.endswith(b"\n") and data.count(b"\n") == 1 and b"\r" not in data
    assert json.loads(data) == record and list(json.loads(data)) == list(record)  # order kept
    # what orjson refuses, the json module writes: a key that is not text, an integer past 64 bits
    assert json.loads(journal_line({"k": "r", "x": {1: "a"}, "n": 2**70})) == {"k": "r", "x": {"1": "a"}, "n": 2**70}
    # what json refuses is refused still
    with pytest.raises(TypeError):
        journal_line({"k": "r", "expires_at": datetime.datetime.now(datetime.UTC)})
    # JSON has no NaN: null
    assert json.loads(journal_line({"k": "r", "cost_actual": float("nan")})) == {"k": "r", "cost_actual": None}


def test_half_a_character_in_a_providers_answer_is_stored_not_fatal(tmp_path):
    """A provider's JSON may hold an escape like "\\ud800" (half a character), which no UTF-8 journal
    line or Parquet column can hold. Kept as it came, it stopped the run at its journal line; it is
    stored as U+FFFD, and the checkpoint reads back."""
    from fakes import ScriptedProvider
    from videobatch.errors import RejectedError
    from videobatch.providers.base import TaskState, TaskStatus, Video

    half = json.loads('"\\ud800"')  # what response.json() makes of that escape

    class Garbled(ScriptedProvider):
        async def submit(self, request, idempotency_key):
            if "refused" in request.prompt:
                raise RejectedError(f"content {half} policy", provider_code=f"E{half}", request_id=half)
            return await super().submit(request, idempotency_key)

        async def status(self, task_id):
            done = await super().status(task_id)
            if done.state is not TaskState.SUCCEEDED:
                return done
            if self.tasks[task_id]["prompt"] == "failed":
                return TaskStatus(task_id, TaskState.FAILED, message=f"bad {half} clip")
            return TaskStatus(task_id, TaskState.SUCCEEDED, videos=(Video(f"https://cdn.test/{half}.mp4", half),))

    path = tmp_path / "run.parquet"
    rows = [{"id": "a", "prompt": "refused"}, {"id": "b", "prompt": "failed"}, {"id": "c", "prompt": "made"}]
    df = videobatch.run(rows, Garbled(latency=0.01), checkpoint=path, progress=False)
    assert list(df["status"]) == ["failed", "failed", "completed"]
    assert "content \ufffd policy" in df.loc[0, "error"] and df.loc[1, "error"] == "bad \ufffd clip"
    assert df.loc[2, "video_url"] == "https://cdn.test/\ufffd.mp4" and df.loc[2, "video_id"] == "\ufffd"
    again = results(path)
    assert list(again["error"][:2]) == list(df["error"][:2]) and again.loc[2, "video_url"] == df.loc[2, "video_url"]
