"""Ingest: real rows normalized to UTC; bad files fail with file, column and row count, committing nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from feature_pipelines.offline import delta as offline_store
from feature_pipelines.offline.ingest import SourceError, read_source
from feature_pipelines.orchestration.raw_assets import build_source_asset
from tests.conftest import real_data, with_source_file


def test_uk_local_times_become_utc(catalog):
    source = catalog.sources["online_retail"]
    frame = read_source(source, catalog.base_dir, catalog.entities)
    assert frame.height == 311_761
    winter = frame.filter(pl.col("invoice_no") == "536365")["invoice_date"][0]
    assert winter == datetime(2010, 12, 1, 8, 26, tzinfo=UTC)  # GMT: unchanged
    summer = real_data("2011-07-01", "2011-07-01").sort("InvoiceDate").row(0, named=True)
    row = frame.filter(pl.col("invoice_no") == summer["InvoiceNo"]).sort("invoice_date").row(0, named=True)
    assert row["invoice_date"] == summer["InvoiceDate"].replace(tzinfo=UTC).replace(hour=summer["InvoiceDate"].hour - 1)
    assert frame["event_date"].min() == "2010-12-01" and frame["event_date"].max() == "2011-12-09"


def test_missing_column_names_file_and_column(tmp_path, catalog):
    path = tmp_path / "retail.parquet"
    real_data("2011-01-04", "2011-01-05").drop("UnitPrice").write_parquet(path)
    bad = with_source_file(catalog, path)
    with pytest.raises(SourceError, match=r"retail\.parquet: missing column\(s\) \['UnitPrice'\]"):
        read_source(bad.sources["online_retail"], bad.base_dir, bad.entities)


def test_wrong_type_counts_rows(tmp_path, catalog):
    path = tmp_path / "retail.parquet"
    frame = real_data("2011-01-04", "2011-01-05").with_columns(pl.col("Quantity").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("lots")).otherwise(pl.col("Quantity")).alias("Quantity")
    )
    frame.write_parquet(path)
    bad = with_source_file(catalog, path)
    with pytest.raises(
        SourceError,
        match=r"retail\.parquet: column 'Quantity', rule not_an_integer: 3 of \d+ rows cannot be read as Int64",
    ):
        read_source(bad.sources["online_retail"], bad.base_dir, bad.entities)


def test_unparseable_timestamp_in_csv(tmp_path, catalog):
    import dataclasses

    path = tmp_path / "retail.csv"
    frame = real_data("2011-01-04", "2011-01-05").with_columns(pl.col("InvoiceDate").dt.strftime("%Y-%m-%d %H:%M:%S"))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 2)
        .then(pl.lit("yesterday"))
        .otherwise(pl.col("InvoiceDate"))
        .alias("InvoiceDate")
    )
    frame.write_csv(path)
    csv_catalog = with_source_file(catalog, path)
    source = dataclasses.replace(csv_catalog.sources["online_retail"], format="csv")
    with pytest.raises(
        SourceError,
        match=r"retail\.csv: column 'InvoiceDate', rule unparseable_timestamp: 2 of \d+ rows cannot be parsed as a timestamp",
    ):
        read_source(source, csv_catalog.base_dir, csv_catalog.entities)


def test_a_good_csv_reads_like_the_parquet(tmp_path, catalog):
    import dataclasses

    path = tmp_path / "retail.csv"
    frame = real_data("2011-01-04", "2011-01-05")
    frame.with_columns(pl.col("InvoiceDate").dt.strftime("%Y-%m-%d %H:%M:%S")).write_csv(path)
    source = dataclasses.replace(catalog.sources["online_retail"], location=str(path), format="csv")
    from_csv = read_source(source, catalog.base_dir, catalog.entities)
    frame.write_parquet(tmp_path / "retail.parquet")
    from_parquet = read_source(
        dataclasses.replace(source, location=str(tmp_path / "retail.parquet"), format="parquet"),
        catalog.base_dir,
        catalog.entities,
    )
    assert from_csv.equals(from_parquet)


def test_failed_ingest_commits_nothing(tmp_path, catalog, store_resource, pg_instance):
    good = tmp_path / "good.parquet"
    real_data("2011-01-04", "2011-01-05").write_parquet(good)
    good_catalog = with_source_file(catalog, good)
    asset = build_source_asset(good_catalog.sources["online_retail"], good_catalog)
    ok = dg.materialize([asset], instance=pg_instance, partition_key="2011-01-04", resources={"store": store_resource})
    assert ok.success
    uri = store_resource.settings.raw_table("online_retail")
    before = offline_store.table_version(uri)
    content = pl.read_delta(uri).sort(pl.all())

    bad = tmp_path / "bad.parquet"
    real_data("2011-01-04", "2011-01-05").drop("Country").write_parquet(bad)
    bad_catalog = with_source_file(catalog, bad)
    asset = build_source_asset(bad_catalog.sources["online_retail"], bad_catalog)
    result = dg.materialize(
        [asset],
        instance=pg_instance,
        partition_key="2011-01-04",
        resources={"store": store_resource},
        raise_on_error=False,
    )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    messages = error.message + (error.cause.message if error.cause else "")
    assert "bad.parquet: missing column(s) ['Country']" in messages
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # bad input: no retry
    assert offline_store.table_version(uri) == before
    assert pl.read_delta(uri).sort(pl.all()).equals(content)


def test_a_time_in_a_clock_change_gap_is_an_error(tmp_path, catalog):
    from datetime import datetime

    path = tmp_path / "retail.parquet"
    frame = real_data("2011-03-24", "2011-03-24").head(5)
    # 2011-03-27 01:30 does not exist in London: clocks jumped from 01:00 to 02:00.
    frame.with_columns(pl.lit(datetime(2011, 3, 27, 1, 30)).alias("InvoiceDate")).write_parquet(path)
    gap = with_source_file(catalog, path)
    with pytest.raises(
        SourceError, match="'InvoiceDate', rule nonexistent_local_time: 5 of 5 rows do not exist in Europe/London"
    ):
        read_source(gap.sources["online_retail"], gap.base_dir, gap.entities)
