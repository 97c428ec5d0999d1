"""`fstore plan`: what deploying the catalog would change, view by view, against what is deployed.

Deployed state is read where the pipeline wrote it: each view's Delta table (its schema, its partitions
and its newest commit's metadata: definition and code hashes, lookback, view version) and each online
view's serving version in Redis (features, dtypes, TTL, namespace). Every finding says what it implies:

- **additive** (a feature added): the next write merges the column into the Delta schema; partitions
  already written read it as null until backfilled (the plan gives the range); the next push serves it.
- **breaking** (a dtype changed, a feature removed, in place): the feature asset refuses to write, since
  Delta would cast silently. The fix is a new view version (`FeatureView(version=N+1)`), written side by
  side as `<view>@<N+1>` (Delta table, online view, asset `<view>__v<N+1>`) while version N keeps serving.
- **versioned**: a new view version with no table yet: it is built beside the older one.
- **info**: transformation, lookback, TTL, namespace or deprecation changes, and what they imply.

Breaking findings make `fstore plan` exit non-zero. They cannot be acknowledged away: the pipeline would
refuse them anyway; a version bump turns them into a side-by-side version. Nothing here imports Dagster.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import polars as pl
import redis

from feature_pipelines.catalog import LOCK_FILE, Catalog, CatalogError
from feature_pipelines.offline import delta, history
from feature_pipelines.offline.compute import empty_frame
from feature_pipelines.online.layout import NAMESPACES, ViewKeys, namespace_for
from feature_pipelines.online.store import VersionMeta
from feature_pipelines.spec import PARTITION_DATE, FeatureView, parse_versioned_name, versioned_name

Kind = Literal["new", "versioned", "additive", "breaking", "info", "retired"]
DEFINITIONS_MODULE = "feature_pipelines.orchestration.definitions"


class BreakingChangeError(ValueError):
    """A view's output no longer fits its deployed table: nothing was written; bump the view's version."""


@dataclass(frozen=True)
class Change:
    kind: Kind
    what: str
    implies: str


@dataclass
class Deployed:
    """What is deployed for one view name: its Delta table and its serving online version."""

    table: str
    delta_version: int | None = None
    schema: dict[str, pl.DataType] | None = None
    commit: dict[str, str] = field(default_factory=dict)
    partitions: tuple[str, str] | None = None
    online: VersionMeta | None = None
    online_namespaces: dict[str, VersionMeta | None] = field(default_factory=dict)

    @property
    def exists(self) -> bool:
        return self.delta_version is not None or bool(self.online_namespaces)


@dataclass
class ViewPlan:
    view: str
    deployed: Deployed
    changes: list[Change] = field(default_factory=list)

    @property
    def breaking(self) -> bool:
        return any(c.kind == "breaking" for c in self.changes)


@dataclass
class Plan:
    views: list[ViewPlan]
    services: list[Change]
    online_error: str | None = None

    @property
    def breaking(self) -> bool:
        return any(v.breaking for v in self.views) or any(c.kind == "breaking" for c in self.services)

    @property
    def nothing_deployed(self) -> bool:
        return not any(v.deployed.exists for v in self.views)


# -- the write-time guard (used by the feature asset) ---------------------------------------------------
def expected_table_schema(view: FeatureView, catalog: Catalog) -> dict[str, pl.DataType]:
    """The columns and dtypes a view's Delta table gets: join key, features, event time, partition."""
    return dict(empty_frame(view, catalog).schema)


def breaking_message(view: FeatureView, change: delta.SchemaChange, uri: str) -> str:
    nxt = view.version + 1
    parts = [f"feature {n!r}: dtype {old} -> {new}" for n, (old, new) in change.changed.items()]
    parts += [f"feature {n!r} ({dtype}) removed" for n, dtype in change.removed.items()]
    return (
        f"view {view.deployed_name!r}: breaking schema change, nothing was written: {'; '.join(parts)} "
        f"(Delta table {uri}). Nothing is cast silently. Fix: bump the view's version "
        f"(FeatureView(name={view.name!r}, version={nxt}, ...)); it is then written side by side as "
        f"{versioned_name(view.name, nxt)!r} while version {view.version} keeps serving (keep its definition "
        f"in the catalog until no model consumes it). `fstore plan` shows the whole change."
    )


