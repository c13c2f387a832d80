"""How tests/data/checkpoint_v1 was made: a run killed (kill -9) with 3 of 8 rows completed.

Run with the videobatch to capture on PYTHONPATH (checkpoint_v1 was written at commit 0b7cf7f, the
last release before journal header records): ``python tests/data/make_checkpoint_v1.py OUT_DIR``,
then keep prompts.csv, run.parquet, run.parquet.journal.* and provider/ (minus videos/ and locks).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def states(out: Path) -> dict[str, str]:
    last = {}
    for segment in out.glob("run.parquet.journal.*"):
        for line in segment.read_bytes().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "s" in record:
                last[record["k"]] = record["s"]
    return last


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": [f"r{i}" for i in range(8)],
                  "prompt": [f"a paper boat number {i} on a café canal 🎬" for i in range(8)],
                  "campaign": "v1"}).to_csv(out / "prompts.csv", index=False)
    proc = subprocess.Popen([
        sys.executable, "-m", "videobatch", str(out / "prompts.csv"), "-q", "--checkpoint",
        str(out / "run.parquet"), "--out", str(out / "results.csv"), "-P", f"root={out / 'provider'}",
        "-P", "render=false", "-P", "max_parallel=3", "-P", "latency=0.4", "-P", "jitter=0"])
    while list(states(out).values()).count("completed") < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    print(states(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
