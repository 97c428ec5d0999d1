"""The Redis online store: whole versions, atomic promote, never back in time, rollback, pruning, TTL."""

from __future__ import annotations

import threading
import time

import msgpack
import polars as pl
import pytest

from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.errors import OnlineStoreError
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.publish import version_ids
from tests.conftest import push as push_view

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


KEYS = SCHEMA.keys
LAYOUT = OnlineLayout([SCHEMA])


def toy_store(redis_url: str, versions_kept: int = 3, schema: OnlineSchema = SCHEMA) -> OnlineStore:
    return OnlineStore(connect(redis_url), OnlineLayout([schema]), versions_kept=versions_kept)


def push(store: OnlineStore, df: pl.DataFrame, partition: str):
    return push_view(store, "toy", [df], partition=partition)


def test_push_writes_a_version_and_promotes_it(r, redis_url):
    store = toy_store(redis_url)
    result = push(store, frame(2500, 1), "2011-01-01")
    assert result.promoted and result.rows == 2500 and store.serving_version("toy") == result.version
    assert msgpack.unpackb(r.get(KEYS.data_key(result.version, 7))) == [1, "v1"]
    meta = store.serving_meta("toy")
    assert (meta.partition, meta.rows, meta.run_id, meta.definition_hash) == ("2011-01-01", 2500, "test", "h")
    assert meta.schema == SCHEMA


def test_ttl_is_applied_and_refreshed_by_every_push(r, redis_url):
    store = toy_store(redis_url)
    first = push(store, frame(10, 1), "2011-01-01")
    ttl1 = r.pttl(KEYS.data_key(first.version, 3))
    assert 3_590_000 < ttl1 <= 3_600_000
    time.sleep(1.1)
    second = push(store, frame(10, 2), "2011-01-02")
    assert r.pttl(KEYS.data_key(second.version, 3)) > ttl1 - 50  # fresh keys, full TTL again


def test_expired_keys_read_as_nulls(r, redis_url):
    short = OnlineSchema(**{**SCHEMA.__dict__, "ttl_seconds": 1})
    push(toy_store(redis_url, schema=short), frame(3, 5), "2011-01-01")
    client = OnlineClient(redis_url)
    assert client.get_view("toy", [1])[0] == {"score": 5, "label": "v5"}
    time.sleep(1.2)
    assert client.get_view("toy", [1])[0] == {"score": None, "label": None}


def test_older_partition_never_replaces_the_serving_one(redis_url):
    store = toy_store(redis_url)
    fresh = push(store, frame(5, 2), "2011-02-01")
    backfill = push(store, frame(5, 1), "2011-01-15")
    assert not backfill.promoted and "older" in backfill.reason
    assert store.serving_version("toy") == fresh.version
    assert OnlineClient(redis_url).get_view("toy", [1])[0]["score"] == 2


def test_rollback_flips_back_and_unknown_ids_are_null(redis_url):
    store = toy_store(redis_url)
    v1 = push(store, frame(5, 1), "2011-01-01").version
    v2 = push(store, frame(5, 2), "2011-01-02").version
    client = OnlineClient(redis_url)
    assert client.get_view("toy", [1, 99]) == [{"score": 2, "label": "v2"}, {"score": None, "label": None}]
    done = store.rollback("toy", ids_of=lambda meta: [pl.Series(range(5))])
    assert (done.previous, done.version, done.keys_refreshed) == (v2, v1, 5)
    assert client.get_view("toy", [1])[0]["score"] == 1  # the cached pointer is revalidated on every read
    with pytest.raises(OnlineStoreError, match="version 999 never served"):
        store.rollback("toy", to_version=999, ids_of=lambda meta: [])


def test_old_versions_are_pruned_without_scan(r, redis_url, tmp_path):
    from feature_pipelines.offline.delta import overwrite_partitions

    uri = str(tmp_path / "toy")
    store = toy_store(redis_url, versions_kept=2)
    r.config_resetstat()
    versions = []
    for day in (1, 2, 3, 4):
        df = frame(50, day).with_columns(pl.lit(f"2011-01-0{day}").alias("partition_date"))
        commit = overwrite_partitions(uri, df, "partition_date", f"2011-01-0{day}", f"2011-01-0{day}")
        res = push_view(store, "toy", [df], partition=f"2011-01-0{day}", delta_table=uri, delta_version=commit.version)
        store.prune("toy", version_ids)
        versions.append(res.version)
    assert sorted(store.versions("toy")) == versions[-2:]
    # Every key of the pruned versions is gone, recomputed from their Delta partitions.
    for old in versions[:2]:
        assert r.exists(*[KEYS.data_key(old, i) for i in range(50)]) == 0
    assert r.exists(*[KEYS.data_key(versions[-1], i) for i in range(50)]) == 50
    commands = r.info("commandstats")
    assert "cmdstat_scan" not in commands and "cmdstat_keys" not in commands


