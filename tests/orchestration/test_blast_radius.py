"""Blast radius through the real gate, Delta and Redis: one bad customer is held back, the rest is promoted."""

from __future__ import annotations

import dataclasses

import polars as pl

from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.feature_checks import GX_CHECK
from tests.conftest import chain, real_data, run, with_source_file

BEFORE, DAY = "2011-03-01", "2011-03-02"
FEATURES = ["country", "locale", "currency"]


def partition(store, day: str) -> pl.DataFrame:
    uri = store.settings.feature_table("user_context")
    return pl.read_delta(uri).filter(pl.col("partition_date") == day).sort("customer_id")


def with_policy(cat, **policy):
    view = dataclasses.replace(cat.views["user_context"], **policy)
    return dataclasses.replace(cat, views={**cat.views, "user_context": view})


def test_an_unknown_country_holds_back_its_customer_and_promotes_everyone_else(
    retail, pg_instance, store_resource, tmp_path
):
    assert retail.views["user_context"].max_bad_fraction > 0  # the shipped view declares its policy
    keys = chain(retail, ["user_context"])
    assert run(retail, pg_instance, store_resource, keys, partition=BEFORE).success
    before = partition(store_resource, BEFORE)
    client = OnlineClient(store_resource.redis_url, retail)
    store = store_resource.online_store(OnlineLayout.from_catalog(retail))

    # One customer seen on both days moves to a country missing from the country table on DAY.
    raw = real_data(None, "2011-03-05")
    on_day = raw.filter(pl.col("InvoiceDate").dt.date().cast(pl.String) == DAY)["CustomerID"].drop_nulls()
    victim = sorted(set(on_day.to_list()) & set(before["customer_id"].to_list()))[0]
    newcomers = sorted(set(on_day.to_list()) - set(before["customer_id"].to_list()))
    assert newcomers  # customers whose first row is DAY's: served only if the rest is promoted
    bad = raw.with_columns(
        pl.when((pl.col("CustomerID") == victim) & (pl.col("InvoiceDate").dt.date().cast(pl.String) == DAY))
        .then(pl.lit("Atlantis"))
        .otherwise(pl.col("Country"))
        .alias("Country")
    )
    path = tmp_path / "bad.parquet"
    bad.write_parquet(path)
    bad_cat = with_source_file(retail, path)
    assert run(bad_cat, pg_instance, store_resource, [raw_key(bad_cat.sources["online_retail"])], partition=DAY).success

    # Past the threshold: the whole view is blocked, as without a policy; DAY's data never serves.
    strict = with_policy(bad_cat, max_bad_fraction=0.0001)
    result = run(strict, pg_instance, store_resource, keys, partition=DAY)
    assert not result.success
    failure = "\n".join(e.step_failure_data.user_failure_data.description for e in result.get_step_failure_events())
    assert "more than max_bad_fraction=0.01%" in failure and f"partition {DAY}: 1 of" in failure
    assert store.serving_meta("user_context").partition == BEFORE

    # The shipped policy: the customer keeps serving its previous values, everyone else gets DAY's.
    result = run(bad_cat, pg_instance, store_resource, keys, partition=DAY)
    assert result.success
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.check_name == GX_CHECK]
    md = {k: v.value for k, v in gate.metadata.items()}
    assert gate.passed and md["held_back"] == 1 and md["held_back_policy"] == "keep_previous"
    assert md["held_back_carried"] == 1
    assert f"| {DAY} | {victim} | expect_column_values_to_be_in_set on country; " in md["held_back_entities"]
    assert "expect_column_values_to_not_be_null on locale" in md["held_back_entities"]
    assert store.serving_meta("user_context").partition == DAY  # promoted
    after = partition(store_resource, DAY)
    served = client.get_view("user_context", after["customer_id"].to_list())
    assert pl.DataFrame(served, schema={f: pl.String for f in FEATURES}).equals(after.select(FEATURES))
    previous = before.filter(pl.col("customer_id") == victim).select(FEATURES).to_dicts()[0]
    assert client.get_view("user_context", [victim])[0] == previous and previous["country"] != "Atlantis"
    assert all(row["country"] is not None for row in client.get_view("user_context", newcomers))
    assert "Atlantis" not in after["country"].to_list()

    # The other policy: the customer's row is left out, so serving returns no values for it.
    result = run(with_policy(bad_cat, on_bad_entities="null"), pg_instance, store_resource, keys, partition=DAY)
    assert result.success
    assert client.get_view("user_context", [victim])[0] == dict.fromkeys(FEATURES)
    assert partition(store_resource, DAY).height == after.height - 1
    assert all(row["country"] is not None for row in client.get_view("user_context", newcomers))
