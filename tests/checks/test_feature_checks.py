"""Every quality check fails on data crafted to trip it and passes on the real data."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import polars as pl
import pytest

from feature_pipelines.offline import delta as offline_store
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.spec import Feature, FeatureView
from tests.conftest import DAY, chain, real_data, run, with_source_file

FEATURE_RANGE = ("2011-02-01", DAY)  # the newest partition has 28 partitions before it


def checks_of(result, view: str) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["features", view]}


def crafted(tmp_path, cat, pg_instance, store, change) -> object:
    """The same catalog reading a source changed by `change`, with the raw partition of DAY re-ingested."""
    path = tmp_path / "crafted.parquet"
    change(real_data(None, "2011-03-05")).write_parquet(path)
    bad = with_source_file(cat, path)
    source = bad.sources["online_retail"]
    from feature_pipelines.orchestration.asset_keys import raw_key

    # A crafted re-delivery may shrink days (a source that stopped): the operator's override says so.
    tags = {"allow_shrink": "true"}
    assert run(bad, pg_instance, store, [raw_key(source)], first="2011-02-20", last=DAY, tags=tags).success
    return bad


def on_day(frame_days_back: int = 0):
    return pl.col("InvoiceDate").dt.date() >= pl.date(2011, 3, 1) - pl.duration(days=frame_days_back)


def test_real_data_passes_drift_freshness_completeness_and_roundtrip(retail, pg_instance, store_resource):
    result = run(
        retail,
        pg_instance,
        store_resource,
        chain(retail, ["item_popularity", "user_context"]),
        first=FEATURE_RANGE[0],
        last=FEATURE_RANGE[1],
    )
    assert result.success
    for view in ("item_popularity", "user_context"):
        checks = checks_of(result, view)
        assert {n: c.passed for n, c in checks.items()} == {
            "gx_suite": True,
            "gx_warn": True,
            "drift": True,
            "outliers": True,
            "source_freshness": True,
            "completeness": True,
        }, view
        assert checks["outliers"].metadata["reference_partitions"].value == 28
        assert checks["drift"].metadata["reference_partitions"].value == 28
        assert checks["source_freshness"].metadata["source_lag_hours"].value < 24
    online = [e for e in result.get_asset_check_evaluations() if e.check_name in ("roundtrip", "consistency")]
    assert len(online) == 4 and all(e.passed for e in online)  # and serving agrees with training


def test_drift_warns_on_a_shifted_partition(retail, pg_instance, store_resource, tmp_path):
    keys = chain(retail, ["item_popularity"])
    assert run(retail, pg_instance, store_resource, keys, first=FEATURE_RANGE[0], last=FEATURE_RANGE[1]).success
    # Everything sold in the week up to DAY is sold fifty times over.
    bad = crafted(
        tmp_path,
        retail,
        pg_instance,
        store_resource,
        lambda f: f.with_columns(
            pl.when(on_day(7)).then(pl.col("Quantity") * 50).otherwise(pl.col("Quantity")).alias("Quantity")
        ),
    )
    result = run(bad, pg_instance, store_resource, keys, partition=DAY)
    assert result.success  # drift warns, it does not block
    drift = checks_of(result, "item_popularity")["drift"]
    assert not drift.passed and drift.severity.value == "WARN"
    assert drift.metadata["psi/units_sold_7d"].value > 1.0 and "units_sold_7d" in drift.metadata["drifted"].value


def test_source_freshness_warns_when_the_source_stopped(retail, pg_instance, store_resource, tmp_path):
    keys = chain(retail, ["user_context"])
    bad = crafted(tmp_path, retail, pg_instance, store_resource, lambda f: f.filter(~on_day(5)))  # nothing for 5 days
    result = run(bad, pg_instance, store_resource, keys, partition=DAY)
    assert result.success
    fresh = checks_of(result, "user_context")["source_freshness"]
    assert not fresh.passed and fresh.metadata["source_lag_hours"].value > 72
    assert fresh.metadata["stale_partitions"].value == DAY


def _half(events: pl.LazyFrame, ctx) -> pl.LazyFrame:
    return (
        events.filter(pl.col("customer_id") % 2 == 0)
        .group_by("customer_id")
        .agg(pl.col("country").last())
        .select("customer_id", "country")
    )


def test_completeness_warns_when_active_entities_get_no_row(retail, pg_instance, store_resource):
    half = FeatureView(
        name="half_of_users",
        entity="customer",
        source="online_retail",
        owner="team:test",
        description="d",
        features=(Feature(name="country", dtype=pl.String, description="d"),),
        transformation=_half,
        windows=(timedelta(days=30),),
        prepare=lambda e: e.filter(pl.col("customer_id").is_not_null()),
    )
    cat = dataclasses.replace(retail, views={**retail.views, "half_of_users": half})
    result = run(cat, pg_instance, store_resource, chain(cat, ["half_of_users"]), partition=DAY)
    assert result.success
    complete = checks_of(result, "half_of_users")["completeness"]
    assert not complete.passed and 0.2 < complete.metadata["completeness"].value < 0.8


def test_warn_expectations_are_recorded_and_the_run_goes_on(retail, pg_instance, store_resource):
    base = retail.views["user_context"]
    strict = dataclasses.replace(
        base,
        name="user_context_warned",
        features=(
            dataclasses.replace(base.features[0], allowed=("United Kingdom",), severity="warn"),
            *base.features[1:],
        ),
    )
    cat = dataclasses.replace(retail, views={**retail.views, "user_context_warned": strict})
    result = run(cat, pg_instance, store_resource, chain(cat, ["user_context_warned"]), partition=DAY)
    assert result.success  # warn-level failures do not stop the push
    checks = checks_of(result, "user_context_warned")
    assert checks["gx_suite"].passed and not checks["gx_warn"].passed
    assert "**expect_column_values_to_be_in_set** on `country` [warn]" in checks["gx_warn"].metadata["failures"].value
    store = store_resource.online_store(OnlineLayout.from_catalog(cat))
    assert store.serving_meta("user_context_warned").partition == DAY


def test_roundtrip_rejects_a_version_that_differs_from_delta(retail, pg_instance, store_resource, monkeypatch):
    keys = chain(retail, ["item_popularity"])
    assert run(retail, pg_instance, store_resource, keys, partition="2011-02-28").success
    store = store_resource.online_store(OnlineLayout.from_catalog(retail))
    serving = store.serving_version("item_popularity")
    original = offline_store.iter_partition

    def corrupted(*args, **kwargs):  # a writer bug: revenue_7d pushed in pence instead of pounds
        for batch in original(*args, **kwargs):
            yield batch.with_columns(pl.col("revenue_7d") * 100) if "revenue_7d" in batch.columns else batch

    monkeypatch.setattr("feature_pipelines.offline.delta.iter_partition", corrupted)
    result = run(retail, pg_instance, store_resource, keys, partition=DAY)
    assert not result.success
    check = [e for e in result.get_asset_check_evaluations() if e.check_name == "roundtrip"][0]
    assert not check.passed and check.metadata["differing_features"].value == "revenue_7d"
    assert store.serving_version("item_popularity") == serving  # the bad version never served
    rejected = max(store.versions("item_popularity").values(), key=lambda m: m.version)
    assert rejected.status == "rejected" and "revenue_7d" in rejected.extra["rejected"]


@pytest.mark.parametrize("fmt", ["json", "markdown"])
def test_catalog_doc_is_up_to_date(catalog, fmt):
    from feature_pipelines import catalog_listing
    from tests.conftest import ROOT

    listing = catalog_listing.rows(catalog)
    assert {r["view"] for r in listing} == set(catalog.views)
    assert len(listing) == sum(len(v.features) for v in catalog.views.values())
    if fmt == "markdown":
        assert (ROOT / "docs" / "catalog.md").read_text() == catalog_listing.render(listing, "markdown"), (
            "docs/catalog.md is stale: run `fstore catalog --format markdown --static --output docs/catalog.md`"
        )


def test_headline_values_describe_the_whole_run_not_its_newest_day():
    """A completeness check failing on the run's first day shows that day's completeness, not the newest's."""
    from datetime import UTC, date, datetime

    from feature_pipelines.orchestration.feature_checks import health_checks
    from tests.checks.test_quality import view_of

    view, catalog = view_of(Feature(name="x", dtype=pl.Int64, description="d"))
    view = dataclasses.replace(view, max_source_lag=timedelta(hours=12))
    catalog = dataclasses.replace(catalog, views={"v": view})
    days = [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
    # Ten users active on day 1 (noon) and day 3 (23:00), none on day 2.
    raw = pl.DataFrame(
        {
            "ts": [datetime(2024, 1, 1, 12, tzinfo=UTC)] * 10 + [datetime(2024, 1, 3, 23, tzinfo=UTC)] * 10,
            "user_id": list(range(10)) * 2,
            "event_date": ["2024-01-01"] * 10 + ["2024-01-03"] * 10,
        },
        schema={"ts": pl.Datetime("us", "UTC"), "user_id": pl.Int64, "event_date": pl.String},
    )
    covered = {"2024-01-01": [0, 1], "2024-01-02": list(range(10)), "2024-01-03": list(range(10))}
    frame = pl.DataFrame(
        [(u, 1, d) for d, users in covered.items() for u in users],
        schema={"user_id": pl.Int64, "x": pl.Int64, "partition_date": pl.String},
        orient="row",
    )
    fresh, complete = health_checks(view, catalog, raw, frame, days)
    md = {k: v.value for k, v in complete.metadata.items()}
    assert not complete.passed and md["completeness"] == 0.2 and md["completeness_partition"] == "2024-01-01"
    assert md["active_entities"] == 10 and md["partitions"] == "2024-01-01..2024-01-03"
    md = {k: v.value for k, v in fresh.metadata.items()}
    assert not fresh.passed and md["stale_partitions"] == "2024-01-02"
    assert md["source_lag_hours"] == 36.0 and md["source_lag_partition"] == "2024-01-02"
