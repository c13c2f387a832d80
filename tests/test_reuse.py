"""No clip generated twice across runs: the result cache (``reuse=True`` / ``--reuse``).

Against the offline ``local`` provider, which logs every submission that reaches its simulated
account, and the Kling-compatible test server, which counts accepted (paid) tasks: a second run of
the same table into a new checkpoint pays nothing; a changed setting pays; an expired URL is reused
only when its downloaded file is still there; two processes write the cache at once; a cache that
cannot be written stops the run before it pays; no credential reaches the cache. Real parquet
checkpoints and a real SQLite file; each test has its own cache (conftest sets the folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import videobatch
from videobatch._cache import ResultCache, default_dir
from videobatch._fleet import Providers
from videobatch._jobs import Job, State
from videobatch._reuse import ImageDigests, Keys, find, request_key
from videobatch._settings import RunSettings
from videobatch.errors import ConfigError
from videobatch.providers import get_provider
from videobatch.providers.local.provider import read_submissions
from videobatch.request import VideoRequest

LOCAL: dict[str, Any] = {"latency": 0.01, "render": False}
FIVE = [f"shot {i}: a harbour at dawn" for i in range(5)]


def paid() -> int:
    return sum(1 for e in read_submissions() if e.get("outcome") == "accepted")


def run(rows: Any, checkpoint: Path, **kwargs: Any) -> pd.DataFrame:
    kwargs.setdefault("reuse", True)
    return videobatch.run(rows, "local", checkpoint=checkpoint, progress=False, **LOCAL, **kwargs)


def cache() -> ResultCache:
    return ResultCache(default_dir())


def test_a_second_run_of_the_same_table_into_a_new_checkpoint_pays_nothing(tmp_path):
    first = run(FIVE, tmp_path / "a.parquet")
    assert paid() == 5 and (first["status"] == "completed").all()
    assert "reused_from" not in first.columns
    assert len(cache().entries()) == 5

    plan = videobatch.plan(FIVE, "local", checkpoint=tmp_path / "b.parquet", reuse=True, **LOCAL)
    assert (plan.paid, len(plan.reused), plan.saved, plan.estimated) == (0, 5, pytest.approx(0.25), 0.0)

    second = run(FIVE, tmp_path / "b.parquet")
    assert paid() == 5  # nothing sent
    assert (second["status"] == "completed").all() and (second["attempts"] == 0).all()
    assert second["cost_spent"].isna().all() and (second["cost_estimated"] == 0).all()  # unpaid
    assert second["video_url"].tolist() == first["video_url"].tolist()
    source = str((tmp_path / "a.parquet").absolute())
    assert second["reused_from"].tolist() == [f"{source}#{k}" for k in first["key"]]
    # durable: the checkpoint says so when read back, and a resume keeps it
    stored = videobatch.results(tmp_path / "b.parquet")
    assert stored["reused_from"].tolist() == second["reused_from"].tolist()
    assert (run(FIVE, tmp_path / "b.parquet")["status"] == "completed").all() and paid() == 5
    # reused rows are not written back: the entries still name the run that made the clips
    assert {e.checkpoint for e in cache().entries()} == {source}


def test_without_reuse_nothing_is_reused_nor_remembered(tmp_path):
    run(FIVE, tmp_path / "a.parquet", reuse=False)
    assert not cache().path.exists()
    run(FIVE, tmp_path / "b.parquet")
    assert paid() == 10
    df = run(FIVE, tmp_path / "c.parquet", reuse=False)
    assert paid() == 15 and "reused_from" not in df.columns


def test_row_keys_ids_other_columns_and_order_play_no_part(tmp_path):
    run(FIVE, tmp_path / "a.parquet")
    other = pd.DataFrame({"id": [f"clip-{i}" for i in range(5)], "prompt": FIVE[::-1],
                          "campaign": "spring", "duration": "5s"})  # the default, spelled out
    df = run(other, tmp_path / "b.parquet")
    assert paid() == 5 and df["reused_from"].notna().all()


@pytest.mark.parametrize("change", [{"duration": 10}, {"mode": "pro"}, {"model": "local-v2"},
                                    {"seed": 7}, {"aspect_ratio": "9:16"}],
                         ids=lambda c: next(iter(c)))
def test_a_changed_setting_pays(tmp_path, change):
    run(FIVE, tmp_path / "a.parquet")
    plan = videobatch.plan(FIVE, "local", checkpoint=tmp_path / "b.parquet", reuse=True, **LOCAL,
                           **change)
    assert plan.paid == 5 and not plan.reused
    df = run(FIVE, tmp_path / "b.parquet", **change)
    assert paid() == 10 and "reused_from" not in df.columns


def test_another_provider_setting_pays(tmp_path):
    run(FIVE, tmp_path / "a.parquet")
    videobatch.run(FIVE, "local", checkpoint=tmp_path / "b.parquet", progress=False, reuse=True,
                   latency=0.01, render=False, seconds=3)  # the local provider's clip length
    assert paid() == 10


def _age(**change: Any) -> None:
    """Rewrite every cache entry with ``change`` (an expired URL, a file gone)."""
    store = cache()
    store.put([e._replace(**change) for e in store.entries()])


def test_an_expired_url_without_a_downloaded_file_pays(tmp_path):
    run(FIVE, tmp_path / "a.parquet")
    _age(expires_at=time.time() - 60)
    df = run(FIVE, tmp_path / "b.parquet")
    assert paid() == 10 and "reused_from" not in df.columns


def test_a_url_about_to_expire_is_not_handed_out(tmp_path):
    run(FIVE, tmp_path / "a.parquet")
    _age(expires_at=time.time() + 60)  # valid for a minute more: too short to use it
    run(FIVE, tmp_path / "b.parquet")
    assert paid() == 10


def test_an_expired_url_with_its_downloaded_file_reuses_the_file(tmp_path):
    first = run(FIVE, tmp_path / "a.parquet", download=tmp_path / "clips")
    files = first["local_path"].tolist()
    assert all(Path(f).is_file() for f in files)
    assert sorted(e.local_path for e in cache().entries()) == sorted(files)
    _age(expires_at=time.time() - 60)

    plan = videobatch.plan(FIVE, "local", checkpoint=tmp_path / "b.parquet", reuse=True, **LOCAL)
    assert plan.paid == 0 and len(plan.reused) == 5
    df = run(FIVE, tmp_path / "b.parquet")
    assert paid() == 5
    assert df["video_url"].tolist() == [Path(f).as_uri() for f in files]  # the result is the file
    assert df["local_path"].tolist() == files and df["expires_at"].isna().all()

    Path(files[0]).unlink()  # gone: that row pays again, the others still reuse
    df = run(FIVE, tmp_path / "c.parquet", download=tmp_path / "more")
    assert paid() == 6 and df["reused_from"].notna().sum() == 4
    assert all(Path(f).is_file() for f in df["local_path"])  # copied from the files, or made


def test_rows_the_checkpoint_sent_are_never_taken_from_the_cache(tmp_path):
    run(FIVE, tmp_path / "a.parquet")
    provider = get_provider("local", **LOCAL)
    providers = Providers(provider)
    jobs = [Job(f"k{i}", i, VideoRequest(prompt=p, model="local-v1")) for i, p in enumerate(FIVE)]
    for job, state in zip(jobs, State, strict=False):  # one row in each of the first five states
        job.state = state
    hits = find(jobs, providers, RunSettings(), cache())
    assert set(hits) == {"k0"}  # the pending one only
    hits = find(jobs, providers, RunSettings(resume_cancelled=True), cache())
    assert set(hits) == {"k0"}  # (the cancelled row is k5: none here)


def test_a_resumed_cancelled_row_is_reused(tmp_path):
    run(FIVE, tmp_path / "a.parquet")
    batch = videobatch.Batch(FIVE, "local", checkpoint=tmp_path / "b.parquet", progress=False,
                             reuse=True, **LOCAL)
    for job in batch.jobs[:2]:
        batch.store.append(job.transition(State.CANCELLED))
    batch.store.sync()
    batch.store.release()  # type: ignore[attr-defined]
    df = run(FIVE, tmp_path / "b.parquet")
    assert paid() == 5 and df["reused_from"].notna().all()


def test_a_local_image_counts_by_its_content(tmp_path):
    provider = get_provider("local", **LOCAL)
    one, two, same = tmp_path / "one.png", tmp_path / "two.png", tmp_path / "copy.png"
    one.write_bytes(b"first image")
    two.write_bytes(b"second image")
    same.write_bytes(b"first image")
    digests = ImageDigests()

    def key(image: Path) -> str | None:
        return request_key(provider, VideoRequest(prompt="a fox", image=str(image)), digests)

    assert key(one) == key(same) != key(two)
    before = key(one)
    time.sleep(0.01)
    one.write_bytes(b"first image, edited")
    assert key(one) != before
    assert key(tmp_path / "gone.png") is not None  # not a file: its text is the content
    url = request_key(provider, VideoRequest(prompt="a fox", image="https://example.com/a.png"))
    assert url != request_key(provider, VideoRequest(prompt="a fox", image="https://example.com/b.png"))


def test_the_fast_keys_are_the_keys(tmp_path):
    """``Keys`` (one key text per shape, the prompt spelled in) gives ``request_key``'s keys."""
    image = tmp_path / "still.png"
    image.write_bytes(b"png")
    kling = get_provider("kling", base_url="http://127.0.0.1:9")
    requests = [VideoRequest(prompt=p, **given) for p in ("a fox", 'quote " and \\ back', "émoji 🎬\n",
                                                          "x" * 300, "\x00")
                for given in ({}, {"duration": 10}, {"options": {"mode": "std"}}, {"seed": 0},
                              {"image": str(image)}, {"model": "kling-v2-5-turbo", "audio": False})]
    keys = Keys()
    for provider in (get_provider("local", **LOCAL), kling):
        for request in requests:
            assert keys.key(provider, request) == request_key(provider, request)
    assert len({keys.key(kling, r) for r in requests}) == len(requests)


