"""Tombstones: the subjects erased for good. Every write path (ingest, compute, push, rollback, training
and its rebuilds) anti-joins them, so an erased subject is never written or served again.

An append-only Delta table (`lake/privacy/tombstones`): entity, subject (key text), when, by whom, why,
and when its data must be physically purged (`purge_due`: the erasure plus the declared purge window).

Identifiers of an erased person (and the customer id of an erased customer) are tombstoned too, under the
entity `alias:<identifier type>` (`alias:anonymous_id`, `alias:device_id`, `alias:customer_id`): the
identity build drops events carrying any of them (`without_erased_identifiers`), so no later stitching
run links them into a person again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

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
        self.add_many([(entity, subject)], at=at, purge_due=purge_due, by=by, reason=reason)

    def add_many(
        self, subjects: Iterable[tuple[str, str]], *, at: datetime, purge_due: datetime, by: str, reason: str
    ) -> None:
        """Tombstone (entity, subject) pairs in one commit."""
        rows = [
            {"entity": e, "subject": s, "erased_at": at, "purge_due": purge_due, "by": by, "reason": reason}
            for e, s in subjects
        ]
        if rows:
            delta.append(self.uri, pl.DataFrame(rows, schema=SCHEMA), CONFIGURATION)

    def all(self) -> pl.DataFrame:
        if delta.table_version(self.uri) is None:
            return pl.DataFrame(schema=SCHEMA)
        return delta.scan(self.uri).collect().select([pl.col(c).cast(t) for c, t in SCHEMA.items()])

    def subjects(self, entity: str) -> pl.Series:
        """Key texts of every erased subject of `entity`."""
        return self.all().filter(pl.col("entity") == entity)["subject"].unique().sort()

    def identifiers(self) -> pl.DataFrame:
        """identifier_type, identifier: every tombstoned identifier (see the module doc)."""
        return (
            self.all()
            .filter(pl.col("entity").str.starts_with(ALIAS_PREFIX))
            .select(
                pl.col("entity").str.strip_prefix(ALIAS_PREFIX).alias("identifier_type"),
                pl.col("subject").alias("identifier"),
            )
            .unique()
            .sort("identifier_type", "identifier")
        )


ALIAS_PREFIX = "alias:"


def alias_entity(identifier_type: str) -> str:
    """The tombstone entity of an identifier type: `anonymous_id` -> `alias:anonymous_id`."""
    return ALIAS_PREFIX + identifier_type


def without_erased_identifiers(events: pl.LazyFrame, lake_dir: Path | str, columns: Iterable[str]) -> pl.LazyFrame:
    """`events` without the rows carrying a tombstoned identifier in any of `columns` (identifier types named
    as their columns): what the identity build reads, so an erased person is never stitched again."""
    from feature_pipelines.settings import Settings

    erased = Tombstones(Settings(lake_dir=Path(lake_dir)).privacy_table("tombstones")).identifiers()
    for column in columns:
        gone = erased.filter(pl.col("identifier_type") == column)["identifier"]
        if gone.len():
            events = events.filter(~pl.col(column).cast(pl.String).is_in(gone.implode()).fill_null(False))
    return events
