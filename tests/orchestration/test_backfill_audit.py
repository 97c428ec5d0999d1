"""A manual backfill leaves an audit record: the run status sensor `audit_backfills`, evaluated through the
Dagster API on the real PostgreSQL instance for runs that really ran, writes one `backfill` record per
backfill run (who, which assets and partitions, when, why) and none for other runs."""

from __future__ import annotations

import json

import dagster as dg

from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.privacy_assets import build_backfill_audit_sensor
from feature_pipelines.privacy.audit import AuditLog
from tests.conftest import run


def evaluate(sensor: dg.RunStatusSensorDefinition, instance: dg.DagsterInstance, run_id: str, store) -> object:
    dagster_run = instance.get_run_by_id(run_id)
    started = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)[0].dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=started,
        dagster_instance=instance,
        dagster_run=dagster_run,
        resources={"store": store},
    )
    return sensor(context)


def test_a_backfill_run_appends_one_audit_record(retail, pg_instance, store_resource):
    source = retail.sources["online_retail"]
    sensor = build_backfill_audit_sensor()
    audit = AuditLog(store_resource.settings.privacy_table("audit"))
    tags = {"dagster/backfill": "bf-42", "user": "oncall@example.com", "fs/reason": "late file for March"}
    backfill = run(
        retail, pg_instance, store_resource, [raw_key(source)], first="2011-03-01", last="2011-03-03", tags=tags
    )
    assert backfill.success
    plain = run(retail, pg_instance, store_resource, [raw_key(source)], partition="2011-03-04")
    assert plain.success

    assert evaluate(sensor, pg_instance, backfill.run_id, store_resource) is None
    assert isinstance(evaluate(sensor, pg_instance, plain.run_id, store_resource), dg.SkipReason)
    # Once per run: evaluating the same run again writes nothing.
    assert isinstance(evaluate(sensor, pg_instance, backfill.run_id, store_resource), dg.SkipReason)

    records = audit.read(action="backfill")
    assert records.height == 1
    record = records.row(0, named=True)
    assert record["by"] == "oncall@example.com" and record["reason"] == "late file for March"
    assert record["target"] == backfill.run_id
    details = json.loads(record["details"])
    assert details["backfill_id"] == "bf-42" and details["partitions"] == "2011-03-01..2011-03-03"
    assert details["assets"] == ["raw/online_retail"]
    start = pg_instance.get_run_record_by_id(backfill.run_id).start_time
    assert abs(record["at"].timestamp() - start) < 1


def test_a_backfill_without_a_user_tag_is_by_dagster(retail, pg_instance, store_resource):
    source = retail.sources["online_retail"]
    tags = {"dagster/backfill": "bf-7"}
    done = run(retail, pg_instance, store_resource, [raw_key(source)], partition="2011-03-02", tags=tags)
    assert done.success
    assert evaluate(build_backfill_audit_sensor(), pg_instance, done.run_id, store_resource) is None
    record = AuditLog(store_resource.settings.privacy_table("audit")).read(action="backfill").row(0, named=True)
    assert record["by"] == "dagster" and record["reason"] == ""
    assert json.loads(record["details"])["partitions"] == "2011-03-02..2011-03-02"
