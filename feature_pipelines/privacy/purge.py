"""Physical purge: VACUUM every table an erasure (or a retention delete) rewrote, and the check that no
erasure stays unpurged past its due date.

A DELETE leaves the replaced files on disk for time travel (training rebuilds, rollbacks read old
versions). `purge` removes those replaced more than `keep_hours` ago; run daily with
`keep_hours < 24 * (erasure_purge_days - 1)`, every erasure is physically gone by its `purge_due`. Each
vacuum is recorded in the audit log (action `purge`), which is what `overdue` reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.stitch import TABLES as IDENTITY_TABLES
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.offline import delta
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import now
from feature_pipelines.privacy.tombstones import ALIAS_PREFIX, Tombstones
from feature_pipelines.settings import Settings


@dataclass(frozen=True)
class Overdue:
    """Erasures past their purge date that no vacuum has purged yet, counted per entity (no ids)."""

    count: int
    oldest_due: datetime | None
    by_entity: dict[str, int]


def lake_tables(catalog: Catalog, settings: Settings) -> list[str]:
    """Every table of the lake that can hold a subject's rows (raw, quarantine, features, consent, identity)."""
    tables = [settings.raw_table(s) for s in catalog.sources] + [settings.quarantine_table(s) for s in catalog.sources]
    tables += [settings.feature_table(v) for v in catalog.views] + [settings.privacy_table("consent")]
    identity = IdentityStore(settings.lake_dir)
    tables += [identity.uri(t) for t in IDENTITY_TABLES]
    return [t for t in tables if delta.table_version(t) is not None]


def purge(catalog: Catalog, settings: Settings, *, keep_hours: float, by: str = "purge") -> dict[str, int]:
    """VACUUM every lake table, keeping files replaced within `keep_hours`; returns files removed per table."""
    audit = AuditLog(settings.privacy_table("audit"))
    removed: dict[str, int] = {}
    for uri in lake_tables(catalog, settings):
        at = now()
        files = delta.vacuum(uri, keep_hours)
        removed[uri] = len(files)
        audit.append("purge", by=by, target=uri, details={"keep_hours": keep_hours, "files_removed": len(files)}, at=at)
    return removed


def purged_until(settings: Settings) -> dict[str, datetime]:
    """Per table, the latest instant before which every replaced file is gone (vacuum time - keep_hours)."""
    records = AuditLog(settings.privacy_table("audit")).read(action="purge")
    out: dict[str, datetime] = {}
    for row in records.iter_rows(named=True):
        until = row["at"] - timedelta(hours=float(json.loads(row["details"])["keep_hours"]))
        if row["target"] not in out or until > out[row["target"]]:
            out[row["target"]] = until
    return out


def overdue(catalog: Catalog, settings: Settings, at: datetime | None = None) -> Overdue:
    """Erasures whose `purge_due` has passed while some lake table was not vacuumed past their time."""
    at = at or now()
    tables = lake_tables(catalog, settings)
    until = purged_until(settings)
    # Identifier tombstones (`alias:*`) accompany their subject's: one erasure counts once.
    stones = (
        Tombstones(settings.privacy_table("tombstones"))
        .all()
        .filter((pl.col("purge_due") < at) & ~pl.col("entity").str.starts_with(ALIAS_PREFIX))
    )
    late = [
        row
        for row in stones.iter_rows(named=True)
        if any(until.get(t) is None or until[t] < row["erased_at"] for t in tables)
    ]
    by_entity: dict[str, int] = {}
    for row in late:
        by_entity[row["entity"]] = by_entity.get(row["entity"], 0) + 1
    return Overdue(len(late), min((r["purge_due"] for r in late), default=None), by_entity)
