"""A damaged checkpoint is never a dead end, and recovering it never pays twice.

Real parquet and journal files on tmp_path and the offline provider's account on disk: a run is
"killed" after the provider accepted some rows, its files are damaged (torn UTF-8, random bytes,
deleted or truncated snapshot), then it is repaired and resumed. Paying twice shows in the
provider's submissions log as a second submit of one idempotency key, or more paid tasks than rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import videobatch
from fakes import adopt_wrongly
from videobatch._inputs import load_prompts
from videobatch._jobs import State
from videobatch._snapshot import read_meta
from videobatch._store import Checkpoint, load
from videobatch.cli.commands import status_main
from videobatch.cli.main import main
from videobatch.errors import CheckpointError
from videobatch.providers import get_provider
from videobatch.providers.local.provider import read_submissions

ROWS = [{"id": f"r{i}", "prompt": f"un café au bord du canal 🎬 n°{i}"} for i in range(6)]
PROVIDER = {"render": False, "latency": 0.05}
V1 = Path(__file__).parent / "data" / "checkpoint_v1"  # written by videobatch at commit 0b7cf7f
# Hashed row keys of the requests with Kling's defaults of then (no id column), killed mid-run;
# written by videobatch at commit 3479fb3, the last before requests became provider-neutral.
KEYS1 = Path(__file__).parent / "data" / "checkpoint_keys1"


def crashed_run(path: Path, submitted: int = 4, *, snapshot_after: int | None = None) -> str:
    """A run of ROWS killed once the provider had accepted its first ``submitted`` rows.

    As the runner does: ``submitting`` is journaled before the paid request, ``generating`` after
    the answer. ``snapshot_after``: fold the journal into the snapshot after that many rows.
    Returns the run id.
    """
    provider = get_provider("local", **PROVIDER)
    store, jobs = Checkpoint.open(path, load_prompts(ROWS), settings=provider.describe())

    async def go() -> None:
        for i, job in enumerate(jobs[:submitted]):
            if i == snapshot_after:
                await store.snapshot(jobs)
            store.append(job.transition(State.SUBMITTING, attempts=1))
            status = await provider.submit(job.request, job.idempotency_key(store.run_id))
            store.append(job.transition(State.GENERATING, task_id=status.task_id,
                                        submitted_at=status.created_at))
        await provider.aclose()

    asyncio.run(go())
    die(store)
    return store.run_id


def die(store: Checkpoint) -> None:
    """What the OS does when a run's process is killed: its files close, its lock is dropped."""
    if store._fd is not None:
        os.close(store._fd)
        store._fd = None
    store._writer.release()


def resume(path: Path) -> pd.DataFrame:
    return videobatch.run(ROWS, "local", checkpoint=path, progress=False, **PROVIDER)


def assert_paid_once() -> None:
    """No idempotency key reached the provider twice, and exactly one paid task per row."""
    subs = read_submissions()
    reached = Counter(s["idempotency_key"] for s in subs if s["outcome"] in ("accepted", "duplicate"))
    assert all(n == 1 for n in reached.values()), f"submitted again: {reached.most_common(3)}"
    assert sum(s["outcome"] == "accepted" for s in subs) == len(ROWS)


