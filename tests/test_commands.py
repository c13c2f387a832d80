"""status / retry / download / report on checkpoints made by real runs of the local provider."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import videobatch
from fakes import adopt_wrongly
from videobatch._jobs import Job, State
from videobatch._store import LoadedCheckpoint, load
from videobatch.cli.commands import download_main, report_main, retry_main, status_main, status_report
from videobatch.cli.main import main
from videobatch.providers.local.provider import read_submissions, submission_counts
from videobatch.request import VideoRequest

FAST = {"latency": 0.05, "progress": False}


def make_run(tmp_path: Path, rows: list[str], **options: object) -> Path:
    checkpoint = tmp_path / "run.parquet"
    videobatch.run(rows, "local", checkpoint=checkpoint, **{**FAST, **options})
    return checkpoint


def test_status_counts_failures_by_reason(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a cat", "a dog", "a banned thing [reject]"], render=False)
    assert status_main([str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "3 rows via 'local'" in out and "completed 2 · failed 1" in out
    assert "Failures by reason:" in out and "rejected ×1" in out and "content policy" in out
    assert "retry with: python -m videobatch retry" in out
    assert status_main([str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["counts"]["completed"] == 2 and info["failures"]["rejected"]["count"] == 1


def test_status_shows_rows_in_flight(tmp_path, capsys):
    checkpoint = tmp_path / "run.parquet"
    batch = videobatch.Batch(["slow one", "slow two"], "local", checkpoint=checkpoint,
                             latency=30, render=False, progress=False).start()
    deadline = time.monotonic() + 10
    while batch.counts()["generating"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    batch.cancel()
    batch.wait()
    assert status_main([str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "generating 2" in out and "Oldest in flight:" in out and "task lt-" in out
    assert "Estimated remaining: unknown" in out


def test_status_estimates_time_left_from_the_pace_so_far():
    jobs = []
    for i in range(8):
        job = Job(key=f"r{i}", index=i, request=VideoRequest(prompt="x"))
        if i < 4:
            job.state, job.submitted_at, job.completed_at = State.COMPLETED, 1000.0, 1000.0 + 10 * (i + 1)
        jobs.append(job)
    info = status_report(LoadedCheckpoint(frame=None, jobs=jobs, meta={}, request_json=[]),  # type: ignore[arg-type]
                         now=2000.0)
    assert info["rows_per_second"] == pytest.approx(4 / 40)
    assert info["eta_s"] == pytest.approx(40.0) and info["remaining_rows"] == 4


def test_status_of_a_missing_checkpoint_exits_2(tmp_path, capsys):
    assert status_main([str(tmp_path / "nope.parquet")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_retry_only_the_chosen_reason(tmp_path, capsys):
    rows = [f"scene {i}" for i in range(8)] + ["a banned thing [reject]"]
    checkpoint = make_run(tmp_path, rows, render=False, failure_rate=0.5)
    before = load(checkpoint).jobs
    generation_failed = [j.key for j in before if j.error_kind == "generation_failed"]
    assert generation_failed, "failure_rate=0.5 over 8 rows should fail some"
    submits_before = len(read_submissions())

    common = [str(checkpoint), "-P", "latency=0.05", "-P", "render=false", "-q"]
    assert retry_main([*common, "--dry-run", "--only-failed-with", "generation_failed"]) == 0
    assert f"{len(generation_failed)} failed row(s) to retry" in capsys.readouterr().out
    assert len(read_submissions()) == submits_before  # a dry run submits nothing

    code = retry_main([*common, "-P", "failure_rate=0", "--only-failed-with", "generation_failed",
                       "--out", str(tmp_path / "r.csv")])
    out = capsys.readouterr().out
    assert code == 1  # the rejected row is still failed: it was not chosen
    after = {j.key: j for j in load(checkpoint).jobs}
    assert all(after[k].state is State.COMPLETED for k in generation_failed)
    assert sum(j.state is State.FAILED for j in after.values()) == 1
    assert f"{len(rows) - 1}/{len(rows)} completed, 1 failed" in out and "rejected" in out
    assert (tmp_path / "r.csv").exists()
    accepted = [e for e in read_submissions()[submits_before:] if e.get("outcome") == "accepted"]
    assert len(accepted) == len(generation_failed)  # only the chosen rows were paid again

    assert retry_main([*common, "--only-failed-with", "timeout"]) == 0
    assert "failed rows have: rejected ×1" in capsys.readouterr().err


def test_retry_usage_errors_exit_2(tmp_path, capsys):
    assert retry_main([str(tmp_path / "missing.parquet")]) == 2
    checkpoint = make_run(tmp_path, ["a [reject]"], render=False)
    assert retry_main([str(checkpoint), "--provider", "nonesuch", "-q"]) == 2
    assert "nonesuch" in capsys.readouterr().err


def test_download_command_end_to_end(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a red kite", "a blue boat", "nothing [reject]"])
    out_dir = tmp_path / "videos"
    assert download_main([str(checkpoint), str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "2 downloaded, 0 already on disk, 0 failed; 1 row(s) have no video" in text
    df = videobatch.results(checkpoint)
    done = df[df["status"] == "completed"]
    for _, row in done.iterrows():
        assert Path(row["local_path"]).parent == out_dir and Path(row["local_path"]).exists()
        assert len(row["sha256"]) == 64 and Path(row["thumbnail"]).exists()
    assert (out_dir / "report.html").exists()

    assert download_main([str(checkpoint), str(out_dir)]) == 0  # again: nothing to fetch
    assert "0 downloaded, 2 already on disk" in capsys.readouterr().out

    # An expired URL whose file is gone: warned about up front, reported as failed, exit 1.
    first = done.iloc[0]
    Path(first["local_path"]).unlink()
    Path(first["video_url"].removeprefix("file://")).unlink()
    batch = videobatch.Batch.from_checkpoint(checkpoint, progress=False)
    record = {"k": first["key"], "s": "completed", "t": time.time(), "expires_at": time.time() - 5}
    next(j for j in batch.jobs if j.key == first["key"]).apply(record)
    batch.store.append(record)
    asyncio.run(batch.store.close(batch.jobs))  # done writing: the checkpoint is free again
    assert download_main([str(checkpoint), str(out_dir)]) == 1
    captured = capsys.readouterr()
    assert "past their expiry" in captured.err and first["key"] in captured.err
    assert "1 failed" in captured.out and "does not exist" in captured.out
    df = videobatch.results(checkpoint)
    assert df.set_index("key").loc[first["key"], "download_error"]


def test_report_command(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a red kite"])
    assert report_main([str(checkpoint), "--out", str(tmp_path / "sheet.html")]) == 0
    html = (tmp_path / "sheet.html").read_text()
    assert "a red kite" in html and 'src="thumbnails/' in html


def test_subcommands_dispatch_through_python_m_videobatch(tmp_path):
    checkpoint = make_run(tmp_path, ["a cat"], render=False)
    res = subprocess.run([sys.executable, "-m", "videobatch", "status", str(checkpoint)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "completed 1" in res.stdout
    res = subprocess.run([sys.executable, "-m", "videobatch", "download", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "CHECKPOINT DIR" in res.stdout and "--name TEMPLATE" in res.stdout


def test_retry_can_download_what_it_generates(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a red kite", "a heron [reject]"])
    # The rejected row stays rejected on retry; the retry still downloads what is completed.
    assert retry_main([str(checkpoint), "-q", "-P", "latency=0.05", "--download", str(tmp_path / "dl")]) == 1
    out = capsys.readouterr().out
    assert "downloads: 1/1 clips" in out
    df = videobatch.results(checkpoint)
    done = df[df["status"] == "completed"]
    assert Path(done.iloc[0]["local_path"]).exists()
    assert (tmp_path / "dl" / "report.html").exists()


# ------------------------------------------------------------------ one parser, retry --unknown
def _options(parser) -> dict[str, str]:
    return {s: a.help for a in parser._actions for s in a.option_strings}


def test_retry_takes_the_main_commands_options_defined_once():
    from videobatch.cli.commands import _retry_parser
    from videobatch.cli.main import _parser

    main_options, retry_options = _options(_parser()), _options(_retry_parser())
    shared = ["-P", "--base-url", "--concurrency", "--timeout", "--max-attempts", "--out", "--dry-run",
              "--download", "--download-concurrency", "--name", "--webhook", "--report", "-q", "-v"]
    for flag in shared:
        assert flag in retry_options, flag
        if flag != "--out":  # the main command names its default
            assert retry_options[flag] == main_options[flag], flag
    assert "--provider" in retry_options and "--unknown" in retry_options


def mark_unknown(checkpoint: Path, key: str) -> None:
    """Put one row of a finished checkpoint in the "unknown" state, as a lost submit answer would."""
    batch = videobatch.Batch.from_checkpoint(checkpoint, progress=False, render=False)
    job = next(j for j in batch.jobs if j.key == key)
    record = {"k": key, "s": "unknown", "t": time.time(), "task_id": None, "video_url": None,
              "completed_at": None, "error_kind": "unknown", "error": "the submit's answer was lost"}
    job.apply(record)
    batch.store.append(record)
    asyncio.run(batch.store.close(batch.jobs))


def test_retry_unknown_resubmits_on_the_users_word_and_warns(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a cat", "a dog"], render=False)
    dog = next(j.key for j in load(checkpoint).jobs if j.request.prompt == "a dog")
    mark_unknown(checkpoint, dog)
    assert status_main([str(checkpoint)]) == 0
    assert "unknown 1" in capsys.readouterr().out
    paid = len(submission_counts())
    common = [str(checkpoint), "-P", "latency=0.05", "-P", "render=false", "-q"]

    # Without --unknown nothing is resubmitted: the row stays unknown, and the exit code says so.
    assert retry_main(common) == 0
    captured = capsys.readouterr()
    assert "nothing to retry" in captured.out and "--unknown resubmits them" in captured.err
    assert len(submission_counts()) == paid

    assert retry_main([*common, "--unknown", "-v"]) == 0
    captured = capsys.readouterr()
    assert "1 row(s) of unknown outcome to resubmit" in captured.out
    assert "paid twice" in captured.err and "2/2 completed" in captured.out
    assert len(submission_counts()) == paid + 1  # a new key: a new, separately paid request
    assert all(j.state is State.COMPLETED for j in load(checkpoint).jobs)


def test_retry_checks_before_paying(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a cat", "a [reject]"], render=False)
    before = read_submissions()
    file = tmp_path / "not-a-folder"
    file.write_text("")
    code = main(["retry", str(checkpoint), "-q", "--timeout", "0", "--max-attempts", "0",
                 "--out", str(tmp_path / "r.txt"), "--download", str(file / "dl")])
    err = capsys.readouterr().err
    assert code == 2
    for word in ("--timeout", "--max-attempts", ".txt", "--download", str(file), "nothing was submitted"):
        assert word in err
    assert read_submissions() == before
    assert sum(j.state is State.FAILED for j in load(checkpoint).jobs) == 1  # not even put back


def test_download_to_an_unusable_folder_is_one_line(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a red kite"], render=False)
    file = tmp_path / "taken"
    file.write_text("")
    assert main(["download", str(checkpoint), str(file / "videos")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(file) in lines[0] and "nothing was downloaded" in lines[0]


def test_status_asks_the_provider_again_about_unknown_rows(tmp_path, capsys):
    checkpoint = make_run(tmp_path, ["a cat", "a dog"], render=False)
    dog = next(j.key for j in load(checkpoint).jobs if j.request.prompt == "a dog")
    mark_unknown(checkpoint, dog)  # its task exists at the provider: a lost answer, found again
    paid = len(submission_counts())
    assert status_main([str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert f"{dog}: the provider has its task" in out and "the next run adopts it" in out
    assert status_main([str(checkpoint), "--no-check"]) == 0
    assert "Checked" not in capsys.readouterr().out
    assert len(submission_counts()) == paid  # looking costs nothing
    assert load(checkpoint).jobs[1].state is State.UNKNOWN or load(checkpoint).jobs[0].state is State.UNKNOWN


def test_status_verify_tasks_names_rows_whose_task_is_not_their_own(tmp_path, capsys, monkeypatch):
    """An older release could adopt another system's task (no key, or another key): `status
    --verify-tasks` asks Kling for every row's task and names those rows; the rest are confirmed."""
    from videobatch.testing import SimConfig, running_server

    monkeypatch.setenv("KLING_ACCESS_KEY", SimConfig.access_key)
    monkeypatch.setenv("KLING_SECRET_KEY", SimConfig.secret_key)
    fast = {"first_poll": 0.1, "poll_interval": 0.05, "max_rps": 100}
    checkpoint = tmp_path / "run.parquet"
    with running_server(latency=0.1, foreign_tasks=3) as server:
        videobatch.run(["a cat", "a dog", "a cow"], "kling", checkpoint=checkpoint, progress=False,
                       base_url=server.url, **fast)
        foreign = {t["external_task_id"]: t["task_id"] for t in server.tasks() if t.get("foreign")}
        wrong = adopt_wrongly(checkpoint, server.url, lambda jobs: {
            jobs[0].key: foreign[None], jobs[1].key: foreign["order-00001"]})
        argv = [str(checkpoint), "--verify-tasks", "--base-url", server.url]
        assert status_main(argv) == 0
    out = capsys.readouterr().out
    assert "Verified the tasks of 3 row(s) with 'kling': 2 are not the row's own" in out
    first, second = wrong
    assert f"{first}: task {wrong[first]} carries no key at all" in out
    assert f"{second}: task {wrong[second]} carries key order-00001" in out
    assert "retry" in out
