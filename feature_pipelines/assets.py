"""Dagster assets generated from the catalog: ingest, feature tables with their GE gate, online push.

    raw/<source> ──▶ features/<view> (+ blocking check gx_suite) ──▶ online/<view>

All three share the source's daily partitions and a single-run backfill policy, so a date range runs as
one run over the whole chain (pitfall P7) instead of one run per day. A feature table is validated
*before* it is written: a failed check commits nothing and stops the push (write-audit-publish, P3).
"""

import json
from datetime import date, timedelta
from functools import cache
from pathlib import Path

import dagster as dg
import polars as pl

from feature_pipelines import drift, freshness, ingest, lineage, offline_store, quality, training
from feature_pipelines import skew as skew_check
from feature_pipelines.catalog import Catalog
from feature_pipelines.compute import compute_partitions, raw_range_for
from feature_pipelines.online_store import OnlineSchema, namespace_for
from feature_pipelines.resources import FeatureStoreResource
from feature_pipelines.serving import OnlineClient
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE, BatchSource, FeatureView, TrainingSetSpec

GX_CHECK = "gx_suite"
POLICY = dg.BackfillPolicy.single_run()
RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""Transient Redis and I/O errors are retried with backoff; a failed quality gate is not (allow_retries=False)."""
REDIS_POOL = "redis_writes"
"""Concurrency pool of online pushes: limits in dagster.yaml keep backfills from flooding Redis."""


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
        retry_policy=RETRY,
        owners=[source.owner] if source.owner else None,
        description=f"{source.description}\n\nRaw rows of `{source.location}`, event time in UTC, by day.",
        metadata={"source_location": source.location, "defined_at": source.defined_at},
    )
    def _ingest(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        days = _days(context)
        try:
            files = ingest.source_files(source, catalog.base_dir)
            frame = ingest.in_range(ingest.read_source(source, catalog.base_dir), days[0], days[-1])
        except ingest.SourceError as exc:  # bad input is not transient: fail now, name it, commit nothing
            raise dg.Failure(description=f"ingest failed, nothing was committed: {exc}", allow_retries=False) from exc
        commit = offline_store.overwrite_partitions(
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


WARN = dg.AssetCheckSeverity.WARN
REFERENCE_PARTITIONS = 28
"""Drift compares the newest partition with this many partitions before it."""


def _feature_check_specs(key: dg.AssetKey, partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    return [
        # Partitioned (preview in 1.13) so that `all_deps_blocking_checks_passed` can tell, per partition,
        # whether the push may follow (pitfall P4).
        dg.AssetCheckSpec(
            GX_CHECK,
            asset=key,
            partitions_def=partitions,
            blocking=True,
            description="Blocking GE expectations from the spec; run before the Delta commit.",
        ),
        dg.AssetCheckSpec(
            "gx_warn",
            asset=key,
            blocking=False,
            description="Warn-level GE expectations from the spec: recorded, the run goes on.",
        ),
        dg.AssetCheckSpec(
            "drift",
            asset=key,
            blocking=False,
            description=f"PSI / Jensen-Shannon distance of the newest partition against the "
            f"{REFERENCE_PARTITIONS} before it.",
        ),
        dg.AssetCheckSpec(
            "source_freshness",
            asset=key,
            blocking=False,
            description="Age of the newest source event at each partition's end.",
        ),
        dg.AssetCheckSpec(
            "completeness",
            asset=key,
            blocking=False,
            description="Share of the entities active on each partition's day that got a row.",
        ),
    ]


def build_feature_asset(view: FeatureView, catalog: Catalog) -> dg.AssetsDefinition:
    source = catalog.source_of(view)
    entity = catalog.entity_of(view)
    descriptions = {f.name: f.description for f in view.features}
    descriptions[entity.join_key] = f"Join key of entity {entity.name!r}"
    key = feature_key(view)
    lineage_deps = lineage.column_lineage(view, catalog)

    @dg.asset(
        key=key,
        deps=[
            dg.AssetDep(
                raw_key(source),
                # Partition D reads the raw days D - lookback .. D: a late file re-dirties every day after it.
                partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-view.lookback.days, end_offset=0),
            )
        ],
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        retry_policy=RETRY,
        group_name="features",
        kinds={"polars", "deltalake"},
        owners=[view.owner],
        tags={**view.tags, "entity": entity.name, "sensitivity": view.sensitivity},
        code_version=f"{view.version}-{view.definition_hash()}",
        description=view.description,
        metadata={"defined_at": view.defined_at, "entity": entity.name, "online": view.online},
        check_specs=_feature_check_specs(key, partitions_for(source)),
    )
    def _features(context: dg.AssetExecutionContext, store: FeatureStoreResource):
        days = _days(context)
        raw_first, raw_last = raw_range_for(view, days[0], days[-1])
        raw_uri = store.settings.raw_table(source.name)
        raw_version = offline_store.table_version(raw_uri)
        if raw_version is None:
            raise dg.Failure(
                f"raw table {raw_uri} does not exist: materialize {raw_key(source).to_user_string()}",
                allow_retries=False,
            )
        raw = offline_store.read_partitions(raw_uri, EVENT_DATE, raw_first, raw_last, raw_version)
        frame = compute_partitions(view, catalog, raw, days)
        report = quality.validate(view, catalog, frame)
        span = f"{days[0]}..{days[-1]}"
        results_path = quality.save_result(report, store.settings.lake_dir, view.name, days, context.run.run_id)
        gate_meta = {
            "rows": frame.height,
            "expectations": report.evaluated,
            "failed": len(report.blocking_failures),
            "partitions": span,
            "failures": dg.MetadataValue.md(report.markdown(report.blocking_failures)),
            "validation_result": dg.MetadataValue.path(str(results_path)),
        }
        if not report.passed:
            yield dg.AssetCheckResult(check_name=GX_CHECK, passed=False, metadata=gate_meta)
            raise dg.Failure(
                description=f"GE gate failed; nothing was written to Delta.\n{report.summary()}",
                metadata=gate_meta,
                allow_retries=False,
            )
        uri = store.settings.feature_table(view.name)
        commit = offline_store.overwrite_partitions(
            uri,
            frame,
            PARTITION_DATE,
            days[0],
            days[-1],
            commit_metadata={
                "dagster_run_id": context.run.run_id,
                "view": view.name,
                "partitions": span,
                "source_table": raw_uri,
                "source_version": str(raw_version),
                "definition_hash": view.definition_hash(),
                "defined_at": view.defined_at,
            },
        )
        context.log.info(f"{view.name}: {commit.rows} rows for {span}, Delta v{commit.version}")
        checks = [
            dg.AssetCheckResult(check_name=GX_CHECK, passed=True, metadata=gate_meta),
            dg.AssetCheckResult(
                check_name="gx_warn",
                passed=not report.warnings,
                severity=WARN,
                metadata={
                    "failed": len(report.warnings),
                    "failures": dg.MetadataValue.md(report.markdown(report.warnings)),
                    "validation_result": dg.MetadataValue.path(str(results_path)),
                },
            ),
            _drift_check(view, uri, commit.version, frame, days[-1]),
            *_health_checks(view, catalog, raw, frame, days),
        ]
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": commit.rows,
                "dagster/column_schema": _schema_metadata(dict(frame.schema), descriptions),
                "dagster/column_lineage": dg.TableColumnLineage(
                    deps_by_column={
                        col: [dg.TableColumnDep(asset_key=raw_key(source), column_name=c) for c in cols]
                        for col, cols in lineage_deps.items()
                    }
                ),
                "delta_version": commit.version,
                "delta_table": uri,
                "raw_delta_version": raw_version,
                "partitions": span,
                "definition_hash": view.definition_hash(),
            },
            check_results=checks,
            data_version=dg.DataVersion(f"delta-v{commit.version}"),
        )

    return _features


def _drift_check(view: FeatureView, uri: str, version: int, frame: pl.DataFrame, newest: date) -> dg.AssetCheckResult:
    first = (newest - timedelta(days=REFERENCE_PARTITIONS)).isoformat()
    last = (newest - timedelta(days=1)).isoformat()
    reference = offline_store.read_partitions(uri, PARTITION_DATE, first, last, version)
    current = frame.filter(pl.col(PARTITION_DATE) == newest.isoformat())
    n_ref = reference[PARTITION_DATE].n_unique() if reference.height else 0
    if n_ref < 7 or current.height == 0:
        return dg.AssetCheckResult(
            check_name="drift",
            passed=True,
            severity=WARN,
            metadata={
                "partition": newest.isoformat(),
                "reference_partitions": n_ref,
                "note": "not evaluated: fewer than 7 reference partitions or an empty partition",
            },
        )
    results = drift.drift(view.features, reference, current)
    drifted = [d for d in results if d.drifted]
    return dg.AssetCheckResult(
        check_name="drift",
        passed=not drifted,
        severity=WARN,
        metadata={
            "partition": newest.isoformat(),
            "reference_partitions": n_ref,
            **{f"{d.metric}/{d.feature}": round(d.value, 4) for d in results},
            "drifted": ", ".join(f"{d.feature} ({d.metric} {d.value:.3f} > {d.threshold})" for d in drifted) or "none",
        },
    )


def _health_checks(view: FeatureView, catalog: Catalog, raw: pl.DataFrame, frame: pl.DataFrame, days: list[date]):
    health = freshness.partition_health(view, catalog, raw, frame, days)
    newest = health[-1]
    limit = view.max_source_lag
    stale = [h for h in health if h.source_lag is None or h.source_lag > limit]
    lag_h = newest.source_lag.total_seconds() / 3600 if newest.source_lag is not None else -1
    incomplete = [h for h in health if h.completeness < view.min_completeness]
    return [
        dg.AssetCheckResult(
            check_name="source_freshness",
            passed=not stale,
            severity=WARN,
            metadata={
                "source_lag_hours": round(lag_h, 2),
                "max_source_lag_hours": limit.total_seconds() / 3600,
                "stale_partitions": ", ".join(h.partition for h in stale[:20]) or "none",
                "n_stale": len(stale),
            },
        ),
        dg.AssetCheckResult(
            check_name="completeness",
            passed=not incomplete,
            severity=WARN,
            metadata={
                "completeness": round(newest.completeness, 4),
                "active_entities": newest.active,
                "min_completeness": view.min_completeness,
                "incomplete_partitions": ", ".join(f"{h.partition} ({h.completeness:.2%})" for h in incomplete[:20])
                or "none",
                "n_incomplete": len(incomplete),
            },
        ),
    ]


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
    key = online_key(view)

    @dg.asset(
        key=key,
        deps=[feature_key(view)],
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        retry_policy=RETRY,
        pool=REDIS_POOL,
        group_name="online",
        kinds={"redis"},
        owners=[view.owner],
        tags={"sensitivity": view.sensitivity},
        description=f"Newest partition of {view.name} in Redis, as a new version promoted atomically.",
        metadata={"key_namespace": schema.namespace, "ttl_seconds": schema.ttl_seconds or 0},
        check_specs=[
            dg.AssetCheckSpec(
                "skew",
                asset=key,
                blocking=True,
                description=f"{view.skew_sample} sampled entities read through the serving client equal their "
                "Delta rows; checked before the new version is promoted.",
            )
        ],
    )
    def _push(context: dg.AssetExecutionContext, store: FeatureStoreResource):
        newest = _days(context)[-1].isoformat()
        uri = store.settings.feature_table(view.name)
        version = offline_store.table_version(uri)
        batches = offline_store.iter_partition(
            uri, PARTITION_DATE, newest, [schema.join_key, *schema.features], version
        )
        online = store.online_store()
        skew: dict = {}

        def verify(online_version: int) -> str | None:
            compared, differing = skew_check.compare(
                OnlineClient(online.r),
                view.name,
                schema.namespace,
                online_version,
                schema.join_key,
                schema.features,
                uri,
                version,
                newest,
                view.skew_sample,
            )
            skew.update(compared=compared, differing=differing)
            if differing:
                return "served values differ from Delta for " + ", ".join(
                    f"{f} ({len(ids)} of {compared} entities, e.g. {ids[:3]})" for f, ids in differing.items()
                )
            return None

        result = online.push(
            schema,
            batches,
            partition=newest,
            delta_table=uri,
            delta_version=version,
            run_id=context.run.run_id,
            definition_hash=view.definition_hash(),
            verify=verify,
        )
        skew_meta = {
            "compared_entities": skew.get("compared", 0),
            "differing_features": ", ".join(skew.get("differing", {})) or "none",
            "online_version": result.version,
        }
        if result.reason.startswith("rejected"):
            yield dg.AssetCheckResult(check_name="skew", passed=False, metadata=skew_meta)
            raise dg.Failure(
                f"{view.name}: version {result.version} not promoted, {result.reason}", allow_retries=False
            )
        context.log.info(
            f"{view.name}: wrote version {result.version} ({result.rows} keys, {result.seconds:.2f}s); "
            f"{'promoted' if result.promoted else 'not promoted: ' + result.reason}"
        )
        yield dg.MaterializeResult(
            metadata={
                "online_version": result.version,
                "serving_version": result.serving_version or 0,
                "promoted": result.promoted,
                "keys_written": result.rows,
                "push_seconds": round(result.seconds, 3),
                "partition": newest,
                "delta_version": version if version is not None else -1,
                "removed_versions": str(result.removed_versions),
            },
            check_results=[dg.AssetCheckResult(check_name="skew", passed=True, metadata=skew_meta)],
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