# ---------------------------------------------------------------------- the cache itself
def test_two_processes_write_the_cache_at_once(tmp_path):
    """Two runs (say two notebooks) of different tables finish rows into one cache at once."""
    procs = []
    for name in ("left", "right"):
        csv = tmp_path / f"{name}.csv"
        pd.DataFrame({"prompt": [f"{name} {i}" for i in range(30)]}).to_csv(csv, index=False)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "videobatch", str(csv), "--reuse", "-q", "-P", "latency=0.01",
             "-P", "render=false", "-P", "max_parallel=10"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "cache" not in err  # no write failed
    entries = cache().entries()
    assert len(entries) == 60 and len({e.key for e in entries}) == 60


def test_many_writers_of_one_cache_lose_nothing(tmp_path):
    script = (
        "import sys, time\n"
        "from videobatch._cache import Entry, ResultCache\n"
        "c = ResultCache.open(sys.argv[1]); who = sys.argv[2]\n"
        "for n in range(40):\n"
        "    c.put([Entry(f'{who}-{n}-{i}', 'local', 'm', 'file:///x.mp4', None, None, None, None,"
        " None, 0.05, None, f'{n}-{i}', who, None, None, time.time()) for i in range(5)])\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c"), str(who)],
                              stderr=subprocess.PIPE, text=True) for who in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert len(ResultCache(tmp_path / "c").entries()) == 4 * 40 * 5


