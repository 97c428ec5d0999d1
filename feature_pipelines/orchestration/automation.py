"""What runs without a human: source-arrival sensors, declarative automation, freshness checks.

- A sensor per source watches its files; a new or changed file requests ingest runs for exactly the
  days it contains (its content hash is part of the run key, so the same file twice runs once).
- Feature views follow their sources (`eager`), and late data re-materializes every existing feature
  partition whose window contains the late raw day (`late_data`: eager considers only the latest time
  window). The online push follows its view only when the view's blocking checks passed (`eager() &
  all_deps_blocking_checks_passed()`, pitfall P4), for the latest window only: re-materialized older
  partitions never send serving back in time. The newest raw partition also runs on a daily cron.
- Freshness is partition-aware (pitfall P8): the newest partition *present* in Delta (and serving in
  Redis) must be the one due by now under the view's SLA; backfilling an old partition changes nothing.
"""

import json
import os
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.stitch import IDENTITY_SOURCE
from feature_pipelines.offline import ingest
from feature_pipelines.offline.compute import partition_end
from feature_pipelines.offline.delta import table_version
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.asset_keys import IDENTITY_TABLES, feature_key, identity_key, online_key, raw_key
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.orchestration.privacy_assets import CONSENT_KEY
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy.consent_source import CONSENT_SOURCE
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE, BatchSource, FeatureView

DAILY_CRON = "0 6 * * *"
FRESHNESS_CRON = "*/15 * * * *"


# -- source arrival ---------------------------------------------------------------------------------
def _ranges(days: list[str]) -> list[tuple[str, str]]:
    """Contiguous runs of days: each becomes one range run instead of one run per day."""
    out: list[tuple[str, str]] = []
    for day in sorted(days):
        if out and date.fromisoformat(day) - date.fromisoformat(out[-1][1]) == timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def _with_closures_before(source: BatchSource, days: list[str]) -> list[str]:
    """The days plus the declared closure days right before each of them: no file arrives for a closed day, so
    the first delivery after a closure also records the closure as ingested (zero rows), and the feature
    windows spanning it stay complete for automation."""
    out = set(days)
    for day in days:
        previous = date.fromisoformat(day) - timedelta(days=1)
        while source.is_closed(previous) and previous >= source.start and previous.isoformat() not in out:
            out.add(previous.isoformat())
            previous -= timedelta(days=1)
    return sorted(out)


def scan_arrivals(
    source: BatchSource, catalog: Catalog, cursor: str | None
) -> tuple[list[dg.RunRequest], str, list[str]]:
    """Run requests for new or changed files since `cursor`; returns (requests, new cursor, problems)."""
    seen: dict[str, dict] = json.loads(cursor) if cursor else {}
    valid = set(partitions_for(source).get_partition_keys())
    requests, problems = [], []
    try:
        files = ingest.source_files(source, catalog.base_dir)
    except ingest.SourceError:
        files = []
    for path in files:
        stat = os.stat(path)
        stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        known = seen.get(path)
        if known and all(known.get(k) == v for k, v in stamp.items()):
            continue  # untouched since the last tick: not even re-hashed
        digest = ingest.file_sha256(path)
        if known and known.get("sha256") == digest:
            seen[path] = {**stamp, "sha256": digest}  # touched, same content: delivered again, no run
            continue
        try:
            days = ingest.read_file(source, path, catalog.entities)[EVENT_DATE].unique().to_list()
        except ingest.SourceError as exc:
            problems.append(str(exc))  # not recorded in the cursor: retried until fixed or replaced
            continue
        days = [d for d in days if d in valid]
        if not days:
            problems.append(f"{path}: no row inside the source's partitions: nothing to ingest")
        for first, last in _ranges(_with_closures_before(source, days)):
            requests.append(
                dg.RunRequest(
                    run_key=f"{source.name}:{path}:{digest[:16]}:{first}..{last}",
                    asset_selection=[raw_key(source)],
                    tags={
                        "dagster/asset_partition_range_start": first,
                        "dagster/asset_partition_range_end": last,
                        "source_file": path,
                        "source_sha256": digest,
                    },
                )
            )
        seen[path] = {**stamp, "sha256": digest}
    return requests, json.dumps(seen, sort_keys=True), problems


def build_arrival_sensor(source: BatchSource, catalog: Catalog) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{source.name}_arrivals",
        target=[raw_key(source)],
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"New or changed files of `{source.location}` -> ingest runs for exactly their days.",
    )
    def _arrivals(context: dg.SensorEvaluationContext):
        requests, cursor, problems = scan_arrivals(source, catalog, context.cursor)
        for problem in problems:
            context.log.error(problem)
        if not requests:
            return dg.SensorResult(skip_reason="; ".join(problems) or "no new or changed file", cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return _arrivals


# -- freshness ----------------------------------------------------------------------------------------
def due_partition(partitions: dg.DailyPartitionsDefinition, sla: timedelta, now: datetime) -> str | None:
    """The newest partition that must exist by `now`: its day has ended and its SLA has passed."""
    keys = partitions.get_partition_keys(current_time=now)
    for key in reversed(keys):
        if partition_end(date.fromisoformat(key)) + sla <= now:
            return key
    return None


def freshness_result(newest: str | None, due: str | None, where: str) -> dg.AssetCheckResult:
    passed = due is None or (newest is not None and newest >= due)
    behind = (date.fromisoformat(due) - date.fromisoformat(newest)).days if newest and due else None
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "newest_partition": newest or "none",
            "due_partition": due or "none",
            "days_behind": behind if behind is not None and behind > 0 else 0,
            "where": where,
        },
    )


