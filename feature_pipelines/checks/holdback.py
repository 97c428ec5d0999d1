"""Blast radius: entities whose rows fail a blocking row-level expectation are held back, the rest goes on.

Without it, one customer with a country missing from the country table blocks the whole `user_context`
view for every customer, and after its TTL every customer's context goes blank. A view declares
`max_bad_fraction` (the share of a partition's entities that may be held back) and `on_bad_entities`:

- "keep_previous": the entity's row of the previous committed partition (or of the run's previous day) is
  carried into this partition, stamped with its date, so the values it served keep serving (and a training
  set as known then sees the same values: one semantics for both);
- "null": the entity's row is left out, so serving returns no values for it.

Only failures that each row earns on its own can be pinned on entities (`Failure.row_level`; not the join
key's own rules). A failure of another kind (types, uniqueness, a null share, an aggregate), or a partition
whose bad share is above `max_bad_fraction`, blocks the whole view as before. The caller validates the
repaired frame again before committing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.checks.quality import Failure, Report, offending_rows
from feature_pipelines.offline import delta
from feature_pipelines.offline.compute import partition_end
from feature_pipelines.spec import EVENT_TIMESTAMP, PARTITION_DATE, FeatureView

REASON = "reason"

PreviousRows = Callable[[date], pl.DataFrame]
"""The committed rows of the latest partition before a day (empty when there is none)."""


@dataclass(frozen=True)
class HeldBack:
    """What the gate withheld: per (partition, entity) the expectations its row failed, and the frame to
    commit instead. `blocked` says why nothing can be held back (then the view is blocked as a whole)."""

    frame: pl.DataFrame
    held: pl.DataFrame
    """Columns: partition_date, the join key, `reason` (the failed expectations on columns)."""
    carried: int = 0
    """Held-back entities whose previous row was carried (keep_previous)."""
    blocked: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.held.height

    def examples(self, n: int = 10) -> list[dict]:
        return self.held.head(n).to_dicts()


def hold_back(
    view: FeatureView, catalog: Catalog, frame: pl.DataFrame, report: Report, previous: PreviousRows
) -> HeldBack:
    """Decide which entities to hold back for the blocking failures of `report` on `frame`, and apply the
    view's policy. `blocked` is non-empty (and `frame` unchanged) when the view must be blocked instead."""
    key = catalog.entity_of(view).join_key
    empty = pl.DataFrame(schema={PARTITION_DATE: pl.String, key: frame.schema[key], REASON: pl.String})
    failures = report.blocking_failures
    if view.max_bad_fraction <= 0:
        return HeldBack(frame, empty, blocked=["the view declares no max_bad_fraction: any bad row blocks it"])
    whole = [f for f in failures if not f.row_level or f.column == key]
    if whole:
        return HeldBack(frame, empty, blocked=[f"not pinned on entities: {f}" for f in whole])
    held = _bad_entities(frame, failures, key)
    share = (
        held.group_by(PARTITION_DATE)
        .agg(pl.len().alias("bad"))
        .join(frame.group_by(PARTITION_DATE).agg(pl.col(key).n_unique().alias("entities")), on=PARTITION_DATE)
        .with_columns((pl.col("bad") / pl.col("entities")).alias("share"))
        .sort(PARTITION_DATE)
    )
    over = share.filter(pl.col("share") > view.max_bad_fraction)
    if over.height:
        return HeldBack(
            frame,
            held,
            blocked=[
                f"partition {p}: {bad} of {n} entities ({s:.2%}) fail a blocking expectation, more than "
                f"max_bad_fraction={view.max_bad_fraction:.2%}"
                for p, bad, n, s in over.iter_rows()
            ],
        )
    repaired, carried = _apply(view, key, frame, held, previous)
    return HeldBack(repaired, held, carried=carried)


def committed_before(uri: str, lookback: timedelta) -> PreviousRows:
    """Rows of the latest partition of the Delta table `uri` before a day, looking back at most `lookback`
    (a value older than that has expired from serving anyway)."""

    def previous(day: date) -> pl.DataFrame:
        first, last = day - lookback, day - timedelta(days=1)
        counts = delta.partition_row_counts(uri, PARTITION_DATE, first, last)
        if not counts:
            return pl.DataFrame()
        newest = max(counts)
        return delta.read_partitions(uri, PARTITION_DATE, newest, newest)

    return previous


def _bad_entities(frame: pl.DataFrame, failures: list[Failure], key: str) -> pl.DataFrame:
    """One row per (partition, entity) with a bad row, naming every expectation it failed."""
    parts = []
    for f in failures:
        bad = offending_rows(frame, f)
        parts.append(
            bad.select(PARTITION_DATE, key).with_columns(pl.lit(f"{f.expectation} on {f.column}").alias(REASON))
        )
    return (
        pl.concat(parts)
        .group_by(PARTITION_DATE, key)
        .agg(pl.col(REASON).unique().sort().str.join("; "))
        .sort(PARTITION_DATE, key)
    )


def _apply(
    view: FeatureView, key: str, frame: pl.DataFrame, held: pl.DataFrame, previous: PreviousRows
) -> tuple[pl.DataFrame, int]:
    """The frame without the held-back rows, plus (keep_previous) their previous rows, one day at a time so
    that a run's day D carries what the same run commits for D-1."""
    out: list[pl.DataFrame] = []
    carried = 0
    prior: pl.DataFrame | None = None  # the repaired rows of the run's previous partition
    for (day,), rows in sorted(frame.partition_by(PARTITION_DATE, as_dict=True).items()):
        bad = held.filter(pl.col(PARTITION_DATE) == day).select(key)
        kept = rows.join(bad, on=key, how="anti")
        if view.on_bad_entities == "keep_previous" and bad.height:
            before = prior if prior is not None else previous(date.fromisoformat(day))
            if before is not None and before.height:
                carry = (
                    before.join(bad, on=key, how="semi")
                    .with_columns(
                        pl.lit(partition_end(date.fromisoformat(day)), dtype=frame.schema[EVENT_TIMESTAMP]).alias(
                            EVENT_TIMESTAMP
                        ),
                        pl.lit(day).alias(PARTITION_DATE),
                    )
                    .select(frame.columns)
                    .cast(dict(frame.schema))
                )
                carried += carry.height
                kept = pl.concat([kept, carry]).sort(key)
        out.append(kept)
        prior = kept
    if not out:
        return frame, 0
    return pl.concat(out).sort(PARTITION_DATE, key), carried
