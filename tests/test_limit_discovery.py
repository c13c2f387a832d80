"""Kling's parallel limit found, not guessed: with no limit stated, the run starts at the provider's
safe default and takes more slots while Kling accepts, settling where Kling answers 1303 (its
resource pack, less what other systems hold). A stated limit is used as given."""

from __future__ import annotations

from typing import Any

import videobatch
from videobatch.testing import SimConfig, running_server

FAST = {"first_poll": 0.3, "poll_interval": 0.05, "max_poll_interval": 0.3, "max_rps": 200}


def options(server: Any, **extra: Any) -> dict[str, Any]:
    return {"base_url": server.url, "access_key": SimConfig.access_key,
            "secret_key": SimConfig.secret_key, "progress": False, **FAST, **extra}


def test_with_no_limit_given_the_run_finds_the_accounts_in_the_first_wave():
    rows = [f"clip {i}" for i in range(48)]
    with running_server(latency=1.0, jitter=0.0, max_parallel=12) as server:
        batch = videobatch.Batch(rows, "kling", **options(server))
        df = batch.wait()
        counters = server.counters()
    assert (df["status"] == "completed").all()
    assert counters["peak_parallel"] == 12 and counters["paid_duplicates"] == 0
    # Found in the first wave (slots doubling per round trip), at the price of a few refusals,
    # which cost nothing; afterwards at most one more try per quiet period.
    assert counters["rejected"].get("parallel_limit", 0) < 2 * 12  # (more when the machine is busy)
    # What the run reports, from each task's own start and end times (a task that ended before
    # its poll counts only until it ended): the account's 12, also on a loaded machine.
    assert batch.outcome is not None
    assert batch.outcome.slots_found["kling:kling-v2-6"] == 12


def test_slots_other_systems_hold_are_left_to_them():
    rows = [f"clip {i}" for i in range(24)]
    with running_server(latency=0.8, jitter=0.0, max_parallel=10, foreign_slots=4) as server:
        batch = videobatch.Batch(rows, "kling", **options(server))
        df = batch.wait()
        counters = server.counters()
    assert (df["status"] == "completed").all() and counters["paid_duplicates"] == 0
    assert counters["peak_parallel"] == 6  # of ours: the other system's 4 are not counted there
    assert batch.outcome is not None and batch.outcome.slots_found["kling:kling-v2-6"] == 6


def test_a_stated_limit_is_used_as_given():
    rows = [f"clip {i}" for i in range(20)]
    with running_server(latency=0.5, jitter=0.0, max_parallel=12) as server:
        batch = videobatch.Batch(rows, "kling", **options(server, max_parallel=4))
        df = batch.wait()
        counters = server.counters()
    assert (df["status"] == "completed").all()
    assert counters["peak_parallel"] == 4 and not counters["rejected"]
    assert batch.outcome is not None and batch.outcome.slots_found == {}
