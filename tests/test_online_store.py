"""The Redis online store: whole versions, atomic promote, never back in time, rollback, pruning, TTL."""

from __future__ import annotations

import threading
import time

import msgpack
import polars as pl
import pytest

from feature_pipelines.online_store import (
    OnlineSchema,
    OnlineStore,
    OnlineStoreError,
    connect,
    control_key,
    data_key,
)
from feature_pipelines.serving import OnlineClient

SCHEMA = OnlineSchema(
    view="toy",
    namespace="fs",
    join_key="user_id",
    features=["score", "label"],
    dtypes=["Int64", "String"],
    ttl_seconds=3600,
)


def frame(n: int, score: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"user_id": range(start, start + n), "score": [score] * n, "label": [f"v{score}"] * n})


def push(store: OnlineStore, df: pl.DataFrame, partition: str, schema: OnlineSchema = SCHEMA):
    return store.push(
        schema,
        [df],
        partition=partition,
        delta_table="/nowhere",
        delta_version=None,
        run_id="test",
        definition_hash="h",
    )


def test_push_writes_a_version_and_promotes_it(r, redis_url):
    store = OnlineStore(connect(redis_url))
    result = push(store, frame(2500, 1), "2011-01-01")
    assert result.promoted and result.rows == 2500 and store.serving_version("fs", "toy") == result.version
    assert msgpack.unpackb(r.get(data_key("fs", "toy", result.version, 7))) == [1, "v1"]
    meta = store.serving_meta("fs", "toy")
    assert (meta.partition, meta.rows, meta.run_id, meta.definition_hash) == ("2011-01-01", 2500, "test", "h")
    assert meta.schema == SCHEMA


def test_ttl_is_applied_and_refreshed_by_every_push(r, redis_url):
    store = OnlineStore(connect(redis_url))
    first = push(store, frame(10, 1), "2011-01-01")
    ttl1 = r.pttl(data_key("fs", "toy", first.version, 3))
    assert 3_590_000 < ttl1 <= 3_600_000
    time.sleep(1.1)
    second = push(store, frame(10, 2), "2011-01-02")
    assert r.pttl(data_key("fs", "toy", second.version, 3)) > ttl1 - 50  # fresh keys, full TTL again


def test_expired_keys_read_as_nulls(r, redis_url):
    store = OnlineStore(connect(redis_url))
    short = OnlineSchema(**{**SCHEMA.__dict__, "ttl_seconds": 1})
    push(store, frame(3, 5), "2011-01-01", short)
    client = OnlineClient(redis_url)
    assert client.get_view("toy", [1])[0] == {"score": 5, "label": "v5"}
    time.sleep(1.2)
    assert client.get_view("toy", [1])[0] == {"score": None, "label": None}


def test_older_partition_never_replaces_the_serving_one(redis_url):
    store = OnlineStore(connect(redis_url))
    fresh = push(store, frame(5, 2), "2011-02-01")
    backfill = push(store, frame(5, 1), "2011-01-15")
    assert not backfill.promoted and "older" in backfill.reason
    assert store.serving_version("fs", "toy") == fresh.version
    assert OnlineClient(redis_url).get_view("toy", [1])[0]["score"] == 2


def test_rollback_flips_back_and_unknown_ids_are_null(redis_url):
    store = OnlineStore(connect(redis_url))
    v1 = push(store, frame(5, 1), "2011-01-01").version
    v2 = push(store, frame(5, 2), "2011-01-02").version
    client = OnlineClient(redis_url)
    assert client.get_view("toy", [1, 99]) == [{"score": 2, "label": "v2"}, {"score": None, "label": None}]
    assert store.rollback("fs", "toy") == (v2, v1)
    assert client.get_view("toy", [1])[0]["score"] == 1  # the cached pointer is revalidated on every read
    with pytest.raises(OnlineStoreError, match="not a complete, kept version"):
        store.rollback("fs", "toy", to_version=999)


def test_old_versions_are_pruned_without_scan(r, redis_url, tmp_path):
    from feature_pipelines.offline_store import overwrite_partitions

    uri = str(tmp_path / "toy")
    store = OnlineStore(connect(redis_url), versions_kept=2)
    r.config_resetstat()
    versions = []
    for day in (1, 2, 3, 4):
        df = frame(50, day).with_columns(pl.lit(f"2011-01-0{day}").alias("partition_date"))
        commit = overwrite_partitions(uri, df, "partition_date", f"2011-01-0{day}", f"2011-01-0{day}")
        res = store.push(
            SCHEMA,
            [df],
            partition=f"2011-01-0{day}",
            delta_table=uri,
            delta_version=commit.version,
            run_id="t",
            definition_hash="h",
        )
        versions.append(res.version)
    assert sorted(store.versions("fs", "toy")) == versions[-2:]
    # Every key of the pruned versions is gone, recomputed from their Delta partitions.
    for old in versions[:2]:
        assert r.exists(*[data_key("fs", "toy", old, i) for i in range(50)]) == 0
    assert r.exists(*[data_key("fs", "toy", versions[-1], i) for i in range(50)]) == 50
    commands = r.info("commandstats")
    assert "cmdstat_scan" not in commands and "cmdstat_keys" not in commands


