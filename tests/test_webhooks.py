"""Webhooks against a real loopback receiver: one successful, signed delivery per row despite failures."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

import videobatch
from outputs_server import running
from videobatch._inputs import load_prompts
from videobatch.delivery.webhooks import WebhookNotifier, check_urls, sign, verify_signature

SECRET = "s3cret-for-tests"


@pytest.fixture
def server() -> Any:
    with running() as s:
        yield s


def notifier(url: str | None, frame: Any = None, **kw: Any) -> WebhookNotifier:
    kw.setdefault("backoff_base", 0.01)
    return WebhookNotifier(url, secret=SECRET, frame=frame, **kw)


def test_each_row_is_delivered_once_signed_after_injected_failures(tmp_path, server):
    server.fail_hooks = 2  # the first two attempts of every delivery get HTTP 500
    prompts = load_prompts([
        {"prompt": "a red kite", "team": "sky", "webhook_url": server.hook_url("special")},
        {"prompt": "a blue boat", "team": "sea", "webhook_url": ""},
        {"prompt": "a banned thing [reject]", "team": "sea", "webhook_url": None},
    ])
    hooks = notifier(server.hook_url("main"), prompts.frame)
    df = videobatch.run(prompts, "local", checkpoint=tmp_path / "run.parquet", latency=0.05,
                        render=False, progress=False, observers=[hooks])

    posts = server.seen("POST")
    ok = [p for p in posts if p.status == 200]
    assert len(posts) == 9 and len(ok) == 3
    bodies = {json.loads(p.body)["request_id"]: (p, json.loads(p.body)) for p in ok}
    assert set(bodies) == set(df["key"])
    assert Counter(p.headers["X-Videobatch-Delivery"] for p in posts) == Counter(
        {p.headers["X-Videobatch-Delivery"]: 3 for p in ok})
    for post in ok:
        assert verify_signature(SECRET, post.body, post.headers["X-Videobatch-Timestamp"],
                                post.headers["X-Videobatch-Signature"])
        assert post.headers["X-Videobatch-Attempt"] == "3"
    first = df.iloc[0]
    special, payload = bodies[first["key"]]
    assert special.path == "/hooks/special"  # the row's own URL wins
    assert payload["status"] == "completed" and payload["video_url"] == first["video_url"]
    assert payload["metadata"] == {"team": "sky"} and payload["prompt"] == "a red kite"
    assert payload["event"] == "video.completed" and payload["submitted_at"].endswith("Z")
    failed_post, failed = bodies[df.iloc[2]["key"]]
    assert failed_post.path == "/hooks/main"
    assert failed["status"] == "failed" and failed["error"] and failed["video_url"] is None
    assert list(df["webhook_status"]) == ["delivered"] * 3
    assert list(df["webhook_attempts"]) == [3, 3, 3]
    assert list(videobatch.results(tmp_path / "run.parquet")["webhook_status"]) == ["delivered"] * 3


def test_final_refusal_is_not_retried_and_is_recorded(server):
    server.fail_hooks, server.state.fail_status = 99, 410
    df = videobatch.run(["a cat"], "local", latency=0.05, render=False, progress=False,
                        observers=[notifier(server.hook_url())])
    assert len(server.seen("POST")) == 1
    assert df["webhook_status"][0] == "failed" and "HTTP 410" in df["webhook_error"][0]


def test_a_slow_receiver_never_holds_the_batch(server):
    server.state.hook_stall = 3.0
    started = time.monotonic()
    df = videobatch.run(["a cat", "a dog"], "local", latency=0.05, render=False, progress=False,
                        observers=[notifier(server.hook_url(), drain_timeout=0.3, timeout=10)])
    assert time.monotonic() - started < 2.5
    assert list(df["status"]) == ["completed", "completed"]
    assert list(df["webhook_status"]) == ["abandoned", "abandoned"]


def test_unreachable_receiver_gives_up_after_max_attempts():
    hooks = notifier("http://127.0.0.1:9/hook", max_attempts=2, timeout=1)
    df = videobatch.run(["a cat"], "local", latency=0.05, render=False, progress=False, observers=[hooks])
    assert df["webhook_status"][0] == "failed" and df["webhook_attempts"][0] == 2
    assert "ConnectError" in df["webhook_error"][0]


def test_signature_scheme():
    body, ts = b'{"a":1}', int(time.time())
    good = sign(SECRET, body, ts)
    assert good.startswith("sha256=") and len(good) == 7 + 64
    assert verify_signature(SECRET, body, str(ts), good)
    assert not verify_signature(SECRET, body + b" ", str(ts), good)  # tampered body
    assert not verify_signature("other", body, str(ts), good)  # wrong secret
    old = ts - 3600
    assert not verify_signature(SECRET, body, str(old), sign(SECRET, body, old))  # replayed
    assert not verify_signature(SECRET, body, None, good)


def test_secret_and_bad_urls():
    hooks = WebhookNotifier("https://example.invalid/hook", secret=SECRET)
    assert SECRET not in repr(hooks) and hooks.signed
    with pytest.raises(videobatch.ConfigError, match="http"):
        WebhookNotifier("ftp://example.invalid/hook")
    frame = load_prompts([{"prompt": "a", "webhook_url": "https://ok.example/h"},
                          {"prompt": "b", "webhook_url": "not a url"}, {"prompt": "c"}]).frame
    problems = check_urls(frame)
    assert [(p.row, p.column) for p in problems] == [(2, "webhook_url")]


def test_rows_that_ended_unnotified_are_caught_up_when_the_context_lists_jobs(server):
    import asyncio

    from videobatch._jobs import Job, State
    from videobatch.request import VideoRequest

    class Context:
        run_id = "r1"

        def __init__(self, jobs: list[Job]) -> None:
            self.jobs = {job.key: job for job in jobs}

        def rows(self, states: Any = None) -> list[Any]:
            return [job.snapshot() for job in self.jobs.values() if states is None or job.state in states]

        def annotate(self, row: Any, **extras: Any) -> Any:
            self.jobs[row.key].annotate(**extras)
            return self.jobs[row.key].snapshot()

    told = Job(key="told", index=0, request=VideoRequest(prompt="a"), state=State.COMPLETED)
    told.extras["webhook_event"] = "completed"
    untold = Job(key="untold", index=1, request=VideoRequest(prompt="b"), state=State.FAILED)
    running_row = Job(key="running", index=2, request=VideoRequest(prompt="c"), state=State.GENERATING)
    hooks = notifier(server.hook_url())

    async def go() -> None:
        hooks.bind(Context([told, untold, running_row]))
        await hooks.drain(False)

    asyncio.run(go())
    posts = server.seen("POST")
    assert [json.loads(p.body)["request_id"] for p in posts] == ["untold"]
    assert untold.extras["webhook_status"] == "delivered"
