"""Window completeness: a feature partition is computed only from a complete raw window (invariant 2).

The incident: a backfill of two recent days on an empty lake, launched like the UI's dialog does, computed
features from 2 days of history instead of 90 and promoted them. Here the same backfill goes through Dagster's
own backfill machinery (the daemon's iteration, on a PostgreSQL instance) and fails, naming the missing days,
with nothing written to Delta or Redis.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest

from feature_pipelines.checks.freshness import partition_health
from feature_pipelines.offline import completeness, delta, ingest
from feature_pipelines.offline.history import covered_partitions
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.asset_keys import feature_key, online_key, raw_key
from feature_pipelines.orchestration.automation import scan_arrivals, with_automation
from feature_pipelines.orchestration.factory import build_asset_defs
from feature_pipelines.spec import EVENT_DATE
from tests.conftest import ROOT, real_data, run

RECENT = ["2011-12-08", "2011-12-09"]


def _ingest(catalog, lake, first: str, last: str, source=None):
    source = source or catalog.sources["online_retail"]
    return ingest.ingest(
        source,
        catalog.entities,
        [source.resolve_location(catalog.base_dir)],
        date.fromisoformat(first),
        date.fromisoformat(last),
        raw_uri=str(lake / "raw"),
        quarantine_uri=str(lake / "quarantine"),
        run_id="test",
    )


@pytest.fixture
def backfill_instance(tmp_path, pg_url, pg_instance):
    """An instance on the test PostgreSQL whose runs execute synchronously inside the backfill iteration."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = (ROOT / "deploy" / "dagster.yaml").read_text().split("concurrency:")[0]
    config += (
        "run_launcher:\n  module: dagster._core.launcher.sync_in_memory_run_launcher\n"
        "  class: SyncInMemoryRunLauncher\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    (home / "dagster.yaml").write_text(config)
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


def test_a_ui_backfill_of_recent_days_on_an_empty_lake_fails_clearly(
    tmp_path, monkeypatch, backfill_instance, redis_url
):
    from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster._daemon.backfill import execute_backfill_iteration

    # The code location as deployed (the catalog in feature_defs/), its source pointed at a landing file by the
    # setting, not by editing code; the lake is empty.
    landing = tmp_path / "landing.parquet"
    real_data("2011-11-01", None).write_parquet(landing)
    monkeypatch.setenv("FS_SOURCE_ONLINE_RETAIL_LOCATION", str(landing))
    lake = tmp_path / "lake"
    location = tmp_path / "backfill_location.py"
    location.write_text(
        "import dagster as dg\n"
        "from feature_pipelines.catalog import load_catalog\n"
        "from feature_pipelines.orchestration.factory import build_defs\n"
        "from feature_pipelines.orchestration.resources import FeatureStoreResource\n"
        f"store = FeatureStoreResource(lake_dir={str(lake)!r}, redis_url={redis_url!r})\n"
        "defs = dg.Definitions.merge(build_defs(load_catalog()), "
        "dg.Definitions(resources={'store': store}, executor=dg.in_process_executor))\n"
    )
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(python_file=str(location), attribute="defs"),
        location_name="backfill_test",
    )
    instance = backfill_instance
    with create_test_daemon_workspace_context(InProcessWorkspaceLoadTarget(origin), instance) as workspace:
        graph = next(iter(workspace.create_request_context().get_code_location_entries().values()))
        assert graph.code_location, graph.load_error
        selection = [
            dg.AssetKey(["raw", "online_retail"]),
            dg.AssetKey(["features", "item_popularity"]),
            dg.AssetKey(["online", "item_popularity"]),
        ]
        # What the UI's "Materialize -> partitions -> Launch backfill" mutation creates.
        backfill_id = f"bf{int(time.time() * 1000)}"
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=backfill_id,
            asset_graph=workspace.create_request_context().asset_graph,
            partition_names=RECENT,
            asset_selection=selection,
            backfill_timestamp=time.time(),
            tags={},
            dynamic_partitions_store=instance,
            all_partitions=False,
            title="two recent days",
            description=None,
            run_config=None,
        )
        instance.add_backfill(backfill)
        for _ in range(5):  # the daemon's ticks: submit the run (it executes inline), then close the backfill
            list(execute_backfill_iteration(workspace, logging.getLogger("backfill_test")))
            status = instance.get_backfill(backfill_id).status
            if status != BulkActionStatus.REQUESTED:
                break
    assert status in (BulkActionStatus.COMPLETED_FAILED, BulkActionStatus.FAILED)
    (dagster_run,) = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert dagster_run.status == dg.DagsterRunStatus.FAILURE
    failures = [
        e.dagster_event
        for e in instance.all_logs(dagster_run.run_id)
        if e.is_dagster_event and e.dagster_event.event_type_value == "STEP_FAILURE"
    ]
    (failure,) = failures
    assert failure.step_key == "features__item_popularity"
    message = failure.step_failure_data.user_failure_data.description
    assert "item_popularity: partitions 2011-12-08..2011-12-09 read 30 days of raw 'online_retail'" in message
    # 30 days back from 2011-12-08: 29 not ingested, minus the 4 declared Saturday closures among them.
    assert "25 of those days were never ingested: 2011-11-09..2011-11-11 (3 days), 2011-11-13..2011-11-18" in message
    # The two days were ingested; no feature table was written and nothing is served.
    assert pl.read_delta(str(lake / "raw" / "online_retail"))[EVENT_DATE].unique().sort().to_list() == RECENT
    assert delta.table_version(str(lake / "features" / "item_popularity")) is None
    from feature_pipelines.catalog import load_catalog
    from feature_pipelines.online.connection import connect
    from feature_pipelines.online.store import OnlineStore

    store = OnlineStore(connect(redis_url), OnlineLayout.from_catalog(load_catalog()))
    assert store.serving_version("item_popularity") is None


