"""Materialize a 10M-row Delta partition into Redis in this process; print its peak resident memory."""

from __future__ import annotations

import json
import resource
import sys
import time

import redis

from bench.run import FEATURES, PARTITION, SCHEMA
from feature_pipelines.offline_store import iter_partition, table_version
from feature_pipelines.online_store import OnlineStore


def main(url: str, uri: str) -> None:
    store = OnlineStore(redis.Redis.from_url(url), versions_kept=1)
    started = time.perf_counter()
    result = store.push(
        SCHEMA,
        iter_partition(uri, "partition_date", PARTITION, ["user_id", *FEATURES]),
        partition=PARTITION,
        delta_table=uri,
        delta_version=table_version(uri),
        run_id="bench-10m",
        definition_hash="bench",
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {"peak_rss_mb": round(peak_kb / 1024, 1), "rows": result.rows, "rows_per_s": round(result.rows / seconds)}
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
