"""Dagster assets generated from the catalog: ingest, feature tables with their GE gate, online push.

    raw/<source> ──▶ features/<view> (+ blocking check gx_suite) ──▶ online/<view>

All three share the source's daily partitions and a single-run backfill policy, so a date range runs as
one run over the whole chain (pitfall P7) instead of one run per day. A feature table is validated
*before* it is written: a failed check commits nothing and stops the push (write-audit-publish, P3).
"""

from datetime import date, timedelta
from functools import cache
from pathlib import Path

import dagster as dg
import polars as pl

from feature_pipelines import ingest, offline_store, quality, training
from feature_pipelines.catalog import Catalog
from feature_pipelines.compute import compute_partitions, raw_range_for
from feature_pipelines.online_store import OnlineSchema, namespace_for
from feature_pipelines.resources import FeatureStoreResource
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE, BatchSource, FeatureView, TrainingSetSpec

GX_CHECK = "gx_suite"
POLICY = dg.BackfillPolicy.single_run()


def raw_key(source: BatchSource) -> dg.AssetKey:
    return dg.AssetKey(["raw", source.name])


def feature_key(view: FeatureView) -> dg.AssetKey:
    return dg.AssetKey(["features", view.name])


def online_key(view: FeatureView) -> dg.AssetKey:
    return dg.AssetKey(["online", view.name])


@cache
def _partitions(start: date, end: date | None) -> dg.DailyPartitionsDefinition:
    end_exclusive = (end + timedelta(days=1)).isoformat() if end else None
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end_exclusive, timezone="UTC")


def partitions_for(source: BatchSource) -> dg.DailyPartitionsDefinition:
    return _partitions(source.start, source.end)


def _days(context: dg.AssetExecutionContext) -> list[date]:
    return sorted(date.fromisoformat(k) for k in context.partition_keys)


def _schema_metadata(schema: dict[str, pl.DataType], descriptions: dict[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype), description=descriptions.get(name)) for name, dtype in schema.items()]
    )


def build_source_asset(source: BatchSource, catalog: Catalog) -> dg.AssetsDefinition:
    @dg.asset(
        key=raw_key(source),
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        group_name="raw",
        kinds={"polars", "deltalake"},
        owners=[source.owner] if source.owner else None,
        description=f"{source.description}\n\nRaw rows of `{source.location}`, event time in UTC, by day.",
        metadata={"source_location": source.location, "defined_at": source.defined_at},
    )
    def _ingest(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        days = _days(context)
        frame = ingest.in_range(ingest.read_source(source, catalog.base_dir), days[0], days[-1])
        commit = offline_store.overwrite_partitions(
            store.settings.raw_table(source.name), frame, EVENT_DATE, days[0], days[-1]
        )
        context.log.info(f"{source.name}: {commit.rows} rows for {days[0]}..{days[-1]}, Delta v{commit.version}")
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": commit.rows,
                "dagster/column_schema": _schema_metadata(source.raw_schema, {}),
                "delta_version": commit.version,
                "delta_table": store.settings.raw_table(source.name),
                "partitions": f"{days[0]}..{days[-1]}",
            },
            data_version=dg.DataVersion(f"delta-v{commit.version}"),
        )

    return _ingest


def build_feature_asset(view: FeatureView, catalog: Catalog) -> dg.AssetsDefinition:
    source = catalog.source_of(view)
    entity = catalog.entity_of(view)
    descriptions = {f.name: f.description for f in view.features}
    descriptions[entity.join_key] = f"Join key of entity {entity.name!r}"

    @dg.asset(
        key=feature_key(view),
        deps=[raw_key(source)],
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        group_name="features",
        kinds={"polars", "deltalake"},
        owners=[view.owner],
        tags={**view.tags, "entity": entity.name, "sensitivity": view.sensitivity},
        code_version=f"{view.version}-{view.definition_hash()}",
        description=view.description,
        metadata={"defined_at": view.defined_at, "entity": entity.name, "online": view.online},
        check_specs=[
            dg.AssetCheckSpec(
                GX_CHECK,
                asset=feature_key(view),
                blocking=True,
                description="Great Expectations suite generated from the spec; runs before the Delta commit.",
            )
        ],
    )
    def _features(context: dg.AssetExecutionContext, store: FeatureStoreResource):
        days = _days(context)
        raw_first, raw_last = raw_range_for(view, days[0], days[-1])
        raw_uri = store.settings.raw_table(source.name)
        raw_version = offline_store.table_version(raw_uri)
        if raw_version is None:
            raise dg.Failure(f"raw table {raw_uri} does not exist: materialize {raw_key(source).to_user_string()}")
        raw = offline_store.read_partitions(raw_uri, EVENT_DATE, raw_first, raw_last, raw_version)
        frame = compute_partitions(view, catalog, raw, days)
        report = quality.validate(view, catalog, frame)
        check_meta = {
            "rows": frame.height,
            "expectations": report.evaluated,
            "failed": len(report.failures),
            "partitions": f"{days[0]}..{days[-1]}",
            "failures": dg.MetadataValue.md("\n".join(f"- [{f.severity}] {f}" for f in report.failures) or "none"),
        }
        if not report.passed:
            yield dg.AssetCheckResult(check_name=GX_CHECK, passed=False, metadata=check_meta)
            raise dg.Failure(
                description=f"GE gate failed; nothing was written to Delta.\n{report.summary()}",
                metadata=check_meta,
            )
        uri = store.settings.feature_table(view.name)
        commit = offline_store.overwrite_partitions(uri, frame, PARTITION_DATE, days[0], days[-1])
        context.log.info(f"{view.name}: {commit.rows} rows for {days[0]}..{days[-1]}, Delta v{commit.version}")
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": commit.rows,
                "dagster/column_schema": _schema_metadata(dict(frame.schema), descriptions),
                "delta_version": commit.version,
                "delta_table": uri,
                "raw_delta_version": raw_version,
                "partitions": f"{days[0]}..{days[-1]}",
                "definition_hash": view.definition_hash(),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=GX_CHECK,
                    passed=True,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata=check_meta,
                )
            ],
            data_version=dg.DataVersion(f"delta-v{commit.version}"),
        )

    return _features


