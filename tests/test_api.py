"""The Python API end to end through the offline provider: run, arun, Batch, results, resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

import videobatch
from fakes import ScriptedProvider
from videobatch.errors import CheckpointError, InputError
from videobatch.providers.local.provider import read_submissions

FAST = {"latency": 0.05, "jitter": 0.2, "max_parallel": 10, "progress": False}


def rows(n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"row-{i:03d}" for i in range(n)],
        "prompt": [f"a paper boat number {i} drifting on a pond" for i in range(n)],
        "duration": [10 if i % 5 == 0 else 5 for i in range(n)],
        "campaign": ["spring" if i % 2 else "autumn" for i in range(n)],
        "budget": [float(i) for i in range(n)],
    }, index=pd.RangeIndex(100, 100 + n))


def test_fifty_rows_complete_with_a_correct_results_frame(tmp_path):
    df_in = rows(50)
    df = videobatch.run(df_in, "local", render=False, **FAST)
    assert len(df) == 50
    assert list(df.index) == list(df_in.index)  # one row per input row, input order and index
    assert list(df.columns[:5]) == list(df_in.columns)
    assert list(df.columns[5:13]) == ["status", "video_url", "task_id", "error", "attempts", "submitted_at",
                                      "completed_at", "elapsed_s"]
    assert (df["status"] == "completed").all()
    assert df["task_id"].is_unique and df["video_url"].notna().all()
    assert (df["attempts"] == 1).all() and df["error"].isna().all()
    assert (df["completed_at"] >= df["submitted_at"]).all()
    assert (df["elapsed_s"] > 0).all()
    assert df["budget"].dtype == "float64" and list(df["campaign"]) == list(df_in["campaign"])
    assert list(df["key"]) == list(df_in["id"])


def test_real_clips_are_rendered(tmp_path):
    df = videobatch.run(["a lighthouse in a storm", "a quiet library"], "local", **FAST)
    paths = [Path(url.removeprefix("file://")) for url in df["video_url"]]
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_bad_input_submits_nothing(tmp_path):
    with pytest.raises(InputError) as err:
        videobatch.run([{"prompt": ""}, {"prompt": "ok", "duration": 30}], "local", **FAST)
    assert len(err.value.problems) == 2
    assert read_submissions() == []


def test_run_inside_a_running_event_loop():
    async def notebook_cell():
        assert asyncio.get_running_loop()
        return videobatch.run(["a kite over a beach"], "local", render=False, **FAST)

    df = asyncio.run(notebook_cell())
    assert list(df["status"]) == ["completed"]


def test_arun_inside_and_outside():
    df = asyncio.run(videobatch.arun(["a snail racing a turtle"], "local", render=False, **FAST))
    assert list(df["status"]) == ["completed"]


def test_batch_start_returns_at_once_and_results_grow():
    async def cell():
        batch = videobatch.Batch([f"stars {i}" for i in range(6)], "local", render=False,
                                 **{**FAST, "latency": 0.3})
        batch.start()
        early = batch.results()
        assert (early["status"] != "completed").all()  # start() did not block
        df = await batch.wait()
        return df

    df = asyncio.run(cell())
    assert (df["status"] == "completed").all()


def test_resume_from_checkpoint_submits_nothing_again(tmp_path):
    ckpt = tmp_path / "run.parquet"
    df1 = videobatch.run(rows(12), "local", render=False, checkpoint=ckpt, **FAST)
    n = len(read_submissions())
    df2 = videobatch.run(rows(12), "local", render=False, checkpoint=ckpt, **FAST)
    assert len(read_submissions()) == n == 12
    pd.testing.assert_frame_equal(df1.reset_index(drop=True), df2.reset_index(drop=True))
    assert (videobatch.results(ckpt)["status"] == "completed").all()


def test_changed_input_is_refused_then_forced(tmp_path):
    ckpt = tmp_path / "run.parquet"
    videobatch.run(rows(4), "local", render=False, checkpoint=ckpt, **FAST)
    edited = rows(4)
    edited.loc[101, "prompt"] = "a different prompt"
    with pytest.raises(CheckpointError, match="1 row\\(s\\) changed"):
        videobatch.run(edited, "local", render=False, checkpoint=ckpt, **FAST)
    df = videobatch.run(edited, "local", render=False, checkpoint=ckpt, force=True, **FAST)
    assert (df["status"] == "completed").all()
    assert len(read_submissions()) == 5  # only the edited row was generated again


def test_failed_rows_are_reported_and_retried_on_request(tmp_path):
    batch = videobatch.Batch(["fine", "blocked [reject]"], "local", render=False, **FAST)
    df = batch.wait()
    assert list(df["status"]) == ["completed", "failed"]
    assert df.loc[1, "error_kind"] == "rejected" and "content policy" in df.loc[1, "error"]
    assert batch.retry_failed() == 1
    assert batch.results().loc[1, "status"] == "pending"


def test_secrets_never_reach_the_checkpoint(tmp_path):
    secret = "sk-THIS-IS-SECRET-0123456789"

    class KeyedProvider(ScriptedProvider):
        def __init__(self, api_key: str) -> None:
            super().__init__()
            self._key = api_key

    ckpt = tmp_path / "run.parquet"
    df = videobatch.run(["a cat", "a dog [reject]"], KeyedProvider(secret), checkpoint=ckpt, progress=False)
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert secret.encode() not in data
    assert secret not in df.to_csv()


def test_batch_from_checkpoint_resumes_without_the_input(tmp_path):
    ckpt = tmp_path / "run.parquet"
    first = videobatch.Batch(["a swan", "a blocked swan [reject]"], "local", render=False, checkpoint=ckpt, **FAST)
    first.wait()
    again = videobatch.Batch.from_checkpoint(ckpt, render=False, **FAST)
    assert [j.key for j in again.jobs] == [j.key for j in first.jobs]
    assert again.store.run_id == first.store.run_id
    assert again.retry_failed() == 1
    df = again.wait()
    assert list(df["status"]) == ["completed", "failed"]
    assert len(read_submissions()) == 3  # the completed row was not generated again; the retry was


def test_retry_then_wait_inside_a_loop_runs_the_retried_rows():
    async def cell():
        batch = videobatch.Batch(["fine", "blocked [reject]"], "local", render=False, **FAST)
        await batch.start().wait()
        assert batch.retry_failed() == 1
        df = await batch.wait()  # starts again: the retried row is generated (and rejected) anew
        return batch, df

    batch, df = asyncio.run(cell())
    assert list(df["status"]) == ["completed", "failed"]
    assert batch.jobs[1].generation == 1
    assert len(read_submissions()) == 3
