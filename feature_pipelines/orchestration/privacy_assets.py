"""Privacy upkeep in Dagster: the daily retention delete and the daily purge, with their schedules, and
the check that flags erasures left unpurged past their due date.

`privacy/retention` deletes the rows older than each source's and view's declared retention
(`feature_pipelines.privacy.retention`); every materialization records which tables, cutoffs and row
counts in its metadata and in the audit log. The schedule runs by default: a retention promise must not
wait for someone to switch it on (the shipped historical catalog declares none, so it deletes nothing).

`privacy/purge` vacuums every lake table, keeping the files replaced within `keep_hours` (default: the
declared purge window less a day, so a daily run purges every erasure before its `purge_due`). Its check
`no_overdue_purge` (also run every hour on its own) fails while any erasure is past its purge date.
"""

from datetime import UTC, datetime

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.stitch import IDENTITY_SOURCE
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.asset_keys import identity_key, raw_key
from feature_pipelines.orchestration.partitions import POLICY, RETRY, partitions_for, run_days
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy import consent_source, purge, retention
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import ConsentError
from feature_pipelines.privacy.consent_change import refresh_online

CONSENT_KEY = dg.AssetKey(["privacy", "consent"])
RETENTION_KEY = dg.AssetKey(["privacy", "retention"])
RETENTION_JOB = "enforce_retention"
RETENTION_CRON = "30 3 * * *"
PURGE_KEY = dg.AssetKey(["privacy", "purge"])
PURGE_JOB = "purge_lake"
PURGE_CRON = "30 4 * * *"
OVERDUE_CRON = "0 * * * *"


def consent_dep(catalog: Catalog) -> list[dg.AssetDep]:
    """What a view of people waits for: the consent ledger folded up to its partition (same day), when the
    catalog has a consent source. Earlier days were folded by earlier runs."""
    if consent_source.CONSENT_SOURCE not in catalog.sources:
        return []
    return [dg.AssetDep(CONSENT_KEY, partition_mapping=dg.TimeWindowPartitionMapping())]


