"""The demo's output: on failure the reasons (view, check, column, partition, examples), never a stale summary;
the summary tables readable in an 80-column terminal."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date, timedelta

import polars as pl
from rich.console import Console

from feature_pipelines.demo import (
    RunOutcome,
    _raw_history_range,
    alias_lookup,
    failure_reasons,
    report_failure,
    summary,
)
from feature_pipelines.orchestration.asset_keys import identity_key, raw_key
from feature_pipelines.orchestration.feature_assets import HISTORICAL_LOAD_TAG
from feature_pipelines.privacy.audit import subject_digest
from feature_pipelines.synthetic import events as synthetic
from tests.conftest import DAY, chain, real_data, run, with_persons, with_source_file


def test_a_failed_run_prints_why_and_no_stale_summary(retail, pg_instance, store_resource, tmp_path):
    keys = chain(retail, ["user_context"])
    assert run(retail, pg_instance, store_resource, keys, partition=DAY).success
    raw = real_data(None, "2011-03-05")
    # Every customer of the day gets a country missing from the table: far past the view's 1% blast radius.
    on_day = pl.col("InvoiceDate").dt.date() == date.fromisoformat(DAY)
    customers = [str(int(c)) for c in raw.filter(on_day)["CustomerID"].drop_nulls().unique()]
    bad = raw.with_columns(pl.when(on_day).then(pl.lit("Atlantis")).otherwise(pl.col("Country")).alias("Country"))
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    bad_cat = with_source_file(retail, path)
    assert run(bad_cat, pg_instance, store_resource, [raw_key(bad_cat.sources["online_retail"])], partition=DAY).success
    result = run(bad_cat, pg_instance, store_resource, keys, partition=DAY)
    assert not result.success

    reasons = failure_reasons(result)
    check = next(r for r in reasons if "check gx_suite" in r)
    assert check.startswith(f"features/user_context: check gx_suite failed for partitions {DAY}..{DAY}")
    # The country is confidential and ids are personal: the reason names the rule and the rows by digest.
    assert "**expect_column_values_to_be_in_set** on `country`" in check
    assert any(f"| {subject_digest('customer', c)} | {DAY} |" in check for c in customers)
    assert "Atlantis" not in check and not any(f"| {c} |" in check for c in customers)
    step = next(r for r in reasons if r.startswith("features__user_context:"))
    assert "GE gate failed; nothing was written to Delta" in step

    console = Console(width=80, record=True)
    settings = store_resource.settings
    report_failure(bad_cat, settings, RunOutcome(False, result.run_id, 1.0, DAY, DAY, reasons), console)
    text = console.export_text()
    assert "Main job FAILED" in text and "country" in text and "Still serving (Redis)" in text
    assert "Sample lookup" not in text and "Delta tables" not in text  # nothing that looks like this run's result


RETAIL_VIEWS = ["user_purchase_behavior", "user_context", "item_popularity"]


def test_the_summary_fits_80_columns(retail, pg_instance, store_resource):
    assert run(retail, pg_instance, store_resource, chain(retail, RETAIL_VIEWS), partition=DAY).success
    console = Console(width=80, record=True)
    summary(retail, store_resource.settings, pg_instance, console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    for name in (
        "raw/online_retail",
        "features/user_purchase_behavior",
        "features/item_popularity",
        "user_purchase_behavior",
        "item_popularity",
        "user_context",
    ):
        assert name in text, name  # never cut ("user_purchase_beh…")
    assert "…" not in "".join(line for line in lines if "features/" in line or "user_" in line)


def test_a_demo_range_ingests_the_history_its_windows_read(catalog):
    assert _raw_history_range(catalog, "2010-12-01") is None
    # user_context reads 365 days: everything since the source's start.
    assert _raw_history_range(catalog, "2011-03-01") == ("2010-12-01", "2011-02-28")
    shorter = dataclasses.replace(catalog, views={"item_popularity": catalog.views["item_popularity"]})
    assert _raw_history_range(shorter, "2011-03-01") == ("2011-01-31", "2011-02-28")


def test_the_demo_shows_a_profile_looked_up_by_an_anonymous_id(retail, catalog, pg_instance, store_resource, tmp_path):
    synthetic.ensure(synthetic.DEFAULT_OUT)
    landing = tmp_path / "behaviour"
    landing.mkdir()
    first = date.fromisoformat(DAY) - timedelta(days=30)
    for i in range(31):
        shutil.copy(synthetic.DEFAULT_OUT / f"events-{first + timedelta(days=i)}.parquet", landing)
    cat = with_source_file(with_persons(retail, catalog), landing / "events-*.parquet", "behaviour_events")
    source = cat.sources["behaviour_events"]
    tags = {HISTORICAL_LOAD_TAG: "true"}
    identity = [identity_key(t) for t in ("edges", "persons", "alias_map")]
    assert run(cat, pg_instance, store_resource, [raw_key(source), *identity], first=str(first), last=DAY, tags=tags)
    assert run(cat, pg_instance, store_resource, chain(cat, ["person_profile"]), partition=DAY, tags=tags).success

    console = Console(width=80, record=True)
    shown = alias_lookup(cat, store_resource.settings, console)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    text = "\n".join(lines)
    assert shown is not None and shown["anonymous_id"] in text and shown["person_id"] in text
    assert "Lookup by alias" in text and "same profile" in text and "DIFFERENT" not in text
    # What it shows is the person's row in Delta, read by the cookie.
    row = (
        pl.read_delta(store_resource.settings.feature_table("person_profile"))
        .filter((pl.col("partition_date") == DAY) & (pl.col("person_id") == shown["person_id"]))
        .row(0, named=True)
    )
    assert shown["events_30d"] == row["events_30d"] > 0 and shown["ids"] >= 3
