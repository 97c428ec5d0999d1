"""Delta Lake tables: partition-exact overwrites and partition-pruned reads, and schema evolution.

Every write replaces exactly the partitions it names (an overwrite with a predicate), so re-running a
partition never duplicates rows nor touches its neighbours, and a write either commits whole or not at all.

Schemas evolve by merging only: a write that adds columns merges them into the table schema (older
partitions read them as null until they are rewritten); a write that drops a column or changes a column's
dtype is refused (`SchemaChangeError`) before anything is written. Delta would otherwise cast the new
values to the old type silently (1.5 stored as 1).

A write may be declared part of the table's initial historical load (`historical_load=True`): the
declaration is recorded in the commit's metadata, where `offline/history.py` reads it, so the table itself
says which of its partitions were loaded as history and which were written as they happened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date

import polars as pl
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, write_deltalake
from deltalake.exceptions import TableNotFoundError

from feature_pipelines.offline.history import HISTORICAL_LOAD


@dataclass(frozen=True)
class Commit:
    version: int
    rows: int


@dataclass(frozen=True)
class SchemaChange:
    """How a frame's columns differ from a table's (dtypes as Delta stores them)."""

    added: dict[str, pl.DataType] = field(default_factory=dict)
    removed: dict[str, pl.DataType] = field(default_factory=dict)
    changed: dict[str, tuple[pl.DataType, pl.DataType]] = field(default_factory=dict)  # name -> (old, new)

    @property
    def breaking(self) -> bool:
        return bool(self.removed or self.changed)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [f"{n}: {old} -> {new}" for n, (old, new) in self.changed.items()]
        parts += [f"{n} ({dtype}) removed" for n, dtype in self.removed.items()]
        parts += [f"{n} ({dtype}) added" for n, dtype in self.added.items()]
        return "; ".join(parts) or "no change"


class SchemaChangeError(ValueError):
    """A write would drop a column or change a dtype of an existing table; nothing was written."""

    def __init__(self, uri: str, change: SchemaChange) -> None:
        self.uri = uri
        self.change = change
        super().__init__(
            f"{uri}: breaking schema change refused, nothing was written ({change.describe()}); Delta would cast "
            "silently, so a changed or dropped column needs a new table"
        )


def stored_dtype(dtype: pl.DataType) -> pl.DataType:
    """The dtype a column reads back as after a Delta write (Delta has no unsigned integers, stores
    timestamps in microseconds and categoricals as strings)."""
    unsigned = {pl.UInt8: pl.Int8, pl.UInt16: pl.Int16, pl.UInt32: pl.Int32, pl.UInt64: pl.Int64}
    for u, signed in unsigned.items():
        if dtype == u:
            return signed()
    if isinstance(dtype, pl.Datetime):
        return pl.Datetime("us", dtype.time_zone)
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    if isinstance(dtype, pl.List | pl.Array):
        return pl.List(stored_dtype(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: stored_dtype(f.dtype) for f in dtype.fields})
    return dtype


def table_schema(uri: str, version: int | None = None) -> dict[str, pl.DataType] | None:
    """The table's columns and dtypes, from its log (no data file is read); None if there is no table."""
    if table_version(uri) is None:
        return None
    return dict(pl.scan_delta(uri, version=version).collect_schema())


