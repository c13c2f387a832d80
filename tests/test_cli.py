"""The command line as users run it: exit codes, dry run, help, summary, results files."""

from __future__ import annotations

import errno
import gc
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import videobatch
from videobatch import _journal
from videobatch._jobs import State
from videobatch._store import Checkpoint, load
from videobatch.cli.main import main
from videobatch.errors import ConfigError
from videobatch.providers.local.provider import read_submissions, submission_counts

ROOT = Path(__file__).resolve().parents[1]


def write_csv(path: Path, prompts: list[str]) -> Path:
    pd.DataFrame({"prompt": prompts, "team": "video"}).to_csv(path, index=False)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "videobatch", *args], capture_output=True, text=True,
                          timeout=120)


FAST = ["-P", "latency=0.05", "-P", "render=false", "-q"]


def test_all_completed_exits_0_and_writes_results(tmp_path):
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog"])
    out = tmp_path / "r.parquet"
    res = cli(str(csv), *FAST, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "2/2 completed" in res.stdout and str(out) in res.stdout
    df = pd.read_parquet(out)
    assert list(df["status"]) == ["completed", "completed"] and list(df["team"]) == ["video", "video"]
    assert (tmp_path / "p.checkpoint.parquet").exists()


def test_some_failed_exits_1_with_reasons(tmp_path):
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a banned thing [reject]"])
    res = cli(str(csv), *FAST)
    assert res.returncode == 1
    assert "1 failed" in res.stdout and "rejected" in res.stdout and "content policy" in res.stdout
    assert (tmp_path / "p.results.csv").exists()


def test_bad_input_exits_2_and_submits_nothing(tmp_path, monkeypatch):
    csv = tmp_path / "p.csv"
    csv.write_text("prompt,duration\nok,5\n,5\nfine,30\n")
    res = cli(str(csv), *FAST)
    assert res.returncode == 2
    assert "row 2" in res.stderr and "row 3" in res.stderr and "nothing was submitted" in res.stderr
    assert read_submissions() == []


def test_usage_errors_exit_2(tmp_path):
    csv = write_csv(tmp_path / "p.csv", ["a"])
    assert cli(str(csv), "--provider", "nope").returncode == 2
    assert cli(str(csv), "-P", "novalue").returncode == 2
    assert cli(str(tmp_path / "missing.csv")).returncode == 2
    assert cli().returncode == 2


def test_dry_run_calls_no_provider(tmp_path):
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog", "a bird"])
    res = cli(str(csv), "--dry-run", "--duration", "10", "--mode", "pro")
    assert res.returncode == 0
    assert "3 rows valid; 3 would be submitted" in res.stdout
    assert "3 × local-v1 pro 10s" in res.stdout and "estimated cost: about $0.60" in res.stdout
    assert "nothing was submitted" in res.stdout
    assert read_submissions() == []
    assert not (tmp_path / "p.checkpoint.parquet").exists()


def test_dry_run_after_a_run_says_what_the_same_command_would_do(tmp_path):
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog"])
    assert cli(str(csv), *FAST).returncode == 0
    pd.DataFrame({"prompt": ["a cat", "a dog", "a cow"], "team": "video"}).to_csv(csv, index=False)
    refused = cli(str(csv), *FAST, "--dry-run")  # other rows, no --force: the run would refuse
    assert refused.returncode == 2 and "1 row(s) new" in refused.stderr
    assert "would stop here, before paying anything" in refused.stderr
    res = cli(str(csv), *FAST, "--dry-run", "--force")
    assert res.returncode == 0, res.stderr
    assert "1 would be submitted" in res.stdout and "2 already completed" in res.stdout
    assert "1 new row(s)" in res.stdout
    assert len(read_submissions()) == 2  # the dry runs sent nothing
    assert cli(str(csv), *FAST, "--force").returncode == 0
    assert len(read_submissions()) == 3


def test_help_reads_like_documentation():
    res = cli("--help")
    assert res.returncode == 0
    for words in ("prompt", "--provider", "--checkpoint", "--dry-run", "exit codes", "resume", "--duration"):
        assert words in res.stdout


def test_main_is_callable_in_process(tmp_path, capsys):
    csv = write_csv(tmp_path / "p.csv", ["a heron"])
    assert main([str(csv), *FAST, "--out", str(tmp_path / "r.jsonl")]) == 0
    assert "1/1 completed" in capsys.readouterr().out
    assert pd.read_json(tmp_path / "r.jsonl", lines=True)["status"].tolist() == ["completed"]


@pytest.mark.parametrize("flag", ["--model", "--aspect-ratio"])
def test_bad_default_is_an_input_error(tmp_path, flag):
    csv = write_csv(tmp_path / "p.csv", ["a"])
    res = cli(str(csv), flag, "nonsense", *FAST)
    assert res.returncode == 2 and "nonsense" in res.stderr


def test_quickstart_data_file_is_valid():
    res = cli(str(ROOT / "data" / "prompts.csv"), "--dry-run")
    assert res.returncode == 0, res.stderr


def test_download_flag_saves_verified_clips_and_a_report(tmp_path):
    csv = tmp_path / "p.csv"
    pd.DataFrame({"id": ["a1", "a2"], "prompt": ["a kite", "a heron"], "campaign": ["x", "y"]}).to_csv(csv, index=False)
    res = cli(str(csv), "-q", "-P", "latency=0.05", "--download", str(tmp_path / "dl"), "--name", "{campaign}/{id}")
    assert res.returncode == 0, res.stderr
    assert "downloads: 2/2 clips" in res.stdout
    df = pd.read_csv(tmp_path / "p.results.csv")
    assert list(df["local_path"]) == [str(tmp_path / "dl" / "x" / "a1.mp4"), str(tmp_path / "dl" / "y" / "a2.mp4")]
    assert all(Path(p).stat().st_size == b for p, b in zip(df["local_path"], df["bytes"], strict=True))
    assert (tmp_path / "dl" / "report.html").exists()


# ------------------------------------------------------------------ checked before paying (defect 8)
@pytest.fixture
def read_only():
    """Make a folder read-only for real. Tests run as root, which ignores file modes, so as root the
    folder is made immutable (``chattr +i``: no file can be created, renamed or removed in it);
    otherwise its mode is 0o555. Undone at the end so pytest can clean up."""
    made: list[Path] = []

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            res = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if res.returncode:
                pytest.skip(f"cannot make a folder read-only here: {res.stderr.strip()}")
        else:
            path.chmod(0o555)
        made.append(path)
        return path

    yield make
    for path in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(("flags", "words"), [
    (["--out", "{tmp}/r.txt"], ["r.txt", ".txt", ".csv"]),
    (["--timeout", "0"], ["--timeout", "0"]),
    (["--timeout", "-5"], ["--timeout", "-5"]),
    (["--max-attempts", "0"], ["--max-attempts", "0"]),
    (["--concurrency", "0"], ["--concurrency", "0"]),
    (["--download-concurrency", "0"], ["--download-concurrency", "0"]),
    (["--out", "{ro}/r.csv"], ["--out", "{ro}"]),
    (["--download", "{ro}/videos"], ["--download", "{ro}"]),
    (["--checkpoint", "{ro}/run.parquet"], ["--checkpoint", "{ro}"]),
    (["--report", "{ro}/sheet.html"], ["--report", "{ro}"]),
])
def test_what_can_be_checked_is_checked_before_paying(tmp_path, capsys, read_only, flags, words):
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog"])
    ro = read_only(tmp_path / "ro")
    fill = {"tmp": str(tmp_path), "ro": str(ro)}
    code = main([str(csv), *FAST, *(f.format(**fill) for f in flags)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "nothing was submitted" in lines[0], err
    for word in words:
        assert word.format(**fill) in lines[0]
    assert read_submissions() == []
    assert not (tmp_path / "p.checkpoint.parquet").exists()


def test_every_problem_of_the_command_line_at_once(tmp_path, capsys, read_only):
    csv = write_csv(tmp_path / "p.csv", ["a cat"])
    ro = read_only(tmp_path / "ro")
    code = main([str(csv), *FAST, "--timeout", "0", "--max-attempts", "0", "--out", str(tmp_path / "r.xlsx"),
                 "--download", str(ro / "dl")])
    err = capsys.readouterr().err
    assert code == 2
    for word in ("--timeout", "--max-attempts", "r.xlsx", "--download", "nothing was submitted"):
        assert word in err
    assert "Traceback" not in err and read_submissions() == []


def test_dry_run_reports_the_same_problems(tmp_path, capsys):
    csv = write_csv(tmp_path / "p.csv", ["a cat"])
    assert main([str(csv), "--dry-run", "--out", str(tmp_path / "r.txt")]) == 2
    assert ".txt" in capsys.readouterr().err


def test_csv_on_a_read_only_share_is_refused_before_paying(tmp_path, capsys, read_only):
    share = tmp_path / "share"
    share.mkdir()
    csv = write_csv(share / "p.csv", ["a cat", "a dog"])
    read_only(share)
    assert main([str(csv), *FAST]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(share) in err
    assert "--checkpoint" in err and "--out" in err  # both default next to the CSV: say what to do
    assert read_submissions() == []
    # Told where to put them, the same CSV runs.
    assert main([str(csv), *FAST, "--checkpoint", str(tmp_path / "run.parquet"),
                 "--out", str(tmp_path / "r.csv")]) == 0


def test_batch_refuses_unusable_settings_at_construction():
    for bad in ({"timeout": 0}, {"timeout": -1.0}, {"max_attempts": 0}):
        with pytest.raises(ConfigError):
            videobatch.Batch(["a cat"], "local", progress=False, **bad)
    assert read_submissions() == []


# ------------------------------------------------------------------ environment failures (defect 7)
def test_checkpoint_folder_turning_read_only_after_the_checks_is_one_line(tmp_path, capsys, monkeypatch):
    """The check passed, then the folder went read-only (a share remounted): still one line, exit 2."""
    csv = write_csv(tmp_path / "p.csv", ["a cat"])

    def refuse(self):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self.path))

    monkeypatch.setattr(_journal.WriterLock, "acquire", refuse)
    assert main([str(csv), *FAST]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "Read-only" in lines[0] and "p.checkpoint.parquet" in lines[0]
    assert read_submissions() == []


@pytest.mark.parametrize("where", ["journal", "snapshot"])
def test_full_disk_mid_run_is_one_line_and_the_checkpoint_resumes(tmp_path, capsys, monkeypatch, where):
    csv = write_csv(tmp_path / "p.csv", [f"scene {i}" for i in range(6)])
    checkpoint = tmp_path / "p.checkpoint.parquet"
    name, after = ("append", 8) if where == "journal" else ("_commit", 1)  # the first commit creates it
    real = getattr(Checkpoint, name)
    calls = 0

    def full(self, *args):
        nonlocal calls
        calls += 1
        if calls > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as os.write raises it: no file name
        return real(self, *args)

    monkeypatch.setattr(Checkpoint, name, full)
    code = main([str(csv), *FAST, "-P", "max_parallel=2"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert "No space left" in lines[0] and str(checkpoint) in lines[0] and "run the same command" in lines[0]
    assert "Traceback" not in captured.out + captured.err

    monkeypatch.setattr(Checkpoint, name, real)
    # Space freed: the same command resumes. (A store whose last snapshot failed keeps its writer
    # lock until the Batch is collected; a real CLI process has exited by then.)
    gc.collect()
    assert main([str(csv), *FAST, "-P", "max_parallel=2"]) == 0
    assert all(j.state is State.COMPLETED for j in load(checkpoint).jobs)
    assert set(submission_counts().values()) == {1}  # nobody paid twice


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path):
    csv = write_csv(tmp_path / "p.csv", [f"scene {i}" for i in range(4)])
    args = [sys.executable, "-m", "videobatch", str(csv), "-q", "-P", "render=false", "-P", "max_parallel=2"]
    proc = subprocess.Popen([*args, "-P", "latency=3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while len(submission_counts()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted" in out and "Traceback" not in err
    assert (tmp_path / "p.results.csv").exists()
    states = [j.state for j in load(tmp_path / "p.checkpoint.parquet").jobs]
    assert State.GENERATING in states and states.count(State.COMPLETED) < 4  # stopped mid-run
    res = subprocess.run([*args, "-P", "latency=0.05"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert set(submission_counts().values()) == {1} and len(submission_counts()) == 4


@pytest.mark.parametrize("command", ["run", "status", "dry-run"])
def test_a_reader_that_goes_away_is_not_an_error(tmp_path, command):
    """``... | head -1``: the reader closes the pipe early. The command still does its work, says so in one
    line on stderr, and exits with its own code."""
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog"])
    checkpoint = tmp_path / "p.checkpoint.parquet"
    if command == "status":
        assert main([str(csv), *FAST]) == 0
    args = {"run": [str(csv), *FAST], "status": ["status", str(checkpoint)], "dry-run": [str(csv), "--dry-run"]}
    proc = subprocess.Popen([sys.executable, "-m", "videobatch", *args[command]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head` does once it has read enough
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert len(error_lines(err)) == 1 and "standard output" in err
    if command == "run":
        assert all(j.state is State.COMPLETED for j in load(checkpoint).jobs)
        assert (tmp_path / "p.results.csv").exists()


def test_a_dry_run_for_kling_needs_no_keys_and_says_what_the_run_will(tmp_path, monkeypatch):
    for name in ("KLING_API_KEY", "KLING_ACCESS_KEY", "KLING_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog"])
    res = cli(str(csv), "--provider", "kling", "--dry-run", "--model", "kling-v3", "--duration", "8")
    assert res.returncode == 0, res.stderr
    assert "KLING_API_KEY" in res.stdout and "2 rows valid" in res.stdout
    assert "2 × kling-v3 std 8s" in res.stdout and "estimated cost: about $1.34" in res.stdout
    retired = cli(str(csv), "--provider", "kling", "--dry-run", "--model", "kling-v1-6")
    assert retired.returncode == 2 and "retired on 2026-09-15; use kling-v3" in retired.stderr
