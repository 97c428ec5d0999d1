"""Retention: rows older than their declared retention leave the lake, every day.

Sources declare how long raw rows are kept (`BatchSource.retention`), views how long their feature table
keeps a partition (`FeatureView.retention`); `online_ttl` bounds Redis. The daily retention job deletes,
by predicate on the partition column (so only the expired days' files are rewritten):
    raw table        event_date     < cutoff     (cutoff = the clock's day - retention)
    quarantine       quarantined_at < cutoff     (rows the source's gate set aside, with their records)
    feature table    partition_date < cutoff
and records one `retention` entry in the audit log (tables, cutoffs, rows; no ids). The deleted rows stay
in files older versions read until the purge vacuums them (`privacy/purge.py`), exactly as for erasures.

Retention is counted against the clock, not against the data: a historical dataset older than its declared
retention is deleted whole. The shipped retail data (2010-2011) therefore declares none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Literal

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import delta
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.settings import Settings
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE

Kind = Literal["raw", "quarantine", "features"]


@dataclass(frozen=True)
class Expiry:
    """What retention removes from one table: rows matching `predicate` (everything before `cutoff`)."""

    uri: str
    kind: Kind
    owner: str
    """The source or deployed view that declared the retention."""
    retention_days: int
    cutoff: date
    """The oldest day kept."""

    @property
    def column(self) -> str:
        return {"raw": EVENT_DATE, "quarantine": "quarantined_at", "features": PARTITION_DATE}[self.kind]

    @property
    def predicate(self) -> str:
        """The DELETE predicate (delta-rs SQL; it coerces the text to the column's type)."""
        bound = f"{self.cutoff.isoformat()}T00:00:00Z" if self.kind == "quarantine" else self.cutoff.isoformat()
        return f"{self.column} < '{bound}'"

    @property
    def expired(self) -> pl.Expr:
        """The same rows as a polars filter (polars SQL does not coerce text to a zoned timestamp)."""
        if self.kind == "quarantine":
            return pl.col(self.column) < datetime.combine(self.cutoff, time(), UTC)
        return pl.col(self.column) < self.cutoff.isoformat()


@dataclass(frozen=True)
class Enforced:
    expiry: Expiry
    rows: int
    files_rewritten: int


def expiries(catalog: Catalog, settings: Settings, at: datetime) -> list[Expiry]:
    """Every table with a declared retention and its cutoff at `at`, upstream first."""
    today = at.astimezone(UTC).date()
    out: list[Expiry] = []
    for source in catalog.sources.values():
        if source.retention is not None:
            cutoff = today - source.retention
            days = source.retention.days
            out.append(Expiry(settings.raw_table(source.name), "raw", source.name, days, cutoff))
            out.append(Expiry(settings.quarantine_table(source.name), "quarantine", source.name, days, cutoff))
    for view in catalog.views.values():
        if view.retention is not None:
            cutoff = today - view.retention
            uri = settings.feature_table(view.deployed_name)
            out.append(Expiry(uri, "features", view.deployed_name, view.retention.days, cutoff))
    return out


def expired_rows(expiry: Expiry) -> int:
    """How many rows `expiry` would delete now (0 if the table does not exist)."""
    if delta.table_version(expiry.uri) is None:
        return 0
    return int(delta.scan(expiry.uri).filter(expiry.expired).select(pl.len()).collect().item())


def enforce(
    catalog: Catalog,
    settings: Settings,
    *,
    by: str,
    at: datetime | None = None,
    dry_run: bool = False,
    reason: str = "declared retention",
) -> list[Enforced]:
    """Delete every expired row (see the module doc); `dry_run` only counts them. Recorded in the audit log
    unless it is a dry run."""
    at = at or datetime.now(UTC)
    done: list[Enforced] = []
    for expiry in expiries(catalog, settings, at):
        if dry_run:
            done.append(Enforced(expiry, expired_rows(expiry), 0))
            continue
        deleted = delta.delete(expiry.uri, expiry.predicate, {"retention": "true", "by": by})
        done.append(Enforced(expiry, deleted.rows, deleted.files_rewritten))
    if not dry_run:
        AuditLog(settings.privacy_table("audit")).append(
            "retention",
            by=by,
            reason=reason,
            target=",".join(sorted({e.expiry.owner for e in done})),
            details={
                "at": at.isoformat(),
                "tables": [
                    {
                        "table": e.expiry.uri,
                        "kind": e.expiry.kind,
                        "retention_days": e.expiry.retention_days,
                        "cutoff": e.expiry.cutoff.isoformat(),
                        "rows_deleted": e.rows,
                        "files_rewritten": e.files_rewritten,
                    }
                    for e in done
                ],
            },
        )
    return done