def schema_change(table: Mapping[str, pl.DataType], frame: Mapping[str, pl.DataType]) -> SchemaChange:
    """What writing columns `frame` into a table of columns `table` would change."""
    new = {name: stored_dtype(dtype) for name, dtype in frame.items()}
    return SchemaChange(
        added={n: d for n, d in new.items() if n not in table},
        removed={n: d for n, d in table.items() if n not in new},
        changed={n: (table[n], d) for n, d in new.items() if n in table and table[n] != d},
    )


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
    stats_columns: list[str] | None = None,
) -> Commit:
    """Replace the partitions `first..last` (inclusive) of `column` with `frame`, in one Delta commit.

    `commit_metadata` lands in the commit's info (lineage: run id, source versions, definition hash).
    New columns are merged into the table schema; a dropped column or a changed dtype raises
    `SchemaChangeError` and writes nothing.
    `historical_load` declares the commit part of the table's initial historical load: training counts
    partitions it writes first as known at their ends instead of at the commit (see `training.py`).
    `stats_columns` limits the min/max statistics the log keeps to those columns (`delta.dataSkippingStatsColumns`):
    ids of people stay out of the log, which outlives every DELETE."""
    commit_metadata = dict(commit_metadata or {})
    if historical_load:
        commit_metadata[HISTORICAL_LOAD] = "true"
    outside = frame.filter((pl.col(column) < str(first)) | (pl.col(column) > str(last))).height
    if outside:
        raise ValueError(f"{uri}: {outside} rows fall outside partitions {first}..{last} of {column!r}")
    current = table_schema(uri)
    change = schema_change(current, frame.schema) if current is not None else SchemaChange()
    if change.breaking:
        raise SchemaChangeError(uri, change)
    configuration = {"delta.enableExpiredLogCleanup": "false"}
    if stats_columns is not None:
        configuration[STATS_COLUMNS] = ",".join(stats_columns)
        if current is not None and table_properties(uri).get(STATS_COLUMNS) != configuration[STATS_COLUMNS]:
            set_table_properties(uri, {STATS_COLUMNS: configuration[STATS_COLUMNS]})
    write_deltalake(
        uri,
        frame,
        mode="overwrite",
        predicate=partition_predicate(column, first, last),
        partition_by=[column],
        schema_mode="merge" if change.added else None,
        commit_properties=CommitProperties(custom_metadata=commit_metadata) if commit_metadata else None,
        # The log is the history training sets read "as of known time" and rebuild from: keep it. Dropping
        # old history is a retention decision, not a side effect of writing (any writer, not only ours).
        configuration=configuration,
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    return Commit(version=DeltaTable(uri).version(), rows=frame.height)


STATS_COLUMNS = "delta.dataSkippingStatsColumns"


def table_version(uri: str) -> int | None:
    try:
        return DeltaTable(uri).version()
    except TableNotFoundError:
        return None


def partition_row_counts(uri: str, column: str, first: date | str, last: date | str) -> dict[str, int]:
    """Rows per partition `first..last` of the current version, from the file statistics (no data read)."""
    if table_version(uri) is None:
        return {}
    actions = pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))
    part = f"partition.{column}"
    if actions.height == 0 or part not in actions.columns:
        return {}
    in_range = actions.filter(pl.col(part).is_between(pl.lit(str(first)), pl.lit(str(last))))
    if in_range["num_records"].null_count():  # a writer without statistics: count the rows instead
        counts = read_partitions(uri, column, first, last).group_by(column).len()
        return {k: int(n) for k, n in counts.iter_rows()}
    counts = in_range.group_by(part).agg(pl.col("num_records").sum())
    return {k: int(n) for k, n in counts.iter_rows() if n}


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
    column mapping, which this reader would not honour. A column merged into the table after a file was
    written reads as null, as every Delta reader does."""
    import pyarrow.parquet as pq

    table = DeltaTable(uri, version=version) if version is not None else DeltaTable(uri)
    schema = dict(pl.scan_delta(uri, version=table.version()).collect_schema())
    for file_uri in table.file_uris(file_pruning_predicate=[(column, "=", value)]):
        parquet = pq.ParquetFile(file_uri, pre_buffer=False, buffer_size=1 << 20)
        present = [c for c in columns if c in parquet.schema_arrow.names]
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=present, use_threads=False):
            if batch.num_rows:
                frame: pl.DataFrame = pl.from_arrow(batch)  # type: ignore[assignment]
                if len(present) < len(columns):
                    missing = [pl.lit(None, dtype=schema[c]).alias(c) for c in columns if c not in present]
                    frame = frame.with_columns(missing).select(columns)
                yield frame


def overwrite_table(
    uri: str,
    frame: pl.DataFrame,
    commit_metadata: dict[str, str] | None = None,
    partition_by: list[str] | None = None,
) -> Commit:
    """Replace a whole (derived) table in one Delta commit: identity state rewritten as a whole by a full
    recompute or a compaction, with its earlier versions kept in the log."""
    write_deltalake(
        uri,
        frame,
        mode="overwrite",
        schema_mode="overwrite",
        partition_by=partition_by,
        commit_properties=CommitProperties(custom_metadata=dict(commit_metadata)) if commit_metadata else None,
        configuration={"delta.enableExpiredLogCleanup": "false"},
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    return Commit(version=DeltaTable(uri).version(), rows=frame.height)


def partition_columns(uri: str) -> list[str]:
    """The table's partition columns (empty: not partitioned, or no table)."""
    if table_version(uri) is None:
        return []
    return list(DeltaTable(uri).metadata().partition_columns)


