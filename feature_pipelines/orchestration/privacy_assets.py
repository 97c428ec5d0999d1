"""Privacy upkeep in Dagster: the daily retention delete, with its schedule.

`privacy/retention` deletes the rows older than each source's and view's declared retention
(`feature_pipelines.privacy.retention`); every materialization records which tables, cutoffs and row
counts in its metadata and in the audit log. The schedule runs by default: a retention promise must not
wait for someone to switch it on (the shipped historical catalog declares none, so it deletes nothing).
"""

from datetime import UTC, datetime

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy import retention

RETENTION_KEY = dg.AssetKey(["privacy", "retention"])
RETENTION_JOB = "enforce_retention"
RETENTION_CRON = "30 3 * * *"


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


def build_privacy_defs(catalog: Catalog) -> dg.Definitions:
    retention_job = dg.define_asset_job(
        RETENTION_JOB,
        selection=dg.AssetSelection.assets(RETENTION_KEY),
        description="Delete every row older than its declared retention (raw, quarantine, feature tables).",
    )
    return dg.Definitions(
        assets=[build_retention_asset(catalog)],
        jobs=[retention_job],
        schedules=[
            dg.ScheduleDefinition(
                name="retention_daily",
                job=retention_job,
                cron_schedule=RETENTION_CRON,
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description="Daily: the retention delete.",
            )
        ],
    )
