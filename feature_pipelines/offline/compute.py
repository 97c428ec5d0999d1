"""Compute a feature view's rows for daily partitions from trailing windows of its raw table.

Partition `D` describes the instant `D+1 00:00 UTC` (the end of day D): each transformation sees the raw
events in `[end - lookback, end)` only, so a partition never depends on later data. Many partitions are
computed in one pass over one prepared, time-sorted frame, which is what a single-run backfill needs.

**Integer overflow.** polars sums Int64 with wrapping arithmetic: two quantities of 5e18 sum to a negative
count, silently. Before any transformation runs, the integer columns it sees are bounded: if the sum of
absolute values of a column over one entity's rows in one partition's window fits in Int64 (computed in
Int128), no sum, mean or running total over those rows can wrap. One Int128 sum over the whole frame
settles it almost always; only a column that could overflow is then checked per window and entity, and a
window that could wrap is an `IntegerOverflowError` naming the view, column, features, partition, count
and entities. Products of two integer columns are not bounded here (cast one side to Float64 first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline.enrichment import ViewInputs, check_inputs, enrich
from feature_pipelines.spec import EVENT_TIMESTAMP, PARTITION_DATE, FeatureView, WindowContext, output_schema

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Overflow:
    """Windows in which an integer column's absolute sum for an entity does not fit in Int64."""

    column: str
    features: tuple[str, ...]
    partition: str
    count: int
    examples: list[dict]


class IntegerOverflowError(ValueError):
    """An integer aggregate would wrap: nothing is computed, nothing written (not retried: the data decides)."""

    def __init__(self, view: str, overflows: list[Overflow]) -> None:
        self.view, self.overflows = view, overflows
        lines = [
            f"view {view!r}: integer column {o.column!r} sums past Int64 ({INT64_MAX:,}) for {o.count} "
            f"entities in partition {o.partition}; features {', '.join(o.features) or '-'} would wrap "
            f"(e.g. {o.examples})"
            for o in overflows[:10]
        ]
        more = f"\n  and {len(overflows) - 10} more" if len(overflows) > 10 else ""
        super().__init__("integer overflow:\n  " + "\n  ".join(lines) + more)


def partition_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def raw_range_for(view: FeatureView, first: date, last: date) -> tuple[date, date]:
    """The raw partitions that partitions `first..last` of `view` read."""
    return (partition_end(first) - view.lookback).date(), last


def raw_days_before(view: FeatureView) -> int:
    """How many raw days before its own day a partition's window reaches (`raw_range_for`)."""
    day = date(2000, 1, 1)
    return (day - raw_range_for(view, day, day)[0]).days


def compute_partitions(
    view: FeatureView, catalog: Catalog, raw: pl.DataFrame, days: list[date], inputs: ViewInputs | None = None
) -> pl.DataFrame:
    """Rows for every day in `days`, sorted by (partition, entity) so a re-run writes identical files.

    `inputs` holds what the view declares besides its source (`FeatureView.identity`, `lookups`): the alias
    map and the derived lookups; each partition's window is joined to them as of the partition's end."""
    source = catalog.source_of(view)
    entity = catalog.entity_of(view)
    inputs = inputs or ViewInputs()
    check_inputs(view, inputs)
    ts = source.event_time_column
    # Prepare once, sort by event time once; each partition's window is then a zero-copy slice.
    prepared = view.prepare(raw.lazy()).sort(ts, *[c for c in raw.columns if c != ts]).collect()
    times = prepared[ts]
    check_overflow(view, catalog, prepared, times, days)
    enriched = bool(view.identity or view.lookups)
    frames = []
    for day in days:
        end = partition_end(day)
        lo, hi = times.search_sorted(pl.Series([end - view.lookback, end]), side="left").to_list()
        ctx = WindowContext(as_of=end, windows=view.windows)
        window = prepared.slice(lo, hi - lo)
        if enriched:
            window = enrich(view, window, inputs, end).events
        frames.append(
            view.transformation(window.lazy(), ctx).with_columns(
                pl.lit(end, dtype=pl.Datetime("us", "UTC")).alias(EVENT_TIMESTAMP),
                pl.lit(day.isoformat()).alias(PARTITION_DATE),
            )
        )
    if not frames:
        return empty_frame(view, catalog)
    out = pl.concat([f.collect() for f in frames], how="vertical")
    return out.select(column_order(view, catalog)).sort(PARTITION_DATE, entity.join_key)


def check_overflow(
    view: FeatureView, catalog: Catalog, prepared: pl.DataFrame, times: pl.Series, days: list[date]
) -> None:
    """Raise `IntegerOverflowError` when an integer aggregate over a partition's window could wrap (see the
    module docstring); `prepared` is sorted by event time, `times` is its event-time column."""
    key = catalog.entity_of(view).join_key
    ints = [c for c, d in prepared.schema.items() if d.is_integer() and c != key]
    if not ints or prepared.height == 0:
        return
    totals = prepared.select(pl.col(c).cast(pl.Int128).abs().sum() for c in ints).row(0)
    risky = [c for c, total in zip(ints, totals, strict=True) if total > INT64_MAX]
    if not risky:
        return
    integer_features = [f for f in view.features if f.polars_dtype.is_integer()]
    overflows = []
    for day in days:
        end = partition_end(day)
        lo, hi = times.search_sorted(pl.Series([end - view.lookback, end]), side="left").to_list()
        window = prepared.slice(lo, hi - lo)
        by = [key] if key in window.columns else []
        sums = (
            window.group_by(by).agg(pl.col(c).cast(pl.Int128).abs().sum() for c in risky)
            if by
            else window.select(pl.col(c).cast(pl.Int128).abs().sum() for c in risky)
        )
        for c in risky:
            bad = sums.filter(pl.col(c) > INT64_MAX).sort(by or c)
            if bad.height:
                derived = [f.name for f in integer_features if c in f.inputs or not f.inputs]
                examples = bad.head(5).with_columns(pl.col(c).cast(pl.String).alias(f"sum_abs_{c}")).drop(c)
                overflows.append(Overflow(c, tuple(derived), day.isoformat(), bad.height, examples.to_dicts()))
    if overflows:
        raise IntegerOverflowError(view.deployed_name, overflows)


def column_order(view: FeatureView, catalog: Catalog) -> list[str]:
    return [catalog.entity_of(view).join_key, *view.feature_names, EVENT_TIMESTAMP, PARTITION_DATE]


def empty_frame(view: FeatureView, catalog: Catalog) -> pl.DataFrame:
    schema = output_schema(view, catalog.entity_of(view))
    return pl.DataFrame(schema={**schema, EVENT_TIMESTAMP: pl.Datetime("us", "UTC"), PARTITION_DATE: pl.String()})
