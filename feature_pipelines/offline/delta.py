"""Delta Lake tables: partition-exact overwrites and partition-pruned reads.

Every write replaces exactly the partitions it names (an overwrite with a predicate), so re-running a
partition never duplicates rows nor touches its neighbours, and a write either commits whole or not at all.

A write may be declared part of the table's initial historical load (`historical_load=True`): the
declaration is recorded in the commit's metadata, where `offline/history.py` reads it, so the table itself
says which of its partitions were loaded as history and which were written as they happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import polars as pl
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError

from feature_pipelines.offline.history import HISTORICAL_LOAD


@dataclass(frozen=True)
class Commit:
    version: int
    rows: int


def partition_predicate(column: str, first: date | str, last: date | str) -> str:
    return f"{column} >= '{first}' AND {column} <= '{last}'"


def overwrite_partitions(
    uri: str,
    frame: pl.DataFrame,
    column: str,
    first: date | str,
    last: date | str,
    commit_metadata: dict[str, str] | None = None,
    historical_load: bool = False,
) -> Commit:
    """Replace the partitions `first..last` (inclusive) of `column` with `frame`, in one Delta commit.

    `commit_metadata` lands in the commit's info (lineage: run id, source versions, definition hash).
    `historical_load` declares the commit part of the table's initial historical load: training counts
    partitions it writes first as known at their ends instead of at the commit (see `training.py`)."""
    commit_metadata = dict(commit_metadata or {})
    if historical_load:
        commit_metadata[HISTORICAL_LOAD] = "true"
    outside = frame.filter((pl.col(column) < str(first)) | (pl.col(column) > str(last))).height
    if outside:
        raise ValueError(f"{uri}: {outside} rows fall outside partitions {first}..{last} of {column!r}")
    write_deltalake(
        uri,
        frame,
        mode="overwrite",
        predicate=partition_predicate(column, first, last),
        partition_by=[column],
        schema_mode=None,
        commit_properties=CommitProperties(custom_metadata=commit_metadata) if commit_metadata else None,
        # The log is the history training sets read "as of known time" and rebuild from: keep it. Dropping
        # old history is a retention decision, not a side effect of writing (any writer, not only ours).
        configuration={"delta.enableExpiredLogCleanup": "false"},
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    return Commit(version=DeltaTable(uri).version(), rows=frame.height)


def table_version(uri: str) -> int | None:
    try:
        return DeltaTable(uri).version()
    except TableNotFoundError:
        return None


def scan(uri: str, version: int | None = None) -> pl.LazyFrame:
    return pl.scan_delta(uri, version=version)


def read_partitions(
    uri: str, column: str, first: date | str, last: date | str, version: int | None = None
) -> pl.DataFrame:
    """Rows of partitions `first..last`; the partition filter prunes files before any is read."""
    return scan(uri, version).filter(pl.col(column).is_between(pl.lit(str(first)), pl.lit(str(last)))).collect()


def iter_partition(
    uri: str, column: str, value: str, columns: list[str], version: int | None = None, batch_rows: int = 100_000
) -> Iterator[pl.DataFrame]:
    """Stream one partition's rows in batches, one Parquet file at a time.

    Memory stays bounded by a row group and a batch, not by the table: the general Delta readers
    (polars, pyarrow datasets) prefetch several files at once, which took 1.5 GB for a 10M-row partition.
    The files come from the Delta log at `version`; tables written here use neither deletion vectors nor
    column mapping, which this reader would not honour."""
    import pyarrow.parquet as pq

    table = DeltaTable(uri, version=version) if version is not None else DeltaTable(uri)
    for file_uri in table.file_uris(file_pruning_predicate=[(column, "=", value)]):
        parquet = pq.ParquetFile(file_uri, pre_buffer=False, buffer_size=1 << 20)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
            if batch.num_rows:
                yield pl.from_arrow(batch)  # type: ignore[misc]