def check_writable(view: FeatureView, catalog: Catalog, uri: str) -> delta.SchemaChange:
    """How the view's output differs from its table; raises `BreakingChangeError` if it cannot be merged."""
    current = delta.table_schema(uri)
    if current is None:
        return delta.SchemaChange()
    change = delta.schema_change(current, expected_table_schema(view, catalog))
    if change.breaking:
        raise BreakingChangeError(breaking_message(view, change, uri))
    return change


# -- reading what is deployed -----------------------------------------------------------------------------
def read_deployed(name: str, table_uri: Callable[[str], str], client: redis.Redis | None) -> Deployed:
    """The Delta table and the online serving versions (in every namespace) of deployed name `name`."""
    uri = table_uri(name)
    out = Deployed(table=uri, delta_version=delta.table_version(uri))
    if out.delta_version is not None:
        out.schema = delta.table_schema(uri, out.delta_version)
        commit = history.commit(uri, out.delta_version)
        out.commit = {k: str(v) for k, v in (commit.metadata if commit else {}).items()}
        lo, hi = (
            pl.scan_delta(uri, version=out.delta_version)
            .select(pl.col(PARTITION_DATE).min().alias("lo"), pl.col(PARTITION_DATE).max().alias("hi"))
            .collect()
            .row(0)
        )
        out.partitions = (lo, hi) if lo is not None else None
    if client is not None:
        for ns in NAMESPACES:
            keys = ViewKeys(ns, name)
            current = client.get(keys.current)
            if current is None:
                if client.exists(keys.versions):
                    out.online_namespaces[ns] = None  # versions kept, nothing served
                continue
            raw = client.hget(keys.versions, current)
            out.online_namespaces[ns] = VersionMeta.from_json(raw) if raw else None
    return out


# -- the plan ---------------------------------------------------------------------------------------------
def make_plan(
    catalog: Catalog,
    table_uri: Callable[[str], str],
    client: redis.Redis | None,
    online_error: str | None = None,
) -> Plan:
    """Compare every view of `catalog` (and every deployed view it no longer declares) with what is deployed.

    `table_uri(deployed_name)` locates Delta tables; `client` is the online Redis (None: not checked,
    `online_error` says why)."""
    views = []
    for name in sorted(catalog.views):
        view = catalog.views[name]
        deployed = read_deployed(name, table_uri, client)
        views.append(ViewPlan(name, deployed, _view_changes(view, catalog, deployed, table_uri, client)))
    views += _retired(catalog, table_uri, client)
    return Plan(views, _service_changes(catalog), online_error)


BACKFILL_HOW = (
    "backfill a range: Dagster UI, the asset, Materialize..., partition range [A...B]; or "
    f"`dagster asset materialize -m {DEFINITIONS_MODULE} --select ASSET --partition-range A...B`"
)


def _backfill(view: FeatureView, first: str, last: str) -> str:
    return f"backfill features/{view.asset_name} [{first}...{last}]"


def _source_range(view: FeatureView, catalog: Catalog) -> tuple[str, str]:
    source = catalog.source_of(view)
    return source.start.isoformat(), (source.end.isoformat() if source.end else "today")


def _view_changes(
    view: FeatureView,
    catalog: Catalog,
    deployed: Deployed,
    table_uri: Callable[[str], str],
    client: redis.Redis | None,
) -> list[Change]:
    changes: list[Change] = []
    first, last = _source_range(view, catalog)
    if deployed.delta_version is None:
        changes += _new_view(view, catalog, table_uri, client, first, last)
    else:
        changes += _table_changes(view, catalog, deployed)
    changes += _deprecations(view, catalog)
    if view.online and deployed.exists:
        changes += _online_changes(view, deployed)
    elif deployed.online_namespaces:
        changes.append(
            Change(
                "info",
                "no longer online (online=False)",
                "not pushed any more; the served keys expire by their TTL, the pointer stays until `fstore gc`/erase",
            )
        )
    return changes


