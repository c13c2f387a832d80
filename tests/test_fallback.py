"""Fallback: rows their provider refuses for account or model reasons go, unpaid, to the next target.

Against the Kling- and fal-compatible test servers on loopback: Kling's balance runs out after 5
accepted rows and the rest complete on fal, each paid once; a model Kling refuses sends its rows to
fal without a paid duplicate; a row once accepted never moves, also across a cancel and resume.
Every row's fallback is checked against its target before anything is paid.
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import pytest

import videobatch
from fakes import ScriptedProvider
from videobatch.errors import AccountError, ConfigError, InputError
from videobatch.fallback import Target, parse_fallback
from videobatch.testing import SimConfig as KlingConfig
from videobatch.testing import fal_server
from videobatch.testing import running_server as kling_server
from videobatch.testing.fal_sim import SimConfig as FalConfig

FAST = {"first_poll": 0.1, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 200}
FAL_V26 = "fal:fal-ai/kling-video/v2.6/pro/text-to-video"


def kling(server: Any) -> dict[str, Any]:
    return {"base_url": server.url, "access_key": KlingConfig.access_key,
            "secret_key": KlingConfig.secret_key, **FAST, "max_parallel": 3}


def fal(server: Any) -> dict[str, Any]:
    return {"fal": {"base_url": server.url, "key": FalConfig.key, **FAST, "max_parallel": 3}}


def rows(n: int) -> list[str]:
    return [f"shot {i}: a lighthouse in fog" for i in range(n)]


def test_the_rest_complete_on_the_fallback_when_the_balance_runs_out(tmp_path):
    with kling_server(latency=0.2, max_tasks=5, max_parallel=3) as k, \
            fal_server.running_server(latency=0.2, max_parallel=3) as f:
        df = videobatch.run(rows(20), "kling", checkpoint=tmp_path / "run.parquet", progress=False,
                            fallback=FAL_V26, providers=fal(f), **kling(k))
        kc, fc = k.counters(), f.counters()
    assert (df["status"] == "completed").all(), df[["status", "error"]]
    used = df["provider_used"].value_counts().to_dict()
    assert used == {"kling": 5, "fal": 15}
    assert kc["accepted"] == 5 and kc["paid_duplicates"] == 0
    assert fc["accepted"] == 15 and fc["paid_duplicates"] == 0
    assert set(df.loc[df["provider_used"] == "fal", "model_used"]) == {FAL_V26.partition(":")[2]}


def test_without_a_fallback_the_refused_rows_wait_unpaid(tmp_path):
    with kling_server(latency=0.2, max_tasks=5, max_parallel=3) as k:
        with pytest.raises(AccountError) as stopped:
            videobatch.run(rows(10), "kling", progress=False, **kling(k))
        assert k.counters()["accepted"] == 5
    df = stopped.value.results
    assert df is not None and (df["status"] == "pending").sum() == 5


def test_a_model_the_primary_refuses_moves_its_rows_without_paying_twice(tmp_path):
    with kling_server(latency=0.2, allowed_models=["kling-v3"], max_parallel=3) as k, \
            fal_server.running_server(latency=0.2, max_parallel=3) as f:
        table = pd.DataFrame({"prompt": rows(12), "model": ["kling-v2-6", "kling-v3"] * 6})
        df = videobatch.run(table, "kling", progress=False, fallback=FAL_V26, providers=fal(f),
                            **kling(k))
        kc, fc = k.counters(), f.counters()
    assert (df["status"] == "completed").all(), df[["status", "error"]]
    assert (df.loc[df["model"] == "kling-v3", "provider_used"] == "kling").all()
    assert (df.loc[df["model"] == "kling-v2-6", "provider_used"] == "fal").all()
    assert kc["accepted"] == 6 and fc["accepted"] == 6
    assert kc["paid_duplicates"] == fc["paid_duplicates"] == 0


def test_rows_accepted_before_a_cancel_stay_where_they_were_paid(tmp_path):
    ckpt = tmp_path / "run.parquet"
    with kling_server(latency=0.6, max_tasks=4, max_parallel=3) as k, \
            fal_server.running_server(latency=0.6, max_parallel=3) as f:
        options = {"fallback": FAL_V26, "providers": fal(f), **kling(k)}
        batch = videobatch.Batch(rows(14), "kling", checkpoint=ckpt, progress=False, **options).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and f.counters()["accepted"] < 2:
            time.sleep(0.02)
        batch.cancel()
        first = batch.wait()  # rows not yet sent are cancelled: the cancel, not kling, stopped them
        df = videobatch.run(rows(14), "kling", checkpoint=ckpt, progress=False, **options)
        kc, fc = k.counters(), f.counters()
    assert (df["status"] == "completed").all(), df[["status", "error"]]
    before = first.dropna(subset=["provider_used"])
    before = before[before["status"].isin(["generating", "completed"])]
    assert (df.loc[before.index, "provider_used"] == before["provider_used"]).all()
    assert kc["paid_duplicates"] == fc["paid_duplicates"] == 0
    assert kc["accepted"] == 4 and (df["provider_used"] == "kling").sum() == 4


# ---------------------------------------------------------------------- checked before paying
def test_every_fallback_is_checked_against_its_target_before_anything_is_paid():
    primary = ScriptedProvider()
    table = pd.DataFrame({
        "prompt": ["a", "b", "c", "d", "e"],
        "duration": [5, 15, 5, 5, 5],
        "fallback": ["", "", "fal:fal-ai/kling-video/v2.6/pro/text-to-video -cfg_scale",
                     "fal:no/such/model", "fal fal-ai/x"],
    })
    with pytest.raises(InputError) as refused:
        videobatch.Batch(table, primary, progress=False, fallback=FAL_V26,
                         providers={"fal": {"key": "x"}})
    text = str(refused.value)
    assert "row 2, column 'fallback'" in text and "15" in text  # fal's v2.6 takes 5 or 10 s
    assert "row 4, column 'fallback'" in text and "no/such/model" in text
    assert "row 5, column 'fallback'" in text and "PROVIDER:MODEL" in text
    assert "row 1," not in text and "row 3," not in text
    assert sum(primary.accepted.values()) == 0


def test_an_option_the_target_lacks_is_refused_unless_left_behind():
    table = pd.DataFrame({"prompt": ["a"], "mode": ["pro"]})
    with pytest.raises(InputError, match=r"no option 'mode'.*-mode"):
        videobatch.Batch(table, "local", progress=False, fallback=FAL_V26,
                         providers={"fal": {"key": "x"}})
    batch = videobatch.Batch(table, "local", progress=False, fallback=FAL_V26 + " -mode",
                             providers={"fal": {"key": "x"}})
    (alternative,) = batch.providers.fallbacks[batch.prompts.keys[0]]
    assert alternative.provider == "fal" and alternative.options is None


def test_a_fallback_provider_without_its_key_fails_before_anything_is_paid(monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    primary = ScriptedProvider()
    with pytest.raises(ConfigError, match="FAL_KEY"):
        videobatch.Batch(["a"], primary, progress=False, fallback=FAL_V26)
    assert sum(primary.accepted.values()) == 0


def test_the_fallback_syntax():
    assert parse_fallback("fal:fal-ai/x/y -mode -cfg_scale, replicate:owner/name:v1") == (
        Target("fal", "fal-ai/x/y", ("mode", "cfg_scale")), Target("replicate", "owner/name:v1"))
    assert parse_fallback(["fal:a", "runway:gen4.5"]) == (Target("fal", "a"), Target("runway", "gen4.5"))
    for bad in ("fal", "fal: x", ":model", "fal:x mode"):
        with pytest.raises(ValueError, match="is not PROVIDER:MODEL"):
            parse_fallback(bad)


def test_a_resume_without_the_fallback_still_collects_what_it_made(tmp_path):
    """Rows the fallback accepted are polled there on resume, though no fallback is given again."""
    ckpt = tmp_path / "run.parquet"
    with kling_server(latency=0.5, max_tasks=2, max_parallel=3) as k, \
            fal_server.running_server(latency=3.0, jitter=0.0, max_parallel=3) as f:
        batch = videobatch.Batch(rows(8), "kling", checkpoint=ckpt, progress=False,
                                 fallback=FAL_V26, providers=fal(f), **kling(k)).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and f.counters()["peak_running"] < 2:
            time.sleep(0.02)
        batch.cancel()  # fal cancels what is still queued; what runs stays in flight
        first = batch.wait()
        in_flight = first[(first["status"] == "generating") & (first["provider_used"] == "fal")]
        assert len(in_flight) >= 2  # fal was running them: they were not stopped
        with pytest.raises(AccountError):  # no fallback now: kling's empty balance stops its rows
            videobatch.run(rows(8), "kling", checkpoint=ckpt, progress=False, providers=fal(f),
                           **kling(k))
        df = videobatch.results(ckpt)
        fc = f.counters()
    assert (df.loc[in_flight.index, "status"] == "completed").all()
    assert (df.loc[in_flight.index, "provider_used"] == "fal").all()
    assert fc["paid_duplicates"] == 0
