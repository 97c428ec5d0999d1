"""A push in its own process, slowed down so a test can kill it (kill -9) in the middle of its write.

    python -m tests.online.push_worker REDIS_URL DELTA_TABLE PARTITION LEASE_SECONDS

Prints `writing <version>` once its first keys are in Redis, then keeps writing small batches."""

from __future__ import annotations

import sys
import time

from feature_pipelines.offline.delta import iter_partition, table_version
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.spec import PARTITION_DATE

SCHEMA = OnlineSchema(
    view="toy",
    namespace="fs",
    join_key="user_id",
    features=["score", "label"],
    dtypes=["Int64", "String"],
    ttl_seconds=3600,
    key_dtype="Int64",
)


def main(url: str, table: str, partition: str, lease_seconds: float) -> None:
    store = OnlineStore(connect(url), OnlineLayout([SCHEMA]), lease_seconds=lease_seconds)
    version = table_version(table)

    def slow():
        for i, batch in enumerate(
            iter_partition(table, PARTITION_DATE, partition, [SCHEMA.join_key, *SCHEMA.features], version, 500)
        ):
            yield batch
            if i == 1:
                print(f"writing {store.versions('toy') and max(store.versions('toy'))}", flush=True)
            time.sleep(0.05)

    written = store.write(
        "toy",
        slow(),
        partition=partition,
        delta_table=table,
        delta_version=version,
        run_id="worker",
        definition_hash="h",
    )
    store.promote(written)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
