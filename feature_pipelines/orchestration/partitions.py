"""Daily partitions, the backfill and retry policies, and the Redis pool: shared by every asset.

All assets of a chain share the source's daily partitions and a single-run backfill policy, so a date
range runs as one run over the whole chain (pitfall P7) instead of one run per day.
"""

from datetime import date, timedelta
from functools import cache

import dagster as dg

from feature_pipelines.spec import BatchSource

POLICY = dg.BackfillPolicy.single_run()
RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
"""Transient Redis and I/O errors are retried with backoff; bad input and failed gates are not
(they raise `dg.Failure(allow_retries=False)`)."""
REDIS_POOL = "redis_writes"
"""Concurrency pool of online pushes: limits in dagster.yaml keep backfills from flooding Redis."""


@cache
def _partitions(start: date, end: date | None) -> dg.DailyPartitionsDefinition:
    end_exclusive = (end + timedelta(days=1)).isoformat() if end else None
    return dg.DailyPartitionsDefinition(start_date=start.isoformat(), end_date=end_exclusive, timezone="UTC")


def partitions_for(source: BatchSource) -> dg.DailyPartitionsDefinition:
    return _partitions(source.start, source.end)


def run_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days of this run, sorted: one in a daily run, many in a range (single-run backfill) run."""
    return sorted(date.fromisoformat(k) for k in context.partition_keys)
