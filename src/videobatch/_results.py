"""The results DataFrame: the user's columns, then one result column per job field, in input order.

Also ``results(checkpoint)``: the same table read back from any checkpoint, running nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ._gc import gc_paused
from ._jobs import RESULT_COLUMNS, Job

__all__ = ["RESULT_FORMATS", "results", "results_frame", "write_results"]

# The file formats ``write_results`` knows, by extension (.ndjson is .jsonl by another name).
RESULT_FORMATS = (".csv", ".parquet", ".jsonl", ".ndjson")


@gc_paused()
def results_frame(frame: pd.DataFrame, jobs: Sequence[Job]) -> pd.DataFrame:
    """``frame`` (the user's input, index kept) with the result columns appended.

    Costs are USD from the providers' catalogues (the vocabulary: ``videobatch._spend``):
    ``cost_estimated`` the price of the row's latest submission (empty: never sent, or no price),
    ``cost_spent`` what all its submissions have or may have cost (empty: nothing paid; the actual
    cost where the provider reported it), ``cost_actual`` what the provider says the latest
    submission's task cost (empty: it did not say, e.g. still running or a provider without it).

    Then any extra columns observers recorded with ``Job.annotate`` (e.g. ``local_path``).
    """
    def stamp(values: list[float | None]) -> pd.Series:
        return pd.to_datetime(pd.Series(values, index=frame.index, dtype="float64"), unit="s",
                              utc=True)

    submitted = [j.submitted_at for j in jobs]
    completed = [j.completed_at for j in jobs]
    columns: dict[str, object] = {
        "status": [j.state._value_ for j in jobs],  # (the plain attribute behind .value's property)
        "video_url": [j.video_url for j in jobs],
        "task_id": [j.task_id for j in jobs],
        "error": [j.error for j in jobs],
        "attempts": [j.attempts for j in jobs],
        "submitted_at": stamp(submitted),
        "completed_at": stamp(completed),
        "elapsed_s": [
            (c - s) if (c is not None and s is not None) else None
            for s, c in zip(submitted, completed, strict=True)
        ],
        "key": [j.key for j in jobs],
        "error_kind": [j.error_kind for j in jobs],
        "video_id": [j.video_id for j in jobs],
        "video_duration": [j.video_duration for j in jobs],
        "expires_at": stamp([j.expires_at for j in jobs]),
        "provider_used": [j.provider_used for j in jobs],
        "model_used": [j.model_used for j in jobs],
        # USD (``videobatch._spend``): its latest submission's estimate, all it may have cost, and
        # what the provider says its latest task cost
        "cost_estimated": pd.Series([j.cost_estimated for j in jobs], index=frame.index,
                                    dtype="float64"),
        "cost_spent": pd.Series([j.carried_cost() for j in jobs], index=frame.index,  # (None: nothing)
                                dtype="float64"),
        "cost_actual": pd.Series([j.cost_actual for j in jobs], index=frame.index, dtype="float64"),
        # the same in the provider's own units (Kling: final_unit_deduction)
        "cost_units": pd.Series([j.cost_units for j in jobs], index=frame.index, dtype="float64"),
    }
    assert tuple(columns) == RESULT_COLUMNS
    out = frame.copy()
    for name, values in columns.items():
        out[name] = values if isinstance(values, pd.Series) else pd.Series(values, index=frame.index)
    out["elapsed_s"] = out["elapsed_s"].astype("float64")
    out["attempts"] = out["attempts"].astype("int64")
    # Extra columns written by observers (downloads, webhooks), in order of first appearance.
    extra_names = list(dict.fromkeys(name for j in jobs for name in j.extras))
    for name in extra_names:
        out[name] = pd.Series([j.extras.get(name) for j in jobs], index=frame.index)
    return out


def results(checkpoint: str | os.PathLike[str]) -> pd.DataFrame:
    """The results DataFrame stored in a checkpoint, without running anything."""
    from ._store import load

    loaded = load(checkpoint, requests=False)
    return results_frame(loaded.frame, loaded.jobs)


def write_results(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write results by extension: .parquet, .csv or .jsonl (to a temp file, then renamed)."""
    path = Path(path)
    suffix = path.suffix.lower()
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    elif suffix == ".csv":
        df.to_csv(tmp, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(tmp, orient="records", lines=True, date_format="iso")
    else:
        raise ValueError(f"unknown results format {suffix!r}: use .parquet, .csv or .jsonl")
    os.replace(tmp, path)
    return path