def test_erasing_a_subject_needs_no_scan(r, redis_url):
    store = toy_store(redis_url)
    push(store, frame(5, 1), "2011-01-01")
    push(store, frame(5, 2), "2011-01-02")
    assert store.erase_subject("toy", 3) == 2
    assert OnlineClient(redis_url).get_view("toy", [3, 4])[0] == {"score": None, "label": None}


def test_readers_during_a_push_see_only_whole_versions(redis_url):
    store = toy_store(redis_url)
    push(store, frame(20_000, 0), "2011-01-01")
    ids = list(range(0, 20_000, 97))
    seen: set[tuple[int, ...]] = set()
    errors: list[Exception] = []
    stop = threading.Event()

    def read() -> None:
        client = OnlineClient(redis_url, connect_timeout=10, timeout=10)  # atomicity, not deadlines, under test
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
    store = toy_store(redis_url)
    good = push(store, frame(10, 1), "2011-01-01")

    def broken():
        yield frame(10, 2)
        raise RuntimeError("killed mid-push")

    with pytest.raises(RuntimeError):
        push_view(store, "toy", broken(), partition="2011-01-02")
    assert store.serving_version("toy") == good.version
    assert OnlineClient(redis_url).get_view("toy", [1])[0]["score"] == 1
    assert r.get(KEYS.current) == str(good.version).encode()


def test_unreachable_redis_names_the_address_on_first_use():
    client = OnlineClient("redis://user:pw@127.0.0.1:1/0")  # connects lazily: nothing sent yet
    with pytest.raises(OnlineStoreError, match="cannot reach Redis at 127.0.0.1:1") as err:
        client.get_view("toy", [1])
    assert "pw" not in str(err.value)


def test_an_empty_partition_is_never_promoted(redis_url):
    store = toy_store(redis_url)
    good = push(store, frame(3, 1), "2011-01-01")
    empty = push(store, frame(0, 2), "2011-01-02")
    assert not empty.promoted and "no rows" in empty.reason
    assert store.serving_version("toy") == good.version


def test_a_slower_older_push_of_the_same_partition_does_not_win(redis_url):
    store = toy_store(redis_url)
    push(store, frame(3, 0), "2011-01-01")
    slow = store.write(
        "toy",
        [frame(3, 1)],
        partition="2011-01-01",
        delta_table="/x",
        delta_version=None,
        run_id="slow",
        definition_hash="h",
    )
    rerun = push(store, frame(3, 2), "2011-01-01")  # while the slow push is verifying, a rerun of the partition lands
    assert rerun.promoted and not store.promote(slow).promoted
    assert store.serving_version("toy") == rerun.version
    assert OnlineClient(redis_url).get_view("toy", [1])[0]["score"] == 2


def test_a_rejected_write_leaves_no_dirty_connection_in_the_pool():
    """Redis refuses writes (out of memory): the push fails with Redis's message, the pool stays usable."""
    from feature_pipelines.online.local_server import RedisServer

    server = RedisServer("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    try:
        client = connect(server.url)
        store = OnlineStore(client, LAYOUT)
        with pytest.raises(OnlineStoreError, match="OOM"):
            push(store, frame(60_000, 1), "2011-01-01")
        assert store.serving_version("toy") is None
        for i in range(20):  # every later command gets its own reply
            assert client.echo(f"ping-{i}") == f"ping-{i}".encode()
    finally:
        server.stop()


def test_a_feature_added_after_the_push_reads_as_null(redis_url, catalog):
    import dataclasses

    from feature_pipelines.spec import Feature

    view = catalog.views["user_context"]
    store = OnlineStore(connect(redis_url), OnlineLayout.from_catalog(catalog))
    push_view(
        store,
        "user_context",
        [pl.DataFrame({"customer_id": [1], "country": ["EIRE"], "locale": ["en_IE"], "currency": ["EUR"]})],
        partition="2011-12-09",
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
