"""Consent as a source and consent of persons: generated consent events ingested through the real raw asset
and folded into the ledger by `privacy/consent` (bitemporal, idempotent per partition, Redis brought in
line at once); a choice made by a customer id or a cookie withholds the person it stitches to; revoking a
person by any alias removes its data and alias keys in the revocation call, and the next push does not
write them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from feature_pipelines.cli import app
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.offline import delta, history
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema, deny_key
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.privacy_assets import CONSENT_KEY
from feature_pipelines.privacy.consent import ConsentEvent, ConsentLedger
from feature_pipelines.privacy.consent_change import change_consent
from feature_pipelines.privacy.consent_source import SAME_EVENT
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from feature_pipelines.publish import AliasSource, publish
from feature_pipelines.spec import EVENT_DATE, EVENT_TIMESTAMP, PARTITION_DATE
from feature_pipelines.synthetic import consent as synthetic_consent
from feature_pipelines.synthetic import events as synthetic_events
from tests.conftest import run, with_source_file
from tests.privacy.conftest import publish_day, write_partition
from tests.privacy.test_person_erasure import A_EVENTS, B_EVENTS, T0, events

DAY = "2011-03-01"
PERSON_VIEW = OnlineSchema(
    view="person_consent_profile",
    namespace="fs",
    join_key="person_id",
    features=["events_1d"],
    dtypes=["Int64"],
    ttl_seconds=None,
    key_dtype="String",
    entity="person",
    purposes=["personalization"],
)


def metadata_of(result, key) -> dict:
    mat = next(e for e in result.get_asset_materialization_events() if e.asset_key == key)
    return {k: v.value for k, v in mat.step_materialization_data.materialization.metadata.items()}


def test_generated_consent_is_seeded_and_passes_the_source_contract(tmp_path):
    synthetic_events.ensure(synthetic_events.DEFAULT_OUT)
    anchors = synthetic_events.load_anchors()
    cookies = synthetic_consent.cookies()
    once = synthetic_consent.generate(anchors, cookies, seed=5)
    assert once.equals(synthetic_consent.generate(anchors, cookies, seed=5))
    assert not once.equals(synthetic_consent.generate(anchors, cookies, seed=6))
    assert once["consent_id"].n_unique() == once.height
    kinds = once.group_by("subject_type").len()
    assert set(kinds["subject_type"]) == {"customer_id", "anonymous_id"}
    # Cookies answer the banner at or after their first visit.
    firsts = once.filter(pl.col("subject_type") == "anonymous_id").join(
        cookies, left_on="subject_id", right_on="anonymous_id"
    )
    assert firsts.height == once.filter(pl.col("subject_type") == "anonymous_id").height
    assert (firsts["event_time"] >= firsts["first_seen"]).all()


@pytest.fixture
def consent_catalog(catalog, tmp_path):
    synthetic_events.ensure(synthetic_events.DEFAULT_OUT)
    path = synthetic_consent.write(tmp_path / "consent")
    return with_source_file(catalog, path, "consent_events")


def test_the_consent_asset_folds_ingested_events_bitemporally_and_idempotently(
    consent_catalog, pg_instance, store_resource, store, r
):
    cat = consent_catalog
    settings = store_resource.settings
    generated = pl.read_parquet(cat.sources["consent_events"].location)
    first, last = "2010-12-01", "2011-03-31"
    in_range = generated.filter(pl.col("event_time").dt.date().cast(pl.String) <= last)
    # A customer who revoked personalization in range (and never granted it again) is served before the fold.
    revoked = (
        in_range.filter((pl.col("subject_type") == "customer_id") & (pl.col("purpose") == "personalization"))
        .group_by("subject_id")
        .agg(pl.col("granted").sort_by("event_time").last())
        .filter(~pl.col("granted"))["subject_id"]
        .sort()[0]
    )
    write_partition(settings, DAY, [int(revoked), 12346])
    assert publish_day(cat, settings, store, DAY).promotion.promoted
    keys = store.keys("user_context")
    version = store.serving_version("user_context")
    assert r.exists(keys.data_key(version, revoked))

    source = cat.sources["consent_events"]
    result = run(cat, pg_instance, store_resource, [raw_key(source), CONSENT_KEY], first=first, last=last)
    assert result.success
    md = metadata_of(result, CONSENT_KEY)
    assert md["events_appended"] == in_range.height and md["events_already_in_ledger"] == 0
    # Redis in line at once: the revoked customer's key is gone and its deny entry set; 12346 untouched.
    assert not r.exists(keys.data_key(version, revoked)) and r.exists(keys.data_key(version, "12346"))
    assert "personalization" in r.hget(deny_key("customer"), revoked).decode()

    ledger = ConsentLedger(settings.privacy_table("consent")).events()
    assert ledger.height == in_range.height
    assert set(ledger["entity"]) == {"customer", "alias:anonymous_id"}
    assert ledger["origin"].str.starts_with("consent_events:").all() and set(ledger["by"]) == {"consent_events"}
    # Known from the ingest commit of each row's day, not from the event time.
    raw_uri = settings.raw_table("consent_events")
    ingest_time = history.commit(raw_uri, delta.table_version(raw_uri)).timestamp
    assert (ledger["known_time"] == ingest_time).all()
    assert (ledger["event_time"] < datetime(2011, 4, 1, tzinfo=UTC)).all()

    # Re-running the same days appends nothing; a later range appends only its own days.
    again = run(cat, pg_instance, store_resource, [CONSENT_KEY], first=first, last=last)
    assert metadata_of(again, CONSENT_KEY)["events_appended"] == 0
    assert ConsentLedger(settings.privacy_table("consent")).events().height == ledger.height
    more = run(cat, pg_instance, store_resource, [raw_key(source), CONSENT_KEY], first="2011-04-01", last="2011-04-30")
    april = generated.filter(pl.col("event_time").dt.month() == 4).filter(pl.col("event_time").dt.year() == 2011)
    assert metadata_of(more, CONSENT_KEY)["events_appended"] == april.height
    full = ConsentLedger(settings.privacy_table("consent")).events()
    assert full.unique(SAME_EVENT).height == full.height == in_range.height + april.height

    # Compute withholds the revoked customer for partitions after the revocation, as the ledger says.
    policy = PrivacyPolicy(cat, settings)
    at = pl.Series([datetime(2011, 12, 1, tzinfo=UTC)] * 2)
    assert policy.permitted("customer", pl.Series([revoked, "12346"]), ["personalization"], at).to_list() == [
        False,
        True,
    ]


@pytest.fixture
def persons(catalog, settings, store):
    """Two stitched persons (A: cookies anon_a1, anon_a2, device dev_a, customer 12346; B: anon_b1, customer
    12347), a person view serving personalization from a Delta table, pushed with its alias keys."""
    frame = events(A_EVENTS + B_EVENTS, catalog)
    delta.overwrite_partitions(settings.raw_table("behaviour_events"), frame, EVENT_DATE, DAY, DAY)
    identity = IdentityStore(settings.lake_dir)
    identity.full(frame, now=T0 + timedelta(days=1))
    current = identity.alias_map().current()
    person = dict(zip(current["identifier"], current["person_id"], strict=True))
    layout = OnlineLayout([*OnlineLayout.from_catalog(catalog).values(), PERSON_VIEW])
    online = OnlineStore(store.r, layout, 3)
    online.load_functions()
    table = str(settings.lake_dir / "features" / PERSON_VIEW.view)
    ids = current["person_id"].unique().sort()
    rows = pl.DataFrame(
        {
            "person_id": ids,
            "events_1d": [3] * ids.len(),
            EVENT_TIMESTAMP: [T0 + timedelta(days=1)] * ids.len(),
            PARTITION_DATE: [DAY] * ids.len(),
        },
        schema_overrides={"events_1d": pl.Int64, EVENT_TIMESTAMP: pl.Datetime("us", "UTC")},
    )
    delta.overwrite_partitions(table, rows, PARTITION_DATE, DAY, DAY)
    return identity, online, person, table


def push_persons(catalog, settings, online: OnlineStore, identity: IdentityStore, table: str):
    return publish(
        online,
        PERSON_VIEW.view,
        table,
        DAY,
        run_id="test",
        definition_hash="h",
        sample=100,
        aliases=AliasSource(identity.uri("alias_map")),
        guard=OnlineGuard(PrivacyPolicy(catalog, settings), online),
    )


def test_a_cookies_or_a_customers_revocation_withholds_the_person_it_stitches_to(persons, catalog, settings):
    _identity, _online, person, _table = persons
    a, b = person["anon_a1"], person["anon_b1"]
    at = datetime(2011, 3, 2, tzinfo=UTC)
    ledger = ConsentLedger(settings.privacy_table("consent"))
    ledger.record([ConsentEvent("alias:anonymous_id", "anon_a2", "personalization", False, at, at, "banner")])
    policy = PrivacyPolicy(catalog, settings)
    ids = pl.Series([a, b])
    assert policy.permitted("person", ids, ["personalization"]).to_list() == [False, True]
    assert policy.permitted("person", ids, ["analytics"]).to_list() == [True, True]
    # Before the choice the person was permitted (at the partition's time, as known now).
    assert policy.permitted("person", ids, ["personalization"], datetime(2011, 3, 1, tzinfo=UTC)).to_list() == [
        True,
        True,
    ]
    # A customer id speaks for its person; an opt-in grant by one id counts, a revocation by any id wins.
    ledger.record(
        [
            ConsentEvent("customer", "12347", "personalization", False, at, at, "cli"),
            ConsentEvent("customer", "12346", "ads", True, at, at, "cli"),
            ConsentEvent("alias:anonymous_id", "anon_b1", "ads", True, at, at, "banner"),
            ConsentEvent("customer", "12347", "ads", False, at + timedelta(hours=1), at, "cli"),
        ]
    )
    policy = PrivacyPolicy(catalog, settings)
    assert policy.permitted("person", ids, ["personalization"]).to_list() == [False, False]
    assert policy.permitted("person", ids, ["ads"]).to_list() == [True, False]
    # The customer entity itself only hears its own events.
    assert policy.permitted("customer", pl.Series([12346, 12347]), ["personalization"]).to_list() == [True, False]


def test_revoking_a_person_by_any_alias_removes_its_keys_and_aliases_at_once(persons, catalog, settings, redis_url):
    identity, online, person, table = persons
    a, b = person["anon_a1"], person["anon_b1"]
    assert push_persons(catalog, settings, online, identity, table).promotion.promoted
    client = OnlineClient(redis_url)
    for kind, ident in (("anonymous_id", "anon_a2"), ("device_id", "dev_a"), ("customer_id", "12346")):
        assert client.get_by_alias(PERSON_VIEW.view, kind, ident).person_id == a

    done = change_consent(
        catalog, settings, online, "anonymous_id:anon_a2", "personalization", granted=False, entity="person"
    )
    assert done.subject == a and done.keys_removed >= 5  # its data key and four alias keys
    # Within the revocation call: no alias of A resolves, A is denied; B is served as before.
    for kind, ident in (("anonymous_id", "anon_a1"), ("anonymous_id", "anon_a2"), ("device_id", "dev_a")):
        read = client.get_by_alias(PERSON_VIEW.view, kind, ident)
        assert read.person_id is None and all(v is None for v in read.features.to_dict().values()), (kind, ident)
    assert client.get_by_alias(PERSON_VIEW.view, "customer_id", "12346").person_id is None
    assert online.r.hget(deny_key("person"), a).decode() == '["personalization"]'
    assert client.get_by_alias(PERSON_VIEW.view, "customer_id", "12347").features["events_1d"] == 3

    # The next push writes neither A's features nor its alias keys.
    pushed = push_persons(catalog, settings, online, identity, table)
    assert pushed.promotion.promoted
    for kind, ident in (("anonymous_id", "anon_a1"), ("customer_id", "12346")):
        assert client.get_by_alias(PERSON_VIEW.view, kind, ident).person_id is None
    assert client.get_by_alias(PERSON_VIEW.view, "anonymous_id", "anon_b1").person_id == b


def test_revoking_a_customer_withholds_its_person_too(persons, catalog, settings, redis_url, monkeypatch):
    identity, online, person, table = persons
    a, b = person["anon_a1"], person["anon_b1"]
    assert push_persons(catalog, settings, online, identity, table).promotion.promoted
    client = OnlineClient(redis_url)
    done = change_consent(catalog, settings, online, "12347", "personalization", granted=False)
    assert done.entity == "customer" and done.subject == "12347"
    # Within the call: the person customer 12347 stitches to is denied, its keys and alias keys are gone.
    assert online.r.hget(deny_key("person"), b).decode() == '["personalization"]'
    for kind, ident in (("customer_id", "12347"), ("anonymous_id", "anon_b1")):
        assert client.get_by_alias(PERSON_VIEW.view, kind, ident).person_id is None
    assert client.get_by_alias(PERSON_VIEW.view, "anonymous_id", "anon_a1").person_id == a
    assert push_persons(catalog, settings, online, identity, table).promotion.promoted
    assert client.get_by_alias(PERSON_VIEW.view, "customer_id", "12347").person_id is None
    # A grant again clears the person's entry: the next push serves it.
    change_consent(catalog, settings, online, "12347", "personalization", granted=True)
    assert online.r.hget(deny_key("person"), b) is None
    assert push_persons(catalog, settings, online, identity, table).promotion.promoted
    assert client.get_by_alias(PERSON_VIEW.view, "customer_id", "12347").person_id == b


def test_fstore_consent_revoke_a_person_by_an_alias(persons, settings, redis_url, monkeypatch):
    _identity, online, person, _table = persons
    monkeypatch.setenv("FS_LAKE_DIR", str(settings.lake_dir))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("FS_REDIS_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    args = ["consent", "revoke", "--entity", "person", "device_id:dev_a", "--purpose", "personalization"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"person {person['dev_a']}: personalization revoked" in out.output
    assert online.r.hget(deny_key("person"), person["dev_a"]).decode() == '["personalization"]'
    unknown = CliRunner().invoke(app, ["consent", "revoke", "--entity", "person", "nobody", "-p", "personalization"])
    assert unknown.exit_code == 2 and "neither a person id nor an alias" in unknown.output


def test_subjects_withheld_for_consent_are_not_incomplete(catalog, settings):
    """Completeness counts active entities without a row; one left out for consent is not missing."""
    from datetime import date

    from feature_pipelines.checks.freshness import partition_health

    view = catalog.views["user_context"]
    day = date(2011, 3, 1)
    raw = pl.DataFrame({"invoice_date": [datetime(2011, 3, 1, 12, tzinfo=UTC)]})
    active = pl.DataFrame({"customer_id": [1, 2, 3], EVENT_DATE: [DAY] * 3})
    ledger = ConsentLedger(settings.privacy_table("consent"))
    at = datetime(2011, 2, 1, tzinfo=UTC)
    ledger.record([ConsentEvent("customer", "3", "personalization", False, at, at, "cli")])
    rows = pl.DataFrame(
        {
            "customer_id": [1, 2, 3],
            EVENT_TIMESTAMP: [datetime(2011, 3, 2, tzinfo=UTC)] * 3,
            PARTITION_DATE: [DAY] * 3,
        }
    )
    kept = PrivacyPolicy(catalog, settings).filter_view_rows(view, rows)
    assert kept.dropped == 1 and kept.withheld.to_dicts() == [{"customer_id": 3, PARTITION_DATE: DAY}]
    blind = partition_health(view, catalog, raw, kept.frame, [day], active)[0]
    assert (blind.active, blind.covered) == (3, 2)  # without the policy's word: a false alarm
    health = partition_health(view, catalog, raw, kept.frame, [day], active, kept.withheld)[0]
    assert (health.active, health.covered) == (2, 2) and health.completeness == 1.0


class RevokedMidPush(OnlineStore):
    """The real store, in which a real revocation lands at one point of a push's write: before its rows,
    between its rows and its aliases, or after the push filtered its aliases but before their keys exist
    (the revocation then finds none of them to delete; only the push's sweep can)."""

    def __init__(self, online: OnlineStore, when: str, revoke) -> None:
        super().__init__(online.r, online.layout, online.versions_kept)
        self.when, self.revoke = when, revoke

    def write(self, view, batches, *, aliases=None, **kwargs):
        if self.when == "before_rows":
            batches = self._after_revoking(batches)
        elif self.when == "before_aliases":
            aliases = self._after_revoking(aliases)
        else:
            aliases = self._revoking_after_each(aliases)
        return super().write(view, batches, aliases=aliases, **kwargs)

    def _after_revoking(self, frames):
        self.revoke()
        yield from frames

    def _revoking_after_each(self, frames):
        for frame in frames:  # pulling the frame runs the push's own guard: the person is still permitted
            self.revoke()
            yield frame  # ... and the store writes its alias keys after the revocation's deletes


@pytest.mark.parametrize("when", ["before_rows", "before_aliases", "after_alias_filter"])
def test_a_revocation_during_a_push_leaves_no_alias_of_the_version_to_the_person(
    persons, catalog, settings, redis_url, r, when
):
    identity, online, person, table = persons
    a, b = person["anon_a1"], person["anon_b1"]
    revoked: list[int] = []

    def revoke() -> None:
        done = change_consent(
            catalog, settings, online, "customer_id:12346", "personalization", granted=False, entity="person"
        )
        revoked.append(done.keys_removed)

    racing = RevokedMidPush(online, when, revoke)
    published = push_persons(catalog, settings, racing, identity, table)
    assert revoked, "the revocation did not run during the push"
    assert published.promotion.promoted and published.roundtrip.passed, published.promotion.reason
    version = published.written.version
    keys = online.keys(PERSON_VIEW.view)
    a_ids = [(k, i) for k, i, p in identity.alias_map().current().rows() if p == a]
    assert {i for _, i in a_ids} == {"anon_a1", "anon_a2", "dev_a", "12346"}
    # No alias key of the version names A, nor does A have features in it; B is served whole.
    assert [r.get(keys.alias_key(version, k, i)) for k, i in a_ids] == [None] * 4
    assert not r.exists(keys.data_key(version, a))
    client = OnlineClient(redis_url)
    for kind, ident in a_ids:
        read = client.get_by_alias(PERSON_VIEW.view, kind, ident)
        assert read.person_id is None and all(v is None for v in read.features.to_dict().values()), (kind, ident)
    assert client.get_by_alias(PERSON_VIEW.view, "customer_id", "12347").features["events_1d"] == 3
    assert r.get(keys.alias_key(version, "anonymous_id", "anon_b1")).decode() == b
    # Every alias key the version holds names a person with features in it.
    for key in r.scan_iter(f"fs:{PERSON_VIEW.view}:{version}:alias:*"):
        assert r.exists(keys.data_key(version, r.get(key).decode())), key


def test_the_sweep_without_the_versions_aliases_finds_them_in_the_alias_map(persons, catalog, settings, r):
    identity, online, person, table = persons
    a = person["anon_a1"]
    version = push_persons(catalog, settings, online, identity, table).written.version
    online.set_deny("person", a, '["personalization"]')  # denied; its keys left behind (a raced write)
    guard = OnlineGuard(PrivacyPolicy(catalog, settings), online)
    assert guard.sweep(online.layout[PERSON_VIEW.view], version) == 5  # four alias keys and the data key
    keys = online.keys(PERSON_VIEW.view)
    assert not r.exists(keys.data_key(version, a), keys.alias_key(version, "device_id", "dev_a"))
    assert r.exists(keys.alias_key(version, "anonymous_id", "anon_b1"))
