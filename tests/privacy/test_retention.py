"""Retention on real Delta tables: declared on sources and views, validated by the catalog, enforced by the
daily Dagster asset (raw, quarantine and feature rows past it deleted, newer ones untouched, audited), and
shown in the catalog as the three TTLs."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from feature_pipelines import catalog_listing
from feature_pipelines.catalog import validate
from feature_pipelines.offline import delta, ingest
from feature_pipelines.orchestration.privacy_assets import RETENTION_JOB, build_privacy_defs
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.retention import enforce
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE
from tests.conftest import real_data
from tests.privacy.conftest import write_partition

AT = datetime(2012, 3, 5, 12, tzinfo=UTC)
RAW_DAYS, VIEW_DAYS = 400, 368  # cutoffs at AT: raw 2011-01-30, user_context 2011-03-03


def with_retention(catalog, raw_days: int, view_days: int):
    source = dataclasses.replace(catalog.sources["online_retail"], retention=timedelta(days=raw_days))
    views = {
        name: dataclasses.replace(v, retention=timedelta(days=view_days)) if name == "user_context" else v
        for name, v in catalog.views.items()
    }
    return dataclasses.replace(catalog, sources={**catalog.sources, "online_retail": source}, views=views)


def lake(catalog, settings, tmp_path):
    """Raw rows of 2011-01-20..2011-03-05 (two bad lines quarantined), user_context partitions 03-01..03-05."""
    path = tmp_path / "retail.parquet"
    rows = real_data("2011-01-20", "2011-03-05")
    bad = rows.head(2).with_columns(pl.lit(-5).cast(pl.Int64).alias("CustomerID"))
    pl.concat([rows, bad]).write_parquet(path)
    source = dataclasses.replace(catalog.sources["online_retail"], on_bad_rows="quarantine")
    ingest.ingest(
        source,
        catalog.entities,
        [str(path)],
        date(2011, 1, 20),
        date(2011, 3, 5),
        raw_uri=settings.raw_table("online_retail"),
        quarantine_uri=settings.quarantine_table("online_retail"),
        run_id="test",
    )
    for day in ("2011-03-01", "2011-03-02", "2011-03-03", "2011-03-04", "2011-03-05"):
        write_partition(settings, day, [12346, 12347])


def test_the_catalog_validates_retention(catalog):
    ok = with_retention(catalog, 400, 8)
    assert validate(ok) == []
    # 200 days of raw rows cannot feed a 365-day window; a feature table must keep what training joins read.
    problems = validate(with_retention(catalog, 200, 1))
    assert any("does not cover the 365d lookback of view 'user_context'" in p for p in problems)
    assert not any("user_purchase_behavior" in p for p in problems)  # its 90-day window fits
    assert any("shorter than its offline_lookback 7d" in p and "user_context" in p for p in problems)
    odd = dataclasses.replace(catalog.views["user_context"], retention=timedelta(days=3, hours=2))
    problems = validate(dataclasses.replace(catalog, views={**catalog.views, "user_context": odd}))
    assert any("user_context" in p and "whole number of days" in p for p in problems), problems
    not_delta = dataclasses.replace(catalog.views["user_context"], retention=30)
    problems = validate(dataclasses.replace(catalog, views={**catalog.views, "user_context": not_delta}))
    assert any("retention must be a timedelta" in p for p in problems)


def test_the_catalog_shows_three_ttls(catalog):
    listing = catalog_listing.rows(with_retention(catalog, 400, 8))
    row = next(r for r in listing if r["view"] == "user_context" and r["feature"] == "country")
    assert (row["online_ttl"], row["retention"], row["raw_retention"]) == ("7d", "8d", "400d")
    other = next(r for r in listing if r["view"] == "item_popularity")
    assert (other["retention"], other["raw_retention"]) == ("kept", "400d")
    assert "raw_retention" in catalog_listing.render(listing, "markdown")


def test_retention_deletes_expired_rows_and_audits(catalog, settings, tmp_path):
    lake(catalog, settings, tmp_path)
    cat = with_retention(catalog, RAW_DAYS, VIEW_DAYS)
    raw_uri, quarantine_uri = settings.raw_table("online_retail"), settings.quarantine_table("online_retail")
    before = delta.scan(raw_uri).select(EVENT_DATE).collect()[EVENT_DATE]
    assert before.min() < "2011-01-30"
    assert delta.scan(quarantine_uri).collect().height == 2

    dry = enforce(cat, settings, by="test", at=AT, dry_run=True)
    expected = before.filter(before < "2011-01-30").len()
    assert {(e.expiry.kind, e.rows) for e in dry} >= {("raw", expected), ("features", 4)}
    assert delta.scan(raw_uri).collect().height == before.len()  # a dry run deletes nothing

    # quarantined now (the real clock): not expired at AT, expired once the real clock is 101 days on.
    done = enforce(cat, settings, by="test", at=AT)
    by_kind = {e.expiry.kind: e for e in done}
    assert by_kind["raw"].rows == expected and by_kind["raw"].files_rewritten > 0
    assert by_kind["raw"].expiry.cutoff == date(2011, 1, 30)
    raw = delta.scan(raw_uri).select(EVENT_DATE).collect()[EVENT_DATE]
    assert raw.min() == before.filter(before >= "2011-01-30").min() and raw.len() == before.len() - expected
    # user_context keeps 368 days: partitions before 2011-03-03 go; item_popularity declares none.
    parts = delta.scan(settings.feature_table("user_context")).select(PARTITION_DATE).collect()[PARTITION_DATE]
    assert sorted(parts.unique()) == ["2011-03-03", "2011-03-04", "2011-03-05"] and by_kind["features"].rows == 4
    assert delta.scan(quarantine_uri).collect().height == 2

    log = AuditLog(settings.privacy_table("audit")).read(action="retention")
    assert log.height == 1
    details = json.loads(log["details"][0])
    assert {t["kind"]: t["rows_deleted"] for t in details["tables"]} == {
        "raw": expected,
        "quarantine": 0,
        "features": 4,
    }
    assert "12346" not in log["details"][0]  # no ids in the audit log

    again = enforce(cat, settings, by="test", at=AT)
    assert sum(e.rows for e in again) == 0  # idempotent
    later = enforce(cat, settings, by="test", at=datetime.now(UTC) + timedelta(days=RAW_DAYS + 1))
    assert {e.expiry.kind: e.rows for e in later}["quarantine"] == 2
    assert delta.scan(raw_uri).collect().height == 0


def test_the_daily_retention_asset(catalog, settings, tmp_path, pg_instance, redis_url):
    lake(catalog, settings, tmp_path)
    cat = with_retention(catalog, RAW_DAYS, VIEW_DAYS)
    defs = build_privacy_defs(cat)
    schedule = next(s for s in defs.schedules if s.name == "retention_daily")
    assert schedule.cron_schedule == "30 3 * * *" and schedule.job_name == RETENTION_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    job = dg.Definitions.merge(
        defs,
        dg.Definitions(resources={"store": FeatureStoreResource(lake_dir=str(settings.lake_dir), redis_url=redis_url)}),
    ).resolve_job_def(RETENTION_JOB)
    result = job.execute_in_process(
        instance=pg_instance,
        run_config={"ops": {"privacy__retention": {"config": {"as_of": AT.isoformat()}}}},
    )
    assert result.success
    meta = result.asset_materializations_for_node("privacy__retention")[0].metadata
    assert meta["rows_deleted"].value > 0 and meta["files_rewritten"].value > 0
    parts = delta.scan(settings.feature_table("user_context")).select(PARTITION_DATE).collect()[PARTITION_DATE]
    assert parts.min() == "2011-03-03"
    assert AuditLog(settings.privacy_table("audit")).read(action="retention")["by"][0].startswith("dagster run ")


def test_the_daily_purge_and_the_overdue_check(catalog, settings, store, pg_instance, redis_url, monkeypatch):
    """An erasure past its purge date fails `no_overdue_purge` until the purge job has vacuumed the lake."""
    from feature_pipelines.orchestration.privacy_assets import PURGE_JOB, PURGE_KEY
    from feature_pipelines.privacy.erasure import erase

    monkeypatch.setenv("FS_ERASURE_PURGE_DAYS", "0")  # due at once: overdue as soon as it is erased
    write_partition(settings, "2011-03-01", [12346, 12347])
    erase(catalog, settings.model_copy(update={"erasure_purge_days": 0}), store, "12346", entity="customer", by="t")
    privacy = build_privacy_defs(catalog)
    assert {s.name: (s.job_name, s.default_status) for s in privacy.schedules} == {
        "retention_daily": (RETENTION_JOB, dg.DefaultScheduleStatus.RUNNING),
        "purge_daily": (PURGE_JOB, dg.DefaultScheduleStatus.RUNNING),
    }
    defs = dg.Definitions.merge(
        privacy,
        dg.Definitions(
            jobs=[dg.define_asset_job("only_check", selection=dg.AssetSelection.checks_for_assets(PURGE_KEY))],
            resources={"store": FeatureStoreResource(lake_dir=str(settings.lake_dir), redis_url=redis_url)},
        ),
    )
    checked = defs.resolve_job_def("only_check").execute_in_process(instance=pg_instance)
    (evaluation,) = checked.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["overdue_erasures"].value == 1
    assert evaluation.metadata["by_entity"].value == {"customer": 1}
    assert "12346" not in json.dumps({k: str(v.value) for k, v in evaluation.metadata.items()})

    purged = defs.resolve_job_def(PURGE_JOB).execute_in_process(
        instance=pg_instance, run_config={"ops": {"privacy__purge": {"config": {"keep_hours": 0}}}}
    )
    assert purged.success
    assert purged.asset_materializations_for_node("privacy__purge")[0].metadata["files_removed"].value > 0
    (after,) = purged.get_asset_check_evaluations()
    assert after.passed and after.metadata["overdue_erasures"].value == 0
    latest = pg_instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(PURGE_KEY, "no_overdue_purge"))
    assert latest.event.dagster_event.event_specific_data.passed  # what the UI shows on the asset
