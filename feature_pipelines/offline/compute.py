"""Compute a feature view's rows for daily partitions from trailing windows of its raw table.

Partition `D` describes the instant `D+1 00:00 UTC` (the end of day D): each transformation sees the raw
events in `[end - lookback, end)` only, so a partition never depends on later data. Many partitions are
computed in one pass over one prepared, time-sorted frame, which is what a single-run backfill needs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline.enrichment import ViewInputs, check_inputs, enrich
from feature_pipelines.spec import EVENT_TIMESTAMP, PARTITION_DATE, FeatureView, WindowContext, output_schema


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


def column_order(view: FeatureView, catalog: Catalog) -> list[str]:
    return [catalog.entity_of(view).join_key, *view.feature_names, EVENT_TIMESTAMP, PARTITION_DATE]


def empty_frame(view: FeatureView, catalog: Catalog) -> pl.DataFrame:
    schema = output_schema(view, catalog.entity_of(view))
    return pl.DataFrame(schema={**schema, EVENT_TIMESTAMP: pl.Datetime("us", "UTC"), PARTITION_DATE: pl.String()})
