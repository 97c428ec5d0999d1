"""The bitemporal alias map: which person an id belongs to, since when (valid time) and as known when.

Table `identity/alias_map` (Delta), one row per (id, person, valid_from) fact:
    identifier_type  "anonymous_id" | "device_id" | "customer_id"
    identifier       the id, as text
    person_id        the canonical person id (`p_` + 16 hex digits)
    valid_from       UTC: event time of the edge that put the id in this person (its first time seen for
                     the id's own person)
    known_from       UTC: when the stitching run that wrote the fact committed
    known_to         UTC, null while current: when a later run retracted the fact (un-merge, guardrail)

An id that joins a person later keeps a row for its own person from its first time seen, so identity
"as of" an earlier instant never shows a later login; an un-merge closes the merged row (known_to) and
the earlier row is current again. Facts are never deleted: a training set built as known at k reads the
rows with known_from <= k < known_to.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

ALIAS_SCHEMA = {
    "identifier_type": pl.String(),
    "identifier": pl.String(),
    "person_id": pl.String(),
    "valid_from": pl.Datetime("us", "UTC"),
    "known_from": pl.Datetime("us", "UTC"),
    "known_to": pl.Datetime("us", "UTC"),
}
KEY = ["identifier_type", "identifier", "person_id", "valid_from"]
PERSON_COLUMN = "person_id"
"""The person id column: the join key of person-keyed views (entity `person` in feature_defs)."""


def facts(persons: pl.DataFrame) -> pl.DataFrame:
    """The facts the current graph states about its ids: the own person from the first time seen (unless
    that is already the person), then the person from `joined_at`."""
    own = persons.filter((pl.col("own_id") != pl.col("person_id")) & (pl.col("joined_at") > pl.col("first_seen")))
    return (
        pl.concat(
            [
                own.select(
                    "identifier_type",
                    "identifier",
                    pl.col("own_id").alias("person_id"),
                    pl.col("first_seen").alias("valid_from"),
                ),
                persons.select(
                    "identifier_type",
                    "identifier",
                    "person_id",
                    pl.when(pl.col("own_id") == pl.col("person_id"))
                    .then("first_seen")
                    .otherwise("joined_at")
                    .alias("valid_from"),
                ),
            ]
        )
        .unique()
        .sort(KEY)
    )


def update(
    table: pl.DataFrame, stated: pl.DataFrame, scope: pl.DataFrame | None, now: datetime, *, historical: bool = False
) -> pl.DataFrame:
    """The alias map after a run that recomputed the ids in `scope` (identifier_type, identifier; None: all):
    current facts of those ids the run no longer states are closed at `now`, new ones open at `now`.

    `historical`: the run is the declared initial load of an empty map (the Dagster run tag
    `fs/historical_load=true`, as for feature tables): each new fact counts as known at the end of the UTC
    day of its `valid_from` (never after `now`), as if a daily run had stitched that day when it ended. It
    states the final graph's facts only: a merge that a later guardrail undid within the loaded history is
    not replayed."""
    table = table.select(ALIAS_SCHEMA.keys())
    current = table.filter(pl.col("known_to").is_null())
    if scope is not None:
        ids = scope.select("identifier_type", "identifier").unique()
        current = current.join(ids, on=["identifier_type", "identifier"], how="semi")
        stated = stated.join(ids, on=["identifier_type", "identifier"], how="semi")
    gone = current.join(stated, on=KEY, how="anti").select(KEY).with_columns(pl.lit(True).alias("_gone"))
    now_lit = pl.lit(now).cast(pl.Datetime("us", "UTC"))
    known_from = (
        pl.min_horizontal(pl.col("valid_from").dt.truncate("1d").dt.offset_by("1d"), now_lit) if historical else now_lit
    )
    new = stated.join(current, on=KEY, how="anti").with_columns(
        known_from.alias("known_from"),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("known_to"),
    )
    closed = (
        table.join(gone, on=KEY, how="left")
        .with_columns(
            pl.when(pl.col("_gone").fill_null(False) & pl.col("known_to").is_null())
            .then(pl.lit(now).cast(pl.Datetime("us", "UTC")))
            .otherwise("known_to")
            .alias("known_to")
        )
        .drop("_gone")
    )
    return pl.concat([closed, new.select(ALIAS_SCHEMA.keys())])  # unsorted: the writer sorts what it writes


class AliasMap:
    """Resolve ids to persons as of an instant and as known at another; `current()` for serving."""

    def __init__(self, table: pl.DataFrame) -> None:
        self.table = table.select(ALIAS_SCHEMA.keys())

    def current(self) -> pl.DataFrame:
        """identifier_type, identifier, person_id: the latest fact of each id, as known now."""
        return (
            self.table.filter(pl.col("known_to").is_null())
            .sort("identifier_type", "identifier", "valid_from", "known_from")
            .group_by("identifier_type", "identifier", maintain_order=True)
            .agg(pl.col("person_id").last())
            .sort("identifier_type", "identifier")
        )

    def resolve(
        self,
        frame: pl.DataFrame,
        *,
        identifier_type: str | None = None,
        column: str | None = None,
        at: str | datetime | None = None,
        known_at: str | datetime | None = None,
    ) -> pl.DataFrame:
        """`frame` with a `person_id` column: its ids (column `column`, of type `identifier_type`; or columns
        identifier_type and identifier) resolved at `at` (a column of the frame or one instant; None: latest)
        as known at `known_at` (a column or an instant; None: at `at`, or now). An id the map did not know
        then resolves to null. Row order and count are kept."""
        kind = pl.lit(identifier_type) if identifier_type else pl.col("identifier_type")
        value = pl.col(column) if column else pl.col("identifier")
        big = pl.lit(datetime(9999, 1, 1)).dt.replace_time_zone("UTC")

        def instant(spec: str | datetime | None, fallback: pl.Expr) -> pl.Expr:
            if spec is None:
                return fallback
            return pl.col(spec) if isinstance(spec, str) else pl.lit(spec).cast(pl.Datetime("us", "UTC"))

        at_expr = instant(at, big)
        known_expr = instant(known_at, at_expr if at is not None else big)
        rows = frame.with_row_index("_row").with_columns(
            kind.alias("_type"),
            value.cast(pl.String).alias("_id"),
            at_expr.cast(pl.Datetime("us", "UTC")).alias("_at"),
            known_expr.cast(pl.Datetime("us", "UTC")).alias("_known"),
        )
        hits = (
            rows.select("_row", "_type", "_id", "_at", "_known")
            .join(
                self.table.rename({"identifier_type": "_type", "identifier": "_id"}),
                on=["_type", "_id"],
                how="inner",
            )
            .filter(
                (pl.col("valid_from") <= pl.col("_at"))
                & (pl.col("known_from") <= pl.col("_known"))
                & (pl.col("known_to").is_null() | (pl.col("known_to") > pl.col("_known")))
            )
            .sort("_row", "valid_from", "known_from")
            .group_by("_row", maintain_order=True)
            .agg(pl.col("person_id").last())
        )
        return rows.join(hits, on="_row", how="left").sort("_row").drop("_row", "_type", "_id", "_at", "_known")
