"""Freshness and completeness of a feature partition, from the raw rows it was computed from.

- Source lag: how old the newest source event was at the partition's end, not counting the source's declared
  closures. A large lag means the partition was computed from stale inputs (a source stopped delivering),
  even if the run was on time; a shop closed for Christmas is not stale.
- Completeness: the share of entities active on the partition's day that got a feature row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline.compute import partition_end
from feature_pipelines.spec import EVENT_DATE, PARTITION_DATE, BatchSource, FeatureView


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
    view: FeatureView,
    catalog: Catalog,
    raw: pl.DataFrame,
    frame: pl.DataFrame,
    days: list[date],
    active: pl.DataFrame | None = None,
    withheld: pl.DataFrame | None = None,
) -> list[PartitionHealth]:
    """`active`: (join key, event_date) of the entities active each day, when the raw rows do not carry the
    key (an identity-keyed view's persons: `enrichment.active_persons`). `withheld`: (join key,
    partition_date) the privacy policy left out on purpose (no consent, erased): not active for the check."""
    source = catalog.source_of(view)
    key = catalog.entity_of(view).join_key
    times = raw[source.event_time_column].sort()
    names = [d.isoformat() for d in days]
    ends = pl.Series([partition_end(d) for d in days], dtype=times.dtype)
    last_before = times.search_sorted(ends, side="left").to_list()
    # Entities active on each day, and those of them that got a row in that day's partition: two joins,
    # not one scan of the frame per day.
    if active is None:
        active = view.prepare(raw.lazy()).select(key, EVENT_DATE).unique().collect()
    active = active.filter(pl.col(EVENT_DATE).is_in(names))
    if withheld is not None and withheld.height:
        gone = withheld.select(pl.col(key).cast(active.schema[key]), pl.col(PARTITION_DATE).alias(EVENT_DATE))
        active = active.join(gone, on=[key, EVENT_DATE], how="anti")
    got = frame.select(key, pl.col(PARTITION_DATE).alias(EVENT_DATE))
    active_n = dict(active.group_by(EVENT_DATE).len().iter_rows())
    covered_n = dict(active.join(got, on=[key, EVENT_DATE], how="semi").group_by(EVENT_DATE).len().iter_rows())
    out = []
    for name, end, idx in zip(names, ends, last_before, strict=True):
        lag = end - times[idx - 1] - closed_time(source, times[idx - 1], end) if idx > 0 else None
        out.append(PartitionHealth(name, lag, active_n.get(name, 0), covered_n.get(name, 0)))
    return out


def closed_time(source: BatchSource, since: datetime, until: datetime) -> timedelta:
    """How much of `since..until` falls on declared closure days (UTC days): a closed shop is not a stale
    source, so that time does not count as lag."""
    total = timedelta(0)
    day = since.date()
    while day <= until.date():
        if source.is_closed(day):
            start = datetime.combine(day, time(), tzinfo=UTC)
            overlap = min(until, start + timedelta(days=1)) - max(since, start)
            total += max(overlap, timedelta(0))
        day += timedelta(days=1)
    return total