def test_closures_and_days_before_the_start_complete_a_window(tmp_path, catalog):
    """Christmas 2010 (declared closure) and days before 2010-12-01 need no ingest; any other day does."""
    view, source = catalog.views["item_popularity"], catalog.sources["online_retail"]
    lake = tmp_path / "lake"
    _ingest(catalog, lake, "2010-12-01", "2010-12-23")
    _ingest(catalog, lake, "2011-01-04", "2011-01-05")
    uri = str(lake / "raw")
    assert completeness.missing_raw_days(view, source, uri, [date(2011, 1, 5)]) == []
    assert completeness.missing_raw_days(view, source, uri, [date(2010, 12, 10)]) == []  # window starts before
    open_all_year = dataclasses.replace(source, closures=())
    missing = completeness.missing_raw_days(view, open_all_year, uri, [date(2011, 1, 5)])
    assert missing == [date(2010, 12, 24) + timedelta(days=i) for i in range(11)]
    with pytest.raises(completeness.IncompleteWindowError, match=r"2010-12-24\.\.2011-01-03 \(11 days\)"):
        completeness.require_complete(view, open_all_year, uri, [date(2011, 1, 5)])
    # A day ingested with zero rows is ingested: the commit says which days it covered.
    assert "2010-12-24" not in {d for d in pl.read_delta(uri)[EVENT_DATE].unique()}
    _ingest(catalog, lake, "2010-12-24", "2011-01-03")
    assert {f"2010-12-{d}" for d in range(24, 32)} <= covered_partitions(uri, EVENT_DATE)
    assert completeness.missing_raw_days(view, open_all_year, uri, [date(2011, 1, 5)]) == []


def test_a_range_run_with_a_hole_in_its_window_writes_nothing(tmp_path, catalog, pg_instance, store_resource):
    source = catalog.sources["online_retail"]
    cat = dataclasses.replace(
        catalog, views={"item_popularity": catalog.views["item_popularity"]}, services={}, training_sets={}
    )
    keys = [feature_key(cat.views["item_popularity"]), online_key(cat.views["item_popularity"])]
    assert run(cat, pg_instance, store_resource, [raw_key(source)], first="2011-01-31", last="2011-02-20").success
    assert run(cat, pg_instance, store_resource, [raw_key(source)], first="2011-02-22", last="2011-03-03").success
    result = run(cat, pg_instance, store_resource, keys, first="2011-03-01", last="2011-03-03")
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "1 of those days were never ingested: 2011-02-21." in failure.step_failure_data.user_failure_data.description
    assert delta.table_version(store_resource.settings.feature_table("item_popularity")) is None
    assert store_resource.online_store(OnlineLayout.from_catalog(cat)).serving_version("item_popularity") is None
    assert run(cat, pg_instance, store_resource, [raw_key(source)], first="2011-02-21", last="2011-02-21").success
    assert run(cat, pg_instance, store_resource, keys, first="2011-03-01", last="2011-03-03").success


