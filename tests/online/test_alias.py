"""Serving by any alias on real Redis: one round trip, merges and un-merges with the next push, never an
alias to a person whose features are not written, read-only ACL users, and the Redis Function's keys."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import redis

from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.errors import EntityIdError, OnlineStoreError
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.local_server import RedisServer
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.publish import AliasSource, publish, version_aliases
from feature_pipelines.spec import PARTITION_DATE

PROFILE = OnlineSchema("person_profile", "fs", "person_id", ["events_7d", "owner"], ["Int64", "String"], 600, "String")
PLACES = OnlineSchema("person_places", "fss", "person_id", ["country"], ["String"], 600, "String")
LAYOUT = OnlineLayout([PROFILE, PLACES])


def features(persons: dict[str, int]) -> pl.DataFrame:
    """A profile frame whose `owner` feature names the person: a read proves whose features it got."""
    ids = sorted(persons)
    return pl.DataFrame({"person_id": ids, "events_7d": [persons[p] for p in ids], "owner": ids})


def aliases(rows: list[tuple[str, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["identifier_type", "identifier", "person_id"], orient="row")


def write(store: OnlineStore, view: str, frame: pl.DataFrame, alias_frame: pl.DataFrame, partition: str):
    written = store.write(
        view,
        [frame],
        partition=partition,
        delta_table="/nowhere",
        delta_version=None,
        run_id="test",
        definition_hash="h",
        aliases=[alias_frame],
        alias_source={"table": "/nowhere", "delta_version": 0},
    )
    return store.promote(written)


MAP = [
    ("anonymous_id", "a-1", "P1"),
    ("device_id", "d-1", "P1"),
    ("customer_id", "12352", "P1"),
    ("anonymous_id", "a-2", "P2"),
    ("anonymous_id", "a-never-logged-in", "P3"),  # a visitor who never logged in: a person of their own
]


@pytest.fixture
def served(redis_url) -> OnlineStore:
    store = OnlineStore(connect(redis_url), LAYOUT)
    assert write(store, "person_profile", features({"P1": 5, "P2": 3, "P3": 1}), aliases(MAP), "2011-12-09").promoted
    return store


def _stats(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("fcall_ro", "get", "mget", "hget")}


def test_any_alias_reads_the_persons_features_in_one_round_trip(served, redis_url, r):
    client = OnlineClient(redis_url)
    first = client.get_by_alias("person_profile", "anonymous_id", "a-1")  # caches the version's schema
    assert first.features == {"events_7d": 5, "owner": "P1"} and first.person_id == "P1"

    sent: list[tuple] = []
    execute = client.r.execute_command
    client.r.execute_command = lambda *args, **kw: sent.append(args) or execute(*args, **kw)
    before = _stats(r)
    by_device = client.get_by_alias("person_profile", "device_id", "d-1")
    after = _stats(r)
    assert [a[0] for a in sent] == ["FCALL_RO"], sent  # one round trip from the client...
    # ... in which Redis read the pointer, the alias and the person's key itself.
    assert {k: after[k] - before[k] for k in after} == {"fcall_ro": 1, "get": 3, "mget": 0, "hget": 0}
    assert by_device.features == {"events_7d": 5, "owner": "P1"} and by_device.persons == {"person_profile": "P1"}

    assert client.get_by_alias("person_profile", "customer_id", 12352).features["owner"] == "P1"
    assert client.get_by_alias("person_profile", "anonymous_id", "a-never-logged-in").features["owner"] == "P3"
    unknown = client.get_by_alias("person_profile", "anonymous_id", "a-404")
    assert unknown.person_id is None and unknown.features == {"events_7d": None, "owner": None}
    # The alias keys are exactly the layout's: one per identifier, naming the person in plain text.
    assert r.get(served.keys("person_profile").alias_key(1, "device_id", "d-1")) == b"P1"
    assert r.pttl(served.keys("person_profile").alias_key(1, "device_id", "d-1")) > 0  # the view's TTL


def test_a_fresh_client_reads_a_version_it_has_not_seen(served, redis_url):
    client = OnlineClient(redis_url)  # no catalog, nothing cached: the reply names the version to decode
    assert client.get_by_alias("person_profile", "anonymous_id", "a-2").features == {"events_7d": 3, "owner": "P2"}
    write(served, "person_profile", features({"P1": 6, "P2": 4, "P3": 1}), aliases(MAP), "2011-12-10")
    assert client.get_by_alias("person_profile", "anonymous_id", "a-2").features["events_7d"] == 4


def test_bad_identifiers_and_unserved_views_are_errors(served, redis_url):
    client = OnlineClient(redis_url)
    with pytest.raises(EntityIdError, match="identifier type 'anonymous id' is not valid"):
        client.get_by_alias("person_profile", "anonymous id", "a-1")
    with pytest.raises(EntityIdError, match=r"identifier 1.5 \(float\) is not valid"):
        client.get_by_alias("person_profile", "anonymous_id", 1.5)
    with pytest.raises(OnlineStoreError, match="view 'person_places' has no serving version"):
        client.get_by_alias("person_places", "anonymous_id", "a-1")


def test_the_store_refuses_aliases_it_cannot_serve(redis_url):
    store = OnlineStore(connect(redis_url), LAYOUT)
    frame = features({"P1": 5})
    with pytest.raises(OnlineStoreError, match=r"1 aliases name a person with no row in this version, e.g. .*P9"):
        write(store, "person_profile", frame, aliases([("anonymous_id", "a-1", "P1"), ("device_id", "d", "P9")]), "d")
    with pytest.raises(OnlineStoreError, match="2 alias rows name an identifier more than once"):
        write(store, "person_profile", frame, aliases([("anonymous_id", "a", "P1"), ("anonymous_id", "a", "P1")]), "d")
    with pytest.raises(OnlineStoreError, match=r"identifier types \['Device'\] are not valid"):
        write(store, "person_profile", frame, aliases([("Device", "a", "P1")]), "d")
    assert store.serving_version("person_profile") is None  # none of them served


# -- merges and un-merges reach the alias keys with the next push (through `publish`, from Delta) ---------


class AliasMapTable:
    """A bitemporal alias map in Delta, as the identity graph keeps it: a changed alias closes its row
    (`known_to`) and opens a new one; a retracted alias is only closed."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.rows: list[dict] = []

    def set(self, day: str, mapping: dict[tuple[str, str], str]) -> None:
        at = datetime.fromisoformat(day).replace(tzinfo=UTC)
        current = {(r["identifier_type"], r["identifier"]): r for r in self.rows if r["known_to"] is None}
        for key, row in current.items():
            if mapping.get(key) != row["person_id"]:
                row["known_to"] = at
        for (kind, ident), person in mapping.items():
            known = current.get((kind, ident))
            if known is not None and known["person_id"] == person:
                continue
            self.rows.append(
                {
                    "identifier_type": kind,
                    "identifier": ident,
                    "person_id": person,
                    "valid_from": at,
                    "known_from": at,
                    "known_to": None,
                }
            )
        frame = pl.DataFrame(
            self.rows,
            schema={
                "identifier_type": pl.String,
                "identifier": pl.String,
                "person_id": pl.String,
                "valid_from": pl.Datetime("us", "UTC"),
                "known_from": pl.Datetime("us", "UTC"),
                "known_to": pl.Datetime("us", "UTC"),
            },
        )
        frame.write_delta(self.uri, mode="overwrite")


