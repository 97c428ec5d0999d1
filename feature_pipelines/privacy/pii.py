"""Keeping identifiers and sensitive values out of what is not access-controlled like the data itself:
the Delta log's file statistics, GE result documents, Dagster metadata and logs.

What counts is decided by the spec: the join key of a `personal` entity, and every feature whose
sensitivity (its own, else its view's) is confidential or restricted. Ids are replaced by their audit
digest (`audit.subject_digest`), values by a count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from feature_pipelines.catalog import Catalog
from feature_pipelines.checks.quality import Report
from feature_pipelines.online.layout import SENSITIVE
from feature_pipelines.privacy.audit import subject_digest
from feature_pipelines.spec import BatchSource, FeatureView

_GE_VALUE_FIELDS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list")


def sensitive_columns(catalog: Catalog, view: FeatureView) -> set[str]:
    """Columns of a view's table whose values identify or expose a person."""
    cols = {f.name for f in view.features if (f.sensitivity or view.sensitivity) in SENSITIVE}
    entity = catalog.entity_of(view)
    if entity.personal:
        cols.add(entity.join_key)
    return cols


def raw_identifiers(catalog: Catalog, source: BatchSource) -> set[str]:
    """Raw columns holding ids of personal entities."""
    keys = {e.join_key for e in catalog.entities.values() if e.personal}
    return {c for c in source.raw_schema if c in keys}


def stats_columns(columns: Iterable[str], excluded: set[str]) -> list[str]:
    """The columns whose min/max the Delta log may keep."""
    return [c for c in columns if c not in excluded]


def redact_ids(entity: str, ids: Iterable[Any]) -> list[str]:
    return [subject_digest(entity, str(i)) for i in ids]


def redact_report(report: Report, columns: set[str], key: str, entity: str) -> Report:
    """A GE report fit to be stored and shown: no example values of `columns`, ids as digests."""

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            kwargs = (node.get("expectation_config") or {}).get("kwargs") or {}
            out = {k: scrub(v) for k, v in node.items()}
            if kwargs.get("column") in columns and isinstance(out.get("result"), dict):
                out["result"] = {k: v for k, v in out["result"].items() if k not in _GE_VALUE_FIELDS}
            return out
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    failures = []
    for f in report.failures:
        rows = [
            {k: (redact_ids(entity, [v])[0] if k == key else v) for k, v in row.items() if k not in columns - {key}}
            for row in f.rows
        ]
        examples = [] if f.column in columns else f.examples
        failures.append(dataclasses.replace(f, rows=rows, examples=examples))
    return dataclasses.replace(
        report,
        failures=failures,
        result=scrub(report.result),
        partition_results=scrub(report.partition_results),
    )
