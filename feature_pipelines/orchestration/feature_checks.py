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
from feature_pipelines.checks import consistency, drift, freshness, outliers
from feature_pipelines.checks.holdback import HeldBack
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.pii import redact_ids
from feature_pipelines.privacy.policy import OnlineGuard
from feature_pipelines.spec import PARTITION_DATE, FeatureView

GX_CHECK = "gx_suite"
CONSISTENCY_CHECK = "consistency"
OUTLIER_CHECK = "outliers"
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
            OUTLIER_CHECK,
            asset=key,
            blocking=False,
            description=f"Entities of the newest partition whose value of a feature lies more than its outlier_z "
            f"robust deviations (median/MAD, signed log scale) from that feature's values in the "
            f"{REFERENCE_PARTITIONS} partitions before it; lists them.",
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


def reference_partitions(uri: str, version: int, newest: date) -> pl.DataFrame:
    """The committed partitions before `newest` that drift and outliers compare it with (read once)."""
    first = (newest - timedelta(days=REFERENCE_PARTITIONS)).isoformat()
    last = (newest - timedelta(days=1)).isoformat()
    return delta.read_partitions(uri, PARTITION_DATE, first, last, version)


def outlier_check(
    view: FeatureView, key: str, reference: pl.DataFrame, frame: pl.DataFrame, newest: date
) -> dg.AssetCheckResult:
    """Warn-level: entities of the newest partition far from each feature's own history, listed."""
    current = frame.filter(pl.col(PARTITION_DATE) == newest.isoformat())
    n_ref = reference[PARTITION_DATE].n_unique() if reference.height else 0
    if n_ref < 7 or current.height == 0:
        return dg.AssetCheckResult(
            check_name=OUTLIER_CHECK,
            passed=True,
            severity=WARN,
            metadata={
                "partition": newest.isoformat(),
                "reference_partitions": n_ref,
                "note": "not evaluated: fewer than 7 reference partitions or an empty partition",
            },
        )
    results = outliers.outliers(view.features, key, reference, current)
    found = [r for r in results if r.count]
    rows = sorted(({"feature": r.feature, **row} for r in found for row in r.rows[:20]), key=lambda x: -x["robust_z"])
    return dg.AssetCheckResult(
        check_name=OUTLIER_CHECK,
        passed=not found,
        severity=WARN,
        metadata={
            "n_outliers": sum(r.count for r in found),  # headline: every outlier of the partition checked
            "partition": newest.isoformat(),
            "reference_partitions": n_ref,
            "features": ", ".join(f"{r.feature} ({r.count})" for r in found) or "none",
            "not_evaluated": ", ".join(r.feature for r in results if not r.evaluated) or "none",
            "outlier_entities": dg.MetadataValue.md(
                _md_table([{k: _short(v) for k, v in row.items()} for row in rows[:50]])
            ),
        },
    )


def _short(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def drift_check(view: FeatureView, reference: pl.DataFrame, frame: pl.DataFrame, newest: date) -> dg.AssetCheckResult:
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
    view: FeatureView,
    catalog: Catalog,
    raw: pl.DataFrame,
    frame: pl.DataFrame,
    days: list[date],
    active: pl.DataFrame | None = None,
    withheld: pl.DataFrame | None = None,
) -> list[dg.AssetCheckResult]:
    """Source freshness and completeness over every partition of the run. Each headline value describes
    the verdict's scope: the worst partition of the run (named beside it), not the newest one, so a check
    failing over three days never shows the fine value of the last. `active`: the persons of an
    identity-keyed view, resolved as the view resolves them (completeness counts those). `withheld`:
    (join key, partition_date) left out for consent or erasure on purpose: not counted as incomplete."""
    health = freshness.partition_health(view, catalog, raw, frame, days, active, withheld)
    limit = view.max_source_lag
    span = f"{health[0].partition}..{health[-1].partition}"
    stale = [h for h in health if h.source_lag is None or h.source_lag > limit]
    unknown = [h for h in health if h.source_lag is None]  # no source event before the end: the worst lag
    laggiest = unknown[0] if unknown else max(health, key=lambda h: h.source_lag)
    lag_h = laggiest.source_lag.total_seconds() / 3600 if laggiest.source_lag is not None else -1
    incomplete = [h for h in health if h.completeness < view.min_completeness]
    worst = min(health, key=lambda h: h.completeness)
    return [
        dg.AssetCheckResult(
            check_name="source_freshness",
            passed=not stale,
            severity=WARN,
            metadata={
                "source_lag_hours": round(lag_h, 2),  # the largest over the run; -1: no source event at all
                "source_lag_partition": laggiest.partition,
                "partitions": span,
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
                "completeness": round(worst.completeness, 4),  # the lowest over the run
                "completeness_partition": worst.partition,
                "active_entities": worst.active,
                "partitions": span,
                "min_completeness": view.min_completeness,
                "incomplete_partitions": ", ".join(f"{h.partition} ({h.completeness:.2%})" for h in incomplete[:20])
                or "none",
                "n_incomplete": len(incomplete),
            },
        ),
    ]


def holdback_metadata(view: FeatureView, held: HeldBack | None) -> dict:
    """What the gate check shows about held-back entities: how many, a few of them and why, the policy."""
    if held is None or held.blocked:
        return {"held_back": 0} if view.max_bad_fraction > 0 else {}
    return {
        "held_back": held.count,
        "held_back_policy": view.on_bad_entities,
        "held_back_carried": held.carried,
        "max_bad_fraction": view.max_bad_fraction,
        "held_back_entities": dg.MetadataValue.md(_md_table(held.examples(20))),
    }


def holdback_record(view: FeatureView, held: HeldBack | None) -> dict:
    """The same, kept in the saved validation result (every held-back entity, not a sample)."""
    if held is None or held.blocked:
        return {}
    return {
        "held_back": {
            "policy": view.on_bad_entities,
            "max_bad_fraction": view.max_bad_fraction,
            "carried": held.carried,
            "entities": held.held.to_dicts(),
        }
    }


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return "none"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])


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