def _new_view(
    view: FeatureView,
    catalog: Catalog,
    table_uri: Callable[[str], str],
    client: redis.Redis | None,
    first: str,
    last: str,
) -> list[Change]:
    older = sorted(
        (v for v in range(1, view.version) if delta.table_version(table_uri(versioned_name(view.name, v))) is not None),
        reverse=True,
    )
    if not older:
        return [
            Change(
                "new",
                f"new view ({len(view.features)} features)",
                f"the first materialization creates {table_uri(view.deployed_name)}; "
                f"{_backfill(view, first, last)} for its history",
            )
        ]
    previous = versioned_name(view.name, older[0])
    kept = previous in catalog.views
    changes = [
        Change(
            "versioned",
            f"new view version {view.deployed_name} (deployed: {previous})",
            f"written side by side: Delta {table_uri(view.deployed_name)}, online view {view.deployed_name}, asset "
            f"features/{view.asset_name}; {_backfill(view, first, last)} for its history. "
            + (
                f"{previous} stays in the catalog: it keeps being computed and served until you retire it "
                "(remove its definition once no service's lock consumes it)"
                if kept
                else f"{previous} is no longer in the catalog: not recomputed, its online keys expire by their TTL, "
                "its Delta table stays for training rebuilds"
            ),
        )
    ]
    old = read_deployed(previous, table_uri, client)
    if old.schema is not None:
        diff = delta.schema_change(old.schema, expected_table_schema(view, catalog))
        for n, (a, b) in diff.changed.items():
            changes.append(Change("info", f"vs {previous}: dtype {a} -> {b} of {n}", "the new version carries it"))
        for n in diff.removed:
            changes.append(Change("info", f"vs {previous}: {n} removed", "the new version does not have it"))
        for n, d in diff.added.items():
            changes.append(Change("info", f"vs {previous}: {n} ({d}) added", "the new version carries it"))
    return changes


def _table_changes(view: FeatureView, catalog: Catalog, deployed: Deployed) -> list[Change]:
    assert deployed.schema is not None
    changes: list[Change] = []
    diff = delta.schema_change(deployed.schema, expected_table_schema(view, catalog))
    nxt = versioned_name(view.name, view.version + 1)
    lo, hi = deployed.partitions or ("?", "?")
    for n, d in diff.added.items():
        changes.append(
            Change(
                "additive",
                f"feature added: {n} ({d})",
                f"additive: Delta schema merge on the next write; partitions {lo}..{hi} already written read null "
                f"for {n} until backfilled: {_backfill(view, lo, hi)}",
            )
        )
    for n, (old, new) in diff.changed.items():
        changes.append(
            Change(
                "breaking",
                f"dtype changed: {n} {old} -> {new}",
                f"breaking: nothing is cast silently, the feature asset refuses to write into {deployed.table}; "
                f"bump the view's version to {view.version + 1}: a new view version `{nxt}` will be written side "
                f"by side and served beside `{view.deployed_name}` until that one is retired",
            )
        )
    for n, d in diff.removed.items():
        changes.append(
            Change(
                "breaking",
                f"feature removed: {n} ({d})",
                f"breaking: the feature asset refuses to drop a column of {deployed.table}; deprecate it first "
                f"(Feature(deprecated=...)), then declare version {view.version + 1} without it (`{nxt}`, "
                "side by side)",
            )
        )
    commit = deployed.commit
    code_then, code_now = commit.get("code_hash"), view.code_hash()
    if code_then and code_then != code_now:
        changes.append(
            Change(
                "info",
                f"transformation changed (code hash {code_then} -> {code_now})",
                f"partitions {lo}..{hi} were computed by the old code (Dagster marks them stale by code version); "
                f"to recompute them: {_backfill(view, lo, hi)}",
            )
        )
    elif not code_then and commit.get("definition_hash") and commit["definition_hash"] != view.definition_hash():
        changes.append(
            Change(
                "info",
                f"definition changed (hash {commit['definition_hash']} -> {view.definition_hash()})",
                f"partitions {lo}..{hi} were written by the older definition; to recompute: {_backfill(view, lo, hi)}",
            )
        )
    lookback = commit.get("offline_lookback_s")
    if lookback and float(lookback) != view.offline_lookback.total_seconds():
        changes.append(
            Change(
                "info",
                f"offline lookback {_duration(float(lookback))} -> {_duration(view.offline_lookback.total_seconds())}",
                "training sets built from now on look back this far for a row; nothing is rewritten",
            )
        )
    return changes


def _deprecations(view: FeatureView, catalog: Catalog) -> list[Change]:
    out = []
    for feat in view.features:
        if not feat.deprecated:
            continue
        users = sorted(
            s
            for s, views in catalog.locks.items()
            if s in catalog.services
            and (lv := views.get(view.name)) is not None
            and lv.version == view.version
            and feat.name in lv.features
        )
        out.append(
            Change(
                "info",
                f"deprecated: {feat.name} ({feat.deprecated})",
                "new services may not consume it; "
                + (f"still consumed by {', '.join(users)} (warning)" if users else "no locked service consumes it"),
            )
        )
    return out


