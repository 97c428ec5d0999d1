"""The demo instance's batched SQLite event log records exactly what Dagster's stock storage records (every
partition planned and materialized, check evaluations, failures), in far fewer transactions, on the instance
configured by the shipped `.dagster_home/dagster.yaml`."""

import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db

from feature_pipelines.orchestration.sqlite_event_log import BatchedSqliteEventLogStorage

DEMO_YAML = Path(__file__).resolve().parents[2] / ".dagster_home" / "dagster.yaml"
PARTS = dg.DailyPartitionsDefinition(start_date="2011-01-01", end_date="2011-02-15")  # 45 days
KEYS = PARTS.get_partition_keys()
RANGE = {"dagster/asset_partition_range_start": KEYS[0], "dagster/asset_partition_range_end": KEYS[-1]}


def _job(fail_second: bool) -> dg.JobDefinition:
    @dg.asset(partitions_def=PARTS, backfill_policy=dg.BackfillPolicy.single_run())
    def first(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})

    @dg.asset(
        partitions_def=PARTS,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=[first],
        check_specs=[dg.AssetCheckSpec("positive", asset="second")],
    )
    def second(context: dg.AssetExecutionContext):
        if fail_second:
            raise dg.Failure("bad day", allow_retries=False)
        yield dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="positive", passed=True)])

    return dg.Definitions(assets=[first, second], jobs=[dg.define_asset_job("both")]).resolve_job_def("both")


@pytest.fixture
def homes(tmp_path, monkeypatch) -> dict[str, Path]:
    """A home configured like the demo's (the shipped dagster.yaml) and one with Dagster's stock storage."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")  # restored after the test (the storage sets it)
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE")
    demo, stock = tmp_path / "demo", tmp_path / "stock"
    demo.mkdir()
    stock.mkdir()
    shutil.copy(DEMO_YAML, demo / "dagster.yaml")
    return {"demo": demo, "stock": stock}


def _run(home: Path, monkeypatch, fail_second: bool = False):
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    commits = Counter()
    storage = instance.event_log_storage
    if isinstance(storage, BatchedSqliteEventLogStorage):
        db.event.listen(storage._engine("index"), "commit", lambda _conn: commits.update(["index"]))
    result = _job(fail_second).execute_in_process(instance=instance, tags=RANGE, raise_on_error=False)
    return instance, result, Counter(commits)  # a copy: the reads below commit too


def _events(instance: dg.DagsterInstance, run_id: str) -> Counter:
    return Counter(
        (r.event_log_entry.dagster_event_type, r.event_log_entry.dagster_event.asset_key, r.partition_key)
        for r in instance.get_records_for_run(run_id, limit=100_000).records
        if r.event_log_entry.is_dagster_event and r.event_log_entry.dagster_event.asset_key is not None
    )


def test_the_shipped_demo_instance_records_the_same_events_in_batches(homes, monkeypatch):
    stock, stock_result, _ = _run(homes["stock"], monkeypatch)  # first: before the demo storage batches
    demo, result, commits = _run(homes["demo"], monkeypatch)
    assert isinstance(demo.event_log_storage, BatchedSqliteEventLogStorage)
    assert result.success
    assert type(stock.event_log_storage).__name__ == "SqliteEventLogStorage"

    ours, theirs = _events(demo, result.run_id), _events(stock, stock_result.run_id)
    assert ours.keys() == theirs.keys() and sum(ours.values()) == sum(theirs.values())
    planned = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    for key in (dg.AssetKey("first"), dg.AssetKey("second")):
        # every partition is planned and materialized, in the run's log and in the cross-run index
        assert {p for t, k, p in ours if t == planned and k == key} == set(KEYS)
        assert demo.get_materialized_partitions(key) == set(KEYS)
        status = demo.get_status_by_partition(key, KEYS, PARTS)
        assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}
    check = demo.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(dg.AssetKey("second"), "positive"))
    assert check is not None and check.evaluation.passed
    # 2 x 45 planned + 2 x 45 materialized asset events reach the index in a handful of transactions
    assert 0 < commits["index"] < 30, commits  # one by one: ~200


def test_a_failed_step_marks_its_partitions_failed_as_stock_dagster_does(homes, monkeypatch):
    stock, stock_result, _ = _run(homes["stock"], monkeypatch, fail_second=True)
    demo, result, _ = _run(homes["demo"], monkeypatch, fail_second=True)
    assert not result.success and not stock_result.success
    for instance in (demo, stock):
        assert instance.get_materialized_partitions(dg.AssetKey("first")) == set(KEYS)
        status = instance.get_status_by_partition(dg.AssetKey("second"), KEYS, PARTS)
        assert set(status.values()) == {dg.AssetPartitionStatus.FAILED}
    assert _events(demo, result.run_id) == _events(stock, stock_result.run_id)
    # the check was planned for every partition of the run and never evaluated: the same rows in both
    check = dg.AssetCheckKey(dg.AssetKey("second"), "positive")
    rows = [
        sorted(
            (r.partition, r.status.value) for r in i.event_log_storage.get_asset_check_execution_history(check, 1000)
        )
        for i in (demo, stock)
    ]
    assert rows[0] == rows[1] and len(rows[0]) == len(KEYS)


def test_wipe_then_run_again(homes, monkeypatch):
    demo, result, _ = _run(homes["demo"], monkeypatch)
    assert result.success
    demo.event_log_storage.wipe()
    assert demo.get_materialized_partitions(dg.AssetKey("first")) == set()
    again = _job(False).execute_in_process(instance=demo, tags=RANGE)
    assert again.success and demo.get_materialized_partitions(dg.AssetKey("second")) == set(KEYS)
