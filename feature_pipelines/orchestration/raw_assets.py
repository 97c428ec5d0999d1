"""Ingest assets: a source's files, through the raw gate and the volume guards, into its raw Delta table, one
day per partition (`offline/ingest.py` does the work; `fstore ingest` runs the same code)."""

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import delta, ingest
from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.partitions import POLICY, RETRY, partitions_for, run_days
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.orchestration.table_metadata import table_schema
from feature_pipelines.privacy.policy import PrivacyPolicy
from feature_pipelines.spec import BatchSource

ALLOW_SHRINK_TAG = "allow_shrink"
"""Run tag (`allow_shrink=true`) that lets a re-delivery shrink days that had rows; recorded in the commit."""


class IngestConfig(dg.Config):
    """`allow_shrink`: accept a delivery that shrinks days that had rows beyond the source's `max_shrink`."""

    allow_shrink: bool = False


def build_source_asset(source: BatchSource, catalog: Catalog) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(source),
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        group_name="raw",
        kinds={"polars", "deltalake"},
        retry_policy=RETRY,
        owners=[source.owner] if source.owner else None,
        description=f"{source.description}\n\nRaw rows of `{source.location}` (or `FS_SOURCE_"
        f"{source.name.upper()}_LOCATION`), checked against the source's contract, event time in UTC, by day.",
        metadata={"source_location": source.location, "defined_at": source.defined_at},
    )
    def _ingest(
        context: dg.AssetExecutionContext, store: FeatureStoreResource, config: IngestConfig
    ) -> dg.MaterializeResult:
        days = run_days(context)
        allow = config.allow_shrink or context.run.tags.get(ALLOW_SHRINK_TAG, "").lower() in ("1", "true", "yes")
        try:
            result = ingest.ingest(
                source,
                catalog.entities,
                ingest.source_files(source, catalog.base_dir),
                days[0],
                days[-1],
                raw_uri=store.settings.raw_table(source.name),
                quarantine_uri=store.settings.quarantine_table(source.name),
                run_id=context.run.run_id,
                allow_shrink=allow,
                commit_metadata={"dagster_run_id": context.run.run_id},
                log=context.log.warning,
                exclude=PrivacyPolicy(catalog, store.settings).without_erased,
            )
        except ingest.SourceError as exc:  # bad input is not transient: fail now, name it, commit nothing
            raise dg.Failure(description=f"ingest failed, nothing was committed: {exc}", allow_retries=False) from exc
        except delta.SchemaChangeError as exc:  # a source column dropped or retyped: not transient
            raise dg.Failure(
                description=f"source {source.name!r}: {exc}. Declare the column as before, or ingest the new "
                "shape as a new source",
                allow_retries=False,
            ) from exc
        context.log.info(result.summary().splitlines()[0])
        empty_days = [d for d, n in result.rows_by_day.items() if n == 0]
        uncovered = [d for d in result.rows_by_day if d not in set(result.covered)]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows,
                "dagster/column_schema": table_schema(source.raw_schema, {}),
                "delta_version": result.commit.version,
                "delta_table": store.settings.raw_table(source.name),
                "partitions": f"{days[0]}..{days[-1]}",
                "files": len(result.files),
                "quarantined_rows": result.quarantined,
                "not_written": dg.MetadataValue.md("\n".join(f"- {o}" for o in result.outside) or "none"),
                "days_without_rows": ", ".join(empty_days[:20]) + (" ..." if len(empty_days) > 20 else "") or "none",
                "not_covered_days": ", ".join(uncovered[:20]) + (" ..." if len(uncovered) > 20 else "") or "none",
                "allow_shrink": allow,
                "shrunk_days": ", ".join(f"{d} ({a}->{b})" for d, (a, b) in result.shrunk.items()) or "none",
            },
            data_version=dg.DataVersion(f"delta-v{result.commit.version}"),
        )

    return _ingest
