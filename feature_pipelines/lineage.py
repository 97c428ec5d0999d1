"""Column lineage from the spec, and the chain behind any online key or feature, for `fstore lineage`.

The chain: online version (Redis metadata) -> feature Delta table and version -> Dagster runs -> source
table and version (from the feature commit's metadata) -> source files (from the ingest commit's
metadata) -> the definition (file and line). Every link is read from data the pipeline wrote, not
reconstructed from the current code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import history
from feature_pipelines.online.store import OnlineStore, VersionMeta
from feature_pipelines.spec import FeatureView, WindowContext, transformation_input_schema

_KEY = re.compile(r"^(?P<ns>fss?):(?P<view>[^:{}]+):(?P<version>\d+):\{(?P<id>.*)\}$")


def view_inputs(view: FeatureView, catalog: Catalog) -> list[str]:
    """Raw columns the view reads: each one whose absence breaks `prepare` + `transformation`."""
    schema = catalog.source_of(view).raw_schema
    added = {c: t for c, t in transformation_input_schema(view, catalog.source_of(view)).items() if c not in schema}
    ctx = WindowContext(as_of=datetime(2000, 1, 2, tzinfo=UTC), windows=view.windows)
    # The id columns an identity-keyed view resolves persons from, and each lookup's key, are read before
    # the transformation: every feature depends on them.
    needed = list(view.identity.ids) if view.identity else []
    needed += [lookup.key for lookup in view.lookups if lookup.key not in needed]
    for column in schema:
        if column in needed:
            continue
        probe = pl.LazyFrame(schema={c: t for c, t in schema.items() if c != column})
        try:
            prepared = view.prepare(probe).with_columns([pl.lit(None, dtype=t).alias(c) for c, t in added.items()])
            view.transformation(prepared, ctx).collect_schema()
        except Exception:  # noqa: BLE001 - any failure means the column is read
            needed.append(column)
    return [c for c in schema if c in needed]


def column_lineage(view: FeatureView, catalog: Catalog) -> dict[str, list[str]]:
    """Feature -> raw columns: declared `Feature.inputs`, else every column the view reads."""
    key = catalog.entity_of(view).join_key
    fallback = view_inputs(view, catalog)
    out = {key: [key] if key in catalog.source_of(view).raw_schema else []}
    out.update({f.name: list(f.inputs) or fallback for f in view.features})
    return out


@dataclass
class Link:
    what: str
    facts: dict[str, Any] = field(default_factory=dict)


def chain(catalog: Catalog, store: OnlineStore, target: str, instance=None) -> list[Link]:
    """The lineage chain of a Redis data key, a `view:feature`, or a view (its serving version)."""
    match = _KEY.match(target)
    feature = None
    if match:
        view_name, version, entity = match["view"], int(match["version"]), match["id"]
    else:
        view_name, _, feature = target.partition(":")
        feature = feature or None
        version, entity = None, None
    if view_name not in catalog.views:
        raise KeyError(f"unknown feature view {view_name!r} (from {target!r}); known: {sorted(catalog.views)}")
    view = catalog.views[view_name]
    if feature is not None and feature not in view.feature_names:
        raise KeyError(f"view {view_name!r} has no feature {feature!r}")
    serving = store.serving_version(view_name) if view.online else None
    version = version if version is not None else serving
    links: list[Link] = []
    meta: VersionMeta | None = store.versions(view_name).get(version) if version is not None else None
    if meta is None:
        links.append(Link("online", {"view": view_name, "serving_version": serving, "note": "no such online version"}))
    else:
        online = {
            "version": meta.version,
            "serving": meta.version == serving,
            "status": meta.status,
            "partition": meta.partition,
            "rows": meta.rows,
            "written_at": datetime.fromtimestamp(meta.written_at, UTC).isoformat(timespec="seconds"),
            "push_run_id": meta.run_id,
            "ttl_seconds": meta.schema.ttl_seconds,
        }
        if entity is not None:
            key = store.keys(view_name).data_key(meta.version, entity)
            online["key"] = key
            online["key_ttl_remaining_s"] = max(store.r.pttl(key), -1) / 1000 if store.r.exists(key) else "missing"
        links.append(Link("online (Redis)", online))
        links += _offline_links(meta.delta_table, meta.delta_version, instance, meta.run_id)
    feat = view.feature(feature) if feature else None
    definition = {
        "view": view_name,
        "defined_at": view.defined_at,
        "definition_hash_now": view.definition_hash(),
        "definition_hash_then": meta.definition_hash if meta else None,
        "owner": view.owner,
    }
    if feat is not None:
        definition.update(
            {
                "feature": feat.name,
                "feature_defined_at": feat.defined_at,
                "source_columns": column_lineage(view, catalog)[feat.name],
            }
        )
    if meta is not None and meta.definition_hash != view.definition_hash():
        definition["note"] = "the definition changed since this version was written"
    links.append(Link("definition", definition))
    return links


def _offline_links(table: str, version: int | None, instance, push_run: str) -> list[Link]:
    links = []
    if version is None:
        return [Link("feature table (Delta)", {"table": table, "version": None})]
    written = history.commit(table, version)
    info = written.metadata if written else {}
    links.append(
        Link(
            "feature table (Delta)",
            {
                "table": table,
                "version": version,
                "committed_at": _iso(written),
                "partitions": info.get("partitions"),
                "materialize_run_id": info.get("dagster_run_id"),
            },
        )
    )
    runs = {"materialize": info.get("dagster_run_id"), "online push": push_run}
    links.append(Link("Dagster runs", {name: _run(instance, run_id) for name, run_id in runs.items() if run_id}))
    source_table, source_version = info.get("source_table"), info.get("source_version")
    if source_table and source_version is not None:
        ingest = history.commit(source_table, int(source_version))
        raw = ingest.metadata if ingest else {}
        files = raw.get("source_files")
        links.append(
            Link(
                "source table (Delta)",
                {
                    "table": source_table,
                    "version": int(source_version),
                    "committed_at": _iso(ingest),
                    "ingest_run_id": raw.get("dagster_run_id"),
                    "source_files": json.loads(files) if files else None,
                },
            )
        )
    return links


def _run(instance, run_id: str) -> str:
    if instance is None:
        return run_id
    run = instance.get_run_by_id(run_id)
    return f"{run_id} ({run.status.value})" if run else f"{run_id} (not in this Dagster instance)"


def _iso(commit: history.Commit | None) -> str | None:
    return commit.timestamp.isoformat(timespec="seconds") if commit else None