def push_day(store: OnlineStore, table: str, alias_map: AliasMapTable, day: str, persons: dict[str, int]):
    frame = features(persons).with_columns(pl.lit(day).alias(PARTITION_DATE))
    overwrite_partitions(table, frame, PARTITION_DATE, day, day)
    return publish(
        store,
        "person_profile",
        table,
        day,
        run_id=f"run-{day}",
        definition_hash="h",
        sample=10,
        aliases=AliasSource(alias_map.uri),
    )


def test_merge_then_unmerge_reach_the_alias_keys_with_the_next_push(redis_url, tmp_path: Path, r):
    store = OnlineStore(connect(redis_url), LAYOUT, versions_kept=1)
    table = str(tmp_path / "person_profile")
    alias_map = AliasMapTable(str(tmp_path / "alias_map"))
    client = OnlineClient(redis_url)
    separate = {
        ("anonymous_id", "a-1"): "P1",
        ("device_id", "d-1"): "P1",
        ("anonymous_id", "a-2"): "P2",
        ("device_id", "d-2"): "P2",
    }
    alias_map.set("2011-12-01", separate)
    assert push_day(store, table, alias_map, "2011-12-01", {"P1": 5, "P2": 3}).promotion.promoted
    assert client.get_by_alias("person_profile", "device_id", "d-2").features == {"events_7d": 3, "owner": "P2"}

    # A login links a-2 to P1: the older id survives, P2's other ids follow it.
    merged = {**separate, ("anonymous_id", "a-2"): "P1", ("device_id", "d-2"): "P1"}
    alias_map.set("2011-12-02", merged)
    assert client.get_by_alias("person_profile", "anonymous_id", "a-2").person_id == "P2"  # not pushed yet
    assert push_day(store, table, alias_map, "2011-12-02", {"P1": 8}).promotion.promoted
    for kind, ident in [("anonymous_id", "a-2"), ("device_id", "d-2"), ("anonymous_id", "a-1")]:
        assert client.get_by_alias("person_profile", kind, ident).features == {"events_7d": 8, "owner": "P1"}

    # The link is retracted (un-merge): P2 comes back with its own ids; d-1 is dropped by a guardrail.
    unmerged = {k: v for k, v in separate.items() if k != ("device_id", "d-1")}
    alias_map.set("2011-12-03", unmerged)
    published = push_day(store, table, alias_map, "2011-12-03", {"P1": 5, "P2": 3})
    assert published.promotion.promoted and published.roundtrip.passed
    assert client.get_by_alias("person_profile", "anonymous_id", "a-2").features == {"events_7d": 3, "owner": "P2"}
    assert client.get_by_alias("person_profile", "anonymous_id", "a-1").features["owner"] == "P1"
    gone = client.get_by_alias("person_profile", "device_id", "d-1")
    assert gone.person_id is None and gone.features == {"events_7d": None, "owner": None}

    # The version records its alias source; pruning removed the older versions' alias keys with them.
    meta = store.serving_meta("person_profile")
    assert meta.aliases == {"table": alias_map.uri, "delta_version": 2, "rows": 3}
    assert sorted(pl.concat(list(version_aliases(meta)))["identifier"]) == ["a-1", "a-2", "d-2"]
    assert published.pruned is not None and sorted(published.pruned.removed) == [2]  # 1 went with push 2
    assert sorted(store.versions("person_profile")) == [3]
    left = sorted(k.decode() for k in r.scan_iter("fs:person_profile:*alias*"))
    assert left == [
        "fs:person_profile:3:alias:anonymous_id:{a-1}",
        "fs:person_profile:3:alias:anonymous_id:{a-2}",
        "fs:person_profile:3:alias:device_id:{d-2}",
    ]