def build_consent_asset(catalog: Catalog) -> dg.AssetsDefinition | None:
    """`privacy/consent`: the consent source's ingested days folded into the consent ledger, then Redis
    brought in line for every subject with a new event (revocations gone from serving in the same step)."""
    source = catalog.sources.get(consent_source.CONSENT_SOURCE)
    if source is None:
        return None

    same_day = dg.TimeWindowPartitionMapping()
    deps = [dg.AssetDep(raw_key(source), partition_mapping=same_day)]
    if IDENTITY_SOURCE in catalog.sources:  # a cookie's choice reaches the person it stitches to that day
        deps.append(dg.AssetDep(identity_key("alias_map"), partition_mapping=same_day))

    @dg.asset(
        key=CONSENT_KEY,
        deps=deps,
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        retry_policy=RETRY,
        group_name="privacy",
        kinds={"polars", "deltalake", "redis"},
        owners=[source.owner] if source.owner else None,
        description="Consent events of the ingested days folded into the consent ledger (lake/privacy/consent), "
        "known from the commit that ingested them; idempotent per day. Subjects with a new event get their "
        "Redis deny entry and, when now denied, lose their keys (a person's alias keys too) at once.",
    )
    def _consent(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        days = run_days(context)
        settings = store.settings
        try:
            done = consent_source.fold(catalog, settings, days[0].isoformat(), days[-1].isoformat(), source.name)
        except ConsentError as exc:  # bad input or a missing raw table: not transient
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        online = store.online_store(OnlineLayout.from_catalog(catalog))
        try:
            denied = refresh_online(catalog, settings, online, done.changed)
        finally:
            online.r.close()
        span = f"{days[0]}..{days[-1]}"
        if done.appended:
            AuditLog(settings.privacy_table("audit")).append(
                "consent_source",
                by=f"dagster run {context.run.run_id[:8]}",
                target=source.name,
                details={"partitions": span, "events": done.appended, "denied_now": denied},
            )
        context.log.info(
            f"{span}: {done.appended} consent events folded ({done.already} already in the ledger); "
            f"denied now: {denied or 'none'}"
        )
        return dg.MaterializeResult(
            metadata={
                "partitions": span,
                "rows": done.rows,
                "events_appended": done.appended,
                "events_already_in_ledger": done.already,
                "ledger_version": done.ledger_version if done.ledger_version is not None else "unchanged",
                "subjects_changed": sum(len(v) for v in done.changed.values()),
                "denied_now": dg.MetadataValue.json(denied),
            }
        )

    return _consent


class RetentionConfig(dg.Config):
    """`as_of`: the clock the cutoffs are counted from (ISO time; default now); `dry_run` only counts."""

    as_of: str | None = None
    dry_run: bool = False


def build_retention_asset(catalog: Catalog) -> dg.AssetsDefinition:
    @dg.asset(
        key=RETENTION_KEY,
        group_name="privacy",
        kinds={"deltalake"},
        description="Deletes raw, quarantined and feature rows older than their declared retention (the catalog's "
        "`retention` and `raw_retention`); the purge vacuums the rewritten files.",
    )
    def _retention(
        context: dg.AssetExecutionContext, config: RetentionConfig, store: FeatureStoreResource
    ) -> dg.MaterializeResult:
        at = datetime.fromisoformat(config.as_of).astimezone(UTC) if config.as_of else datetime.now(UTC)
        done = retention.enforce(
            catalog, store.settings, by=f"dagster run {context.run.run_id[:8]}", at=at, dry_run=config.dry_run
        )
        for e in done:
            context.log.info(
                f"{e.expiry.kind} {e.expiry.owner}: {e.rows} rows before {e.expiry.cutoff} "
                f"({'would be ' if config.dry_run else ''}deleted, {e.files_rewritten} files rewritten)"
            )
        return dg.MaterializeResult(
            metadata={
                "as_of": at.isoformat(timespec="seconds"),
                "dry_run": config.dry_run,
                "tables": len(done),
                "rows_deleted": sum(e.rows for e in done),
                "files_rewritten": sum(e.files_rewritten for e in done),
                "per_table": dg.MetadataValue.json(
                    {
                        f"{e.expiry.kind}:{e.expiry.owner}": {"cutoff": str(e.expiry.cutoff), "rows": e.rows}
                        for e in done
                    }
                ),
            }
        )

    return _retention


class PurgeConfig(dg.Config):
    """`keep_hours`: keep files replaced within this many hours (default: the purge window less a day)."""

    keep_hours: float | None = None


def default_keep_hours(days: float) -> float:
    """Keep time travel as long as the purge window allows: a daily purge then still meets every due date."""
    return max(24.0 * (days - 1), 0.0)


def build_purge_asset(catalog: Catalog) -> dg.AssetsDefinition:
    @dg.asset(
        key=PURGE_KEY,
        group_name="privacy",
        kinds={"deltalake"},
        description="VACUUM every lake table: files replaced by erasures and retention deletes are removed for "
        "good once older than keep_hours (time travel ends there).",
    )
    def _purge(context: dg.AssetExecutionContext, config: PurgeConfig, store: FeatureStoreResource):
        settings = store.settings
        keep = config.keep_hours if config.keep_hours is not None else default_keep_hours(settings.erasure_purge_days)
        removed = purge.purge(catalog, settings, keep_hours=keep, by=f"dagster run {context.run.run_id[:8]}")
        return dg.MaterializeResult(
            metadata={
                "keep_hours": keep,
                "tables": len(removed),
                "files_removed": sum(removed.values()),
                "per_table": dg.MetadataValue.json(removed),
            }
        )

    return _purge


def overdue_result(late: purge.Overdue, purge_days: float) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=late.count == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None
        if late.count == 0
        else f"{late.count} erasures are past their purge date: run the purge (materialize privacy/purge)",
        metadata={
            "overdue_erasures": late.count,
            "oldest_due": late.oldest_due.isoformat(timespec="seconds") if late.oldest_due else "none",
            "by_entity": dg.MetadataValue.json(late.by_entity),
            "purge_window_days": purge_days,
        },
    )


def build_overdue_check(catalog: Catalog) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=PURGE_KEY,
        name="no_overdue_purge",
        blocking=False,
        automation_condition=dg.AutomationCondition.cron_tick_passed(OVERDUE_CRON),
        description="No erasure is past its purge date (erasure + FS_ERASURE_PURGE_DAYS) with a lake table not "
        "yet vacuumed past it (privacy/purge.py `overdue`).",
    )
    def _overdue(store: FeatureStoreResource) -> dg.AssetCheckResult:
        settings = store.settings
        return overdue_result(purge.overdue(catalog, settings), settings.erasure_purge_days)

    return _overdue


