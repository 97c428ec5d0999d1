"""Read a batch source's files, check them against the declared schema, and normalize them.

A bad file fails loudly and names the file, the column and how many rows are wrong; nothing is committed,
because the raw table is written only after every file has passed.
"""

from __future__ import annotations

import glob
import hashlib
from datetime import date
from pathlib import Path

import polars as pl

from feature_pipelines.spec import EVENT_DATE, BatchSource, resolve_dtype


class SourceError(ValueError):
    """A source file does not match its BatchSource declaration."""


def source_files(source: BatchSource, base_dir: Path) -> list[str]:
    pattern = source.resolve_location(base_dir)
    files = sorted(glob.glob(pattern))
    if not files:
        raise SourceError(f"source {source.name!r}: no file matches {pattern}")
    return files


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_source(source: BatchSource, base_dir: Path) -> pl.DataFrame:
    """Every file of the source, validated and normalized: declared dtypes, UTC event time, event_date."""
    return pl.concat([read_file(source, f) for f in source_files(source, base_dir)], how="vertical")


def read_file(source: BatchSource, path: str) -> pl.DataFrame:
    if source.format == "parquet":
        raw = pl.read_parquet(path)
    else:
        raw = pl.read_csv(path, infer_schema=False, null_values=[""])
    missing = [c for c in source.schema if c not in raw.columns]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {missing} declared by source {source.name!r} (the file has {raw.columns})"
        )
    typed = raw.select([_cast(raw, path, source, name, dtype) for name, dtype in source.schema.items()])
    return _normalize(typed, source)


def _cast(raw: pl.DataFrame, path: str, source: BatchSource, name: str, dtype) -> pl.Series:
    col = raw[name]
    target = resolve_dtype(dtype)
    if col.dtype == target:
        return col
    if isinstance(target, pl.Datetime) and col.dtype == pl.String:
        cast = col.str.strptime(target, source.timestamp_format, strict=False)
        what = f"parsed as a timestamp with format {source.timestamp_format!r}"
    else:
        try:
            cast = col.cast(target, strict=False)
        except pl.exceptions.InvalidOperationError as exc:
            raise SourceError(f"{path}: column {name!r} is {col.dtype}, which cannot become {target}") from exc
        what = f"read as {target} (the file stores {col.dtype})"
    bad = col.is_not_null() & cast.is_null()
    n_bad = int(bad.sum())
    if n_bad:
        examples = col.filter(bad).head(3).to_list()
        raise SourceError(f"{path}: column {name!r}: {n_bad} of {raw.height} rows cannot be {what}; e.g. {examples}")
    return cast


def _normalize(frame: pl.DataFrame, source: BatchSource) -> pl.DataFrame:
    ts = source.event_time
    n_null = frame[ts].null_count()
    if n_null:
        raise SourceError(f"source {source.name!r}: event time column {ts!r} is null in {n_null} rows")
    utc = (
        pl.col(ts).dt.replace_time_zone(source.timezone, ambiguous="earliest", non_existent="null")
        if frame[ts].dtype.time_zone is None  # type: ignore[union-attr]
        else pl.col(ts)
    ).dt.convert_time_zone("UTC")
    out = frame.with_columns(utc.dt.cast_time_unit("us"))
    lost = out[ts].null_count()
    if lost:
        raise SourceError(
            f"source {source.name!r}: {lost} rows of {ts!r} do not exist in {source.timezone} "
            "(a clock-change gap); fix the file or declare the right timezone"
        )
    out = out.rename({c: source.column(c) for c in out.columns})
    tcol = source.event_time_column
    return out.with_columns(pl.col(tcol).dt.date().cast(pl.String).alias(EVENT_DATE))


def in_range(frame: pl.DataFrame, first: date | str, last: date | str) -> pl.DataFrame:
    return frame.filter(pl.col(EVENT_DATE).is_between(pl.lit(str(first)), pl.lit(str(last))))