def test_a_rollback_serves_the_aliases_of_the_version_it_goes_back_to(redis_url, tmp_path: Path):
    store = OnlineStore(connect(redis_url), LAYOUT)
    table = str(tmp_path / "person_profile")
    alias_map = AliasMapTable(str(tmp_path / "alias_map"))
    alias_map.set("2011-12-01", {("anonymous_id", "a-1"): "P1", ("anonymous_id", "a-2"): "P2"})
    push_day(store, table, alias_map, "2011-12-01", {"P1": 5, "P2": 3})
    alias_map.set("2011-12-02", {("anonymous_id", "a-1"): "P1", ("anonymous_id", "a-2"): "P1"})
    push_day(store, table, alias_map, "2011-12-02", {"P1": 8})
    from feature_pipelines.publish import version_ids

    done = store.rollback("person_profile", ids_of=version_ids, aliases_of=version_aliases, by="test")
    assert done.promoted and done.serving_version == 1
    client = OnlineClient(redis_url)
    assert client.get_by_alias("person_profile", "anonymous_id", "a-2").features == {"events_7d": 3, "owner": "P2"}
    # A version whose alias keys are gone cannot serve again.
    store.r.delete(store.keys("person_profile").alias_key(2, "anonymous_id", "a-2"))
    with pytest.raises(OnlineStoreError, match="1 of 2 alias keys are gone"):
        store.promote_version("person_profile", 2, ids_of=version_ids, aliases_of=version_aliases, unpin=True)


