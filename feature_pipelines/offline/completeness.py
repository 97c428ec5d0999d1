"""Window completeness: a feature partition is computed only when every raw day its window reads was ingested.

Partition D reads the raw days `D - lookback + 1 .. D`. Each of them must be covered by an ingest (rows or
not: a closed shop delivers zero rows, and that day is still known), lie before the source's declared start,
or be a declared closure. Otherwise the partition would be computed from part of its window (2 days of
history instead of 90) and look complete. Which days were ingested comes from the raw table's commit
history (`history.covered_partitions`), not from the rows present.
"""

from __future__ import annotations

from datetime import date, timedelta

from feature_pipelines.offline import history
from feature_pipelines.offline.compute import raw_range_for
from feature_pipelines.spec import EVENT_DATE, BatchSource, FeatureView


class IncompleteWindowError(ValueError):
    """Raw days a partition's window needs were never ingested; nothing was computed or written."""


def required_raw_days(view: FeatureView, source: BatchSource, days: list[date]) -> list[date]:
    """Raw days partitions `days` read that must be ingested: not before the source's start, not closures."""
    lo, hi = raw_range_for(view, min(days), max(days))
    lo = max(lo, source.start)
    return [d for d in (lo + timedelta(days=i) for i in range((hi - lo).days + 1)) if not source.is_closed(d)]


def missing_raw_days(view: FeatureView, source: BatchSource, raw_uri: str, days: list[date]) -> list[date]:
    covered = history.covered_partitions(raw_uri, EVENT_DATE)
    return [d for d in required_raw_days(view, source, days) if d.isoformat() not in covered]


def spans(days: list[date], limit: int = 6) -> str:
    """`2010-12-02..2011-02-27 (88 days), 2011-03-01`: contiguous runs of days, readable in one line."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][1] == timedelta(days=1):
            runs[-1][1] = day
        else:
            runs.append([day, day])
    parts = [f"{a}..{b} ({(b - a).days + 1} days)" if a != b else str(a) for a, b in runs[:limit]]
    if len(runs) > limit:
        parts.append(f"and {len(runs) - limit} more spans")
    return ", ".join(parts)


def require_complete(view: FeatureView, source: BatchSource, raw_uri: str, days: list[date]) -> None:
    """Raise `IncompleteWindowError` naming the missing raw days of partitions `days`."""
    missing = missing_raw_days(view, source, raw_uri, days)
    if not missing:
        return
    first, last = min(days), max(days)
    span = f"partition {first}" if first == last else f"partitions {first}..{last}"
    raise IncompleteWindowError(
        f"{view.deployed_name}: {span} read {view.lookback.days} days of raw {source.name!r} each, but {len(missing)} of "
        f"those days were never ingested: {spans(missing)}. Nothing was computed or written. Ingest those days "
        f"first (materialize raw/{source.name} for them, or `fstore ingest PATH --source {source.name}`); days "
        "before the source's start and declared closures do not count."
    )
