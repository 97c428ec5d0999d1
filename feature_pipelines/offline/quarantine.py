"""The quarantine table of a source: rows its raw gate set aside, with the rules they broke and their original
values, so a data engineer can see, fix and re-deliver them (`lake/quarantine/<source>/`).

One Delta table per source. Writing the records of a file replaces the earlier records of the same file and
content (file path and sha256), so re-running an ingest does not duplicate them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from deltalake import write_deltalake

SCHEMA = {
    "source": pl.String,
    "file": pl.String,
    "sha256": pl.String,
    "row": pl.Int64,
    "rules": pl.String,
    "reason": pl.String,
    "record": pl.String,
    "run_id": pl.String,
    "quarantined_at": pl.Datetime("us", "UTC"),
}


def write(uri: str, rows: pl.DataFrame, *, sha256: str, run_id: str) -> int:
    """Record the bad rows of one file (the gate's `GatedFile.quarantined`); returns how many."""
    if rows.height == 0:
        return 0
    now = datetime.now(UTC)
    frame = rows.with_columns(
        pl.lit(sha256).alias("sha256"),
        pl.lit(run_id).alias("run_id"),
        pl.lit(now, dtype=pl.Datetime("us", "UTC")).alias("quarantined_at"),
    ).select([pl.col(c).cast(t) for c, t in SCHEMA.items()])
    path = frame["file"][0].replace("'", "''")
    write_deltalake(
        uri,
        frame.to_arrow(),
        mode="overwrite",
        predicate=f"file = '{path}' AND sha256 = '{sha256}'",
        schema_mode=None,
        # The original record holds ids and values of people: kept out of the log's statistics.
        configuration={"delta.dataSkippingStatsColumns": ",".join(c for c in SCHEMA if c != "record")},
    )
    return frame.height


def read(uri: str) -> pl.DataFrame:
    """Every quarantined row of a source (empty if none was ever set aside)."""
    from feature_pipelines.offline.delta import table_version

    if table_version(uri) is None:
        return pl.DataFrame(schema=SCHEMA)
    return pl.read_delta(uri)