# -- a push never exposes an alias to a person whose features are not written ----------------------------


def test_readers_never_see_an_alias_to_an_unwritten_person_during_a_push(served, redis_url):
    n = 150_000
    before = {f"P{i}": i for i in range(n)}
    write(
        served,
        "person_profile",
        features(before),
        aliases([("anonymous_id", f"a-{i}", f"P{i}") for i in range(n)]),
        "2011-12-10",
    )
    # The next push un-merges everyone into new persons Q<i>, written only in the new version.
    after = {f"Q{i}": i for i in range(n)}
    moved = aliases([("anonymous_id", f"a-{i}", f"Q{i}") for i in range(n)])
    probes = [0, 1, n // 2, n - 1, 4242]
    seen: list[tuple[str | None, dict]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        client = OnlineClient(redis_url, connect_timeout=10, timeout=10)  # atomicity, not deadlines, under test
        try:
            while not done.is_set():
                for i in probes:
                    got = client.get_by_alias("person_profile", "anonymous_id", f"a-{i}")
                    seen.append((got.person_id, got.features.to_dict()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        time.sleep(0.05)
        write(served, "person_profile", features(after), moved, "2011-12-11")
        time.sleep(0.05)
    finally:
        done.set()
        reader.join()
    assert not errors, errors
    assert len(seen) > 50, "the reader did not run during the push"
    persons = {p for p, _ in seen}
    assert any(p.startswith("P") for p in persons) and any(p.startswith("Q") for p in persons)
    for person, row in seen:
        assert person is not None and row["owner"] == person and row["events_7d"] is not None, (person, row)


# -- read-only ACL users ----------------------------------------------------------------------------------


def test_a_read_only_acl_user_resolves_aliases_with_fcall_ro_only_in_its_namespaces():
    server = RedisServer()
    try:
        admin = redis.Redis.from_url(server.url)
        store = OnlineStore(admin, LAYOUT)
        write(store, "person_profile", features({"P1": 5}), aliases([("anonymous_id", "a-1", "P1")]), "2011-12-09")
        places = pl.DataFrame({"person_id": ["P1"], "country": ["Norway"]})
        write(store, "person_places", places, aliases([("anonymous_id", "a-1", "P1")]), "2011-12-09")
        read_only = ["resetchannels", "-@all", "+get", "+mget", "+hget", "+exists", "+fcall_ro"]
        admin.execute_command("ACL", "SETUSER", "ranking", "on", ">pw1", "~fs:*", *read_only)
        admin.execute_command("ACL", "SETUSER", "profile", "on", ">pw2", "~fs:*", "~fss:*", *read_only)
        admin.execute_command("ACL", "SETUSER", "old", "on", ">pw3", "~fs:*", *read_only[:-1])
        admin.execute_command("ACL", "LOG", "RESET")
        base = f"127.0.0.1:{server.port}"

        ranking = OnlineClient(f"redis://ranking:pw1@{base}/0")
        assert ranking.get_by_alias("person_profile", "anonymous_id", "a-1").features["events_7d"] == 5
        assert admin.execute_command("ACL", "LOG") == []  # nothing refused: no PING, no SETINFO, no FCALL
        with pytest.raises(OnlineStoreError, match="no permission on namespace fss"):
            ranking.get_by_alias("person_places", "anonymous_id", "a-1")
        # Told the namespace by the layout, it calls the function, whose GETs run as the user: refused.
        with pytest.raises(OnlineStoreError, match="refused the read: .*no permissions to access one of the keys"):
            OnlineClient(f"redis://ranking:pw1@{base}/0", layout=LAYOUT).get_by_alias(
                "person_places", "anonymous_id", "a-1"
            )
        with pytest.raises(redis.exceptions.NoPermissionError):
            ranking.r.execute_command("FCALL", "fs_get_by_alias", 0, "x", "y")  # the writing form is not granted

        profile = OnlineClient(f"redis://profile:pw2@{base}/0")
        assert profile.get_by_alias("person_places", "anonymous_id", "a-1").features == {"country": "Norway"}

        with pytest.raises(OnlineStoreError, match="refused the read: .*fcall_ro"):
            OnlineClient(f"redis://old:pw3@{base}/0").get_by_alias("person_profile", "anonymous_id", "a-1")
    finally:
        server.stop()


def test_a_reader_is_told_when_no_push_loaded_the_function():
    server = RedisServer()
    try:
        store = OnlineStore(redis.Redis.from_url(server.url), LAYOUT)
        from tests.conftest import push

        push(store, "person_profile", [features({"P1": 5})], partition="2011-12-09")  # without aliases
        with pytest.raises(OnlineStoreError, match="no function 'fs_get_by_alias': no push has written alias keys"):
            OnlineClient(server.url).get_by_alias("person_profile", "anonymous_id", "a-1")
    finally:
        server.stop()


def test_erasing_a_person_removes_its_alias_keys_too(served, redis_url):
    erased = served.erase_subject("person_profile", "P1", [("anonymous_id", "a-1"), ("device_id", "d-1")])
    assert erased == 3  # its data key and two alias keys (customer id 12352 was not passed: it stays)
    client = OnlineClient(redis_url)
    assert client.get_by_alias("person_profile", "anonymous_id", "a-1").person_id is None
    assert client.get_by_alias("person_profile", "customer_id", "12352").features == {"events_7d": None, "owner": None}


# -- a feature service of person views, read by alias -----------------------------------------------------


def test_the_personalization_service_reads_a_persons_profile_by_any_alias(redis_url, catalog):
    """`personalization_profile_v1` on the real catalog: the layout, the contract (lock) and the codec of
    every person_profile feature, the profile vector included."""
    from feature_pipelines.identity.graph import person_id
    from tests.profile_rows import view_rows

    store = OnlineStore(connect(redis_url), OnlineLayout.from_catalog(catalog))
    p1, p2 = person_id("customer_id", "12352"), person_id("anonymous_id", "a-alone")
    frame = view_rows(catalog.views["person_profile"], "person_id", {p1: 5, p2: 7})
    links = [("anonymous_id", "a-1", p1), ("device_id", "d-1", p1), ("customer_id", "12352", p1)]
    assert write(store, "person_profile", frame, aliases([*links, ("anonymous_id", "a-alone", p2)]), "d").promoted

    client = OnlineClient(redis_url, catalog)
    service = "personalization_profile_v1"
    for kind, ident, person in [*links, ("anonymous_id", "a-alone", p2)]:
        got = client.get_by_alias(service, kind, ident)
        expected = frame.filter(pl.col("person_id") == person).drop("person_id").row(0, named=True)
        expected["profile_vector"] = list(expected["profile_vector"])
        assert got.persons == {"person_profile": person}
        assert got.features.to_dict() == expected, (kind, ident)
    assert len(client.get_by_alias(service, "anonymous_id", "a-1").features["profile_vector"]) == 32
    nobody = client.get_by_alias(service, "anonymous_id", "a-404")
    assert nobody.person_id is None and set(nobody.features.to_dict().values()) == {None}
