"""Consent: the bitemporal ledger, the spec's purposes, and enforcement at compute, push, serve and train,
on the real Redis and real Delta tables."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines import training
from feature_pipelines.catalog import validate
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import deny_key
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import ConsentError, ConsentEvent, ConsentLedger, consent_at
from feature_pipelines.privacy.consent_change import change_consent
from feature_pipelines.privacy.policy import PrivacyPolicy
from feature_pipelines.publish import guarded_ids
from feature_pipelines.spec import FeatureService
from tests.privacy.conftest import VIEW, context_rows, publish_day, write_partition

T = datetime(2011, 3, 1, tzinfo=UTC)


def event(subject: str, purpose: str, granted: bool, at: datetime, known: datetime | None = None) -> ConsentEvent:
    return ConsentEvent("customer", subject, purpose, granted, at, known or at)


def test_state_is_bitemporal_and_a_revocation_wins_a_tie(tmp_path):
    ledger = ConsentLedger(str(tmp_path / "consent"))
    ledger.record(
        [
            event("1", "ads", True, T),
            event("1", "ads", False, T + timedelta(days=10), known=T + timedelta(days=20)),  # learned late
            event("2", "ads", True, T),
            event("2", "ads", False, T),  # same instant: the revocation wins
        ]
    )
    rows = pl.DataFrame(
        {"subject": ["1", "1", "1", "2", "3"], "at": [T + timedelta(days=d) for d in (1, 15, 25, 1, 1)]}
    )
    as_known_then = consent_at(ledger.events(), rows, {"ads": True}, known="row")
    assert as_known_then.to_list() == [True, True, False, False, False]  # 3: opt-in, never granted
    as_known_now = consent_at(ledger.events(), rows, {"ads": True}, known=None)
    assert as_known_now.to_list() == [True, False, False, False, False]  # the late revocation counts back to day 10
    opt_out = consent_at(ledger.events(), rows, {"personalization": False}, known=None)
    assert opt_out.to_list() == [True] * 5  # no event: an opt-out purpose holds


def test_ledger_refuses_naive_times(tmp_path):
    ledger = ConsentLedger(str(tmp_path / "consent"))
    with pytest.raises(ConsentError, match="timezone-aware"):
        ledger.record([ConsentEvent("customer", "1", "ads", True, datetime(2011, 1, 1), datetime(2011, 1, 1))])


def test_the_catalog_requires_purposes_on_views_of_people_and_checks_services(catalog):
    view = catalog.views["user_context"]
    bare = dataclasses.replace(view, purposes=())
    broken = dataclasses.replace(catalog, views={**catalog.views, "user_context": bare})
    problems = validate(broken)
    assert any("user_context" in p and "is personal: declare the purposes" in p for p in problems), problems
    unknown = dataclasses.replace(
        catalog, views={**catalog.views, "user_context": dataclasses.replace(view, purposes=("spam",))}
    )
    assert any("unknown purpose 'spam'" in p for p in validate(unknown))
    service = catalog.services["ranking_model_v1"]
    ads = dataclasses.replace(
        catalog, services={**catalog.services, service.name: dataclasses.replace(service, purpose="ads")}
    )
    assert any("purpose 'ads' is not among the purposes of view 'user_context'" in p for p in validate(ads))
    none = FeatureService(name="x", features=("user_context:country",), owner="team:x", description="x")
    nopurpose = dataclasses.replace(catalog, services={**catalog.services, "x": none})
    assert any(
        "consumes views of personal entities (user_context): declare its purpose" in p for p in validate(nopurpose)
    )


def test_compute_leaves_out_subjects_without_consent_at_the_partitions_time(catalog, settings):
    view = catalog.views["user_purchase_behavior"]
    ConsentLedger(settings.privacy_table("consent")).record(
        [event("12346", "analytics", False, datetime(2011, 3, 2, 12, tzinfo=UTC))]
    )
    frame = pl.concat([context_rows(d, [12346, 12347]) for d in ("2011-03-01", "2011-03-02")]).select(
        "customer_id", "event_timestamp", "partition_date"
    )
    kept = PrivacyPolicy(catalog, settings).filter_view_rows(view, frame)
    # Revoked on 2011-03-02 noon: the partition describing 03-02 00:00 keeps them, the one at 03-03 does not.
    assert kept.frame.select("customer_id", "partition_date").rows() == [
        (12346, "2011-03-01"),
        (12347, "2011-03-01"),
        (12347, "2011-03-02"),
    ]
    assert (kept.dropped, kept.subjects) == (1, 1)
    assert PrivacyPolicy(catalog, settings).filter_view_rows(catalog.views["user_context"], frame).dropped == 0


def test_revocation_removes_every_version_at_once_and_no_push_writes_it_back(catalog, settings, store, r):
    ids = list(range(12346, 12346 + 50))
    write_partition(settings, "2011-03-01", ids)
    assert publish_day(catalog, settings, store, "2011-03-01").promotion.promoted
    write_partition(settings, "2011-03-02", ids)
    assert publish_day(catalog, settings, store, "2011-03-02").promotion.promoted
    client = OnlineClient(r, catalog)
    assert client.get_view(VIEW, [12350])[0]["country"] == "United Kingdom"

    done = change_consent(
        catalog, settings, store, "12350", "personalization", granted=False, by="steward", reason="asked"
    )
    assert done.keys_removed == 2  # both kept versions
    assert done.online_seconds < 1.0 and done.seconds < 5.0
    assert not any(r.exists(store.keys(VIEW).data_key(v, 12350)) for v in (1, 2))
    assert client.get_view(VIEW, [12350, 12351])[0]["country"] is None
    assert client.get_view(VIEW, [12351])[0]["country"] == "United Kingdom"
    assert r.hget(deny_key("customer"), "12350") == b'["personalization"]'
    # user_purchase_behavior serves personalization too: its (absent) versions are looked up, nothing breaks.

    # A backfill of an older day and a new push: neither writes the subject again; their round trips pass.
    write_partition(settings, "2011-03-03", ids)
    pushed = publish_day(catalog, settings, store, "2011-03-03")
    assert pushed.promotion.promoted and pushed.withheld == 1 and pushed.written.rows == 49
    assert not r.exists(store.keys(VIEW).data_key(pushed.written.version, 12350))
    backfill = publish_day(catalog, settings, store, "2011-03-01")
    assert backfill.withheld == 1 and not r.exists(store.keys(VIEW).data_key(backfill.written.version, 12350))

    # A rollback to a version written before the revocation: the subject's absent keys are expected.
    rolled = store.rollback(VIEW, 2, ids_of=guarded_ids(OnlineGuardFor(catalog, settings, store)), by="oncall")
    assert rolled.promoted and rolled.keys_refreshed == 49
    assert client.get_view(VIEW, [12350])[0]["country"] is None

    audit = AuditLog(settings.privacy_table("audit")).read(action="consent_revoke", subject=("customer", "12350"))
    assert audit.select("by", "target", "reason").rows() == [("steward", "personalization", "asked")]
    assert "12350" not in "".join(audit["subject_digest"].to_list() + audit["details"].to_list())

    # A grant brings the subject back with the next push.
    change_consent(catalog, settings, store, "12350", "personalization", granted=True, by="steward")
    assert r.hget(deny_key("customer"), "12350") is None
    store.unpin(VIEW)
    write_partition(settings, "2011-03-04", ids)
    assert publish_day(catalog, settings, store, "2011-03-04").withheld == 0
    assert client.get_view(VIEW, [12350])[0]["country"] == "United Kingdom"


def OnlineGuardFor(catalog, settings, store):  # noqa: N802 - reads as the guard it builds
    from feature_pipelines.privacy.policy import OnlineGuard

    return OnlineGuard(PrivacyPolicy(catalog, settings), store)


def test_serving_refuses_a_denied_subject_even_if_a_key_survived(catalog, settings, store, r):
    write_partition(settings, "2011-03-01", [1, 2, 3])
    published = publish_day(catalog, settings, store, "2011-03-01")
    key = store.keys(VIEW).data_key(published.written.version, 2)
    value = r.get(key)
    change_consent(catalog, settings, store, "2", "personalization", granted=False)
    r.set(key, value)  # a copy written by a push that raced the revocation, before its sweep
    client = OnlineClient(r, catalog)
    # The first read refreshes the serving version (general path), the second takes the one-MGET fast path.
    for _ in range(2):
        assert [row["country"] for row in client.get_view(VIEW, [1, 2, 3])] == [
            "United Kingdom",
            None,
            "United Kingdom",
        ]
    assert VIEW in client._served
    # The sweep a push runs after its write removes such a copy.
    assert OnlineGuardFor(catalog, settings, store).sweep(store.layout[VIEW], published.written.version) == 1
    assert not r.exists(key)


def test_training_drops_rows_without_consent_as_known_then_and_a_rebuild_after_revocation(catalog, settings, store):
    for day in ("2011-03-01", "2011-03-02", "2011-03-03"):
        write_partition(settings, day, [1, 2, 3])
    ledger = ConsentLedger(settings.privacy_table("consent"))
    # Customer 1 objected on 03-02, but the shop learned it on 03-04.
    ledger.record(
        [event("1", "personalization", False, datetime(2011, 3, 2, tzinfo=UTC), datetime(2011, 3, 4, tzinfo=UTC))]
    )
    ts = [
        datetime(2011, 3, 3, 12, tzinfo=UTC),
        datetime(2011, 3, 4, 12, tzinfo=UTC),
        datetime(2011, 3, 3, 12, tzinfo=UTC),
    ]
    labels = pl.DataFrame({"customer_id": [1, 1, 2], "event_timestamp": ts, "label": [1, 0, 1]})
    plan = {VIEW: ["country"]}
    built = training.build(
        catalog, "ranking_model_v1", labels, settings.feature_table, plan=plan, privacy=PrivacyPolicy(catalog, settings)
    )
    # Known-time semantics would keep the 03-03 row (the objection was not known then), but the objection
    # holds now: no row of customer 1 trains a model any more.
    assert built.frame["customer_id"].to_list() == [2]
    assert built.manifest.withheld == 2
    unfiltered = training.build(catalog, "ranking_model_v1", labels, settings.feature_table, plan=plan)
    assert unfiltered.frame.height == 3

    labels2 = labels.filter(pl.col("customer_id") == 2)
    first = training.build(
        catalog,
        "ranking_model_v1",
        labels2,
        settings.feature_table,
        plan=plan,
        privacy=PrivacyPolicy(catalog, settings),
    )
    assert first.frame.height == 1
    change_consent(catalog, settings, store, "2", "personalization", granted=False)
    again = training.rebuild(catalog, first.manifest, labels2, privacy=PrivacyPolicy(catalog, settings))
    assert again.frame.height == 0 and again.manifest.withheld == 1


def test_opt_in_purpose_needs_a_grant_as_known_at_the_rows_time(catalog, settings):
    ledger = ConsentLedger(settings.privacy_table("consent"))
    ledger.record([event("7", "ads", True, datetime(2011, 3, 2, tzinfo=UTC))])
    policy = PrivacyPolicy(catalog, settings)
    at = pl.Series(
        [datetime(2011, 3, 1, tzinfo=UTC), datetime(2011, 3, 3, tzinfo=UTC), datetime(2011, 3, 3, tzinfo=UTC)]
    )
    ok = policy.permitted("customer", pl.Series([7, 7, 8]), ["ads"], at, "row")
    assert ok.to_list() == [False, True, False]
    assert policy.permitted("item", pl.Series(["85123A"]), ["ads"]).to_list() == [True]  # items are not people


def test_unknown_purpose_and_non_personal_entity_are_refused(catalog, settings, store):
    with pytest.raises(ConsentError, match="unknown purpose 'spam'"):
        change_consent(catalog, settings, store, "1", "spam", granted=False)
    with pytest.raises(ConsentError, match="entity 'item' is not personal"):
        change_consent(catalog, settings, store, "85123A", "ads", granted=False, entity="item")
