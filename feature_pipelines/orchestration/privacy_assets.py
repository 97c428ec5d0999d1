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
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy import purge, retention

RETENTION_KEY = dg.AssetKey(["privacy", "retention"])
RETENTION_JOB = "enforce_retention"
RETENTION_CRON = "30 3 * * *"
PURGE_KEY = dg.AssetKey(["privacy", "purge"])
PURGE_JOB = "purge_lake"
PURGE_CRON = "30 4 * * *"
OVERDUE_CRON = "0 * * * *"


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
