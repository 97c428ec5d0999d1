"""Promotion history, rollback through it, pins, pruning by what served, leases of pushes, failed prunes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.errors import OnlineStoreError
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.store import Action, OnlineStore, Outcome
from feature_pipelines.publish import publish, version_ids
from tests.conftest import push, push_from_delta

SCHEMA = OnlineSchema(
    view="toy",
    namespace="fs",
    join_key="user_id",
    features=["score", "label"],
    dtypes=["Int64", "String"],
    ttl_seconds=3600,
    key_dtype="Int64",
)
KEYS = SCHEMA.keys
N = 50


def frame(score: int, n: int = N) -> pl.DataFrame:
    return pl.DataFrame({"user_id": range(n), "score": [score] * n, "label": [f"v{score}"] * n})


def toy_store(redis_url: str, versions_kept: int = 3, schema: OnlineSchema = SCHEMA, **kw) -> OnlineStore:
    return OnlineStore(connect(redis_url), OnlineLayout([schema]), versions_kept=versions_kept, **kw)


def keys_of(r, version: int, n: int = N) -> int:
    return r.exists(*[KEYS.data_key(version, i) for i in range(n)])


@pytest.fixture
def lake(tmp_path: Path) -> str:
    return str(tmp_path / "toy")


def served(redis_url: str) -> int:
    return OnlineClient(redis_url).get_view("toy", [1])[0]["score"]


def test_every_flip_is_recorded_with_the_pointer(r, redis_url, lake):
    store = toy_store(redis_url)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version
    before = time.time()
    store.rollback("toy", ids_of=version_ids, by="alice", reason="bad scores", run_id="r-1")
    # A reader in any language: a Redis list of JSON objects, newest first.
    entries = [json.loads(e) for e in r.lrange(KEYS.history, 0, -1)]
    assert [(e["action"], e["version"], e["previous"]) for e in entries] == [
        ("pin", v1, v2),
        ("rollback", v1, v2),
        ("promote", v2, v1),
        ("promote", v1, None),
    ]
    assert entries[1]["partition"] == "2011-01-01" and entries[2]["partition"] == "2011-01-02"
    assert (entries[1]["by"], entries[1]["reason"], entries[1]["run_id"]) == ("alice", "bad scores", "r-1")
    assert entries[2]["run_id"] == "test"  # the push's run
    assert before - 1 < entries[0]["at"] < time.time() + 1
    pin = json.loads(r.get(KEYS.pin))
    assert (pin["version"], pin["previous"], pin["by"], pin["reason"]) == (v1, v2, "alice", "bad scores")
    assert [e.action for e in store.history("toy")] == [Action.PIN, Action.ROLLBACK, Action.PROMOTE, Action.PROMOTE]


def test_rollback_goes_to_the_version_that_served_before_never_to_a_backfill(r, redis_url, lake):
    store = toy_store(redis_url)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-03-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-03-02", uri=lake).version
    backfill = push_from_delta(store, "toy", frame(9), partition="2011-01-15", uri=lake)
    assert backfill.outcome is Outcome.STALE and backfill.version > v2  # highest number, never served
    done = store.rollback("toy", ids_of=version_ids)
    assert (done.previous, done.version) == (v2, v1) and served(redis_url) == 1
    with pytest.raises(
        OnlineStoreError, match=rf"version {backfill.version} never served .*written, partition 2011-01-15"
    ):
        store.rollback("toy", to_version=backfill.version, ids_of=version_ids)
    # Rolling back again walks further back through what served; here nothing is left.
    with pytest.raises(OnlineStoreError, match="no earlier promoted version"):
        store.rollback("toy", ids_of=version_ids)
    assert store.rollback("toy", to_version=v2, ids_of=version_ids).version == v2  # back to a served one on purpose
    assert served(redis_url) == 2


def test_rollback_refreshes_the_ttl_of_every_key(r, redis_url, lake):
    schema = OnlineSchema(**{**SCHEMA.__dict__, "ttl_seconds": 4})
    store = toy_store(redis_url, schema=schema)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    time.sleep(1.5)
    push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake)
    assert max(r.pttl(KEYS.data_key(v1, i)) for i in range(N)) < 2700
    assert store.rollback("toy", ids_of=version_ids).keys_refreshed == N
    assert min(r.pttl(KEYS.data_key(v1, i)) for i in range(N)) > 3500  # a full TTL again, every key


def test_rollback_refuses_when_keys_expired_or_are_partly_missing(r, redis_url, lake):
    short = OnlineSchema(**{**SCHEMA.__dict__, "ttl_seconds": 1})
    store = toy_store(redis_url, schema=short)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    time.sleep(1.2)
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version
    with pytest.raises(OnlineStoreError, match=rf"version {v1} cannot serve again: {N} of {N} keys are gone"):
        store.rollback("toy", ids_of=version_ids)
    assert store.serving_version("toy") == v2 and store.pin("toy") is None  # nothing changed

    store = toy_store(redis_url)  # the same view with a long TTL: delete a few keys of the target instead
    v3 = push_from_delta(store, "toy", frame(3), partition="2011-01-03", uri=lake).version
    v4 = push_from_delta(store, "toy", frame(4), partition="2011-01-04", uri=lake).version
    r.delete(KEYS.data_key(v3, 7), KEYS.data_key(v3, 8))
    with pytest.raises(OnlineStoreError, match=r"2 of 50 keys are gone .* e\.g\. ids \[7, 8\]"):
        store.rollback("toy", to_version=v3, ids_of=version_ids)
    assert store.serving_version("toy") == v4


def test_a_version_left_deleting_by_a_killed_prune_is_never_served_and_is_finished_later(r, redis_url, lake):
    store = toy_store(redis_url, versions_kept=1)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version

    def killed(meta):
        yield pl.Series(range(10))  # some keys go, then the prune dies
        raise RuntimeError("prune killed")

    with pytest.raises(RuntimeError, match="prune killed"):
        store.prune("toy", killed)
    r.unlink(*[KEYS.data_key(v1, i) for i in range(10)])  # what the killed prune had unlinked
    assert store.meta("toy", v1).status == "deleting"
    with pytest.raises(OnlineStoreError, match=f"version {v1} is deleting"):
        store.rollback("toy", to_version=v1, ids_of=version_ids)
    flip = store._flip("toy", v1, "manual", unpin=True)  # the script itself refuses it too
    assert flip.outcome is Outcome.NOT_WRITTEN and store.serving_version("toy") == v2
    pruned = store.prune("toy", version_ids)  # the next prune (or `fstore gc`) finishes it
    assert pruned.removed == {v1: N - 10} and keys_of(r, v1) == 0 and store.meta("toy", v1) is None


def test_a_rollback_pins_the_view_against_an_in_flight_push(r, redis_url, lake):
    store = toy_store(redis_url)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version
    in_flight = store.write(
        "toy",
        [frame(3)],
        partition="2011-01-03",
        delta_table=lake,
        delta_version=None,
        run_id="late",
        definition_hash="h",
    )
    store.rollback("toy", ids_of=version_ids, by="oncall", reason="v2 is wrong")
    held = store.promote(in_flight)  # the push that was under way when the rollback happened
    assert held.outcome is Outcome.PINNED and not held.promoted
    assert "pinned to version 1" in held.reason and "oncall" in held.reason and "v2 is wrong" in held.reason
    assert store.serving_version("toy") == v1 and served(redis_url) == 1
    later = push_from_delta(store, "toy", frame(4), partition="2011-01-04", uri=lake)
    assert later.outcome is Outcome.PINNED and store.serving_version("toy") == v1
    assert [e.action for e in store.history("toy")[:2]] == [Action.HELD, Action.HELD]

    status = store.status("toy")
    assert status.pin.version == v1 and status.pin.by == "oncall" and status.serving.version == v1
    # A held-back version serves only on purpose, ending the pin in the same step.
    with pytest.raises(OnlineStoreError, match="pinned to version 1"):
        store.promote_version("toy", later.version, ids_of=version_ids)
    done = store.promote_version("toy", later.version, ids_of=version_ids, unpin=True, by="oncall", reason="fixed")
    assert done.promoted and "the pin on version 1 ended" in done.reason and store.pin("toy") is None
    assert [(e.action, e.version) for e in store.history("toy")[:2]] == [
        (Action.PROMOTE, later.version),
        (Action.UNPIN, v1),
    ]
    assert served(redis_url) == 4
    assert v2 in store.versions("toy")


def test_unpin_lets_the_next_push_promote_and_is_recorded(redis_url, lake):
    store = toy_store(redis_url)
    push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake)
    push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake)
    v1 = store.rollback("toy", ids_of=version_ids).version
    pin = store.unpin("toy", by="bob", reason="fixed upstream")
    assert pin is not None and pin.version == v1 and store.unpin("toy") is None
    entry = store.history("toy")[0]
    assert (entry.action, entry.version, entry.by, entry.reason) == (Action.UNPIN, v1, "bob", "fixed upstream")
    assert push_from_delta(store, "toy", frame(3), partition="2011-01-03", uri=lake).promoted
    assert served(redis_url) == 3


def test_pruning_keeps_what_served_not_what_was_written_last(r, redis_url, lake):
    store = toy_store(redis_url, versions_kept=2)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-03-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-03-02", uri=lake).version
    backfills = []
    for day in ("2011-01-01", "2011-01-02", "2011-01-03"):  # a backfill: newer numbers, never served
        pushed = push_from_delta(store, "toy", frame(0), partition=day, uri=lake)
        assert pushed.outcome is Outcome.STALE
        backfills.append(pushed.version)
        store.prune("toy", version_ids)
    assert sorted(store.versions("toy")) == [v1, v2]  # the real earlier serving version stays
    assert all(keys_of(r, v) == 0 for v in backfills) and keys_of(r, v1) == N
    assert store.rollback("toy", ids_of=version_ids).version == v1


def test_pruning_keeps_the_pinned_version_and_the_newest_held_one(r, redis_url, lake):
    store = toy_store(redis_url, versions_kept=1)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version
    store.rollback("toy", ids_of=version_ids)
    held = [push_from_delta(store, "toy", frame(s), partition=f"2011-01-0{s}", uri=lake).version for s in (3, 4)]
    pruned = store.prune("toy", version_ids)
    assert sorted(pruned.removed) == [v2, held[0]]
    assert pruned.kept == {v1: "pinned", held[1]: "newest push held back by the pin"}
    assert keys_of(r, v1) == N and keys_of(r, held[1]) == N and keys_of(r, v2) == 0


def test_a_stale_prune_plan_never_deletes_the_serving_version(r, redis_url, lake, monkeypatch):
    """The plan said v1 could go; a rollback made it serve before the mark: the mark refuses, keys stay."""
    store = toy_store(redis_url, versions_kept=1)
    v1 = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    v2 = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version
    store.rollback("toy", ids_of=version_ids)
    monkeypatch.setattr(store, "_retention", lambda *a: {v2: "as planned before the rollback"})
    pruned = store.prune("toy", version_ids)
    assert pruned.skipped == {v1: "serving"} and keys_of(r, v1) == N and store.meta("toy", v1).status == "written"


def test_a_reader_with_a_cached_version_never_reads_nulls_of_a_pruned_one(redis_url, lake):
    store = toy_store(redis_url, versions_kept=1)
    n = 2000
    push_from_delta(store, "toy", frame(0, n), partition="2011-01-01", uri=lake)
    ids = list(range(0, n, 7))
    bad: list[object] = []
    reads = [0]
    stop = threading.Event()

    def read() -> None:
        client = OnlineClient(redis_url, connect_timeout=10, timeout=10)  # atomicity, not deadlines, under test
        while not stop.is_set():
            try:
                rows = client.get_view("toy", ids)  # the cached version is validated in the same MGET
                reads[0] += 1
                if any(row["score"] is None for row in rows):
                    bad.append([row["score"] for row in rows][:5])
            except Exception as exc:  # noqa: BLE001
                bad.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for day in range(2, 10):
            push_from_delta(store, "toy", frame(day, n), partition=f"2011-01-0{day}", uri=lake)
            assert list(store.prune("toy", version_ids).removed)  # the previous version's keys go at once
    finally:
        stop.set()
        reader.join()
    assert not bad, bad[:3]
    assert reads[0] > 8


def test_a_live_push_is_never_pruned_and_a_dead_one_is_whatever_its_age(r, redis_url, lake):
    store = toy_store(redis_url, versions_kept=1, lease_seconds=0.6)
    push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake)
    started, release = threading.Event(), threading.Event()

    def slow():
        yield frame(2)
        started.set()
        release.wait(10)  # the push keeps its lease alive by heartbeat, well past the lease time
        yield frame(2, 60)

    result = {}
    writer = threading.Thread(
        target=lambda: result.update(
            pushed=push(store, "toy", slow(), partition="2011-01-02", delta_table=lake, delta_version=None)
        )
    )
    writer.start()
    started.wait(10)
    time.sleep(1.5)
    version = max(store.versions("toy"))
    assert store.status("toy").in_state("writing") == [version]
    assert store.prune("toy", version_ids).skipped == {version: "its push is alive"}
    release.set()
    writer.join()
    assert result["pushed"].promoted and result["pushed"].rows == 110

    # A push that failed (or was killed: see test_killed_push.py) holds no lease: dead at once, whatever its age.
    from feature_pipelines.offline.delta import overwrite_partitions

    day = "2011-01-03"
    commit = overwrite_partitions(
        lake, frame(3).with_columns(pl.lit(day).alias("partition_date")), "partition_date", day, day
    )

    def broken():
        yield frame(3)
        raise RuntimeError("the push died")

    with pytest.raises(RuntimeError, match="the push died"):
        push(store, "toy", broken(), partition=day, delta_table=lake, delta_version=commit.version)
    dead = max(store.versions("toy"))
    assert store.status("toy").in_state("dead") == [dead] and keys_of(r, dead) == N
    assert store.prune("toy", version_ids).removed[dead] == N and keys_of(r, dead) == 0


def test_a_push_that_loses_its_lease_stops_and_never_serves(r, redis_url, lake):
    store = toy_store(redis_url, lease_seconds=0.3)
    good = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake)

    def batches():
        yield frame(2)
        r.delete(KEYS.lease(good.version + 1))  # Redis stalled past the lease: it ran out
        time.sleep(0.5)
        yield frame(2)
        yield frame(2)

    with pytest.raises(OnlineStoreError, match="lost its lease"):
        push(store, "toy", batches(), partition="2011-01-02", delta_table=lake)
    assert store.serving_version("toy") == good.version
    assert store.status("toy").in_state("dead") == [good.version + 1]


def test_a_failed_prune_after_a_promotion_is_a_warning(r, redis_url, tmp_path):
    from feature_pipelines.offline.delta import overwrite_partitions

    store = toy_store(redis_url, versions_kept=1)
    old_table, new_table = str(tmp_path / "old"), str(tmp_path / "new")
    for uri, day, score in ((old_table, "2011-01-01", 1), (new_table, "2011-01-02", 2)):
        overwrite_partitions(
            uri, frame(score).with_columns(pl.lit(day).alias("partition_date")), "partition_date", day, day
        )
    first = publish(store, "toy", old_table, "2011-01-01", run_id="a", definition_hash="h", sample=10)
    assert first.promotion.promoted and not first.warnings
    log = Path(old_table) / "_delta_log" / "00000000000000000000.json"
    log.write_text("not json")  # the old version's ids can no longer be read: its removal fails
    second = publish(store, "toy", new_table, "2011-01-02", run_id="b", definition_hash="h", sample=10)
    assert second.promotion.promoted and second.pruned is None
    assert len(second.warnings) == 1 and "pruning old versions of 'toy' failed" in second.warnings[0]
    assert served(redis_url) == 2 and store.serving_version("toy") == second.written.version
    assert store.meta("toy", first.written.version).status == "deleting"  # finished by a later prune or gc


def test_a_view_served_before_histories_existed_keeps_its_serving_version_as_a_rollback_target(r, redis_url, lake):
    store = toy_store(redis_url, versions_kept=2)
    old = push_from_delta(store, "toy", frame(1), partition="2011-01-01", uri=lake).version
    r.delete(KEYS.history)  # as an older release left it: a pointer and versions, no history
    new = push_from_delta(store, "toy", frame(2), partition="2011-01-02", uri=lake).version
    entries = store.history("toy")
    assert [(e.action, e.version, e.reason) for e in entries] == [
        (Action.PROMOTE, new, "push"),
        (Action.PROMOTE, old, "served before the history was recorded"),
    ]
    assert store.prune("toy", version_ids).removed == {}
    assert store.rollback("toy", ids_of=version_ids).version == old