def latest_segment(path: Path) -> Path:
    return max(path.parent.glob(path.name + ".journal.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))


def junk(n: int, seed: int) -> bytes:
    """Random bytes without a newline (deterministic)."""
    return bytes(b for b in random.Random(seed).randbytes(n) if b != 0x0A)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# ---------------------------------------------------------------------- damaged journal lines
def test_a_line_torn_inside_a_utf8_character_crashes_nothing(tmp_path):
    path = tmp_path / "run.parquet"
    crashed_run(path)
    record = json.dumps({"k": "r5", "s": "failed", "error": "caméra refusée 🎬", "t": 1.0},
                        ensure_ascii=False).encode()
    with latest_segment(path).open("ab") as fh:
        fh.write(record[: record.index("🎬".encode()) + 2])  # the process died inside the 🎬
    assert [j.state for j in load(path).jobs] == [State.GENERATING] * 4 + [State.PENDING] * 2
    assert list(videobatch.results(path)["status"]) == ["generating"] * 4 + ["pending"] * 2
    assert status_main([str(path)]) == 0
    df = resume(path)
    assert (df["status"] == "completed").all()
    assert_paid_once()


def test_damaged_lines_mid_journal_are_skipped_and_their_rows_looked_up_not_paid_again(tmp_path, caplog):
    path = tmp_path / "run.parquet"
    crashed_run(path)
    segment = latest_segment(path)
    lines = segment.read_bytes().splitlines(keepends=True)
    header = b"".join(line for line in lines if b'"k"' not in line)
    records = [line for line in lines if b'"k"' in line]
    r0_sub, r0_gen, r1_sub, r1_gen, r2_sub, r2_gen, r3_sub, _r3_gen = records
    # r3 was paid, then the process died before its answer was journaled; its intent record is then
    # torn inside a UTF-8 character (a later write landed after it). Without it r3 would look pending.
    cut = r3_sub.index(b'"s":')  # past its row key (a line torn inside the key names no row)
    torn = r3_sub[:cut] + "🎬".encode()[:2] + r3_sub[cut:]
    segment.write_bytes(
        header + r0_sub + junk(80, seed=1) + b"\n" + r0_gen + r1_sub
        + junk(40, seed=2) + r1_gen  # random bytes glued before a record: the record survives
        + r2_sub + r2_gen + torn
        + junk(30, seed=3) + b"\n" + junk(30, seed=4)  # random bytes appended, the last without newline
    )
    loaded = load(path)
    assert [j.state for j in loaded.jobs] == [State.GENERATING] * 3 + [State.SUBMITTING] + [State.PENDING] * 2
    assert loaded.jobs[1].task_id  # salvaged from behind the random bytes
    assert loaded.journal.damaged_rows == {"r3"} and len(loaded.journal.salvaged) == 1
    assert len(loaded.journal.skipped) == 3 and len(loaded.journal.torn) == 1
    assert "skipped 3 damaged journal line(s)" in caplog.text
    assert status_main([str(path)]) == 0
    df = resume(path)  # r3 is looked up by its idempotency key and its paid task adopted
    assert (df["status"] == "completed").all()
    assert_paid_once()


# ---------------------------------------------------------------------- the run id outlives the snapshot
def test_every_segment_starts_with_what_idempotency_keys_depend_on(tmp_path):
    path = tmp_path / "run.parquet"
    store, jobs = Checkpoint.open(path, load_prompts(ROWS), settings={"provider": "local"})
    header = json.loads(latest_segment(path).read_bytes().splitlines()[0])
    assert header == {"vb": "journal", "format": 1, "seq": 1, "run_id": store.run_id,
                      "fingerprint": store.meta["fingerprint"], "settings": {"provider": "local"},
                      "created_at": store.meta["created_at"], "keys": 2, "untouched": True, "generations": {}}
    store.append(jobs[2].transition(State.FAILED, error="refusé"))
    store.append(jobs[2].retry())
    asyncio.run(store.close(jobs))
    header = json.loads(latest_segment(path).read_bytes().splitlines()[0])
    assert (header["seq"], header["untouched"], header["generations"]) == (2, True, {"r2": 1})
    assert json.loads(latest_segment(path).read_bytes().splitlines()[0])["run_id"] == store.run_id


def test_a_deleted_snapshot_keeps_the_run_id_and_pays_nothing_twice(tmp_path):
    path = tmp_path / "run.parquet"
    run_id = crashed_run(path, snapshot_after=2)  # r0 and r1 are now only in the snapshot
    path.unlink()
    with pytest.raises(CheckpointError, match="same input again"):
        load(path)
    batch = videobatch.Batch(ROWS, "local", checkpoint=path, progress=False, **PROVIDER)
    assert batch.store.run_id == run_id
    # r2, r3: their journal records say where they are; r0, r1, r4, r5: unknown, so looked up first
    assert [j.state for j in batch.jobs] == [State.SUBMITTING] * 2 + [State.GENERATING] * 2 + [State.SUBMITTING] * 2
    df = batch.wait()
    assert (df["status"] == "completed").all()
    assert_paid_once()


def test_a_finished_run_whose_snapshot_is_deleted_is_not_paid_again(tmp_path):
    path = tmp_path / "run.parquet"
    first = resume(path)
    path.unlink()
    again = resume(path)
    assert (again["status"] == "completed").all()
    assert list(again["task_id"]) == list(first["task_id"])
    assert_paid_once()


def test_a_snapshot_deleted_before_anything_was_submitted_needs_no_lookups(tmp_path):
    path = tmp_path / "run.parquet"
    store, _ = Checkpoint.open(path, load_prompts(ROWS), settings=get_provider("local", **PROVIDER).describe())
    die(store)
    path.unlink()
    batch = videobatch.Batch(ROWS, "local", checkpoint=path, progress=False, **PROVIDER)
    assert batch.store.run_id == store.run_id
    assert all(j.state is State.PENDING for j in batch.jobs)  # the header says: untouched


# ---------------------------------------------------------------------- corrupt snapshot, repair
def test_a_corrupt_snapshot_says_what_to_do_then_repair_and_resume_pay_nothing_twice(tmp_path, capsys):
    path = tmp_path / "run.parquet"
    run_id = crashed_run(path, snapshot_after=2)
    truncate(path)
    with pytest.raises(CheckpointError, match=r"not readable .*python -m videobatch repair"):
        videobatch.results(path)
    with pytest.raises(CheckpointError, match="python -m videobatch repair"):
        resume(path)
    assert status_main([str(path)]) == 2
    assert main(["repair", str(path)]) == 1  # partly: the rows' requests wait for the input
    out = capsys.readouterr().out
    assert f"run {run_id} recovered" in out and "moved the unreadable snapshot aside" in out
    assert "generating 2" in out and "--input" in out
    assert len(list(tmp_path.glob("run.parquet.damaged-*"))) == 1
    df = resume(path)  # the original input again: rebuilt, the run id kept
    assert (df["status"] == "completed").all()
    assert_paid_once()


def test_repair_with_the_input_rebuilds_the_snapshot_at_once(tmp_path, capsys):
    path = tmp_path / "run.parquet"
    crashed_run(path, snapshot_after=2)
    truncate(path)
    prompts = tmp_path / "prompts.csv"
    pd.DataFrame(ROWS).to_csv(prompts, index=False)
    assert main(["repair", str(path), "--input", str(prompts)]) == 1  # four rows' states were lost
    out = capsys.readouterr().out
    assert "4 row(s) whose state was lost" in out and "repaired" in out
    assert list(videobatch.results(path)["status"]) == ["submitting"] * 2 + ["generating"] * 2 + ["submitting"] * 2
    assert status_main([str(path)]) == 0
    assert (resume(path)["status"] == "completed").all()
    assert_paid_once()


def test_repair_of_a_readable_checkpoint_folds_its_damaged_journal(tmp_path, capsys):
    path = tmp_path / "run.parquet"
    crashed_run(path)
    with latest_segment(path).open("ab") as fh:
        fh.write(junk(50, seed=5) + b"\n")
    assert main(["repair", str(path)]) == 1  # a line was lost (it named no row)
    assert "1 damaged journal line(s) skipped" in capsys.readouterr().out
    assert main(["repair", str(path)]) == 0
    assert "nothing to repair" in capsys.readouterr().out
    assert not load(path).journal.skipped
    assert (resume(path)["status"] == "completed").all()
    assert_paid_once()


def test_repair_refuses_what_it_cannot_recover(tmp_path, capsys):
    assert main(["repair", str(tmp_path / "none.parquet")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # A lost snapshot whose journal has no header records (an older videobatch): the run id is gone.
    path = tmp_path / "run.parquet"
    crashed_run(path)
    segment = latest_segment(path)
    segment.write_bytes(b"".join(line for line in segment.read_bytes().splitlines(keepends=True)
                                 if b'"k"' in line))
    truncate(path)
    assert main(["repair", str(path)]) == 2
    assert "run id is gone" in capsys.readouterr().err
    assert path.exists()  # nothing moved or deleted
    assert read_submissions() and sum(s["outcome"] == "accepted" for s in read_submissions()) == 4


# ---------------------------------------------------------------------- compatibility
def test_a_checkpoint_written_by_the_previous_release_resumes_without_paying_again(tmp_path, monkeypatch):
    shutil.copytree(V1, tmp_path / "v1")
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "v1" / "provider"))
    path = tmp_path / "v1" / "run.parquet"
    before = videobatch.results(path)
    assert Counter(before["status"]) == {"completed": 3, "generating": 2, "submitting": 1, "pending": 2}
    df = videobatch.run(str(tmp_path / "v1" / "prompts.csv"), "local", checkpoint=path, progress=False,
                        **PROVIDER)
    assert (df["status"] == "completed").all()
    done = before["status"] == "completed"
    assert list(df["task_id"][done]) == list(before["task_id"][done])
    subs = read_submissions()
    reached = Counter(s["idempotency_key"] for s in subs if s["outcome"] in ("accepted", "duplicate"))
    assert all(n == 1 for n in reached.values()) and sum(s["outcome"] == "accepted" for s in subs) == 8


@pytest.mark.parametrize("snapshot", [True, False])
def test_rows_keyed_the_first_release_s_way_keep_their_keys_and_nothing_is_paid_again(tmp_path, monkeypatch,
                                                                                     snapshot):
    """Keys used to hash each request with Kling's defaults of then filled in; a checkpoint made so
    (it says nothing about its keys) is resumed with rows keyed that way, snapshot or not."""
    shutil.copytree(KEYS1, tmp_path / "k1")
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "k1" / "provider"))
    path = tmp_path / "k1" / "run.parquet"
    before = videobatch.results(path)
    assert Counter(before["status"]) == {"completed": 5, "generating": 3}
    if not snapshot:
        path.unlink()  # rebuilt from the journal, whose header says nothing of keys either
    df = videobatch.run(str(tmp_path / "k1" / "prompts.csv"), "local", checkpoint=path, progress=False,
                        render=False, latency=0.05)
    assert (df["status"] == "completed").all()
    assert list(df["key"]) == list(before["key"])
    done = before["status"] == "completed"
    assert list(df["task_id"][done]) == list(before["task_id"][done])
    subs = read_submissions()
    assert sum(s["outcome"] == "accepted" for s in subs) == 8  # each row paid once, all in the first run
    assert read_meta(path).get("keys") is None  # still keyed the first release's way