def build_freshness_checks(view: FeatureView, catalog: Catalog) -> list[dg.AssetChecksDefinition]:
    partitions = partitions_for(catalog.source_of(view))
    cron = dg.AutomationCondition.cron_tick_passed(FRESHNESS_CRON)

    @dg.asset_check(
        asset=feature_key(view),
        name="partition_freshness",
        blocking=False,
        automation_condition=cron,
        description=f"The newest partition in Delta is the one due under the SLA ({view.freshness_sla} after "
        "its day ends). Backfilling old partitions does not make the table fresh.",
    )
    def _offline(store: FeatureStoreResource) -> dg.AssetCheckResult:
        uri = store.settings.feature_table(view.deployed_name)
        newest = None
        if table_version(uri) is not None:
            newest = pl.scan_delta(uri).select(pl.col(PARTITION_DATE).max()).collect().item()
        return freshness_result(newest, due_partition(partitions, view.freshness_sla, datetime.now(UTC)), uri)

    checks = [_offline]
    if view.online:

        @dg.asset_check(
            asset=online_key(view),
            name="online_freshness",
            blocking=False,
            automation_condition=cron,
            description="The serving version in Redis describes the partition due under the SLA.",
        )
        def _online(store: FeatureStoreResource) -> dg.AssetCheckResult:
            meta = store.online_store(OnlineLayout.from_catalog(catalog)).serving_meta(view.deployed_name)
            due = due_partition(partitions, view.freshness_sla, datetime.now(UTC))
            return freshness_result(meta.partition if meta else None, due, f"Redis {store.redis_url}")

        checks.append(_online)
    return checks


# -- declarative automation -----------------------------------------------------------------------------
def late_data() -> dg.AutomationCondition:
    """An existing partition, of any age, whose upstream partitions were updated since it was last handled.

    The feature asset's partition mapping (partition D reads exactly the raw days its window touches) turns
    a late raw day into exactly the feature partitions whose windows contain it, bounded by the source's
    partitions. Missing partitions are left to `eager` (latest window) and to backfills, so ingesting a
    year of history does not recompute a year of features by itself."""
    ac = dg.AutomationCondition
    return (
        ~ac.missing()
        & ac.any_deps_updated().since_last_handled()
        & ~ac.any_deps_missing()
        & ~ac.any_deps_in_progress()
        & ~ac.in_progress()
    ).with_label("late_data")


def feature_condition() -> dg.AutomationCondition:
    return (dg.AutomationCondition.eager() | late_data()).with_label("eager_or_late_data")


def automation_conditions(catalog: Catalog) -> dict[dg.AssetKey, dg.AutomationCondition]:
    out: dict[dg.AssetKey, dg.AutomationCondition] = {}
    for source in catalog.sources.values():
        out[raw_key(source)] = dg.AutomationCondition.on_cron(DAILY_CRON, cron_timezone="UTC")
    if IDENTITY_SOURCE in catalog.sources:  # the identity graph follows its events like a feature view
        out.update({identity_key(name): feature_condition() for name in IDENTITY_TABLES})
    if CONSENT_SOURCE in catalog.sources:  # the consent ledger follows its source like a feature view
        out[CONSENT_KEY] = feature_condition()
    for view in catalog.views.values():
        out[feature_key(view)] = feature_condition()
        if view.online:
            out[online_key(view)] = (
                dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
            )
    return out


def freshness_policy(view: FeatureView) -> dg.FreshnessPolicy:
    """Asset-level policy for the UI: a daily table should have been updated within a day plus the SLA."""
    return dg.FreshnessPolicy.time_window(
        fail_window=timedelta(days=1) + view.freshness_sla, warn_window=timedelta(days=1) + view.freshness_sla / 2
    )


def build_automation_defs(catalog: Catalog) -> dg.Definitions:
    return dg.Definitions(
        sensors=[
            *[build_arrival_sensor(s, catalog) for s in catalog.sources.values()],
            dg.AutomationConditionSensorDefinition(
                "feature_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.STOPPED
            ),
        ],
        asset_checks=[c for v in catalog.views.values() for c in build_freshness_checks(v, catalog)],
    )


def with_automation(defs: dg.Definitions, catalog: Catalog) -> dg.Definitions:
    """Attach the automation conditions and freshness policies to the generated assets."""
    conditions = automation_conditions(catalog)
    policies = {feature_key(v): freshness_policy(v) for v in catalog.views.values()}
    policies.update({online_key(v): freshness_policy(v) for v in catalog.online_views})

    def attach(spec: dg.AssetSpec) -> dg.AssetSpec:
        spec = spec.replace_attributes(automation_condition=conditions.get(spec.key, spec.automation_condition))
        policy = policies.get(spec.key)
        return dg.apply_freshness_policy(spec, policy, overwrite_existing=False) if policy else spec

    return defs.map_asset_specs(func=attach)