def test_automation_does_not_request_a_partition_whose_window_is_missing(
    tmp_path, catalog, pg_instance, store_resource
):
    landing = tmp_path / "landing.parquet"
    real_data("2011-11-01", None).write_parquet(landing)
    source = dataclasses.replace(catalog.sources["online_retail"], location=str(landing), start=date(2011, 11, 1))
    view = catalog.views["item_popularity"]
    cat = dataclasses.replace(
        catalog, sources={source.name: source}, views={view.name: view}, services={}, training_sets={}
    )
    defs = dg.Definitions(
        assets=with_automation(build_asset_defs(cat), cat).assets, resources={"store": store_resource}
    )
    tick = dg.evaluate_automation_conditions(defs=defs, instance=pg_instance)
    assert run(cat, pg_instance, store_resource, [raw_key(source)], first=RECENT[0], last=RECENT[1]).success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=pg_instance, cursor=tick.cursor)
    assert tick.get_num_requested(feature_key(view)) == 0  # 28 raw days of its window are missing
    assert run(cat, pg_instance, store_resource, [raw_key(source)], first="2011-11-01", last="2011-12-07").success
    tick = dg.evaluate_automation_conditions(defs=defs, instance=pg_instance, cursor=tick.cursor)
    assert tick.get_requested_partitions(feature_key(view)) == {"2011-12-09"}


def test_the_first_file_after_a_closure_also_ingests_the_closure(tmp_path, catalog):
    folder = tmp_path / "landing"
    folder.mkdir()
    real_data("2011-01-04", "2011-01-04").write_parquet(folder / "retail_2011-01-04.parquet")
    source = dataclasses.replace(catalog.sources["online_retail"], location=str(folder / "*.parquet"))
    cat = dataclasses.replace(catalog, sources={source.name: source})
    (request,), _, problems = scan_arrivals(source, cat, None)
    assert not problems
    assert request.tags["dagster/asset_partition_range_start"] == "2010-12-24"
    assert request.tags["dagster/asset_partition_range_end"] == "2011-01-04"


def test_source_freshness_stays_quiet_on_closures(catalog):
    view = catalog.views["user_context"]
    raw = ingest.in_range(
        ingest.read_source(catalog.sources["online_retail"], catalog.base_dir, catalog.entities),
        "2010-12-01",
        "2011-01-04",
    )
    frame = pl.DataFrame(schema={"customer_id": pl.Int64, "partition_date": pl.String})
    (after_christmas,) = partition_health(view, catalog, raw, frame, [date(2011, 1, 3)])
    assert after_christmas.source_lag < view.max_source_lag  # closed 12-24..01-03: not stale
    open_all_year = dataclasses.replace(
        catalog, sources={"online_retail": dataclasses.replace(catalog.sources["online_retail"], closures=())}
    )
    (stale,) = partition_health(view, open_all_year, raw, frame, [date(2011, 1, 3)])
    assert stale.source_lag > timedelta(days=10)


def test_settings_point_a_source_elsewhere(tmp_path, monkeypatch, catalog):
    landing = tmp_path / "drop"
    landing.mkdir()
    real_data("2011-01-04", "2011-01-04").write_parquet(landing / "a.parquet")
    real_data("2011-01-05", "2011-01-05").write_parquet(landing / "b.parquet")
    monkeypatch.setenv("FS_SOURCE_ONLINE_RETAIL_LOCATION", str(landing))
    files = ingest.source_files(catalog.sources["online_retail"], catalog.base_dir)
    assert files == [str(landing / "a.parquet"), str(landing / "b.parquet")]
    shutil.rmtree(landing)
    with pytest.raises(ingest.SourceError, match="no file matches"):
        ingest.source_files(catalog.sources["online_retail"], catalog.base_dir)
