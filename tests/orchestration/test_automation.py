"""Sensors, declarative automation, partition-aware freshness, backfills and retries on a real instance."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
import redis

from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.orchestration.asset_keys import feature_key, online_key, raw_key
from feature_pipelines.orchestration.automation import (
    _ranges,
    build_arrival_sensor,
    build_freshness_checks,
    due_partition,
    freshness_result,
    scan_arrivals,
    with_automation,
)
from feature_pipelines.orchestration.factory import build_asset_defs
from tests.conftest import DAY, ROOT, chain, real_data, run


@pytest.fixture
def own_instance(tmp_path, pg_url, monkeypatch) -> dg.DagsterInstance:
    """A Dagster instance on its own PostgreSQL database. Automation conditions read an asset's whole history
    in the instance (which partitions exist, what was handled), so runs of the same views by other tests of
    the session must not count."""
    import os
    import shutil
    import uuid

    import psycopg2

    admin = os.environ.get("FS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"fs_auto_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_URL", pg_url.rsplit("/", 1)[0] + "/" + name)
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()
    conn.cursor().execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
    )
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def json_cursor(folder) -> str:
    """A sensor cursor that has seen every file of `folder` as it is now."""
    import json
    import os

    from feature_pipelines.offline.ingest import file_sha256

    seen = {}
    for path in sorted(folder.glob("*.parquet")):
        stat = os.stat(path)
        seen[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": file_sha256(str(path))}
    return json.dumps(seen, sort_keys=True)


def landing_catalog(catalog, folder, start=date(2011, 2, 1), end=date(2011, 3, 1)):
    source = catalog.sources["online_retail"]
    landing = dataclasses.replace(source, location=str(folder / "*.parquet"), start=start, end=end)
    views = {n: v for n, v in catalog.views.items() if v.source_name == source.name}  # the retail views only
    return dataclasses.replace(catalog, sources={source.name: landing}, views=views)


def drop_day(folder, day: str) -> str:
    path = folder / f"retail_{day}.parquet"
    real_data(day, day).write_parquet(path)
    return str(path)


def test_sensor_requests_exactly_the_new_days_and_ignores_redelivery(tmp_path, catalog):
    folder = tmp_path / "landing"
    folder.mkdir()
    cat = landing_catalog(catalog, folder)
    source = cat.sources["online_retail"]
    drop_day(folder, "2011-02-28")
    requests, cursor, problems = scan_arrivals(source, cat, None)
    assert not problems and len(requests) == 1
    assert requests[0].tags["dagster/asset_partition_range_start"] == "2011-02-28"
    assert requests[0].tags["dagster/asset_partition_range_end"] == "2011-02-28"

    assert scan_arrivals(source, cat, cursor)[0] == []  # nothing new
    path = drop_day(folder, "2011-02-28")  # the same file delivered again (new mtime, same bytes)
    again, cursor2, _ = scan_arrivals(source, cat, cursor)
    assert again == []
    drop_day(folder, DAY)
    new, cursor3, _ = scan_arrivals(source, cat, cursor2)
    assert [r.tags["dagster/asset_partition_range_start"] for r in new] == [DAY]
    # A changed file (a correction) runs again, under a new run key.
    real_data("2011-02-28", "2011-02-28").head(100).write_parquet(path)
    changed, _, _ = scan_arrivals(source, cat, cursor3)
    assert len(changed) == 1 and changed[0].run_key != requests[0].run_key
    assert changed[0].tags["source_file"] == path


def test_sensor_tick_through_dagster_and_a_bad_file_is_reported(tmp_path, catalog, pg_instance, store_resource):
    folder = tmp_path / "landing"
    folder.mkdir()
    cat = landing_catalog(catalog, folder)
    sensor = build_arrival_sensor(cat.sources["online_retail"], cat)
    drop_day(folder, "2011-02-27")
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=pg_instance, cursor=None))
    (request,) = data.run_requests
    # Carry the request out as the daemon would: one run over exactly that day.
    result = run(
        cat,
        pg_instance,
        store_resource,
        [raw_key(cat.sources["online_retail"])],
        first=request.tags["dagster/asset_partition_range_start"],
        last=request.tags["dagster/asset_partition_range_end"],
    )
    assert result.success
    raw = pl.read_delta(store_resource.settings.raw_table("online_retail"))
    assert raw["event_date"].unique().to_list() == ["2011-02-27"]
    real_data("2011-02-28", "2011-02-28").drop("Quantity").write_parquet(folder / "broken.parquet")
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=pg_instance, cursor=data.cursor))
    assert not tick.run_requests and "missing column(s) ['Quantity']" in tick.skip_message


def test_push_follows_its_view_only_when_blocking_checks_passed(tmp_path, catalog, own_instance, store_resource):
    folder = tmp_path / "landing"
    folder.mkdir()
    for day in ("2011-02-27", "2011-02-28", DAY):
        drop_day(folder, day)
    cat = landing_catalog(catalog, folder, start=date(2011, 2, 27))
    cat = dataclasses.replace(cat, views={"user_context": cat.views["user_context"]}, services={}, training_sets={})
    defs = dg.Definitions(
        assets=with_automation(build_asset_defs(cat), cat).assets, resources={"store": store_resource}
    )
    view = cat.views["user_context"]
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=own_instance)
    assert run(
        cat, own_instance, store_resource, [raw_key(cat.sources["online_retail"])], first="2011-02-27", last=DAY
    ).success
    first = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=baseline.cursor)
    # The view follows its source, and the push follows the view in the same request.
    assert first.get_requested_partitions(feature_key(view)) == {DAY}
    assert first.get_requested_partitions(online_key(view)) == {DAY}
    assert run(cat, own_instance, store_resource, chain(cat), partition=DAY).success  # what the daemon launches
    second = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=first.cursor)
    assert second.total_requested == 0
    store = store_resource.online_store(OnlineLayout.from_catalog(cat))
    serving = store.serving_version("user_context")

    # Now the source goes bad: the view's blocking check fails in the requested run, the push never runs,
    # and later ticks do not request it either.
    real_data(DAY, DAY).with_columns(pl.lit("Atlantis").alias("Country")).write_parquet(
        folder / f"retail_{DAY}.parquet"
    )
    assert run(cat, own_instance, store_resource, [raw_key(cat.sources["online_retail"])], partition=DAY).success
    third = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=second.cursor)
    assert third.get_requested_partitions(feature_key(view)) == {DAY}
    failed = run(cat, own_instance, store_resource, chain(cat), partition=DAY)
    assert not failed.success
    assert not [e for e in failed.get_asset_materialization_events() if e.asset_key == online_key(view)]
    fourth = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=third.cursor)
    assert fourth.get_num_requested(online_key(view)) == 0
    assert store.serving_version("user_context") == serving


def test_due_partition_follows_the_sla():
    parts = dg.DailyPartitionsDefinition(start_date="2026-11-01", timezone="UTC")
    sla = timedelta(hours=12)
    assert due_partition(parts, sla, datetime(2026, 11, 26, 11, 59, tzinfo=UTC)) == "2026-11-24"
    assert due_partition(parts, sla, datetime(2026, 11, 26, 12, 0, tzinfo=UTC)) == "2026-11-25"
    finished = dg.DailyPartitionsDefinition(start_date="2011-01-01", end_date="2011-02-01", timezone="UTC")
    assert due_partition(finished, sla, datetime(2026, 11, 26, tzinfo=UTC)) == "2011-01-31"
    assert freshness_result("2026-11-25", "2026-11-25", "x").passed
    stale = freshness_result("2026-11-20", "2026-11-25", "x")
    assert not stale.passed and stale.metadata["days_behind"].value == 5


def test_backfilling_an_old_partition_does_not_make_a_stale_table_fresh(retail, pg_instance, store_resource):
    """Pitfall P8: the check looks at the newest partition present, not at the last materialization."""
    view = retail.views["user_context"]
    offline, online = build_freshness_checks(view, retail)
    assert run(retail, pg_instance, store_resource, chain(retail, ["user_context"]), partition="2011-02-20").success
    # Due is the source's last day (2011-12-09): a backfill of an older day, just now, changes nothing.
    assert run(retail, pg_instance, store_resource, chain(retail, ["user_context"]), partition="2011-02-10").success
    result = offline(store=store_resource)
    assert not result.passed and result.metadata["newest_partition"].value == "2011-02-20"
    assert result.metadata["due_partition"].value == "2011-12-09"
    served = online(store=store_resource)
    assert not served.passed and served.metadata["newest_partition"].value == "2011-02-20"
    # Once the due partition is there, both pass.
    short = dataclasses.replace(retail.sources["online_retail"], end=date(2011, 2, 20))
    cat = dataclasses.replace(retail, sources={"online_retail": short})
    offline2, online2 = build_freshness_checks(cat.views["user_context"], cat)
    assert offline2(store=store_resource).passed and online2(store=store_resource).passed


def test_a_backfill_does_not_regress_the_online_store(retail, pg_instance, store_resource):
    keys = chain(retail, ["item_popularity"])
    assert run(retail, pg_instance, store_resource, keys, partition=DAY).success
    store = store_resource.online_store(OnlineLayout.from_catalog(retail))
    serving = store.serving_meta("item_popularity")
    backfill = run(retail, pg_instance, store_resource, keys, first="2011-02-20", last="2011-02-22")
    assert backfill.success
    assert store.serving_meta("item_popularity").version == serving.version  # still DAY
    assert store.serving_meta("item_popularity").partition == DAY
    parts = pl.read_delta(store_resource.settings.feature_table("item_popularity"))["partition_date"].unique()
    assert set(parts) == {"2011-02-20", "2011-02-21", "2011-02-22", DAY}


def test_transient_redis_errors_are_retried(retail, pg_instance, store_resource, monkeypatch):
    calls = {"n": 0}
    original = OnlineStore.write

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("Connection reset by peer (injected)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(OnlineStore, "write", flaky)
    result = run(retail, pg_instance, store_resource, chain(retail, ["user_context"]), partition=DAY)
    assert result.success and calls["n"] == 2
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retried) == 1


def test_definitions_wire_sensors_checks_and_conditions():
    from feature_pipelines.orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    assert {s.name for s in defs.sensors} == {
        "online_retail_arrivals",
        "behaviour_events_arrivals",
        "consent_events_arrivals",
        "feature_automation",
        "audit_backfills",
    }
    # The consent ledger follows its source like a view, and every view of people waits for it.
    assert graph.get(dg.AssetKey(["privacy", "consent"])).automation_condition.get_label() == "eager_or_late_data"
    assert dg.AssetKey(["privacy", "consent"]) in graph.get(dg.AssetKey(["features", "user_context"])).parent_keys
    assert (
        dg.AssetKey(["privacy", "consent"]) not in graph.get(dg.AssetKey(["features", "item_popularity"])).parent_keys
    )
    online = graph.get(dg.AssetKey(["online", "user_context"]))
    assert "all_deps_blocking_checks_passed" in str(online.automation_condition.get_snapshot())
    assert graph.get(dg.AssetKey(["features", "user_context"])).automation_condition.get_label() == "eager_or_late_data"
    checks = {k.name for k in graph.asset_check_keys}
    assert {"partition_freshness", "online_freshness", "roundtrip", "gx_suite", "drift"} <= checks


def test_late_raw_data_rematerializes_exactly_the_feature_partitions_whose_window_contains_it(
    tmp_path, catalog, own_instance, store_resource
):
    """Before: `eager()` only looks at the latest time window, so a late file for an old day never reached the
    feature partitions computed from it."""
    folder = tmp_path / "landing"
    folder.mkdir()
    first, last, late_days = "2011-01-20", "2011-03-01", ("2011-01-25", "2011-02-25")
    for day in pl.date_range(date(2011, 1, 20), date(2011, 3, 1), eager=True).cast(pl.String):
        rows = real_data(day, day)
        # The late days first arrive without their last 200 lines; those come later, re-delivered.
        (rows.head(rows.height - 200) if day in late_days else rows).write_parquet(folder / f"retail_{day}.parquet")
    cat = landing_catalog(catalog, folder, start=date(2011, 1, 20))
    cat = dataclasses.replace(
        cat, views={"item_popularity": cat.views["item_popularity"]}, services={}, training_sets={}
    )
    view, source = cat.views["item_popularity"], cat.sources["online_retail"]
    assert view.lookback == timedelta(days=30)
    defs = dg.Definitions(
        assets=with_automation(build_asset_defs(cat), cat).assets, resources={"store": store_resource}
    )
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=own_instance)
    assert run(cat, own_instance, store_resource, [raw_key(source)], first=first, last=last).success
    # Feature partitions from Jan 22, except Feb 10 (missing: a backfill's job, not late data's).
    for lo, hi in (("2011-01-22", "2011-02-09"), ("2011-02-11", last)):
        assert run(cat, own_instance, store_resource, [feature_key(view)], first=lo, last=hi).success
    uri = store_resource.settings.feature_table("item_popularity")
    before = pl.read_delta(uri)
    settled = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=baseline.cursor)
    assert settled.get_requested_partitions(feature_key(view)) <= {last}  # at most the latest window (eager)
    if settled.get_num_requested(feature_key(view)):
        assert run(cat, own_instance, store_resource, [feature_key(view)], partition=last).success
        settled = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=settled.cursor)
    assert settled.get_num_requested(feature_key(view)) == 0

    # The late file: the sensor asks for exactly its days; ingest them as the daemon would.
    # (The landing convention is one file per day: a day's late lines arrive as a re-delivery of its file.)
    cursor = json_cursor(folder)
    for d in late_days:
        real_data(d, d).write_parquet(folder / f"retail_{d}.parquet")
    requests, _, problems = scan_arrivals(source, cat, cursor)
    assert not problems and [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [(d, d) for d in late_days]
    for day in late_days:
        assert run(cat, own_instance, store_resource, [raw_key(source)], partition=day).success

    ticked = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=settled.cursor)

    def days(lo: date, hi: date) -> set[str]:
        return {str(d) for d in pl.date_range(lo, hi, eager=True)}

    # Partition D reads raw D-29..D: Jan 25 is in the windows of Jan 25..Feb 23 (not Feb 24), Feb 25 in those of
    # Feb 25..Mar 26, bounded by the source's last day. Only existing partitions (not Feb 10).
    expected = (days(date(2011, 1, 25), date(2011, 2, 23)) | days(date(2011, 2, 25), date(2011, 3, 1))) - {"2011-02-10"}
    assert ticked.get_requested_partitions(feature_key(view)) == expected
    # The push follows only the latest window: an old partition never goes online.
    assert ticked.get_requested_partitions(online_key(view)) <= {last}

    for lo, hi in _ranges(sorted(expected)):  # what the daemon's backfill runs
        assert run(cat, own_instance, store_resource, [feature_key(view)], first=lo, last=hi).success
    after = pl.read_delta(uri)
    for day in sorted(set(before["partition_date"])):
        old = before.filter(pl.col("partition_date") == day).drop("event_timestamp")
        new = after.filter(pl.col("partition_date") == day).drop("event_timestamp")
        if day in expected:  # the late lines count in every window that contains their day
            assert new["units_sold_30d"].sum() > old["units_sold_30d"].sum(), day
        else:
            assert new.equals(old), day
    again = dg.evaluate_automation_conditions(defs=defs, instance=own_instance, cursor=ticked.cursor)
    assert again.get_num_requested(feature_key(view)) == 0
