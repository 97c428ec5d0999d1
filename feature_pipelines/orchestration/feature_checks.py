"""The asset checks of a feature table, declared from the spec and evaluated in the asset's own step.

`gx_suite` is the blocking gate (it runs before the Delta commit); the others warn. Each result's
metadata is plotted by the Dagster UI per run. `consistency` is the online asset's check that serving and
training agree, run right after a promotion.
"""

import dataclasses
from datetime import date, timedelta

import dagster as dg
import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.checks import consistency, drift, freshness
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.pii import redact_ids
from feature_pipelines.privacy.policy import OnlineGuard
from feature_pipelines.spec import PARTITION_DATE, FeatureView

GX_CHECK = "gx_suite"
CONSISTENCY_CHECK = "consistency"
WARN = dg.AssetCheckSeverity.WARN
REFERENCE_PARTITIONS = 28
"""Drift compares the newest partition with this many partitions before it."""


def feature_check_specs(key: dg.AssetKey, partitions: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
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
            description=f"PSI / Jensen-Shannon distance and null share of the newest partition against the "
            f"{REFERENCE_PARTITIONS} before it (a feature that turned all-null fails it).",
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


def drift_check(view: FeatureView, uri: str, version: int, frame: pl.DataFrame, newest: date) -> dg.AssetCheckResult:
    first = (newest - timedelta(days=REFERENCE_PARTITIONS)).isoformat()
    last = (newest - timedelta(days=1)).isoformat()
    reference = delta.read_partitions(uri, PARTITION_DATE, first, last, version)
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
            "drifted": ", ".join(d.describe() for d in drifted) or "none",
        },
    )


def health_checks(
    view: FeatureView, catalog: Catalog, raw: pl.DataFrame, frame: pl.DataFrame, days: list[date]
) -> list[dg.AssetCheckResult]:
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


def consistency_spec(key: dg.AssetKey, view: FeatureView) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CONSISTENCY_CHECK,
        asset=key,
        blocking=False,
        description=f"Right after a promotion: {view.skew_sample} sampled entities of the serving version (and "
        "entities of the partitions before it that are absent from it) read through the serving client equal "
        "what a training set returns for them at the served partition's instant, as known then.",
    )


def consistency_check(view: FeatureView, store: OnlineStore, guard: OnlineGuard | None = None) -> dg.AssetCheckResult:
    """Serving vs training for the version serving `view` now (whichever push promoted it); `guard` leaves
    out subjects the privacy policy stops serving (revoked or erased since their partition was computed)."""
    meta = store.serving_meta(view.deployed_name)
    if meta is None:
        return dg.AssetCheckResult(
            check_name=CONSISTENCY_CHECK, passed=True, metadata={"note": "not evaluated: no version serves"}
        )
    schema = store.layout[view.deployed_name]
    keep = (lambda ids: guard.keep(schema, ids)) if guard is not None else None
    try:
        result = consistency.check(OnlineClient(store.r, layout=store.layout), view, meta, view.skew_sample, keep=keep)
    except Exception as exc:  # the version already serves: a check that cannot run fails, the push stands
        return dg.AssetCheckResult(
            check_name=CONSISTENCY_CHECK,
            passed=False,
            metadata={"serving_version": meta.version, "partition": meta.partition, "error": repr(exc)[:2000]},
        )
    if schema.purposes is not None and schema.entity:  # ids of people: digests in metadata, no example rows
        differing = {f: redact_ids(schema.entity, ids) for f, ids in result.differing.items()}
        result = dataclasses.replace(result, differing=differing, examples=[])
    return dg.AssetCheckResult(
        check_name=CONSISTENCY_CHECK,
        passed=result.passed,
        metadata={
            "serving_version": result.version,
            "partition": result.partition,
            "instant": result.instant.isoformat(),
            "compared_entities": result.compared,
            "absent_entities_compared": result.absent_compared,
            "withheld_by_privacy": result.withheld,
            "differing_features": ", ".join(result.differing) or "none",
            "details": result.describe(),
            "examples": dg.MetadataValue.json([{k: str(v) for k, v in e.items()} for e in result.examples]),
        },
    )
