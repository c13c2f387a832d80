"""The command line as users run it: exit codes, dry run, help, summary, results files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import videobatch
from videobatch.cli.main import main
from videobatch.errors import ConfigError
from videobatch.providers.local.provider import read_submissions

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
    csv.write_text("prompt,duration\nok,5\n,5\nfine,7\n")
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
    assert "kling-v1-6 pro 10s" in res.stdout and "estimated cost" in res.stdout
    assert "nothing was submitted" in res.stdout
    assert read_submissions() == []
    assert not (tmp_path / "p.checkpoint.parquet").exists()


def test_dry_run_after_a_run_counts_only_what_is_left(tmp_path):
    csv = write_csv(tmp_path / "p.csv", ["a cat", "a dog"])
    assert cli(str(csv), *FAST).returncode == 0
    pd.DataFrame({"prompt": ["a cat", "a dog", "a cow"], "team": "video"}).to_csv(csv, index=False)
    res = cli(str(csv), "--dry-run")
    assert "1 would be submitted" in res.stdout and "2 already completed" in res.stdout


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


def test_batch_refuses_unusable_settings_at_construction():
    for bad in ({"timeout": 0}, {"timeout": -1.0}, {"max_attempts": 0}):
        with pytest.raises(ConfigError):
            videobatch.Batch(["a cat"], "local", progress=False, **bad)
    assert read_submissions() == []
