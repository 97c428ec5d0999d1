"""Tombstones: the subjects erased for good. Every write path (ingest, compute, push, rollback, training
and its rebuilds) anti-joins them, so an erased subject is never written or served again.

An append-only Delta table (`lake/privacy/tombstones`): entity, subject (key text), when, by whom, why,
and when its data must be physically purged (`purge_due`: the erasure plus the declared purge window).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from feature_pipelines.offline import delta

US = pl.Datetime("us", "UTC")
SCHEMA: dict[str, pl.DataType] = {
    "entity": pl.String(),
    "subject": pl.String(),
    "erased_at": US,
    "purge_due": US,
    "by": pl.String(),
    "reason": pl.String(),
}
CONFIGURATION = {**delta.LEDGER_CONFIGURATION, "delta.dataSkippingStatsColumns": "entity,erased_at,purge_due"}


class Tombstones:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def add(self, entity: str, subject: str, *, at: datetime, purge_due: datetime, by: str, reason: str) -> None:
        row = {
            "entity": entity,
            "subject": subject,
            "erased_at": at,
            "purge_due": purge_due,
            "by": by,
            "reason": reason,
        }
        delta.append(self.uri, pl.DataFrame([row], schema=SCHEMA), CONFIGURATION)

    def all(self) -> pl.DataFrame:
        if delta.table_version(self.uri) is None:
            return pl.DataFrame(schema=SCHEMA)
        return delta.scan(self.uri).collect().select([pl.col(c).cast(t) for c, t in SCHEMA.items()])

    def subjects(self, entity: str) -> pl.Series:
        """Key texts of every erased subject of `entity`."""
        return self.all().filter(pl.col("entity") == entity)["subject"].unique().sort()
