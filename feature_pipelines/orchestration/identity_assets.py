"""The identity graph as daily-partitioned assets: `identity/edges`, `identity/persons`, `identity/alias_map`.

One step writes the three (they come from one stitching run, `identity/stitch.py`): partition D folds the
raw behaviour events of day D into the graph. Idempotent per partition: the day ledger skips a day already
folded with the same events, so re-running a day leaves every table as it was; a day re-delivered with other
events recomputes from all folded days. A range run (a backfill, the demo) folds its days in one go, and
the run tag `fs/historical_load=true` on the first run dates the alias facts as known at the end of their
day (as for feature tables; see `alias_map.update`).

Checks: `guardrails` (warn) lists the refused links and offending ids; `stitching_accuracy` (blocking)
scores the planned persons against the ground truth beside the event files, when there is one, *before*
anything is written: a failing run commits nothing and stops what reads the alias map downstream.
"""

from pathlib import Path

import dagster as dg
import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity import accuracy, edges
from feature_pipelines.identity.stitch import IDENTITY_SOURCE, IdentityStore
from feature_pipelines.offline import delta
from feature_pipelines.offline.ingest import source_location
from feature_pipelines.orchestration.asset_keys import IDENTITY_TABLES, identity_key, raw_key
from feature_pipelines.orchestration.feature_assets import HISTORICAL_LOAD_TAG
from feature_pipelines.orchestration.partitions import POLICY, RETRY, partitions_for, run_days
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.spec import EVENT_DATE
from feature_pipelines.synthetic.events import TRUTH_FILE

IDENTITY_GROUP = "identity"
EDGES, PERSONS, ALIAS_MAP = IDENTITY_TABLES
GUARDRAIL_CHECK = "guardrails"
ACCURACY_CHECK = "stitching_accuracy"
MAX_REFUSED_SHARE = 0.05
"""The guardrail check warns when more than this share of links is refused: a tracker sending placeholders
or a bot farm, not the few kiosks and household tablets of normal traffic."""
EXAMPLES = 20


def truth_path(catalog: Catalog) -> Path:
    """The ground truth beside the identity source's files (`truth.parquet`), if the data comes with one."""
    return Path(source_location(catalog.sources[IDENTITY_SOURCE], catalog.base_dir)).parent / TRUTH_FILE


def accuracy_result(persons: pl.DataFrame, truth: Path) -> dg.AssetCheckResult:
    """Pairwise precision/recall of the planned persons over the truth ids the graph has seen (a daily run
    early in the history has not seen most ids yet: they are not counted as misses)."""
    if not truth.exists():
        return dg.AssetCheckResult(
            check_name=ACCURACY_CHECK,
            asset_key=identity_key(ALIAS_MAP),
            passed=True,
            metadata={"note": f"not evaluated: no ground truth at {truth}"},
        )
    labels = pl.read_parquet(truth).join(persons, on=["identifier_type", "identifier"], how="semi")
    score = accuracy.pairwise(persons, labels)
    passed = score.passes(accuracy.MIN_PRECISION, accuracy.MIN_RECALL)
    return dg.AssetCheckResult(
        check_name=ACCURACY_CHECK,
        asset_key=identity_key(ALIAS_MAP),
        passed=passed,
        metadata={
            "precision": round(score.precision, 5),
            "recall": round(score.recall, 5),
            "min_precision": accuracy.MIN_PRECISION,
            "min_recall": accuracy.MIN_RECALL,
            "true_pairs": score.true_pairs,
            "predicted_pairs": score.predicted_pairs,
            "correct_pairs": score.correct_pairs,
            "ids": score.ids,
            "ambiguous_ids": score.ambiguous_ids,
            "truth": dg.MetadataValue.path(str(truth)),
        },
    )


def guardrail_result(judged: pl.DataFrame, violations: pl.DataFrame) -> dg.AssetCheckResult:
    refused = judged.filter(pl.col("status") != edges.MERGED)
    share = refused.height / judged.height if judged.height else 0.0
    by_status = dict(refused.group_by("status").len().sort("status").iter_rows())
    by_rule = dict(violations.group_by("rule").len().sort("rule").iter_rows())
    examples = violations.head(EXAMPLES)
    table = "\n".join(
        ["| type | id | rule | detail |", "|---|---|---|---|"]
        + [f"| {t} | `{i}` | {r} | {d} |" for t, i, r, d in examples.iter_rows()]
    )
    return dg.AssetCheckResult(
        check_name=GUARDRAIL_CHECK,
        asset_key=identity_key(EDGES),
        passed=share <= MAX_REFUSED_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "links": judged.height,
            "refused_links": refused.height,
            "refused_share": round(share, 5),
            "max_refused_share": MAX_REFUSED_SHARE,
            "violations": violations.height,
            **{f"refused/{k}": v for k, v in by_status.items()},
            **{f"violations/{k}": v for k, v in by_rule.items()},
            "examples": dg.MetadataValue.md(table if examples.height else "none"),
        },
    )


