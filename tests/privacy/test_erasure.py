"""Erasure on real Delta tables (raw, quarantine, features, consent) and the real Redis: gone at once,
never written back by a re-ingest, a backfill, a push, a rollback or a training rebuild, purged by VACUUM."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from feature_pipelines import training
from feature_pipelines.offline import delta, ingest
from feature_pipelines.offline.compute import compute_partitions, raw_range_for
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import deny_key
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import ConsentError
from feature_pipelines.privacy.consent_change import change_consent
from feature_pipelines.privacy.erasure import erase
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from feature_pipelines.privacy.purge import overdue, purge
from feature_pipelines.privacy.tombstones import Tombstones
from feature_pipelines.publish import guarded_ids
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE
from tests.conftest import real_data
from tests.privacy.conftest import publish_day

DAYS = ["2011-03-01", "2011-03-02", "2011-03-03"]
VIEWS = ("user_context", "user_purchase_behavior")


def ingest_file(catalog, settings, path: Path, source):
    return ingest.ingest(
        source,
        catalog.entities,
        [str(path)],
        date(2011, 2, 1),
        date(2011, 3, 3),
        raw_uri=settings.raw_table(source.name),
        quarantine_uri=settings.quarantine_table(source.name),
        run_id="test",
        exclude=PrivacyPolicy(catalog, settings).without_erased,
    )


def compute_and_publish(catalog, settings, store, days=DAYS):
    """What the feature and online assets do for `days`: compute (consent-filtered), commit, push each day."""
    published = {}
    for name in VIEWS:
        view = catalog.views[name]
        first, last = (date.fromisoformat(d) for d in (days[0], days[-1]))
        raw = delta.read_partitions(settings.raw_table("online_retail"), EVENT_DATE, *raw_range_for(view, first, last))
        frame = (
            PrivacyPolicy(catalog, settings)
            .filter_view_rows(view, compute_partitions(view, catalog, raw, [date.fromisoformat(d) for d in days]))
            .frame
        )
        delta.overwrite_partitions(settings.feature_table(name), frame, PARTITION_DATE, days[0], days[-1])
        for day in days:
            published[(name, day)] = publish_day(catalog, settings, store, day, view=name)
    return published


def bad_row(customer: int) -> pl.DataFrame:
    """One line breaking the Quantity contract (quarantined, with its original values as JSON)."""
    row = real_data("2011-03-01", "2011-03-01").head(1)
    return row.with_columns(
        pl.lit(customer, dtype=pl.Int64).alias("CustomerID"), pl.lit(10**9, dtype=pl.Int64).alias("Quantity")
    )


@pytest.fixture
def lake(tmp_path, catalog, settings, store):
    """Feb-Mar 2011 ingested (one bad line of the subject quarantined), both user views computed and pushed."""
    source = dataclasses.replace(catalog.sources["online_retail"], on_bad_rows="quarantine", max_bad_fraction=0.5)
    cat = dataclasses.replace(catalog, sources={source.name: source})
    path = tmp_path / "retail.parquet"
    data = real_data("2011-02-01", "2011-03-03")
    subject = int(data.filter(pl.col("InvoiceDate").dt.date() == date(2011, 3, 2))["CustomerID"].drop_nulls()[0])
    pl.concat([data, bad_row(subject), bad_row(subject + 1)]).write_parquet(path)
    ingest_file(cat, settings, path, source)
    published = compute_and_publish(cat, settings, store)
    return cat, subject, path, published


def rows_of(uri: str, column: str, subject: int) -> int:
    return delta.scan(uri).filter(pl.col(column) == subject).collect().height


def test_erasure_removes_the_subject_everywhere_and_nothing_writes_it_back(lake, settings, store, r):
    catalog, subject, path, published = lake
    raw, quarantine = settings.raw_table("online_retail"), settings.quarantine_table("online_retail")
    assert rows_of(raw, "customer_id", subject) > 0
    assert (
        delta.scan(quarantine).collect().filter(pl.col("record").str.contains(f'"CustomerID":"{subject}"')).height == 1
    )
    assert all(rows_of(settings.feature_table(v), "customer_id", subject) > 0 for v in VIEWS)
    change_consent(catalog, settings, store, str(subject), "analytics", granted=True)
    labels = pl.DataFrame(
        {
            "customer_id": [subject, subject + 1],
            "stock_code": ["85123A"] * 2,
            "event_timestamp": [datetime(2011, 3, 3, 12, tzinfo=UTC)] * 2,
        }
    )
    plan = {"user_context": ["country"], "user_purchase_behavior": ["spend_30d"]}
    before = training.build(
        catalog, "ranking_model_v1", labels, settings.feature_table, plan=plan, privacy=PrivacyPolicy(catalog, settings)
    )
    assert before.frame["customer_id"].to_list() == [subject, subject + 1]
    client = OnlineClient(r, catalog)
    assert client.get_view("user_context", [subject])[0]["country"] is not None

    held = sum(r.exists(store.keys(v).data_key(p.written.version, subject)) for (v, _), p in published.items())
    assert held >= 4  # both views, on the days since the subject's first purchase (3 versions each kept)

    done = erase(catalog, settings, store, str(subject), entity="customer", by="steward", reason="GDPR art. 17")

    # Redis: every version of both views, and the deny entry.
    assert done.redis_keys_removed == held
    assert done.online_seconds < 1.0
    for (view, _day), p in published.items():
        assert not r.exists(store.keys(view).data_key(p.written.version, subject))
    assert r.hget(deny_key("customer"), str(subject)) == b"*"
    assert client.get_view("user_context", [subject])[0]["country"] is None
    # Delta: raw, quarantine (only the subject's record), both feature tables, the consent ledger.
    assert rows_of(raw, "customer_id", subject) == 0 and rows_of(raw, "customer_id", subject + 1) >= 0
    records = delta.scan(quarantine).collect()["record"]
    assert not records.str.contains(f'"CustomerID":"{subject}"').any() and records.len() == 1
    assert all(rows_of(settings.feature_table(v), "customer_id", subject) == 0 for v in VIEWS)
    assert delta.scan(settings.privacy_table("consent")).collect().height == 0
    assert done.tables[raw].rows > 0 and done.files_rewritten > 0
    assert Tombstones(settings.privacy_table("tombstones")).subjects("customer").to_list() == [str(subject)]
    audit = AuditLog(settings.privacy_table("audit")).read(action="erase")
    assert audit.select("by", "reason").rows() == [("steward", "GDPR art. 17")]
    assert str(subject) not in audit.write_csv()  # the log names a digest, never the id

    # A re-delivery of the same file, a backfill (compute + push) and a new push: the subject stays out.
    result = ingest_file(catalog, settings, path, catalog.sources["online_retail"])
    assert rows_of(raw, "customer_id", subject) == 0
    # Its bad line is quarantined again by the re-delivery's gate: the quarantine keeps only the other's.
    records = delta.scan(quarantine).collect()["record"]
    assert not records.str.contains(f'"CustomerID":"{subject}"').any()
    assert records.str.contains(f'"CustomerID":"{subject + 1}"').sum() == 1
    assert int(delta.DeltaTable(raw).history(1)[0]["erased_rows"]) > 0
    again = compute_and_publish(catalog, settings, store, ["2011-03-02", "2011-03-03"])
    assert result.rows > 0 and all(rows_of(settings.feature_table(v), "customer_id", subject) == 0 for v in VIEWS)
    for (view, _day), p in again.items():
        assert not r.exists(store.keys(view).data_key(p.written.version, subject))

    # A rollback to a version written before the erasure: the subject's missing keys are expected.
    guard = OnlineGuard(PrivacyPolicy(catalog, settings), store)
    rolled = store.rollback(
        "user_context",
        published[("user_context", "2011-03-03")].written.version,
        ids_of=guarded_ids(guard),
        by="oncall",
    )
    assert rolled.promoted
    assert client.get_view("user_context", [subject])[0]["country"] is None

    # Rebuilding the training set from its manifest: the Delta versions it read still hold the subject
    # (until the purge), yet the rebuild leaves it out and says so.
    rebuilt = training.rebuild(catalog, before.manifest, labels, privacy=PrivacyPolicy(catalog, settings))
    assert rebuilt.frame["customer_id"].to_list() == [subject + 1] and rebuilt.manifest.withheld == 1
    with pytest.raises(ConsentError, match="erased"):
        change_consent(catalog, settings, store, str(subject), "personalization", granted=True)


def test_purge_vacuums_the_replaced_files_and_the_check_flags_overdue_purges(lake, settings, store):
    catalog, subject, _path, _published = lake
    erase(catalog, settings, store, str(subject), entity="customer", by="steward")
    raw = settings.raw_table("online_retail")

    def files_holding_subject() -> int:
        n = 0
        for f in Path(raw).rglob("*.parquet"):
            ids = pq.read_table(f, columns=["customer_id"]).column("customer_id").to_pylist()
            n += subject in ids
        return n

    assert files_holding_subject() > 0  # the DELETE rewrote files; the old ones stay for time travel
    later = datetime.now(UTC) + timedelta(days=settings.erasure_purge_days + 1)
    assert overdue(catalog, settings, at=later).count == 1
    assert overdue(catalog, settings).count == 0  # not due yet
    removed = purge(catalog, settings, keep_hours=0)
    assert removed[raw] > 0
    assert files_holding_subject() == 0
    assert overdue(catalog, settings, at=later).count == 0
    assert AuditLog(settings.privacy_table("audit")).read(action="purge").height == len(removed)
