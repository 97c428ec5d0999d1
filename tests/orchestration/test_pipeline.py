"""The Dagster pipeline end to end on the real data: Delta + GE gate + Redis, on a PostgreSQL instance."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from feature_pipelines.offline import delta as offline_store
from feature_pipelines.offline import history
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.asset_keys import feature_key, raw_key
from feature_pipelines.orchestration.feature_assets import HISTORICAL_LOAD_TAG
from feature_pipelines.orchestration.feature_checks import GX_CHECK
from feature_pipelines.privacy.audit import subject_digest
from feature_pipelines.spec import Feature, FeatureView
from tests.conftest import DAY, chain, real_data, run, with_source_file


def delta_partition(store, view, day):
    uri = store.settings.feature_table(view)
    return pl.read_delta(uri).filter(pl.col("partition_date") == day)


def test_one_partition_end_to_end(retail, pg_instance, store_resource):
    result = run(retail, pg_instance, store_resource, chain(retail), partition=DAY)
    assert result.success
    checks = {e.asset_key.path[-1]: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"user_purchase_behavior": True, "user_context": True, "item_popularity": True}
    mats = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    md = mats["features/user_purchase_behavior"]
    assert md["dagster/row_count"].value > 500 and md["delta_version"].value == 0
    assert [c.name for c in md["dagster/column_schema"].schema.columns][:2] == [
        "customer_id",
        "days_since_last_purchase",
    ]

    client = OnlineClient(store_resource.redis_url, retail)
    for view in retail.online_views:
        rows = delta_partition(store_resource, view.name, DAY)
        assert rows["partition_date"].unique().to_list() == [DAY]
        key = retail.entity_of(view).join_key
        served = client.get_view(view.name, rows[key].to_list())
        assert pl.DataFrame(served, schema={f.name: f.polars_dtype for f in view.features}).equals(
            rows.select(view.feature_names)
        ), view.name  # Redis holds exactly the Delta rows of the newest partition
        meta = store_resource.online_store(OnlineLayout.from_catalog(retail)).serving_meta(view.name)
        assert (meta.partition, meta.rows, meta.run_id) == (DAY, rows.height, result.run_id)


def test_rerunning_a_partition_is_idempotent(retail, pg_instance, store_resource):
    keys = chain(retail, ["user_purchase_behavior"])
    assert run(retail, pg_instance, store_resource, keys, partition="2011-03-02").success
    assert run(retail, pg_instance, store_resource, keys, partition=DAY).success
    uri = store_resource.settings.feature_table("user_purchase_behavior")
    first = pl.read_delta(uri).sort("partition_date", "customer_id")
    assert run(retail, pg_instance, store_resource, keys, partition=DAY).success
    again = pl.read_delta(uri).sort("partition_date", "customer_id")
    assert offline_store.table_version(uri) == 2
    assert again.equals(first)
    assert again.select("partition_date", "customer_id").is_duplicated().sum() == 0
    assert set(again["partition_date"]) == {DAY, "2011-03-02"}


def test_a_range_run_equals_daily_runs(retail, pg_instance, store_resource, tmp_path):
    keys = chain(retail, ["item_popularity"])
    result = run(retail, pg_instance, store_resource, keys, first="2011-02-27", last=DAY)
    assert result.success
    uri = store_resource.settings.feature_table("item_popularity")
    ranged = pl.read_delta(uri).sort("partition_date", "stock_code")
    for day in ("2011-02-27", "2011-02-28", DAY):
        assert run(retail, pg_instance, store_resource, keys, partition=day).success
    assert pl.read_delta(uri).sort("partition_date", "stock_code").equals(ranged)
    assert ranged["partition_date"].n_unique() == 3
    # Serving (the newest partition) equals training at its instant, also for items sold on 02-27 or 02-28
    # but not in the week up to DAY: both say null (training used to fall back to the older row).
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "consistency"]
    md = {k: v.value for k, v in check.metadata.items()}
    assert check.passed and md["differing_features"] == "none", md["details"]
    assert md["partition"] == DAY and md["instant"] == "2011-03-02T00:00:00+00:00"
    assert md["compared_entities"] > 200 and md["absent_entities_compared"] >= 10


def _max_price(events: pl.LazyFrame, ctx) -> pl.LazyFrame:
    return events.group_by("customer_id").agg(pl.col("unit_price").max().alias("max_unit_price"))


def test_bad_partition_fails_its_check_commits_nothing_and_keeps_redis(retail, pg_instance, store_resource, tmp_path):
    price_view = FeatureView(
        name="user_max_price",
        entity="customer",
        source="online_retail",
        owner="team:test",
        description="Highest unit price a customer paid in a week",
        features=(Feature(name="max_unit_price", dtype=pl.Float64, description="GBP", min=0, max=1000),),
        transformation=_max_price,
        windows=(timedelta(days=7),),
        prepare=lambda e: e.filter(pl.col("customer_id").is_not_null()),
    )
    cat = dataclasses.replace(retail, views={**retail.views, "user_max_price": price_view})
    keys = chain(cat, ["user_context", "user_max_price"])
    assert run(cat, pg_instance, store_resource, keys, partition=DAY).success
    store = store_resource.online_store(OnlineLayout.from_catalog(cat))
    before = {
        v: (
            offline_store.table_version(store_resource.settings.feature_table(v)),
            store.serving_version(v),
            delta_partition(store_resource, v, DAY),
        )
        for v in ("user_context", "user_max_price")
    }
    client = OnlineClient(store_resource.redis_url, cat)
    served_before = client.get_view("user_context", [12370, 12380]) + client.get_view("user_max_price", [12370])

    # Crafted source: one customer moves to a country the spec does not know (a value outside the allowed
    # set, and a null locale), and one line carries a unit price above the declared maximum.
    raw = real_data(None, "2011-03-05")
    customer = raw.filter(pl.col("InvoiceDate").dt.date().cast(pl.String) == DAY)["CustomerID"].drop_nulls()[0]
    bad = raw.with_columns(
        pl.when(pl.col("CustomerID") == customer)
        .then(pl.lit("Atlantis"))
        .otherwise(pl.col("Country"))
        .alias("Country"),
        pl.when((pl.col("CustomerID") == customer) & (pl.col("InvoiceDate").dt.date().cast(pl.String) == DAY))
        .then(5000.0)
        .otherwise(pl.col("UnitPrice"))
        .alias("UnitPrice"),
    )
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    bad_cat = with_source_file(cat, path)
    assert run(bad_cat, pg_instance, store_resource, [raw_key(bad_cat.sources["online_retail"])], partition=DAY).success
    result = run(bad_cat, pg_instance, store_resource, keys, partition=DAY)

    assert not result.success
    evaluations = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["user_context"].passed and not evaluations["user_max_price"].passed
    failures = evaluations["user_context"].metadata["failures"].value
    # The UI shows the expectation, the column, the observed value and the offending rows.
    assert "**expect_column_values_to_be_in_set** on `country` [blocking]: observed" in failures
    # user_context is confidential and customers are people: the offending rows name the customer by its
    # digest (`fstore audit --subject ID` matches it) and keep the confidential value out.
    digest = subject_digest("customer", str(customer))
    assert f"| customer_id | partition_date |\n|---|---|\n| {digest} | {DAY} |" in failures
    assert "Atlantis" not in failures and str(customer) not in failures
    assert "**expect_column_values_to_not_be_null** on `locale`" in failures
    price = evaluations["user_max_price"].metadata["failures"].value
    assert "**expect_column_values_to_be_between** on `max_unit_price`" in price and "5000.0" in price
    assert evaluations["user_context"].metadata["failed_partitions"].value == DAY
    assert f"in partition {DAY}" in failures
    result_file = evaluations["user_context"].metadata["validation_result"].value
    assert json.loads(Path(result_file).read_text())["passed"] is False  # the GE result, kept per run
    # The partition index still describes the data in Delta: the good run's result, not the failed one.
    index = Path(store_resource.lake_dir) / "quality" / "user_context" / "partitions" / f"{DAY}.json"
    pointer = json.loads(index.read_text())
    assert pointer["passed"] is True and pointer["result"] != result_file
    assert pointer["delta_version"] == before["user_context"][0]
    committed = history.read_history(store_resource.settings.feature_table("user_context"))
    assert committed.commit(pointer["delta_version"]).metadata["quality_result"] == pointer["result"]
    record = pg_instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(feature_key(cat.views["user_context"]), GX_CHECK)
    )
    assert record.evaluation.passed is False  # stored in PostgreSQL, visible in the UI
    assert not [e for e in result.get_asset_materialization_events() if e.asset_key.path[0] in ("features", "online")]
    for v, (delta_version, serving, rows) in before.items():
        assert offline_store.table_version(store_resource.settings.feature_table(v)) == delta_version
        assert delta_partition(store_resource, v, DAY).equals(rows)
        assert store.serving_version(v) == serving
    assert client.get_view("user_context", [12370, 12380]) + client.get_view("user_max_price", [12370]) == served_before


def test_training_set_asset_from_the_declared_spec(retail, pg_instance, store_resource):
    spec = retail.training_sets["ranking_repurchase_train"]
    views = [feature_key(retail.views[v]) for v in ("user_purchase_behavior", "user_context", "item_popularity")]
    # The first load of these tables is declared history: its partitions count as known at their ends.
    historical = {HISTORICAL_LOAD_TAG: "true"}
    loaded = run(retail, pg_instance, store_resource, views, first="2011-02-27", last="2011-03-04", tags=historical)
    assert loaded.success
    for view in ("user_purchase_behavior", "user_context", "item_popularity"):
        uri = store_resource.settings.feature_table(view)
        assert history.read_history(uri).initial_load() == {0}
    mats = [e.materialization.metadata["historical_load"].value for e in loaded.get_asset_materialization_events()]
    assert set(mats) == {True} and len(mats) == 3 * 6  # one materialization per partition and view
    result = run(retail, pg_instance, store_resource, [dg.AssetKey(["training_sets", spec.name])])
    assert result.success
    (mat,) = result.get_asset_materialization_events()
    md = {k: v.value for k, v in mat.materialization.metadata.items()}
    assert md["dagster/row_count"] == 20_000
    frame = pl.read_parquet(md["path"])
    early = frame.filter(pl.col("event_timestamp") < pl.datetime(2011, 3, 5, time_zone="UTC"))
    assert early.height > 100 and early["units_sold_7d"].null_count() < early.height / 2
    assert md["null_rate/units_sold_7d"] == round(frame["units_sold_7d"].null_count() / frame.height, 4)
    assert md["delta_versions"] == {"item_popularity": 0, "user_context": 0, "user_purchase_behavior": 0}