def build_identity_assets(catalog: Catalog) -> dg.AssetsDefinition | None:
    """The identity graph's assets, when the catalog has the identity source (None otherwise)."""
    source = catalog.sources.get(IDENTITY_SOURCE)
    if source is None:
        return None
    partitions = partitions_for(source)
    specs = [
        dg.AssetSpec(
            identity_key(EDGES),
            deps=[raw_key(source)],
            description="Every link between ids seen together in an event, with its status: merged, or the "
            "guardrail that refused it (shared device, kiosk, placeholder, limit per type, retraction).",
            group_name=IDENTITY_GROUP,
            kinds={"polars", "deltalake"},
        ),
        dg.AssetSpec(
            identity_key(PERSONS),
            deps=[identity_key(EDGES)],
            description="Each id with its person now: connected components of the merged edges, named by the "
            "oldest id (stable across merges and un-merges).",
            group_name=IDENTITY_GROUP,
            kinds={"polars", "deltalake"},
        ),
        dg.AssetSpec(
            identity_key(ALIAS_MAP),
            deps=[identity_key(PERSONS)],
            description="Bitemporal alias map: id -> person, valid from an event time, known from a run's "
            "commit. Training resolves ids as known at each row's time; serving reads the current facts.",
            group_name=IDENTITY_GROUP,
            kinds={"polars", "deltalake"},
        ),
    ]

    @dg.multi_asset(
        name="identity_graph",
        specs=specs,
        partitions_def=partitions,
        backfill_policy=POLICY,
        retry_policy=RETRY,
        can_subset=False,
        check_specs=[
            dg.AssetCheckSpec(
                GUARDRAIL_CHECK,
                asset=identity_key(EDGES),
                blocking=False,
                description=f"Refused links and offending ids by rule; warns above {MAX_REFUSED_SHARE:.0%} "
                "of links refused.",
            ),
            dg.AssetCheckSpec(
                ACCURACY_CHECK,
                asset=identity_key(ALIAS_MAP),
                blocking=True,
                description=f"Pairwise precision >= {accuracy.MIN_PRECISION} and recall >= "
                f"{accuracy.MIN_RECALL} against the ground truth beside the events (when present); run "
                "before the commit.",
            ),
        ],
    )
    def _identity(context: dg.AssetExecutionContext, store: FeatureStoreResource):
        days = [d.isoformat() for d in run_days(context)]
        raw_uri = store.settings.raw_table(source.name)
        raw_version = delta.table_version(raw_uri)
        if raw_version is None:
            raise dg.Failure(
                f"raw table {raw_uri} does not exist: materialize {raw_key(source).to_user_string()}",
                allow_retries=False,
            )

        def events_of(wanted: list[str]) -> pl.LazyFrame:
            return delta.scan(raw_uri, raw_version).filter(pl.col(EVENT_DATE).is_in(wanted))

        identity = IdentityStore(store.settings.lake_dir)
        historical = context.run.tags.get(HISTORICAL_LOAD_TAG, "").lower() == "true"
        run = identity.plan_fold(days, events_of, historical=historical)
        span = f"{days[0]}..{days[-1]}"
        if run.noop:
            context.log.info(f"identity: days {span} already folded with the same events; no table changes")
            checks = {
                ALIAS_MAP: [accuracy_result(identity.read("persons"), truth_path(catalog))],
                EDGES: [guardrail_result(identity.read("edges"), identity.read("violations"))],
            }
        else:
            accurate = accuracy_result(run.table("persons"), truth_path(catalog))
            if not accurate.passed:
                yield accurate
                md = {k: v.value for k, v in accurate.metadata.items()}
                raise dg.Failure(
                    description=f"identity: stitching accuracy below thresholds for {span} (precision "
                    f"{md['precision']} < {accuracy.MIN_PRECISION} or recall {md['recall']} < "
                    f"{accuracy.MIN_RECALL}); nothing was written",
                    metadata=md,
                    allow_retries=False,
                )
            identity.commit(run)
            checks = {
                ALIAS_MAP: [accurate],
                EDGES: [guardrail_result(run.table("edges"), run.table("violations"))],
            }
        summary = run.summary
        context.log.info(
            f"identity {span}: {summary.mode}, {summary.events} events, {summary.persons} persons "
            f"({summary.recomputed} ids recomputed), alias facts +{summary.alias_facts_opened} "
            f"-{summary.alias_facts_closed}"
        )
        for name in (EDGES, PERSONS, ALIAS_MAP):
            uri = identity.uri(name)
            version = delta.table_version(uri)
            yield dg.MaterializeResult(
                asset_key=identity_key(name),
                metadata={
                    "delta_table": uri,
                    "delta_version": version if version is not None else -1,
                    "partitions": span,
                    "mode": summary.mode,
                    "raw_delta_version": raw_version,
                    "historical_load": historical,
                    **(
                        {
                            "events": summary.events,
                            "persons": summary.persons,
                            "recomputed_ids": summary.recomputed,
                            "alias_facts_opened": summary.alias_facts_opened,
                            "alias_facts_closed": summary.alias_facts_closed,
                        }
                        if not run.noop
                        else {}
                    ),
                },
                check_results=checks.get(name, []),
                data_version=dg.DataVersion(f"delta-v{version}"),
            )

    return _identity
