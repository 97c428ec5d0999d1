"""Feature table assets: a view's partitions computed with polars, gated by GE, committed to Delta.

A feature table is validated *before* it is written: a failed blocking check commits nothing and stops
the push (write-audit-publish, pitfall P3). A run tagged `fs/historical_load=true` declares its commit part
of the table's initial historical load (recorded in the Delta commit; training counts those partitions as
known at their ends); any other run's data counts as known from its commit.
"""

import dagster as dg

from feature_pipelines import lineage, plan
from feature_pipelines.catalog import Catalog
from feature_pipelines.checks import holdback, quality
from feature_pipelines.offline import completeness, delta, history
from feature_pipelines.offline.compute import (
    IntegerOverflowError,
    compute_partitions,
    raw_days_before,
    raw_range_for,
)
from feature_pipelines.offline.enrichment import MissingInputError, active_persons, read_inputs
from feature_pipelines.orchestration.asset_keys import feature_key, identity_key, raw_key
from feature_pipelines.orchestration.feature_checks import (
    GX_CHECK,
    WARN,
    drift_check,
    feature_check_specs,
    health_checks,
    holdback_metadata,
    holdback_record,
    outlier_check,
    reference_partitions,
)
from feature_pipelines.orchestration.partitions import POLICY, RETRY, partitions_for, run_days
from feature_pipelines.orchestration.privacy_assets import consent_dep
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.orchestration.table_metadata import table_schema
from feature_pipelines.privacy import pii
from feature_pipelines.privacy.policy import PrivacyPolicy
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE, FeatureView

HISTORICAL_LOAD_TAG = "fs/historical_load"
"""Run tag (value "true") declaring the run an initial historical load of the tables it writes."""