BACKFILL_TAG = "dagster/backfill"
USER_TAGS = ("dagster/user", "user")
REASON_TAGS = ("fs/reason", "reason")
"""Run tags the backfill audit reads: who launched it (else "dagster") and why (else "")."""
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def run_assets(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The assets a run materializes: its asset selection, else those it planned (logged before it starts)."""
    if run.asset_selection:
        return sorted(k.to_user_string() for k in run.asset_selection)
    planned = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    keys = {e.dagster_event.asset_key for e in planned if e.dagster_event and e.dagster_event.asset_key}
    return sorted(k.to_user_string() for k in keys)


def audit_backfill_run(run: dg.DagsterRun, assets: list[str], audit: AuditLog, at: datetime | None = None) -> bool:
    """Append one `backfill` record for a run a backfill launched (tag `dagster/backfill`): who, the asset
    keys and partition range it covers, when, and why. Once per run (a record for the run id already there:
    nothing). Returns whether it wrote."""
    tags = run.tags
    backfill = tags.get(BACKFILL_TAG)
    if not backfill:
        return False
    done = audit.read(action="backfill")
    if done.height and (done["target"] == run.run_id).any():
        return False
    first, last = (tags.get(t) for t in RANGE_TAGS)
    if first is None and (single := tags.get("dagster/partition")) is not None:
        first = last = single
    audit.append(
        "backfill",
        by=next((tags[t] for t in USER_TAGS if tags.get(t)), "dagster"),
        reason=next((tags[t] for t in REASON_TAGS if tags.get(t)), ""),
        target=run.run_id,
        details={
            "backfill_id": backfill,
            "job": run.job_name,
            "assets": assets,
            "partitions": f"{first}..{last}" if first else "unpartitioned",
        },
        at=at,
    )
    return True


def build_backfill_audit_sensor() -> dg.RunStatusSensorDefinition:
    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.STARTED,
        name="audit_backfills",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Every run a manual backfill starts appends a `backfill` record to the audit log (who: the "
        "run's user tag, else dagster; what: assets and partition range; why: the fs/reason tag).",
    )
    def _audit(context: dg.RunStatusSensorContext, store: FeatureStoreResource) -> dg.SkipReason | None:
        run = context.dagster_run
        record = context.instance.get_run_record_by_id(run.run_id)
        started = record.start_time if record is not None else None
        started = datetime.fromtimestamp(started, UTC) if started else None
        audit = AuditLog(store.settings.privacy_table("audit"))
        if run.tags.get(BACKFILL_TAG) is None or not audit_backfill_run(
            run, run_assets(context.instance, run), audit, at=started
        ):
            return dg.SkipReason(f"run {run.run_id[:8]}: not a backfill, or already recorded")
        return None

    return _audit


def build_privacy_defs(catalog: Catalog) -> dg.Definitions:
    retention_job = dg.define_asset_job(
        RETENTION_JOB,
        selection=dg.AssetSelection.assets(RETENTION_KEY),
        description="Delete every row older than its declared retention (raw, quarantine, feature tables).",
    )
    purge_job = dg.define_asset_job(
        PURGE_JOB,
        selection=dg.AssetSelection.assets(PURGE_KEY),
        description="VACUUM every lake table (erasures and retention deletes physically gone), then check overdue.",
    )
    return dg.Definitions(
        assets=[build_retention_asset(catalog), build_purge_asset(catalog)],
        asset_checks=[build_overdue_check(catalog)],
        jobs=[retention_job, purge_job],
        sensors=[build_backfill_audit_sensor()],
        schedules=[
            dg.ScheduleDefinition(
                name="purge_daily",
                job=purge_job,
                cron_schedule=PURGE_CRON,
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Daily, after the retention delete: VACUUM, then the overdue-purge check.",
            ),
            dg.ScheduleDefinition(
                name="retention_daily",
                job=retention_job,
                cron_schedule=RETENTION_CRON,
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Daily: the retention delete.",
            ),
        ],
    )
