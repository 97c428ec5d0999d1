"""Erasing a person by any of its aliases: resolved through the real alias map, gone from Redis (data and
alias keys of a person-keyed view), from the identity tables and the behaviour events, tombstoned so that
re-stitching the same events never brings it back; the other person untouched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from feature_pipelines.cli import app
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.offline import delta
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema, deny_key
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.erasure import ErasureError
from feature_pipelines.privacy.person_erasure import erase_person
from feature_pipelines.privacy.purge import overdue
from feature_pipelines.privacy.tombstones import Tombstones
from feature_pipelines.spec import EVENT_DATE

T0 = datetime(2011, 3, 1, 10, tzinfo=UTC)
PERSON_VIEW = OnlineSchema(
    view="person_test_profile",
    namespace="fs",
    join_key="person_id",
    features=["events_1d"],
    dtypes=["Int64"],
    ttl_seconds=None,
    key_dtype="String",
    entity="person",
)


def event(i: int, anonymous: str, device: str | None, customer: int | None, day: int = 0) -> dict:
    return {
        "event_id": f"e{i}",
        "event_time": T0 + timedelta(days=day, minutes=i),
        "anonymous_id": anonymous,
        "device_id": device,
        "customer_id": customer,
        "event_type": "product_view",
        "session_id": f"s_{anonymous}",
        "stock_code": "85123A",
        "invoice_no": None,
        "device_type": "mobile",
        "locale": "en-GB",
        "referrer": None,
        "network_id": None,
    }


def events(rows: list[dict], catalog) -> pl.DataFrame:
    schema = catalog.sources["behaviour_events"].raw_schema
    frame = pl.DataFrame(rows).with_columns(pl.col("event_time").dt.date().cast(pl.String).alias(EVENT_DATE))
    # Columns the events do not carry (e.g. `network_id`, the optional probabilistic signal) are null.
    return frame.select(
        [pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in schema.items()]
    )


# Person A: two anonymous ids on one device, logged in as customer 12346. Person B: one id, customer 12347.
A_EVENTS = [event(1, "anon_a1", "dev_a", None), event(2, "anon_a1", "dev_a", 12346), event(3, "anon_a2", "dev_a", None)]
B_EVENTS = [event(4, "anon_b1", None, None), event(5, "anon_b1", None, 12347)]


@pytest.fixture
def stitched(catalog, settings, store):
    """Behaviour events in the raw table, the identity graph built from them, and a person-keyed view served
    with its alias keys."""
    frame = events(A_EVENTS + B_EVENTS, catalog)
    raw = settings.raw_table("behaviour_events")
    delta.overwrite_partitions(raw, frame, EVENT_DATE, "2011-03-01", "2011-03-01")
    identity = IdentityStore(settings.lake_dir)
    identity.full(frame, now=T0 + timedelta(days=1))
    current = identity.alias_map().current()
    person = dict(zip(current["identifier"], current["person_id"], strict=True))
    assert person["anon_a1"] == person["anon_a2"] == person["dev_a"] == person["12346"] != person["anon_b1"]
    layout = OnlineLayout([*OnlineLayout.from_catalog(catalog).values(), PERSON_VIEW])
    online = OnlineStore(store.r, layout, 3)
    persons = current["person_id"].unique().sort()
    written = online.write(
        PERSON_VIEW.view,
        [pl.DataFrame({"person_id": persons, "events_1d": [1] * persons.len()})],
        partition="2011-03-01",
        delta_table="/nowhere",
        delta_version=None,
        run_id="test",
        definition_hash="h",
        aliases=[current.select("identifier_type", "identifier", "person_id")],
    )
    online.promote(written)
    return identity, online, person, written.version


def test_erasing_a_person_by_an_alias(stitched, catalog, settings, r):
    identity, online, person, version = stitched
    a, b = person["anon_a2"], person["anon_b1"]
    keys = online.keys(PERSON_VIEW.view)
    assert r.exists(keys.data_key(version, a), keys.alias_key(version, "anonymous_id", "anon_a1")) == 2

    done = erase_person(catalog, settings, online, "anonymous_id:anon_a2", entity="person", by="steward", reason="DSR")

    assert done.person_id == a
    assert {i for _, i in done.identifiers} == {"anon_a1", "anon_a2", "dev_a", "12346"}
    # Redis: the person's data key and every alias key gone, the deny entry set; person B untouched.
    for kind, ident in done.identifiers:
        assert not r.exists(keys.alias_key(version, kind, ident))
    assert not r.exists(keys.data_key(version, a)) and r.hget(deny_key("person"), a) == b"*"
    assert r.get(keys.alias_key(version, "anonymous_id", "anon_b1")).decode() == b
    assert r.exists(keys.data_key(version, b))
    # Identity tables: no row of A's ids or person; B's rows remain.
    for table in ("identifiers", "links", "edges", "persons", "alias_map"):
        text = identity.read(table).write_csv()
        assert not any(x in text for x in ("anon_a1", "anon_a2", "dev_a", "12346", a)), table
    assert "anon_b1" in identity.read("alias_map").write_csv()
    # Behaviour events: A's rows gone (anonymous, device and customer ids), B's kept.
    raw = delta.scan(settings.raw_table("behaviour_events")).collect()
    assert sorted(raw["anonymous_id"].unique()) == ["anon_b1"] and raw.height == len(B_EVENTS)
    assert done.customers and done.customers[0].subject == "12346"
    stones = Tombstones(settings.privacy_table("tombstones"))
    assert stones.subjects("person").to_list() == [a] and stones.subjects("customer").to_list() == ["12346"]
    assert set(stones.identifiers()["identifier"]) == {"anon_a1", "anon_a2", "dev_a", "12346"}
    # Due in 7 days: two subjects (the person, the customer), identifier tombstones not counted apart.
    assert overdue(catalog, settings, at=datetime.now(UTC) + timedelta(days=8)).by_entity == {
        "customer": 1,
        "person": 1,
    }

    # Re-stitching every event (A's included, e.g. from a re-delivered file) never brings A back, nor does
    # a later day on which A's device shows up with a new anonymous id.
    full = events(A_EVENTS + B_EVENTS, catalog)
    identity.full(full, now=T0 + timedelta(days=2))
    identity.update(events([event(9, "anon_new", "dev_a", None, day=1)], catalog), now=T0 + timedelta(days=3))
    ids = set(identity.read("persons")["identifier"])
    assert ids == {"anon_b1", "12347"}
    with pytest.raises(ErasureError, match="neither a person id nor an alias"):
        erase_person(catalog, settings, online, "anon_a1", entity="person", by="steward")


def test_fstore_erase_a_person_by_a_customer_id(stitched, settings, monkeypatch, redis_url):
    _identity, _online, person, _version = stitched
    monkeypatch.setenv("FS_LAKE_DIR", str(settings.lake_dir))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("FS_REDIS_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(app, ["erase", "--entity", "person", "customer_id:12347", "--reason", "DSR"])
    assert result.exit_code == 0, result.output
    assert f"person {person['anon_b1']} erased with" in result.output and "anonymous_id, customer_id" in result.output
    unknown = CliRunner().invoke(app, ["erase", "--entity", "person", "nobody"])
    assert unknown.exit_code == 2 and "neither a person id nor an alias" in unknown.output