def test_a_new_checkpoint_says_how_its_rows_are_keyed(tmp_path):
    path = tmp_path / "run.parquet"
    videobatch.run(["a", "b"], "local", checkpoint=path, progress=False, **PROVIDER)
    assert read_meta(path)["keys"] == 2


def test_a_previous_release_checkpoint_without_its_snapshot_is_refused_not_paid_again(tmp_path):
    shutil.copytree(V1, tmp_path / "v1")
    path = tmp_path / "v1" / "run.parquet"
    path.unlink()  # its journal has no header records: nothing says which run id its keys used
    with pytest.raises(CheckpointError, match="does not record the run id"):
        videobatch.Batch(str(tmp_path / "v1" / "prompts.csv"), "local", checkpoint=path, progress=False,
                         **PROVIDER)
    assert read_submissions() == []


def test_load_tolerates_a_snapshot_without_a_newer_result_column(tmp_path):
    path = tmp_path / "run.parquet"
    crashed_run(path, snapshot_after=2)
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["_vb_video_id", "_vb_expires_at"]), path)
    loaded = load(path)
    assert loaded.jobs[0].task_id and loaded.jobs[0].video_id is None
    assert (resume(path)["status"] == "completed").all()
    assert_paid_once()


def test_requests_of_the_first_release_read_back_with_their_options(tmp_path):
    """Its request texts had image_tail, and Kling's mode as a field: they are read as the end image
    and an option, not dropped (status, retry and Batch.from_checkpoint rebuild requests so)."""
    shutil.copytree(KEYS1, tmp_path / "k1")
    loaded = load(tmp_path / "k1" / "run.parquet")
    modes = [(j.request.options or {}).get("mode") for j in loaded.jobs]
    assert modes == ["std", "std", "pro", "pro", "std", "std", "std", "pro"]  # defaults of then included
    assert {j.request.model for j in loaded.jobs} == {"kling-v1-6"}


