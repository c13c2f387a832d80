"""Downloads against a real loopback server: every fault detected, nothing partial under a final name."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

import videobatch
from outputs_server import running
from videobatch._events import Event
from videobatch._inputs import load_prompts
from videobatch._jobs import Job, RowSnapshot, State
from videobatch.delivery.downloads import Downloader
from videobatch.delivery.transfer import _status_error, check_container
from videobatch.providers.local.render import render_clip
from videobatch.request import VideoRequest


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = render_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", "a lighthouse at dusk",
                       seconds=1.0, fps=12)
    return path.read_bytes()


@pytest.fixture
def server() -> Any:
    with running() as s:
        yield s


class Context:
    """Stands in for RunContext: records annotations like the runner does."""

    run_id = "test-run"

    def __init__(self, jobs: list[Job] | None = None, *, listed: bool = False) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.jobs = {job.key: job for job in jobs or ()}
        self.listed = listed  # whether rows() lists them (a batch run) or not (service mode)

    def rows(self, states: Any = None) -> list[RowSnapshot]:
        return [job.snapshot() for job in self.jobs.values()
                if self.listed and (states is None or job.state in states)]

    def annotate(self, row: RowSnapshot, **extras: Any) -> RowSnapshot:
        job = self.jobs[row.key]  # the live row, as the runner keeps it
        job.annotate(**extras)
        self.records.append((job.key, extras))
        return job.snapshot()


def done_job(key: str, url: str, *, index: int = 0, expires_at: float | None = None) -> Job:
    return Job(key=key, index=index, request=VideoRequest(prompt=key), state=State.COMPLETED,
               video_url=url, expires_at=expires_at)


def download(dl: Downloader, *jobs: Job, context: Context | None = None,
             cancel_when: Callable[[], bool] | None = None) -> Context:
    ctx = context or Context()
    ctx.jobs.update({job.key: job for job in jobs})

    async def go() -> None:
        dl.bind(ctx)
        for job in jobs:
            dl.schedule(job.snapshot())
        if cancel_when is not None:  # the run is cancelled once it holds (or after 5 s)
            for _ in range(500):
                if cancel_when():
                    break
                await asyncio.sleep(0.01)
        await dl.drain(cancelled=cancel_when is not None)

    asyncio.run(go())
    return ctx


def fast(directory: Path, **kw: Any) -> Downloader:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("max_attempts", 3)
    return Downloader(directory, **kw)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file())


def test_download_is_verified_and_recorded(tmp_path, server, clip):
    job = done_job("row-1", server.add("a.mp4", clip))
    dl = fast(tmp_path / "out")
    download(dl, job)
    final = tmp_path / "out" / "row-1.mp4"
    assert final.read_bytes() == clip
    assert job.extras["local_path"] == str(final)
    assert job.extras["bytes"] == len(clip)
    assert job.extras["sha256"] == hashlib.sha256(clip).hexdigest()
    assert job.extras["download_error"] is None
    assert Path(job.extras["thumbnail"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert leftovers(tmp_path / "out") == ["row-1.mp4", "row-1.png"]
    assert dl.summary.downloaded == ["row-1"]


@pytest.mark.parametrize("fault", ["truncate", "short_length", "html"])
def test_bad_bodies_are_detected_and_never_land_under_the_final_name(tmp_path, server, clip, fault):
    job = done_job("r", server.add("v.mp4", clip, fault=fault))
    ctx = download(fast(tmp_path / "out"), job)
    assert not (tmp_path / "out" / "r.mp4").exists()
    assert job.extras["local_path"] is None
    error = job.extras["download_error"]
    assert error.startswith("gave up after 3 attempts")
    expected = {"truncate": "interrupted", "short_length": "truncated", "html": "not a readable video"}
    assert expected[fault] in error, error
    assert len(server.seen("GET")) == 3
    assert ctx.records[-1][1]["download_error"] == error
    # At most a resumable .part under another name; never the final name.
    assert all(name.endswith((".part", ".part.json")) for name in leftovers(tmp_path / "out"))


@pytest.mark.parametrize("status", ["404", "410"])
def test_expired_url_is_a_permanent_failure_with_a_clear_message(tmp_path, server, clip, status):
    job = done_job("old", server.add("gone.mp4", clip, fault=status), expires_at=time.time() - 60)
    dl = fast(tmp_path / "out")
    download(dl, job)
    error = job.extras["download_error"]
    assert f"HTTP {status}" in error and "expired" in error and "generate the row again" in error
    assert len(server.seen("GET")) == 1  # not retried: it cannot get better
    assert dl.summary.expired == ["old"] and dl.summary.failed[0][0] == "old"
    assert leftovers(tmp_path / "out") == []


def test_transient_server_error_is_retried(tmp_path, server, clip):
    job = done_job("r", server.add("v.mp4", clip, fault="503", times=2))
    download(fast(tmp_path / "out"), job)
    assert (tmp_path / "out" / "r.mp4").read_bytes() == clip
    assert [s.status for s in server.seen("GET")] == [503, 503, 200]


def test_interrupted_download_resumes_with_range(tmp_path, server, clip):
    job = done_job("r", server.add("v.mp4", clip, fault="truncate", times=1))
    download(fast(tmp_path / "out"), job)
    assert (tmp_path / "out" / "r.mp4").read_bytes() == clip
    first, second = server.seen("GET")
    assert "Range" not in first.headers and first.status == 200
    assert second.headers["Range"] == f"bytes={len(clip) // 2}-" and second.status == 206
    assert second.headers["If-Range"].startswith('"')
    assert job.extras["sha256"] == hashlib.sha256(clip).hexdigest()


def test_server_without_range_support_restarts_cleanly(tmp_path, server, clip):
    url = server.add("v.mp4", clip, fault="truncate", times=1)
    job = done_job("r", url)
    download(fast(tmp_path / "out", max_attempts=1), job)  # first attempt cut: a .part remains
    assert (tmp_path / "out" / "r.mp4.part").exists() and not (tmp_path / "out" / "r.mp4").exists()
    server.add("v.mp4", clip, fault="no_range")
    download(fast(tmp_path / "out"), job)
    assert (tmp_path / "out" / "r.mp4").read_bytes() == clip
    assert server.seen("GET")[-1].status == 200
    assert leftovers(tmp_path / "out") == ["r.mp4", "r.png"]


def test_cancelled_download_leaves_no_final_file_and_resumes_next_time(tmp_path, server, clip):
    server.state.stall = 3.0
    job = done_job("r", server.add("v.mp4", clip, fault="stall", times=1))
    part = tmp_path / "out" / "r.mp4.part"
    cancelled: list[float] = []

    def half_on_disk() -> bool:  # then the server stalls 3 s
        if part.exists() and part.stat().st_size >= len(clip) // 2:
            cancelled.append(time.monotonic())
        return bool(cancelled)

    # Cancelled once the first half is on disk, not after a fixed sleep (which a loaded machine
    # may spend before the first byte arrives).
    download(fast(tmp_path / "out"), job, cancel_when=half_on_disk)
    assert cancelled and time.monotonic() - cancelled[0] < 2.5  # abandoned mid-stall promptly
    assert not (tmp_path / "out" / "r.mp4").exists()
    assert part.stat().st_size == len(clip) // 2
    download(fast(tmp_path / "out"), job)
    assert (tmp_path / "out" / "r.mp4").read_bytes() == clip
    assert server.seen("GET")[-1].status == 206


def test_existing_verified_file_is_not_downloaded_again(tmp_path, server, clip):
    job = done_job("r", server.add("v.mp4", clip))
    download(fast(tmp_path / "out"), job)
    assert len(server.seen("GET")) == 1
    again = fast(tmp_path / "out")
    download(again, job)
    assert len(server.seen("GET")) == 1 and again.summary.skipped == ["r"]
    # A damaged file (same size, bytes cut in the middle) is fetched again.
    path = tmp_path / "out" / "r.mp4"
    path.write_bytes(clip[:200] + b"\0" * (len(clip) - 200))
    download(fast(tmp_path / "out"), job)
    assert path.read_bytes() == clip and len(server.seen("GET")) == 2


def test_file_urls_are_copied_and_verified(tmp_path, clip):
    source = tmp_path / "src.mp4"
    source.write_bytes(clip)
    job = done_job("r", source.as_uri())
    download(fast(tmp_path / "out"), job)
    assert (tmp_path / "out" / "r.mp4").read_bytes() == clip
    missing = done_job("m", (tmp_path / "nope.mp4").as_uri())
    download(fast(tmp_path / "out"), missing)
    assert "does not exist" in missing.extras["download_error"]


def test_names_from_a_template_are_safe_and_distinct(tmp_path):
    frame = load_prompts([{"prompt": "a", "team": "video/ops"}, {"prompt": "b", "team": "video/ops"},
                          {"prompt": "c", "team": "../../etc"}]).frame
    dl = Downloader(tmp_path, name_template="{team}/{row:03d}", frame=frame)
    jobs = [done_job(f"k{i}", "http://x/v.mp4?sig=1", index=i) for i in range(3)]
    names = [dl.target(j).relative_to(tmp_path).as_posix() for j in jobs]
    assert names == ["video_ops/001.mp4", "video_ops/002.mp4", "_.._etc/003.mp4"]  # stays inside
    same = Downloader(tmp_path, name_template="{team}", frame=frame)
    assert [same.target(j).name for j in jobs[:2]] == ["video_ops.mp4", "video_ops-k1.mp4"]
    (tmp_path / "video_ops.mp4").write_bytes(b"another row's video, from an earlier run")
    later = Downloader(tmp_path, name_template="{team}", frame=frame)
    assert later.target(jobs[1]).name == "video_ops-k1.mp4"  # not overwritten
    assert Downloader(tmp_path, frame=frame).target(jobs[0]).name == "k0.mp4"
    with pytest.raises(videobatch.ConfigError, match=r"'teem'.*not a column"):
        Downloader(tmp_path, name_template="{teem}", frame=frame)


def test_downloads_happen_during_the_run_and_join_the_results(tmp_path):
    prompts = load_prompts([{"prompt": f"a boat number {i}", "crew": f"c{i}"} for i in range(4)])
    dl = Downloader(tmp_path / "videos", frame=prompts.frame, name_template="{crew}")
    order: list[str] = []

    def watch(event: Event) -> None:
        if event.kind == "transition" and event.new is State.COMPLETED:
            order.append("completed")
        elif event.kind == "annotate" and event.job is not None and event.job.extras.get("local_path"):
            order.append("downloaded")

    df = videobatch.run(prompts, "local", checkpoint=tmp_path / "run.parquet", latency=0.15,
                        max_parallel=1, progress=False, observers=[dl, watch])
    assert list(df["status"]) == ["completed"] * 4
    assert order.index("downloaded") < len(order) - 1 - order[::-1].index("completed")
    for _, row in df.iterrows():
        path = Path(row["local_path"])
        assert path.name == f"{row['crew']}.mp4"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
        assert row["bytes"] == path.stat().st_size and Path(row["thumbnail"]).exists()
        check_container(path)
    stored = videobatch.results(tmp_path / "run.parquet")
    assert list(stored["local_path"]) == list(df["local_path"])


def test_rows_finished_before_the_run_are_caught_up_when_the_context_lists_jobs(tmp_path, server, clip):
    jobs = [done_job("a", server.add("a.mp4", clip)), done_job("b", server.add("b.mp4", clip), index=1),
            Job(key="c", index=2, request=VideoRequest(prompt="c"))]  # pending: nothing to fetch
    download(fast(tmp_path / "out"), context=Context(jobs, listed=True))
    assert (tmp_path / "out" / "a.mp4").exists() and (tmp_path / "out" / "b.mp4").exists()
    assert "local_path" not in jobs[2].extras


def test_retry_after_as_an_http_date_is_read_by_the_one_parser():
    soon = httpx.Response(503, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    assert 25 <= (_status_error(soon, "https://cdn.example/v.mp4").retry_after or 0) <= 30
    assert _status_error(httpx.Response(503, headers={"Retry-After": "7"}), "https://x/v").retry_after == 7
    assert _status_error(httpx.Response(503, headers={"Retry-After": "soon"}), "https://x/v").retry_after is None
