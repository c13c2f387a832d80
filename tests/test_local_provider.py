"""The offline ``local`` provider behaves like a durable hosted account, faults included."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from videobatch.errors import (
    ConfigError,
    KeyAlreadyUsed,
    NotFoundError,
    ProviderError,
    RejectedError,
    SlotsBusy,
    TransientError,
)
from videobatch.providers import TaskState, get_provider
from videobatch.providers.local import (
    LocalProvider,
    read_submissions,
    submission_counts,
    task_id_for,
)
from videobatch.providers.local.render import probe
from videobatch.request import VideoRequest

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def req(prompt: str = "a lighthouse at dusk", **kw: Any) -> VideoRequest:
    return VideoRequest(prompt=prompt, **kw)


class Clock:
    """A hand-driven clock for the simulated server (starts at the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def provider(root: Path, clock: Clock | None = None, **options: Any) -> LocalProvider:
    options.setdefault("jitter", 0)
    p = LocalProvider(root=root, **options)
    if clock is not None:
        p._clock = clock
    return p


def path_of(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(url2pathname(parsed.path))


def outcomes(root: Path) -> list[str]:
    return [e["outcome"] for e in read_submissions(root)]


# -- lifecycle -----------------------------------------------------------------------------------


def test_task_goes_queued_running_succeeded_with_a_real_mp4(tmp_path: Path):
    clock = Clock()
    p = provider(tmp_path, clock, latency=1.0, seconds=1, fps=6)

    async def scenario() -> None:
        st = await p.submit(req(aspect_ratio="9:16"), "row-1")
        assert st.state is TaskState.QUEUED
        assert st.task_id == task_id_for("row-1")
        assert st.idempotency_key == "row-1"
        assert (await p.status(st.task_id)).state is TaskState.QUEUED
        clock.advance(0.05)
        assert (await p.status(st.task_id)).state is TaskState.QUEUED  # first 10 %
        clock.advance(0.5)
        assert (await p.status(st.task_id)).state is TaskState.RUNNING
        clock.advance(0.5)
        done = await p.status(st.task_id)
        assert done.state is TaskState.SUCCEEDED
        assert done.finished_at == pytest.approx(st.created_at + 1.0)  # type: ignore[operator]
        assert done.expires_at == pytest.approx(st.created_at + 30 * 24 * 3600)  # type: ignore[operator]
        (video,) = done.videos
        assert video.id == st.task_id
        assert video.duration == 5.0  # what was asked for
        info = probe(path_of(video.url))
        assert (info["width"], info["height"]) == (54, 96)
        assert info["frames"] == 6
        assert await p.status(st.task_id) is done  # cached, rendered once
        await p.aclose()

    run(scenario())
    assert (tmp_path / "videos" / f"{task_id_for('row-1')}.mp4").is_file()
    assert json.loads((tmp_path / "tasks" / f"{task_id_for('row-1')}.json").read_text())[
        "request"
    ]["aspect_ratio"] == "9:16"


def test_real_time_end_to_end(tmp_path: Path):
    p = provider(tmp_path, latency=0.05, render=True)

    async def scenario() -> None:
        st = await p.submit(req(), "k")
        await asyncio.sleep(0.08)
        done = await p.status(st.task_id)
        assert done.state is TaskState.SUCCEEDED
        assert path_of(done.videos[0].url).is_file()

    run(scenario())


def test_concurrent_status_calls_render_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import videobatch.providers.local.provider as local

    renders: list[Path] = []
    real = local.render_clip

    def counting(path: Path, *a: Any, **kw: Any) -> Path:
        renders.append(path)
        time.sleep(0.05)
        return real(path, *a, **kw)

    monkeypatch.setattr(local, "render_clip", counting)
    clock = Clock()
    p = provider(tmp_path, clock, latency=0.1)

    async def scenario() -> None:
        st = await p.submit(req(), "k")
        clock.advance(1)
        answers = await asyncio.gather(*(p.status(st.task_id) for _ in range(5)))
        assert {a.state for a in answers} == {TaskState.SUCCEEDED}
        assert len({a.videos[0].url for a in answers}) == 1

    run(scenario())
    assert len(renders) == 1


def test_render_false_points_at_a_shared_placeholder(tmp_path: Path):
    p = provider(tmp_path, latency=0, render="false")

    async def scenario() -> list[str]:
        urls = []
        for key in ("a", "b"):
            st = await p.submit(req(), key)
            urls.append((await p.status(st.task_id)).videos[0].url)
        return urls

    urls = run(scenario())
    assert urls[0] == urls[1]
    assert path_of(urls[0]).name == "placeholder.mp4"
    assert [f.name for f in (tmp_path / "videos").iterdir()] == ["placeholder.mp4"]


# -- lookup and idempotency ----------------------------------------------------------------------


def test_find_by_key_and_unknown_tasks(tmp_path: Path):
    p = provider(tmp_path, latency=5)

    async def scenario() -> None:
        st = await p.submit(req(), "row-7")
        found = await p.find("row-7")
        assert found is not None
        assert found.task_id == st.task_id
        assert found.idempotency_key == "row-7"
        assert await p.find("never-submitted") is None
        with pytest.raises(NotFoundError):
            await p.status(task_id_for("never-submitted"))
        with pytest.raises(NotFoundError):
            await p.status("../../etc/passwd")

    run(scenario())


def test_duplicate_submit_returns_the_same_task_and_is_logged(tmp_path: Path):
    p = provider(tmp_path, latency=5)

    async def scenario() -> None:
        first = await p.submit(req(), "row-1")
        again = await p.submit(req(), "row-1")
        assert again.task_id == first.task_id
        assert again.created_at == first.created_at

    run(scenario())
    assert outcomes(tmp_path) == ["accepted", "duplicate"]
    assert submission_counts(tmp_path) == {"row-1": 1}
    entry = read_submissions(tmp_path)[0]
    assert entry["task_id"] == task_id_for("row-1")
    assert entry["prompt"] == "a lighthouse at dusk"
    assert len(list((tmp_path / "tasks").iterdir())) == 1


def test_scan_lists_back_to_since_and_keeps_exact_keys_only(tmp_path: Path):
    clock = Clock()
    p = provider(tmp_path, clock, latency=5, max_parallel=100, render=False)

    async def submit_all() -> float:
        await p.submit(req(), "old")  # before the scan's window
        clock.advance(10)
        since = clock.now
        for key in ("row-1", "row-10", "row-2", "ROW-1"):
            await p.submit(req(), key)
            clock.advance(1)
        return since

    since = run(submit_all())
    later = provider(tmp_path, clock, latency=5, render=False)  # a new process: the listing is on disk
    result = run(later.scan({"row-1", "row-2", "old", "never-submitted"}, since))
    assert result is not None
    assert result.complete is True  # the whole account is on disk: the listing reaches past since
    assert set(result.found) == {"row-1", "row-2"}  # not row-10 or ROW-1, nor "old" (before since)
    for key, st in result.found.items():
        assert st.task_id == task_id_for(key)
        assert st.idempotency_key == key
        assert not st.state.done  # still generating, as the account's clock says
    assert run(later.scan({"old"}, since - 60)).found["old"].state is TaskState.SUCCEEDED
    assert run(later.scan([], since)) == run(later.scan(["nothing"], since))  # empty, complete
    assert submission_counts(tmp_path) == dict.fromkeys(["old", "row-1", "row-10", "row-2", "ROW-1"], 1)


def test_a_limited_listing_says_when_it_did_not_reach_since(tmp_path: Path):
    clock = Clock()
    p = provider(tmp_path, clock, latency=5, max_parallel=100, render=False, list_limit="2")
    start = clock.now
    for key in ("a", "b", "c"):  # listed newest first: c, b | a is beyond the limit
        run(p.submit(req(), key))
        clock.advance(1)

    short = run(p.scan({"a", "c"}, start))
    assert short is not None
    assert (set(short.found), short.complete) == ({"c"}, False)  # "a" may exist: proves nothing
    after_b = run(p.scan({"a", "c"}, start + 1.5))  # b, the last task listed, is older than since
    assert (set(after_b.found), after_b.complete) == ({"c"}, True)
    unlimited = provider(tmp_path, clock, latency=5, render=False)
    assert run(unlimited.scan({"a", "c"}, start)).found.keys() == {"a", "c"}


def test_a_refused_lookup_cannot_answer_but_the_listing_can(tmp_path: Path):
    p = provider(tmp_path, latency=5, lookup="refused", lost_answer_rate=1)
    since = time.time() - 1

    async def scenario() -> None:
        with pytest.raises(TransientError, match="answer lost"):
            await p.submit(req(), "k")  # paid, answer lost
        for key in ("k", "never-submitted"):  # the lookup says nothing, not even "not found"
            with pytest.raises(ProviderError) as info:
                await p.find(key)
            assert isinstance(info.value, RejectedError)
            assert not isinstance(info.value, NotFoundError)
            assert info.value.provider_code == "local-lookup-refused"
        # a blind resubmit is refused as a used key, since the provider cannot look the task up
        with pytest.raises(KeyAlreadyUsed):
            await p.submit(req(), "k")
        scanned = await p.scan(["k", "never-submitted"], since)
        assert scanned is not None
        assert scanned.complete is True
        assert list(scanned.found) == ["k"]
        assert scanned.found["k"].task_id == task_id_for("k")

    run(scenario())
    assert outcomes(tmp_path) == ["accepted", "duplicate"]
    assert submission_counts(tmp_path) == {"k": 1}


# -- faults --------------------------------------------------------------------------------------


def test_failure_rate_one_ends_failed(tmp_path: Path):
    clock = Clock()
    p = provider(tmp_path, clock, latency=0.1, failure_rate="1")

    async def scenario() -> None:
        st = await p.submit(req(), "k")
        clock.advance(0.2)
        done = await p.status(st.task_id)
        assert done.state is TaskState.FAILED
        assert done.message == "simulated generation failure"
        assert done.videos == ()

    run(scenario())
    assert not list((tmp_path / "videos").iterdir())


def test_failure_rate_is_deterministic_per_key(tmp_path: Path):
    clock = Clock()
    keys = [f"k{i}" for i in range(200)]

    async def failed(root: Path) -> set[str]:
        p = provider(root, clock, latency=0.1, failure_rate=0.3, max_parallel=1000, render=False)
        out = set()
        for k in keys:
            await p.submit(req(), k)
        clock.advance(1)
        for k in keys:
            st = await p.find(k)
            assert st is not None
            if st.state is TaskState.FAILED:
                out.add(k)
        return out

    a, b = run(failed(tmp_path / "a")), run(failed(tmp_path / "b"))
    assert a == b
    assert 30 < len(a) < 90


def test_reject_marker_raises_rejected(tmp_path: Path):
    p = provider(tmp_path, latency=0.1)

    async def scenario() -> None:
        with pytest.raises(RejectedError, match="content policy"):
            await p.submit(req("a scene [reject] here"), "bad")
        assert await p.find("bad") is None

    run(scenario())
    assert outcomes(tmp_path) == ["rejected"]
    assert submission_counts(tmp_path) == {}


def test_max_parallel_enforced_with_slots_busy(tmp_path: Path):
    clock = Clock()
    p = provider(tmp_path, clock, latency=10, max_parallel=2)

    async def scenario() -> None:
        await p.submit(req(), "a")
        clock.advance(1)
        await p.submit(req(), "b")
        with pytest.raises(SlotsBusy) as info:
            await p.submit(req(), "c")
        assert info.value.maybe_accepted is False
        assert info.value.retry_after == pytest.approx(9.0)
        # a duplicate of a running task is answered, not refused
        assert (await p.submit(req(), "a")).task_id == task_id_for("a")
        clock.advance(9.5)  # "a" finished, "b" still running
        assert (await p.submit(req(), "c")).state is TaskState.QUEUED
        with pytest.raises(SlotsBusy):
            await p.submit(req(), "d")

    run(scenario())
    assert outcomes(tmp_path) == [
        "accepted", "accepted", "slots_busy", "duplicate", "accepted", "slots_busy",
    ]
    assert p.limits.max_parallel == 2


def test_a_new_instance_sees_the_tasks_and_slots_of_an_earlier_one(tmp_path: Path):
    """A second LocalProvider on the same root stands for a new process after a crash."""
    clock = Clock()
    first = provider(tmp_path, clock, latency=10, max_parallel=3)
    run(first.submit(req(), "a"))
    run(first.submit(req(), "b"))
    del first  # "killed": nothing closed cleanly

    second = provider(tmp_path, clock, latency=10, max_parallel=3)

    async def scenario() -> None:
        found = await second.find("a")
        assert found is not None
        assert found.state is TaskState.QUEUED
        assert (await second.submit(req(), "b")).task_id == task_id_for("b")  # duplicate
        await second.submit(req(), "c")
        with pytest.raises(SlotsBusy):  # a and b still hold their slots
            await second.submit(req(), "d")

    run(scenario())
    assert submission_counts(tmp_path) == {"a": 1, "b": 1, "c": 1}


def test_live_instances_share_one_slot_count(tmp_path: Path):
    clock = Clock()
    one = provider(tmp_path, clock, latency=10, max_parallel=3)
    two = provider(tmp_path, clock, latency=10, max_parallel=3)

    async def scenario() -> None:
        await one.submit(req(), "a")
        await two.submit(req(), "b")  # two's first use
        await one.submit(req(), "c")  # made after two looked
        with pytest.raises(SlotsBusy):
            await two.submit(req(), "d")
        found = await two.find("c")
        assert found is not None

    run(scenario())


async def _attempts_until_accepted(p: LocalProvider, keys: list[str]) -> dict[str, int]:
    tries: dict[str, int] = {}
    for key in keys:
        for attempt in range(1, 30):
            try:
                await p.submit(req(), key)
            except TransientError as exc:
                refused = exc
            else:
                tries[key] = attempt
                break
            assert refused.maybe_accepted is False
            assert await p.find(key) is None  # nothing was created
    return tries


CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from videobatch.errors import SlotsBusy
    from videobatch.providers.local import LocalProvider
    from videobatch.request import VideoRequest

    root, prefix, n, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    in_accept = sys.argv[5] == "in_accept"

    async def main():
        p = LocalProvider(root=root, latency=30, max_parallel=5, render=False)
        log = p._log

        def dying_log(key, task_id, attempt, outcome, *args, **kw):
            if outcome == "accepted" and key == f"{prefix}{kill_after}":
                os.kill(os.getpid(), signal.SIGKILL)  # task linked, not yet logged
            log(key, task_id, attempt, outcome, *args, **kw)

        p._log = dying_log
        for i in range(n):
            if i == kill_after and not in_accept:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                await p.submit(VideoRequest(prompt="p"), f"{prefix}{i}")
            except SlotsBusy:
                pass

    asyncio.run(main())
""")


def spawn(
    root: Path, prefix: str, n: int, kill_after: int = -1, mode: str = "between"
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), prefix, str(n), str(kill_after), mode],
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_tasks_survive_a_killed_client_process(tmp_path: Path):
    child = spawn(tmp_path, "row-", 10, kill_after=3)
    assert child.wait(timeout=60) == -signal.SIGKILL
    p = provider(tmp_path, latency=30, max_parallel=5)

    async def scenario() -> None:
        for i in range(3):
            found = await p.find(f"row-{i}")
            assert found is not None
            assert found.state is TaskState.QUEUED
        assert await p.find("row-3") is None
        await p.submit(req(), "row-3")
        await p.submit(req(), "row-4")
        with pytest.raises(SlotsBusy):  # the dead process's three tasks still hold slots
            await p.submit(req(), "row-5")

    run(scenario())
    assert submission_counts(tmp_path) == {f"row-{i}": 1 for i in range(5)}
    assert not list((tmp_path / "tmp").iterdir())


def test_a_kill_between_accepting_and_logging_is_recovered(tmp_path: Path):
    child = spawn(tmp_path, "row-", 10, kill_after=2, mode="in_accept")
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert submission_counts(tmp_path) == {"row-0": 1, "row-1": 1}  # row-2 paid, not logged
    p = provider(tmp_path, latency=30, max_parallel=3)

    async def scenario() -> None:
        found = await p.find("row-2")  # first use repairs the log
        assert found is not None
        with pytest.raises(SlotsBusy):  # and row-2 holds its slot
            await p.submit(req(), "row-3")

    run(scenario())
    assert submission_counts(tmp_path) == {"row-0": 1, "row-1": 1, "row-2": 1}
    assert read_submissions(tmp_path)[-2]["recovered"] is True
    assert not list((tmp_path / "tmp").iterdir())


class Crash(BaseException):
    """Stands for the process dying at that line."""


@pytest.mark.parametrize("where", ["before_log", "before_slot"])
def test_recovery_logs_each_accepted_task_exactly_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
):
    clock = Clock()
    first = provider(tmp_path, clock, latency=10, max_parallel=2)
    real_log = first._log

    def crash_log(key: str, task_id: str, attempt: int | None, outcome: str, *a: Any, **k: Any):
        if outcome == "accepted" and where == "before_log":
            raise Crash
        real_log(key, task_id, attempt, outcome, *a, **k)

    def crash_settle(*a: Any) -> None:
        raise Crash

    monkeypatch.setattr(first, "_log", crash_log)
    if where == "before_slot":
        monkeypatch.setattr(first, "_settle", crash_settle)
    with pytest.raises(Crash):
        run(first.submit(req(), "k"))
    assert len(list((tmp_path / "tmp").iterdir())) == 1

    second = provider(tmp_path, clock, latency=10, max_parallel=2)
    found = run(second.find("k"))
    assert found is not None
    assert found.task_id == task_id_for("k")
    assert submission_counts(tmp_path) == {"k": 1}
    assert [e.get("recovered", False) for e in read_submissions(tmp_path)] == [
        where == "before_log"
    ]
    assert not list((tmp_path / "tmp").iterdir())
    assert [n.name.split(".")[1] for n in (tmp_path / "active").iterdir()] == [task_id_for("k")]
    third = provider(tmp_path, clock, latency=10, max_parallel=2)
    assert run(third.find("k")) is not None
    assert submission_counts(tmp_path) == {"k": 1}  # recovery is not repeated


def test_concurrent_processes_never_exceed_the_slots(tmp_path: Path):
    children = [spawn(tmp_path, f"p{j}-", 30) for j in range(3)]
    assert [c.wait(timeout=60) for c in children] == [0, 0, 0]
    assert sum(submission_counts(tmp_path).values()) == 5
    assert outcomes(tmp_path).count("slots_busy") == 85


def test_transient_errors_are_deterministic_and_retryable(tmp_path: Path):
    keys = [f"k{i}" for i in range(40)]
    p = provider(tmp_path, latency=5, transient_rate=0.5, max_parallel=1000)
    tries = run(_attempts_until_accepted(p, keys))
    assert len(tries) == 40  # every key got through eventually
    assert any(n > 1 for n in tries.values())  # some needed retries
    assert any(n == 1 for n in tries.values())
    assert submission_counts(tmp_path) == dict.fromkeys(keys, 1)
    log = read_submissions(tmp_path)
    assert sum(e["outcome"] == "transient" for e in log) == sum(tries.values()) - 40

    # the same keys fail on the same attempts in a fresh account
    q = provider(tmp_path / "again", latency=5, transient_rate=0.5, max_parallel=1000)
    assert run(_attempts_until_accepted(q, keys)) == tries


def test_lost_answer_creates_the_task_then_raises(tmp_path: Path):
    p = provider(tmp_path, latency=5, lost_answer_rate=1)

    async def scenario() -> None:
        with pytest.raises(TransientError, match="answer lost") as info:
            await p.submit(req(), "k")
        assert info.value.maybe_accepted is True
        found = await p.find("k")  # reconcile, as the runner must
        assert found is not None
        assert found.task_id == task_id_for("k")
        # a blind resubmit would not pay again either: it is answered as a duplicate
        assert (await p.submit(req(), "k")).task_id == found.task_id

    run(scenario())
    log = read_submissions(tmp_path)
    assert [e["outcome"] for e in log] == ["accepted", "duplicate"]
    assert log[0]["answer_lost"] is True
    assert submission_counts(tmp_path) == {"k": 1}


def test_lost_answer_rate_is_a_fraction(tmp_path: Path):
    p = provider(tmp_path, latency=0, lost_answer_rate=0.25, render=False, max_parallel=1000)

    async def scenario() -> int:
        lost = 0
        for i in range(200):
            try:
                await p.submit(req(), f"k{i}")
            except TransientError:
                lost += 1
        return lost

    lost = run(scenario())
    assert 25 < lost < 80
    assert len(submission_counts(tmp_path)) == 200


def test_submit_delay_is_spent(tmp_path: Path):
    p = provider(tmp_path, latency=0, render=False, submit_delay="0.05")
    t = time.perf_counter()
    run(p.submit(req(), "k"))
    assert time.perf_counter() - t >= 0.05


# -- options -------------------------------------------------------------------------------------


def test_string_options_are_coerced(tmp_path: Path):
    p = get_provider(
        "local", root=str(tmp_path), latency="0.5", jitter="0.1", failure_rate="0.2",
        max_parallel="7", render="no", seconds="1.5", fps="10", submit_delay="0",
        transient_rate="0", lost_answer_rate="0.0", fsync="yes", lookup=" Refused ", list_limit="3",
    )
    assert isinstance(p, LocalProvider)
    assert (p.latency, p.jitter, p.failure_rate) == (0.5, 0.1, 0.2)
    assert p.max_parallel == 7
    assert p.limits.max_parallel == 7
    assert p.limits.max_rps is None
    assert p.render is False
    assert p.fsync is True
    assert (p.lookup, p.list_limit) == ("refused", 3)
    assert (p.seconds, p.fps) == (1.5, 10)
    assert p.describe() == {"provider": "local", "seconds": 1.5, "fps": 10, "render": False}
    assert p.poll_hint.first_poll == pytest.approx(0.45)
    assert p.poll_hint.min_interval == pytest.approx(0.01)
    assert p.poll_hint.max_interval == pytest.approx(0.125)
    assert "local" in repr(p)
    assert str(tmp_path) in repr(p)


@pytest.mark.parametrize(
    ("option", "value"),
    [("latency", "fast"), ("max_parallel", "2.5"), ("max_parallel", 0), ("render", "maybe"),
     ("failure_rate", 1.5), ("jitter", -0.1), ("lookup", "sometimes"), ("list_limit", -1)],
)
def test_bad_options_are_config_errors(tmp_path: Path, option: str, value: object):
    with pytest.raises(ConfigError, match=option):
        get_provider("local", root=tmp_path, **{option: value})


def test_unknown_option_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="bad option"):
        get_provider("local", root=tmp_path, latnecy=1)


def test_default_root_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "env-root"))
    p = LocalProvider(latency=0, render=False)
    assert p.root == tmp_path / "env-root"
    run(p.submit(req(), "k"))
    assert submission_counts() == {"k": 1}
    assert not (tmp_path / "unused").exists()


def test_constructing_does_not_touch_the_disk(tmp_path: Path):
    LocalProvider(root=tmp_path / "acct")
    assert not (tmp_path / "acct").exists()


def test_submit_and_status_are_fast(tmp_path: Path):
    """A generous floor; the real figure (>10k cycles/s on tmpfs) is in the module's report."""
    p = provider(tmp_path, latency=0, render=False, max_parallel=1000)

    async def cycles(n: int) -> float:
        await p.status((await p.submit(req(), "warm")).task_id)
        t = time.perf_counter()
        for i in range(n):
            st = await p.submit(req(), f"k{i}")
            assert (await p.status(st.task_id)).state is TaskState.SUCCEEDED
        return n / (time.perf_counter() - t)

    assert run(cycles(500)) > 300