def build_feature_asset(view: FeatureView, catalog: Catalog) -> dg.AssetsDefinition:
    source = catalog.source_of(view)
    entity = catalog.entity_of(view)
    descriptions = {f.name: f.description for f in view.features}
    descriptions[entity.join_key] = f"Join key of entity {entity.name!r}"
    key = feature_key(view)
    lineage_deps = lineage.column_lineage(view, catalog)

    window = dg.TimeWindowPartitionMapping(start_offset=-raw_days_before(view), end_offset=0)
    deps = [
        # Partition D reads exactly the raw days its window touches (`raw_range_for`): a late raw day
        # re-dirties every feature partition whose window contains it, and no other.
        dg.AssetDep(raw_key(source), partition_mapping=window)
    ]
    if view.identity is not None:
        # Partition D resolves persons as known at its end: the identity graph with day D folded in.
        deps.append(dg.AssetDep(identity_key("alias_map"), partition_mapping=dg.TimeWindowPartitionMapping()))
    if entity.personal:  # consent as folded up to the partition's day (privacy/consent), if a source feeds it
        deps += consent_dep(catalog)
    lookup_sources = [catalog.sources[n] for n in dict.fromkeys(lookup.source_name for lookup in view.lookups)]
    for lookup_source in lookup_sources:
        if lookup_source.name != source.name:
            deps.append(dg.AssetDep(raw_key(lookup_source), partition_mapping=window))

    @dg.asset(
        key=key,
        deps=deps,
        partitions_def=partitions_for(source),
        backfill_policy=POLICY,
        retry_policy=RETRY,
        group_name="features",
        kinds={"polars", "deltalake"},
        owners=[view.owner],
        tags={**view.tags, "entity": entity.name, "sensitivity": view.namespace_sensitivity},
        code_version=f"{view.version}-{view.definition_hash()}",
        description=view.description,
        metadata={"defined_at": view.defined_at, "entity": entity.name, "online": view.online},
        check_specs=feature_check_specs(key, partitions_for(source)),
    )
    def _features(context: dg.AssetExecutionContext, store: FeatureStoreResource):
        days = run_days(context)
        uri = store.settings.feature_table(view.deployed_name)
        try:  # before any work: a breaking change is not transient, retrying cannot fix it
            added = plan.check_writable(view, catalog, uri).added
        except plan.BreakingChangeError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        if added:
            context.log.info(f"{view.deployed_name}: merging new columns {sorted(added)} into {uri}")
        raw_first, raw_last = raw_range_for(view, days[0], days[-1])
        raw_uri = store.settings.raw_table(source.name)
        raw_version = delta.table_version(raw_uri)
        if raw_version is None:
            raise dg.Failure(
                f"raw table {raw_uri} does not exist: materialize {raw_key(source).to_user_string()}",
                allow_retries=False,
            )
        try:  # a partition is computed from its whole window or not at all (invariant 2)
            completeness.require_complete(view, source, raw_uri, days)
        except completeness.IncompleteWindowError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        try:  # the identity graph and lookups a view declares, read once for the run
            extra = read_inputs(view, catalog, store.settings, days[-1])
            for lookup_source in lookup_sources:
                completeness.require_complete(view, lookup_source, store.settings.raw_table(lookup_source.name), days)
        except (MissingInputError, completeness.IncompleteWindowError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        raw = delta.read_partitions(raw_uri, EVENT_DATE, raw_first, raw_last, raw_version)
        try:
            frame = compute_partitions(view, catalog, raw, days, extra.inputs)
        except IntegerOverflowError as exc:  # the data decides: a retry would wrap again
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        # Consent at each partition's instant, as known now, and erasures: left out before the gate.
        policy = PrivacyPolicy(catalog, store.settings)
        consented = policy.filter_view_rows(view, frame)
        frame = consented.frame
        if consented.dropped:
            context.log.info(
                f"{view.deployed_name}: {consented.dropped} rows of {consented.subjects} subjects left out "
                "(no consent for the view's purposes at the partition's time, or erased)"
            )
        report = quality.validate(view, catalog, frame)
        held = None
        if not report.passed and view.max_bad_fraction > 0:  # blast radius: hold bad entities back, not all
            previous = holdback.committed_before(uri, view.online_ttl or view.offline_lookback)
            held = holdback.hold_back(view, catalog, frame, report, previous)
            if not held.blocked:
                # Carried rows are earlier rows: the same consent and erasure rule applies to them.
                frame, first_report = policy.filter_view_rows(view, held.frame).frame, report
                report = quality.validate(view, catalog, frame)  # the repaired frame passes the whole gate
                context.log.warning(
                    f"{view.deployed_name}: held back {held.count} entities ({view.on_bad_entities}); "
                    f"they failed:\n{first_report.summary()}"
                )
        sensitive = pii.sensitive_columns(catalog, view)
        if sensitive:  # what is stored and shown outside the table carries no ids or sensitive values
            report = pii.redact_report(report, sensitive, entity.join_key, entity.name)
        span = f"{days[0]}..{days[-1]}"
        results_path = quality.save_result(
            report,
            store.settings.lake_dir,
            view.deployed_name,
            days,
            context.run.run_id,
            extra=holdback_record(view, held),
        )
        gate_meta = {
            "rows": frame.height,
            "expectations": report.evaluated,
            "failed": len(report.blocking_failures),
            "partitions": span,
            "failed_partitions": ", ".join(report.failed_partitions) or "none",
            "failures": dg.MetadataValue.md(report.markdown(report.blocking_failures)),
            "validation_result": dg.MetadataValue.path(str(results_path)),
            **holdback_metadata(view, held),
        }
        if not report.passed:
            yield dg.AssetCheckResult(check_name=GX_CHECK, passed=False, metadata=gate_meta)
            why = "".join(f"\n  {b}" for b in (held.blocked if held else []))
            raise dg.Failure(
                description=f"GE gate failed; nothing was written to Delta.\n{report.summary()}"
                + (f"\nnot held back (max_bad_fraction={view.max_bad_fraction}):{why}" if why else ""),
                metadata=gate_meta,
                allow_retries=False,
            )
        historical = context.run.tags.get(HISTORICAL_LOAD_TAG, "").lower() == "true"
        if historical and not history.initial_load_open(uri):
            context.log.warning(
                f"{view.deployed_name}: run tagged {HISTORICAL_LOAD_TAG}, but {uri} already has regular writes: "
                "the declaration is recorded and does not count (these partitions are known from this commit)"
            )
        try:
            commit = delta.overwrite_partitions(
                uri,
                frame,
                PARTITION_DATE,
                days[0],
                days[-1],
                commit_metadata={
                    "dagster_run_id": context.run.run_id,
                    "view": view.deployed_name,
                    "view_version": str(view.version),
                    "partitions": span,
                    "source_table": raw_uri,
                    "source_version": str(raw_version),
                    **extra.versions,
                    "definition_hash": view.definition_hash(),
                    "code_hash": view.code_hash(),
                    "offline_lookback_s": str(view.offline_lookback.total_seconds()),
                    "defined_at": view.defined_at,
                    "quality_result": str(results_path),
                },
                historical_load=historical,
                stats_columns=pii.stats_columns(frame.columns, sensitive),
            )
        except delta.SchemaChangeError as exc:  # the table changed under us since the check above
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        quality.index_result(results_path, store.settings.lake_dir, view.deployed_name, days, commit.version)
        context.log.info(f"{view.deployed_name}: {commit.rows} rows for {span}, Delta v{commit.version}")
        reference = reference_partitions(uri, commit.version, days[-1])
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
            drift_check(view, reference, frame, days[-1]),
            outlier_check(view, entity.join_key, reference, frame, days[-1]),
            *health_checks(
                view,
                catalog,
                raw,
                frame,
                days,
                active_persons(view, raw, extra.inputs, days) if view.identity else None,
                withheld=consented.withheld,
            ),
        ]
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": commit.rows,
                "dagster/column_schema": table_schema(dict(frame.schema), descriptions),
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
                "historical_load": historical,
                "rows_withheld": consented.dropped,
            },
            check_results=checks,
            data_version=dg.DataVersion(f"delta-v{commit.version}"),
        )

    return _features