def online_schema(view: FeatureView, catalog: Catalog) -> OnlineSchema:
    ttl = int(view.online_ttl.total_seconds()) if view.online_ttl else None
    return OnlineSchema(
        view=view.name,
        namespace=namespace_for(view.sensitivity),
        join_key=catalog.entity_of(view).join_key,
        features=view.feature_names,
        dtypes=[str(f.polars_dtype) for f in view.features],
        ttl_seconds=ttl,
    )


def build_online_asset(view: FeatureView, catalog: Catalog) -> dg.AssetsDefinition:
    source = catalog.source_of(view)
    schema = online_schema(view, catalog)

    @dg.asset(
        key=online_key(view),
        deps=[feature_key(view)],
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        group_name="online",
        kinds={"redis"},
        owners=[view.owner],
        tags={"sensitivity": view.sensitivity},
        description=f"Newest partition of {view.name} in Redis, as a new version promoted atomically.",
        metadata={"key_namespace": schema.namespace, "ttl_seconds": schema.ttl_seconds or 0},
    )
    def _push(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        newest = _days(context)[-1].isoformat()
        uri = store.settings.feature_table(view.name)
        version = offline_store.table_version(uri)
        batches = offline_store.iter_partition(
            uri, PARTITION_DATE, newest, [catalog.entity_of(view).join_key, *view.feature_names], version
        )
        result = store.online_store().push(
            schema,
            batches,
            partition=newest,
            delta_table=uri,
            delta_version=version,
            run_id=context.run.run_id,
            definition_hash=view.definition_hash(),
        )
        context.log.info(
            f"{view.name}: wrote version {result.version} ({result.rows} keys, {result.seconds:.2f}s); "
            f"{'promoted' if result.promoted else 'not promoted: ' + result.reason}"
        )
        return dg.MaterializeResult(
            metadata={
                "online_version": result.version,
                "serving_version": result.serving_version or 0,
                "promoted": result.promoted,
                "keys_written": result.rows,
                "push_seconds": round(result.seconds, 3),
                "partition": newest,
                "delta_version": version if version is not None else -1,
                "removed_versions": str(result.removed_versions),
            }
        )

    return _push


def build_training_set_asset(spec: TrainingSetSpec, catalog: Catalog) -> dg.AssetsDefinition:
    views = sorted({ref.view.name for ref in catalog.resolve_service(spec.service)})

    @dg.asset(
        key=dg.AssetKey(["training_sets", spec.name]),
        deps=[feature_key(catalog.views[v]) for v in views],
        group_name="training",
        kinds={"polars", "parquet"},
        owners=[spec.owner],
        description=f"{spec.description}\n\nFeature service `{spec.service}`, point in time ({spec.mode}).",
        metadata={"labels": spec.labels, "defined_at": spec.defined_at},
    )
    def _training_set(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        labels = pl.read_parquet(spec.resolve_labels(catalog.base_dir))
        result = training.build(
            catalog,
            spec.service,
            labels,
            store.settings.feature_table,
            timestamp_column=spec.timestamp_column,
            mode=spec.mode,
        )
        out = Path(store.lake_dir) / "training_sets" / spec.name / f"{context.run.run_id}.parquet"
        manifest = result.write(out)
        frame = result.frame
        features = [f for read in result.manifest.views for f in read.features]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "path": dg.MetadataValue.path(str(out)),
                "manifest": dg.MetadataValue.path(str(manifest)),
                "delta_versions": dg.MetadataValue.json({r.view: r.delta_version for r in result.manifest.views}),
                **{f"null_rate/{f}": round(frame[f].null_count() / max(frame.height, 1), 4) for f in features},
            }
        )

    return _training_set


def build_defs(catalog: Catalog) -> dg.Definitions:
    """Every asset of the catalog; resources and the executor are bound once, in definitions.py."""
    assets = [build_source_asset(s, catalog) for s in catalog.sources.values()]
    assets += [build_feature_asset(v, catalog) for v in catalog.views.values()]
    assets += [build_online_asset(v, catalog) for v in catalog.online_views]
    assets += [build_training_set_asset(t, catalog) for t in catalog.training_sets.values()]
    return dg.Definitions(assets=assets)