def test_the_cache_lives_where_it_is_told(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDEOBATCH_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_dir() == tmp_path / "xdg" / "videobatch"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_dir() == tmp_path / "home" / ".cache" / "videobatch"
    monkeypatch.setenv("VIDEOBATCH_CACHE_DIR", str(tmp_path / "env"))
    run(FIVE, tmp_path / "a.parquet", reuse_dir=tmp_path / "given")
    assert ResultCache(tmp_path / "given").path.is_file()
    assert not (tmp_path / "env").exists()
    with pytest.raises(ConfigError, match="without reuse=True"):
        run(FIVE, tmp_path / "b.parquet", reuse=False, reuse_dir=tmp_path / "given")


def test_a_cache_that_cannot_be_written_stops_the_run_before_it_pays(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    where = blocker / "cache"
    with pytest.raises(ConfigError, match=r"cannot be written.*--reuse-dir.*Nothing was submitted"):
        run(FIVE, tmp_path / "a.parquet", reuse_dir=where)
    assert paid() == 0 and not (tmp_path / "a.parquet").exists()
    plan = videobatch.plan(FIVE, "local", checkpoint=tmp_path / "a.parquet", reuse=True,
                           reuse_dir=where, **LOCAL)
    assert plan.paid == 5 and any("cannot be written" in n for n in plan.notes)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.sqlite3").write_bytes(b"this is not a database, it is garbage" * 100)
    with pytest.raises(ConfigError, match=r"results\.sqlite3 cannot be written"):
        run(FIVE, tmp_path / "a.parquet", reuse_dir=broken)
    assert paid() == 0

    csv = tmp_path / "p.csv"
    pd.DataFrame({"prompt": FIVE}).to_csv(csv, index=False)
    done = subprocess.run([sys.executable, "-m", "videobatch", str(csv), "-q", "--reuse-dir",
                           str(where), "-P", "latency=0.01"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "cannot be written" in done.stderr and paid() == 0


def test_a_cache_that_breaks_during_the_run_costs_no_result(tmp_path, caplog):
    where = tmp_path / "cache"
    batch = videobatch.Batch(FIVE, "local", checkpoint=tmp_path / "a.parquet", progress=False,
                             reuse=True, reuse_dir=where, **LOCAL)
    for item in where.iterdir():  # the folder goes away after the run opened it
        item.unlink()
    where.rmdir()
    where.write_text("a file now")
    df = batch.wait()
    assert (df["status"] == "completed").all() and paid() == 5
    assert "could not be written (unable to open database file)" in caplog.text
    assert "not remembered for reuse" in caplog.text


# ---------------------------------------------------------------------- the command line
def test_the_command_line_reuses_and_its_dry_run_says_so(tmp_path):
    csv = tmp_path / "p.csv"
    pd.DataFrame({"prompt": FIVE}).to_csv(csv, index=False)
    fast = ["-q", "-P", "latency=0.01", "-P", "render=false", "--reuse"]
    cli = [sys.executable, "-m", "videobatch", str(csv), *fast]
    assert subprocess.run(cli, capture_output=True, timeout=120).returncode == 0 and paid() == 5
    other = [*cli, "--checkpoint", str(tmp_path / "other.parquet")]
    dry = subprocess.run([*other, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "5 rows valid; 0 would be submitted" in dry.stdout
    assert "5 made by an earlier run (the result cache): reused, not paid (saves about $0.25)" in dry.stdout
    done = subprocess.run(other, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "5/5 completed" in done.stdout and paid() == 5


def test_retry_reuses_a_failed_row_made_elsewhere_since(tmp_path):
    broken = tmp_path / "broken.parquet"
    failed = run(FIVE, broken, failure_rate=1.0, reuse=False)
    assert (failed["status"] == "failed").all() and paid() == 5
    run(FIVE, tmp_path / "good.parquet")  # the same requests, made well elsewhere
    assert paid() == 10
    retry = [sys.executable, "-m", "videobatch", "retry", str(broken), "-q", "-P", "latency=0.01",
             "-P", "render=false", "--reuse"]
    dry = subprocess.run([*retry, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert "0 would be submitted" in dry.stdout and "5 made by an earlier run" in dry.stdout
    done = subprocess.run(retry, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert paid() == 10
    assert videobatch.results(broken)["reused_from"].notna().all()


# ---------------------------------------------------------------------- a real provider's wire
def test_kling_second_run_pays_nothing_and_no_secret_reaches_the_cache(tmp_path):
    from videobatch.testing import SimConfig, running_server

    fast = {"first_poll": 0.15, "poll_interval": 0.05, "max_poll_interval": 0.5, "max_rps": 100}
    rows = [f"scene {i}: a lighthouse" for i in range(6)]
    with running_server(latency=0.2) as server:
        options = {"base_url": server.url, "access_key": SimConfig.access_key,
                   "secret_key": SimConfig.secret_key, "progress": False, "reuse": True, **fast}
        first = videobatch.run(rows, "kling", checkpoint=tmp_path / "a.parquet", **options)
        assert server.counters()["accepted"] == 6
        second = videobatch.run(rows, "kling", checkpoint=tmp_path / "b.parquet", **options)
        assert server.counters()["accepted"] == 6  # nothing paid
        assert second["video_url"].tolist() == first["video_url"].tolist()
        # the model's default mode spelled out is the same request; another duration is not
        videobatch.run(rows, "kling", checkpoint=tmp_path / "c.parquet", mode="pro", **options)
        assert server.counters()["accepted"] == 6
        videobatch.run(rows, "kling", checkpoint=tmp_path / "d.parquet", duration=10, **options)
        assert server.counters()["accepted"] == 12
    stored = b"".join(p.read_bytes() for p in default_dir().iterdir() if p.is_file())
    for secret in (SimConfig.access_key, SimConfig.secret_key):
        assert secret.encode() not in stored
    assert os.path.getsize(cache().path) > 0
