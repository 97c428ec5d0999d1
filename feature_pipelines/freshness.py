"""Freshness and completeness of a feature partition, from the raw rows it was computed from.

- Source lag: how old the newest source event was at the partition's end. A large lag means the
  partition was computed from stale inputs (a source stopped delivering), even if the run was on time.
- Completeness: the share of entities active on the partition's day that got a feature row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.compute import partition_end
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE, FeatureView


@dataclass(frozen=True)
class PartitionHealth:
    partition: str
    source_lag: timedelta | None  # None: no source event before the partition's end at all
    active: int
    covered: int

    @property
    def completeness(self) -> float:
        return self.covered / self.active if self.active else 1.0


def partition_health(
    view: FeatureView, catalog: Catalog, raw: pl.DataFrame, frame: pl.DataFrame, days: list[date]
) -> list[PartitionHealth]:
    source = catalog.source_of(view)
    key = catalog.entity_of(view).join_key
    ts = source.event_time_column
    times = raw[ts].sort()
    prepared = view.prepare(raw.lazy()).select(key, EVENT_DATE).unique().collect()
    out = []
    for day in days:
        end = partition_end(day)
        idx = times.search_sorted(end, side="left")
        lag = end - times[idx - 1] if idx > 0 else None
        active = prepared.filter(pl.col(EVENT_DATE) == day.isoformat())[key]
        got = frame.filter(pl.col(PARTITION_DATE) == day.isoformat())[key]
        out.append(PartitionHealth(day.isoformat(), lag, active.len(), int(active.is_in(got.implode()).sum())))
    return out