def _online_changes(view: FeatureView, deployed: Deployed) -> list[Change]:
    changes: list[Change] = []
    ns = namespace_for(view.namespace_sensitivity)
    if not deployed.online_namespaces:
        return [Change("info", "online: nothing served yet", f"the next push creates online view {view.deployed_name}")]
    for other in deployed.online_namespaces:
        if other != ns:
            changes.append(
                Change(
                    "info",
                    f"sensitivity {view.namespace_sensitivity}: namespace {other} -> {ns}",
                    f"the next push writes to {ns} and removes the old namespace's copy ({other}: pointer, versions, "
                    f"keys) so it is no longer readable there; until then {other} readers still see it",
                )
            )
    meta = deployed.online_namespaces.get(ns) or next((m for m in deployed.online_namespaces.values() if m), None)
    if meta is None:
        return changes
    served = dict(zip(meta.schema.features, meta.schema.dtypes, strict=True))
    missing = [f.name for f in view.features if f.name not in served]
    if missing:
        changes.append(
            Change(
                "additive",
                f"online: serving version {meta.version} lacks {', '.join(missing)}",
                "the next push serves them; until then they read as null",
            )
        )
    for f in view.features:
        if f.name in served and served[f.name] != str(f.polars_dtype):
            changes.append(
                Change(
                    "info",
                    f"online: {f.name} served as {served[f.name]}, declared {f.polars_dtype}",
                    "until a version with the declared dtype serves, serving refuses feature services that "
                    "consume it as declared (their contract does not match)",
                )
            )
    ttl_now = int(view.online_ttl.total_seconds()) if view.online_ttl else None
    if meta.schema.ttl_seconds != ttl_now:
        changes.append(
            Change(
                "info",
                f"online TTL {_duration(meta.schema.ttl_seconds)} -> {_duration(ttl_now)}",
                f"keys of the next push expire after {_duration(ttl_now)}; the serving version's keep theirs",
            )
        )
    return changes


def _retired(catalog: Catalog, table_uri: Callable[[str], str], client: redis.Redis | None) -> list[ViewPlan]:
    """Deployed views (Delta tables beside the catalog's) that the catalog no longer declares."""
    root = Path(table_uri("_")).parent
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if path.name in catalog.views or not (path / "_delta_log").is_dir():
            continue
        deployed = read_deployed(path.name, table_uri, client)
        base, version = parse_versioned_name(path.name)
        newer = [v for v in catalog.versions_of(base) if v > version]
        what = f"not in the catalog{f' (version {max(newer)} is)' if newer else ''}"
        online = (
            "its online copy expires by its TTL" if deployed.online_namespaces else "nothing of it is served online"
        )
        out.append(
            ViewPlan(
                path.name,
                deployed,
                [Change("retired", what, f"not materialized or pushed any more; the Delta table stays; {online}")],
            )
        )
    return out


def _service_changes(catalog: Catalog) -> list[Change]:
    out = [Change("info", w.split(": ", 1)[-1], "a warning, not an error") for w in catalog.warnings]
    for name in sorted(catalog.services):
        lock = catalog.locks.get(name)
        try:
            contract = catalog.contract(name)
        except CatalogError as exc:
            out += [
                Change("breaking", f"service {name}: {p.split(': ', 2)[-1]}", "fix the catalog")
                for p in exc.problems
                if p not in catalog.problems  # already printed as a catalog problem
            ]
            continue
        if lock is None:
            out.append(
                Change(
                    "info",
                    f"service {name}: no lock",
                    f"`fstore lock {name}` records its contract (view versions, dtypes) in {LOCK_FILE}",
                )
            )
            continue
        unlocked = [
            f"{view}:{feat}"
            for view, feats in contract.items()
            for feat in feats
            if feat not in lock.get(parse_versioned_name(view)[0], _EMPTY).features
        ]
        if unlocked:
            out.append(
                Change(
                    "info",
                    f"service {name}: consumes {', '.join(unlocked)}, not in its lock",
                    f"served and trained (null where not yet written); `fstore lock {name}` once the model uses them",
                )
            )
    return out


@dataclass(frozen=True)
class _Empty:
    features: dict[str, str] = field(default_factory=dict)


_EMPTY = _Empty()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "none"
    value = timedelta(seconds=seconds)
    if value.total_seconds() % 86400 == 0:
        return f"{value.days}d"
    if value.total_seconds() % 3600 == 0:
        return f"{int(value.total_seconds() // 3600)}h"
    return f"{int(value.total_seconds())}s"
