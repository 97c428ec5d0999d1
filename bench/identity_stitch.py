"""One stitching run in this process (a fresh one, so its peak memory is its own); prints JSON.

`python -m bench.identity_stitch full|history|update LAKE FILE...`: `full` recomputes the graph from the
files, `history` does the same as the declared initial load (alias facts known at their day's end, as the
Dagster backfill tagged `fs/historical_load` writes them), `update` folds them into the lake's graph. Peak
RSS is `VmHWM` (see `peak_rss.py`).
"""

from __future__ import annotations

import json
import sys
import time

import polars as pl

from bench.peak_rss import high_water_mb
from feature_pipelines.identity.stitch import IdentityStore


def main(mode: str, lake: str, files: list[str]) -> None:
    store = IdentityStore(lake)
    events = pl.scan_parquet(files)
    started = time.perf_counter()
    if mode == "update":
        summary = store.update(events)
    else:
        summary = store.commit(store.plan_full(events, historical=mode == "history"))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "peak_rss_mb": high_water_mb(),
                "events": summary.events,
                "identifiers": summary.identifiers,
                "persons": summary.persons,
                "recomputed_ids": summary.recomputed,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
