"""Ingest assets: a source's files, checked and normalized, into its raw Delta table, one day per partition."""

import json

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import delta, ingest
from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.partitions import POLICY, RETRY, partitions_for, run_days
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.orchestration.table_metadata import table_schema
from feature_pipelines.spec import EVENT_DATE, BatchSource


def build_source_asset(source: BatchSource, catalog: Catalog) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(source),
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        group_name="raw",
        kinds={"polars", "deltalake"},
        retry_policy=RETRY,
        owners=[source.owner] if source.owner else None,
        description=f"{source.description}\n\nRaw rows of `{source.location}`, event time in UTC, by day.",
        metadata={"source_location": source.location, "defined_at": source.defined_at},
    )
    def _ingest(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        days = run_days(context)
        try:
            files = ingest.source_files(source, catalog.base_dir)
            frame = ingest.in_range(ingest.read_source(source, catalog.base_dir), days[0], days[-1])
        except ingest.SourceError as exc:  # bad input is not transient: fail now, name it, commit nothing
            raise dg.Failure(description=f"ingest failed, nothing was committed: {exc}", allow_retries=False) from exc
        try:
            commit = delta.overwrite_partitions(
                store.settings.raw_table(source.name),
                frame,
                EVENT_DATE,
                days[0],
                days[-1],
                commit_metadata={
                    "dagster_run_id": context.run.run_id,
                    "source": source.name,
                    "partitions": f"{days[0]}..{days[-1]}",
                    "source_files": json.dumps({f: ingest.file_sha256(f) for f in files}),
                },
            )
        except delta.SchemaChangeError as exc:  # a source column dropped or retyped: not transient
            raise dg.Failure(
                description=f"source {source.name!r}: {exc}. Declare the column as before, or ingest the new "
                "shape as a new source",
                allow_retries=False,
            ) from exc
        context.log.info(f"{source.name}: {commit.rows} rows for {days[0]}..{days[-1]}, Delta v{commit.version}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": commit.rows,
                "dagster/column_schema": table_schema(source.raw_schema, {}),
                "delta_version": commit.version,
                "delta_table": store.settings.raw_table(source.name),
                "partitions": f"{days[0]}..{days[-1]}",
            },
            data_version=dg.DataVersion(f"delta-v{commit.version}"),
        )

    return _ingest