@pytest.mark.parametrize("model", ["kling-3.0", "kling-v3"], ids=["newer", "legacy"])
def test_repair_verify_tasks_names_rows_holding_a_task_that_is_not_their_own(tmp_path, capsys,
                                                                             monkeypatch, model):
    """An older release could adopt another system's task after a lost answer: `repair
    --verify-tasks` asks Kling whose each row's task is, names the rows holding another's (no key,
    another system's key, or another row's) and exits 1; a clean checkpoint exits 0."""

    from videobatch.testing import SimConfig, running_server

    monkeypatch.setenv("KLING_API_KEY", str(SimConfig.api_key))
    fast = {"first_poll": 0.1, "poll_interval": 0.05, "max_rps": 100}
    checkpoint = tmp_path / "run.parquet"
    rows = [{"prompt": f"a {animal}", "model": model} for animal in ("cat", "dog", "cow", "owl")]
    with running_server(latency=0.1, foreign_tasks=3) as server:
        videobatch.run(rows, "kling", checkpoint=checkpoint, progress=False, base_url=server.url, **fast)
        argv = ["repair", str(checkpoint), "--verify-tasks", "--base-url", server.url]
        assert main(argv) == 0
        assert "every task is the row's own" in capsys.readouterr().out
        foreign = {t["external_task_id"]: t["task_id"] for t in server.tasks() if t.get("foreign")}
        wrong = adopt_wrongly(checkpoint, server.url, lambda jobs: {
            jobs[0].key: foreign[None], jobs[1].key: foreign["order-00001"],
            jobs[2].key: jobs[3].task_id})
        assert main(argv) == 1
    out = capsys.readouterr().out
    assert "4 row(s) with 'kling': 3 are not the row's own" in out
    first, second, third = wrong
    assert f"{first}: task {wrong[first]} carries no key at all" in out
    assert f"{second}: task {wrong[second]} carries key order-00001" in out
    assert f"{third}: task {wrong[third]} carries key vb-" in out