def replace_partition_values(
    uri: str, frame: pl.DataFrame, column: str, values: list[str], commit_metadata: dict[str, str] | None = None
) -> Commit:
    """Replace exactly the partitions `column IN values` (not a range: the partitions between them stay)
    with `frame`, in one commit; the other partitions' files are not touched."""
    if not values:
        raise ValueError(f"{uri}: no partition of {column!r} named to replace")
    outside = frame.filter(~pl.col(column).is_in(values)).height
    if outside:
        raise ValueError(f"{uri}: {outside} rows fall outside the partitions {values[:5]} of {column!r}")
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values))
    write_deltalake(
        uri,
        frame,
        mode="overwrite",
        predicate=f"{column} IN ({quoted})",
        partition_by=[column],
        commit_properties=CommitProperties(custom_metadata=dict(commit_metadata)) if commit_metadata else None,
        configuration={"delta.enableExpiredLogCleanup": "false"},
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    return Commit(version=DeltaTable(uri).version(), rows=frame.height)


# Properties of every ledger table (consent, tombstones, audit): append-only history that training and
# audits read as of a time, so the log is kept like the feature tables'.
LEDGER_CONFIGURATION = {"delta.enableExpiredLogCleanup": "false", "delta.appendOnly": "true"}


def append(
    uri: str,
    frame: pl.DataFrame,
    configuration: Mapping[str, str] | None = None,
    commit_metadata: dict[str, str] | None = None,
) -> Commit:
    """Append `frame` in one commit (creating the table with `configuration` if it does not exist)."""
    write_deltalake(
        uri,
        frame,
        mode="append",
        configuration=dict(configuration) if configuration else None,
        commit_properties=CommitProperties(custom_metadata=dict(commit_metadata)) if commit_metadata else None,
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    return Commit(version=DeltaTable(uri).version(), rows=frame.height)


@dataclass(frozen=True)
class Deleted:
    """What a DELETE did: rows removed and data files rewritten (delta-rs rewrites, it writes no deletion
    vectors), and the version it committed (None: nothing matched, nothing committed)."""

    rows: int
    files_rewritten: int
    version: int | None


def delete(uri: str, predicate: str, commit_metadata: dict[str, str] | None = None) -> Deleted:
    """Delete the rows matching a SQL `predicate`; files holding none of them are not touched."""
    if table_version(uri) is None:
        return Deleted(0, 0, None)
    table = DeltaTable(uri)
    before = table.version()
    metrics = table.delete(
        predicate,
        commit_properties=CommitProperties(custom_metadata=commit_metadata) if commit_metadata else None,
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )
    after = DeltaTable(uri).version()
    return Deleted(
        int(metrics.get("num_deleted_rows", 0) or 0),
        int(metrics.get("num_removed_files", 0) or 0),
        after if after != before else None,
    )


def vacuum(uri: str, retention_hours: float) -> list[str]:
    """Remove for good the data files no version newer than `retention_hours` ago still reads (the files
    a DELETE or an overwrite replaced). Returns the files removed. Time travel before that point breaks."""
    if table_version(uri) is None:
        return []
    return DeltaTable(uri).vacuum(
        retention_hours=max(int(retention_hours), 0),
        dry_run=False,
        enforce_retention_duration=False,
        post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
    )


def table_properties(uri: str) -> dict[str, str]:
    """The table's configuration (`delta.*` properties); empty if there is no table."""
    if table_version(uri) is None:
        return {}
    return dict(DeltaTable(uri).metadata().configuration)


def set_table_properties(uri: str, properties: Mapping[str, str]) -> None:
    DeltaTable(uri).alter.set_table_properties(dict(properties), raise_if_not_exists=False)
