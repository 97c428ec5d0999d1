"""A user's session with person profiles: materialize behaviour events, identity and the person views for a
few days through Dagster, push, read a profile by a cookie and by a device id, then a new login links two
persons and the next push serves the merged person under both ids."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import polars as pl

from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.orchestration.asset_keys import identity_key, raw_key
from feature_pipelines.orchestration.feature_assets import HISTORICAL_LOAD_TAG
from feature_pipelines.synthetic import events as synthetic
from tests.conftest import chain, run, with_persons, with_source_file

PERSON_VIEWS = ["person_profile", "person_location"]
IDENTITY = [identity_key(t) for t in ("edges", "persons", "alias_map")]
FIRST, LAST, NEXT = date(2011, 3, 1), date(2011, 3, 2), date(2011, 3, 3)
WINDOW_START = FIRST - timedelta(days=30)


def days(a: date, b: date) -> list[date]:
    return [a + timedelta(days=i) for i in range((b - a).days + 1)]


def test_a_profile_is_served_by_any_alias_and_a_merge_reaches_the_next_push(
    retail, catalog, pg_instance, store_resource, redis_url, tmp_path
):
    # The generated behaviour events of the days the windows read, in a landing folder of their own.
    synthetic.ensure(synthetic.DEFAULT_OUT)
    landing = tmp_path / "behaviour"
    landing.mkdir()
    for day in days(WINDOW_START, LAST):
        shutil.copy(synthetic.DEFAULT_OUT / f"events-{day}.parquet", landing)
    cat = with_source_file(with_persons(retail, catalog), landing / "events-*.parquet", "behaviour_events")
    source = cat.sources["behaviour_events"]
    assert run(cat, pg_instance, store_resource, [raw_key(source)], first=str(WINDOW_START), last=str(LAST)).success

    # The identity graph over the history, declared the initial load: each alias fact counts as known at the
    # end of its day, as if daily runs had stitched it; then the person views of the last days, and the push.
    tags = {HISTORICAL_LOAD_TAG: "true"}
    assert run(cat, pg_instance, store_resource, IDENTITY, first=str(WINDOW_START), last=str(LAST), tags=tags).success
    identity = IdentityStore(store_resource.settings.lake_dir)
    keys = chain(cat, PERSON_VIEWS)
    assert run(cat, pg_instance, store_resource, keys, first=str(FIRST), last=str(LAST), tags=tags).success

    # A stitched person of the served day: one with a cookie, a device and a customer id.
    served = pl.read_delta(store_resource.settings.feature_table("person_profile")).filter(
        pl.col("partition_date") == str(LAST)
    )
    current = identity.alias_map().current().join(served.select("person_id"), on="person_id", how="semi")
    stitched = (
        current.group_by("person_id")
        .agg(pl.col("identifier_type").n_unique().alias("kinds"))
        .filter(pl.col("kinds") == 3)
        .sort("person_id")
    )
    person = stitched["person_id"][0]
    ids = dict(
        current.filter(pl.col("person_id") == person)
        .group_by("identifier_type")
        .agg(pl.col("identifier").min())
        .iter_rows()
    )

    client = OnlineClient(redis_url, cat)
    direct = client.get_view("person_profile", [person])[0]
    by_cookie = client.get_by_alias("person_profile", "anonymous_id", ids["anonymous_id"])
    by_device = client.get_by_alias("person_profile", "device_id", ids["device_id"])
    by_customer = client.get_by_alias("person_profile", "customer_id", int(ids["customer_id"]))
    assert by_cookie.person_id == by_device.person_id == by_customer.person_id == person
    assert by_cookie.features == by_device.features == by_customer.features == direct
    expected = served.filter(pl.col("person_id") == person).row(0, named=True)
    assert direct["events_30d"] == expected["events_30d"] > 0
    assert len(direct["profile_vector"]) == 32
    assert direct["profile_vector"] == [float(x) for x in pl.Series(expected["profile_vector"], dtype=pl.Float32)]
    # The sensitive view is served apart, and by alias too.
    location = client.get_by_alias("person_location", "anonymous_id", ids["anonymous_id"])
    assert location.person_id == person and len(location.features["inferred_country"]) == 2

    # A visitor who never logged in, active on the last day: a person of their own.
    visitors = current.filter(
        (pl.col("identifier_type") == "anonymous_id")
        & ~pl.col("person_id").is_in(current.filter(pl.col("identifier_type") == "customer_id")["person_id"].implode())
    )
    # The visitor first seen last: younger than the stitched person, so the merge keeps the person's id.
    first_seen = identity.alias_map().table.group_by("person_id").agg(pl.col("valid_from").min().alias("seen"))
    visitor = visitors.join(first_seen, on="person_id").sort("seen", "identifier")["identifier"][-1]
    before = client.get_by_alias("person_profile", "anonymous_id", visitor)
    assert before.person_id not in (None, person)

    # Next day, the visitor logs in as the stitched person's customer: a merge.
    day_file = pl.read_parquet(synthetic.DEFAULT_OUT / f"events-{NEXT}.parquet")
    login = day_file.head(1).with_columns(
        pl.lit("login-merge-1").alias("event_id"),
        pl.lit(visitor).alias("anonymous_id"),
        pl.lit(None, pl.String).alias("device_id"),
        pl.lit(int(ids["customer_id"])).cast(pl.Int64).alias("customer_id"),
        pl.lit("login").alias("event_type"),
        pl.lit(None, pl.String).alias("stock_code"),
        pl.lit(None, pl.String).alias("invoice_no"),
    )
    pl.concat([day_file, login]).write_parquet(landing / f"events-{NEXT}.parquet")
    # The day's runs, as automation would launch them: ingest, stitch (known from now), compute, push.
    assert run(cat, pg_instance, store_resource, [raw_key(source), *IDENTITY], partition=str(NEXT)).success
    assert run(cat, pg_instance, store_resource, keys, partition=str(NEXT)).success

    after = client.get_by_alias("person_profile", "anonymous_id", visitor)
    customer = client.get_by_alias("person_profile", "customer_id", int(ids["customer_id"]))
    assert after.person_id == customer.person_id == person  # the older person's id survives the merge
    assert after.features == customer.features
    served_next = pl.read_delta(store_resource.settings.feature_table("person_profile")).filter(
        (pl.col("partition_date") == str(NEXT)) & (pl.col("person_id") == person)
    )
    assert after.features["events_30d"] == served_next["events_30d"][0]
    # The merge was stitched after the day ended: partition NEXT, as known at its end, still counts the
    # visitor's events apart (recomputing it later gives the same rows); the alias keys follow the map now.
    assert after.person_id != before.person_id