def test_erasing_a_subject_needs_no_scan(r, redis_url):
    store = OnlineStore(connect(redis_url))
    push(store, frame(5, 1), "2011-01-01")
    push(store, frame(5, 2), "2011-01-02")
    assert store.erase_subject("fs", "toy", 3) == 2
    assert OnlineClient(redis_url).get_view("toy", [3, 4])[0] == {"score": None, "label": None}


def test_readers_during_a_push_see_only_whole_versions(redis_url):
    store = OnlineStore(connect(redis_url))
    push(store, frame(20_000, 0), "2011-01-01")
    ids = list(range(0, 20_000, 97))
    seen: set[tuple[int, ...]] = set()
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        client = OnlineClient(redis_url)
        while not stop.is_set():
            try:
                rows = client.get_view("toy", ids)
                seen.add(tuple(sorted({row["score"] for row in rows})))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for day in range(1, 6):
        push(store, frame(20_000, day), f"2011-01-0{day + 1}")
    stop.set()
    reader.join()
    assert not errors
    assert seen and all(len(scores) == 1 for scores in seen), seen  # never a mix of two versions
    assert len(seen) >= 2


def test_a_crashed_push_is_never_served(r, redis_url):
    store = OnlineStore(connect(redis_url))
    good = push(store, frame(10, 1), "2011-01-01")

    def broken():
        yield frame(10, 2)
        raise RuntimeError("killed mid-push")

    with pytest.raises(RuntimeError):
        store.push(
            SCHEMA,
            broken(),
            partition="2011-01-02",
            delta_table="/x",
            delta_version=None,
            run_id="t",
            definition_hash="h",
        )
    assert store.serving_version("fs", "toy") == good.version
    assert OnlineClient(redis_url).get_view("toy", [1])[0]["score"] == 1
    assert r.get(control_key("fs", "toy", "current")) == str(good.version).encode()


def test_unreachable_redis_names_the_url():
    with pytest.raises(OnlineStoreError, match="cannot reach Redis at redis://127.0.0.1:1/0"):
        OnlineClient("redis://127.0.0.1:1/0")


def test_an_empty_partition_is_never_promoted(redis_url):
    store = OnlineStore(connect(redis_url))
    good = push(store, frame(3, 1), "2011-01-01")
    empty = push(store, frame(0, 2), "2011-01-02")
    assert not empty.promoted and "no rows" in empty.reason
    assert store.serving_version("fs", "toy") == good.version


def test_a_slower_older_push_of_the_same_partition_does_not_win(redis_url):
    store = OnlineStore(connect(redis_url))
    push(store, frame(3, 0), "2011-01-01")
    inner: dict = {}

    def meanwhile(version: int) -> None:  # while this push is finishing, a rerun of the partition lands
        inner["result"] = push(store, frame(3, 2), "2011-01-01")

    slow = store.push(
        SCHEMA,
        [frame(3, 1)],
        partition="2011-01-01",
        delta_table="/x",
        delta_version=None,
        run_id="slow",
        definition_hash="h",
        verify=meanwhile,
    )
    assert inner["result"].promoted and not slow.promoted
    assert store.serving_version("fs", "toy") == inner["result"].version
    assert OnlineClient(redis_url).get_view("toy", [1])[0]["score"] == 2


def test_a_rejected_write_leaves_no_dirty_connection_in_the_pool():
    """Redis refuses writes (out of memory): the push fails with Redis's message, the pool stays usable."""
    from feature_pipelines.local_redis import RedisServer

    server = RedisServer("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    try:
        client = connect(server.url)
        store = OnlineStore(client)
        with pytest.raises(OnlineStoreError, match="OOM"):
            push(store, frame(60_000, 1), "2011-01-01")
        assert store.serving_version("fs", "toy") is None
        for i in range(20):  # every later command gets its own reply
            assert client.echo(f"ping-{i}") == f"ping-{i}".encode()
    finally:
        server.stop()


def test_a_feature_added_after_the_push_reads_as_null(redis_url, catalog):
    import dataclasses

    from feature_pipelines.assets import online_schema
    from feature_pipelines.spec import Feature

    view = catalog.views["user_context"]
    store = OnlineStore(connect(redis_url))
    store.push(
        online_schema(view, catalog),
        [pl.DataFrame({"customer_id": [1], "country": ["EIRE"], "locale": ["en_IE"], "currency": ["EUR"]})],
        partition="2011-12-09",
        delta_table="/x",
        delta_version=None,
        run_id="r",
        definition_hash="h",
    )
    newer = dataclasses.replace(view, features=(*view.features, Feature(name="tier", dtype=pl.String, description="d")))
    services = {
        "s": dataclasses.replace(
            catalog.services["ranking_model_v1"], name="s", features=("user_context:country", "user_context:tier")
        )
    }
    cat = dataclasses.replace(catalog, views={**catalog.views, "user_context": newer}, services=services)
    row = OnlineClient(redis_url, cat).get_service("s", {"customer_id": [1]})[0]
    assert row.to_dict() == {"country": "EIRE", "tier": None}
