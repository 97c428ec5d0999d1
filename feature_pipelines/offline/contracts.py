"""The raw gate: every row of a source file checked against the source's contract before anything is committed.

What a row must satisfy comes from the spec, written once: the declared dtype of each column (converted
without loss, `feature_pipelines.rules`), the column's `ColumnContract` (not-null, min/max, finite, pattern,
allowed set, max length), the key rules of the entity whose join key the column is
(`feature_pipelines.entity_keys`), and the event time's own rules (present, existing in the source's
wall-clock zone, not in the future). Float columns are finite unless their contract says otherwise.

A file that cannot be read at all (corrupt, truncated, not Parquet, not UTF-8), lacks a declared column, or
holds a column of a type that cannot become the declared one is refused whole. Row-level violations refuse the
file too, by default; with `on_bad_rows="quarantine"` the bad rows are set aside with their reasons (see
`quarantine.py`) and the rest goes on, unless more than `max_bad_fraction` of the file is bad.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from feature_pipelines.entity_keys import check_keys
from feature_pipelines.rules import ColumnTypeError, Failure, lossless_cast, matches
from feature_pipelines.spec import EVENT_DATE, BatchSource, ColumnContract, Entity, resolve_dtype

EXAMPLES = 3
FUTURE_TOLERANCE = timedelta(minutes=5)
"""Clock skew allowed between the producer of a file and this machine before an event counts as future."""


class SourceError(ValueError):
    """A source file does not match its BatchSource declaration; nothing was committed."""


class CorruptFileError(SourceError):
    """A file that cannot be read at all: retrying will not help."""


@dataclass(frozen=True)
class Violation:
    """Rows of one file breaking one rule of one column."""

    file: str
    column: str
    rule: str
    meaning: str
    count: int
    rows: int
    examples: list

    def __str__(self) -> str:
        return (
            f"{self.file}: column {self.column!r}, rule {self.rule}: {self.count} of {self.rows} rows {self.meaning}; "
            f"e.g. {self.examples}"
        )


@dataclass(frozen=True)
class GatedFile:
    """A file after the gate: the rows that passed, in the raw table's schema, and what was set aside."""

    path: str
    rows: int
    frame: pl.DataFrame
    violations: tuple[Violation, ...] = ()
    quarantined: pl.DataFrame | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def bad_rows(self) -> int:
        return 0 if self.quarantined is None else self.quarantined.height


def key_columns(source: BatchSource, entities: Mapping[str, Entity]) -> dict[str, Entity]:
    """Source columns (by their file names) that hold an entity's join key."""
    by_key = {e.join_key: e for e in entities.values()}
    return {c: by_key[source.column(c)] for c in source.schema if source.column(c) in by_key}


def empty_raw_frame(source: BatchSource) -> pl.DataFrame:
    return pl.DataFrame(schema=source.raw_schema)


def read_table(source: BatchSource, path: str) -> pl.DataFrame | None:
    """The file as it is (CSV: every column as text), None for a 0-byte file. Unreadable: CorruptFileError."""
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot be opened: {exc.strerror or exc}") from exc
    if size == 0:
        return None
    try:
        if source.format == "parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False, null_values=[""])
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, the file is unreadable: name it
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFileError(
            f"{path}: cannot be read as {source.format} (rule readable: corrupt, truncated or not a "
            f"{source.format} file; {size:,} bytes): {reason}"
        ) from exc


def gate_file(
    source: BatchSource, entities: Mapping[str, Entity], path: str, *, now: datetime | None = None
) -> GatedFile:
    """Check every row of `path` against the source's contract; raise `SourceError` if the file is refused."""
    raw = read_table(source, path)
    if raw is None:
        return GatedFile(path, 0, empty_raw_frame(source), notes=("empty file (0 bytes): no rows",))
    missing = [c for c in source.schema if c not in raw.columns]
    if missing:
        raise SourceError(
            f"{path}: missing column(s) {missing} declared by source {source.name!r} (rule required_columns; "
            f"the file has {raw.columns}, {raw.height} rows); the file is rejected"
        )
    notes = []
    extra = [c for c in raw.columns if c not in source.schema]
    if extra:
        notes.append(f"ignored column(s) the source does not declare: {extra}")
    failures: list[tuple[str, Failure]] = []
    keys = key_columns(source, entities)
    typed: dict[str, pl.Series] = {}
    for name, dtype in source.schema.items():
        target = resolve_dtype(dtype)
        if name == source.event_time:
            target = pl.Datetime(getattr(target, "time_unit", None) or "us")  # naive = the source's wall clock
        try:
            cast = lossless_cast(raw[name], target, timestamp_format=source.timestamp_format)
        except ColumnTypeError as exc:
            raise SourceError(
                f"{path}: column {name!r}, rule {exc.rule}: {raw.height} of {raw.height} rows {exc.meaning}; "
                "the file is rejected"
            ) from exc
        values = cast.values
        if cast.note:
            notes.append(f"column {name!r}: {cast.note}")
        aware = isinstance(values.dtype, pl.Datetime) and values.dtype.time_zone is not None
        if aware and name != source.event_time and isinstance(target, pl.Datetime) and target.time_zone is None:
            # Another timestamp column: converted to the source's wall clock, as its naive values are read.
            values = values.dt.convert_time_zone(source.timezone).dt.replace_time_zone(None)
        failures += [(name, f) for f in cast.failures]
        if name in keys:
            checked = check_keys(keys[name], values, allow_non_keys=True)
            values = checked.values
            failures += [(name, f) for f in checked.failures]
        typed[name] = values.alias(name)
    frame = pl.DataFrame(typed)
    unconvertible = _any(raw.height, [f.mask for _, f in failures])
    for name in source.schema:
        contract = source.contracts.get(name)
        failures += [(name, f) for f in column_failures(frame, name, contract, unconvertible)]
    utc, time_failures = event_time_utc(frame[source.event_time], source, unconvertible, now)
    failures += [(source.event_time, f) for f in time_failures]
    failures = [(c, f) for c, f in failures if f.mask.any()]
    violations = tuple(
        Violation(
            path,
            column,
            f.rule,
            f.meaning,
            int(f.mask.sum()),
            raw.height,
            examples(raw[column].filter(f.mask)),
        )
        for column, f in failures
    )
    bad = _any(raw.height, [f.mask for _, f in failures])
    n_bad = int(bad.sum())
    if n_bad:
        refuse = source.on_bad_rows != "quarantine"
        why = "on_bad_rows='reject': any bad row rejects the file"
        if not refuse and n_bad / raw.height > source.max_bad_fraction:
            refuse = True
            why = (
                f"{n_bad / raw.height:.2%} of the rows are bad, above the source's max_bad_fraction "
                f"{source.max_bad_fraction:.2%}"
            )
        if refuse:
            raise SourceError(
                f"{path}: {n_bad} of {raw.height} rows break the contract of source {source.name!r} ({why}); "
                "the file is rejected:\n  - " + "\n  - ".join(str(v) for v in violations)
            )
    good = frame.with_columns(utc.alias(source.event_time)).filter(~bad)
    good = good.rename({c: source.column(c) for c in good.columns})
    good = good.with_columns(pl.col(source.event_time_column).dt.date().cast(pl.String).alias(EVENT_DATE))
    good = good.select([pl.col(c).cast(t) for c, t in source.raw_schema.items()])
    quarantined = _quarantine_rows(source, path, raw, bad, failures) if n_bad else None
    return GatedFile(path, raw.height, good, violations, quarantined, tuple(notes))


def column_failures(
    frame: pl.DataFrame, name: str, contract: ColumnContract | None, unconvertible: pl.Series
) -> list[Failure]:
    """Rows of `frame[name]` breaking the column's contract (rows that could not be converted are not
    counted again)."""
    values = frame[name]
    present = values.is_not_null()
    out: list[Failure] = []
    finite = pl.repeat(True, len(values), eager=True)
    if values.dtype.is_float():
        finite = values.is_finite().fill_null(True)
        if contract is None or contract.finite:
            out.append(Failure("finite", present & ~finite, "are inf or NaN"))
    if contract is None:
        return out
    checked = present & finite
    if contract.unless:
        exempt = frame.select(pl.sql_expr(contract.unless).fill_null(False)).to_series()
        checked = checked & ~exempt
    if contract.not_null:
        out.append(Failure("not_null", ~present & ~unconvertible, "are null"))
    if contract.min is not None:
        out.append(Failure("min", checked & (values < contract.min).fill_null(False), f"are below {contract.min}"))
    if contract.max is not None:
        out.append(Failure("max", checked & (values > contract.max).fill_null(False), f"are above {contract.max}"))
    if contract.pattern is not None:
        miss = ~matches(values.cast(pl.String), contract.pattern).fill_null(False)
        out.append(Failure("pattern", checked & miss, f"do not match {contract.pattern!r}"))
    if contract.allowed is not None:
        outside = ~values.is_in(pl.Series(list(contract.allowed)).cast(values.dtype, strict=False).implode()).fill_null(
            False
        )
        shown = list(contract.allowed)[:5]
        more = "..." if len(contract.allowed) > 5 else ""
        out.append(Failure("allowed", checked & outside, f"are not in the allowed set {shown}{more}"))
    if contract.max_length is not None:
        long = present & (values.cast(pl.String).str.len_chars() > contract.max_length).fill_null(False)
        out.append(Failure("max_length", long, f"are longer than {contract.max_length} characters"))
    return out


def event_time_utc(
    times: pl.Series, source: BatchSource, unconvertible: pl.Series, now: datetime | None = None
) -> tuple[pl.Series, list[Failure]]:
    """Event times in UTC (microseconds) and the rows whose time is missing, nonexistent or in the future.

    Naive times are the source's wall clock; an ambiguous time (the repeated hour when clocks go back)
    is read as its first occurrence. A timezone-aware column is converted from its own zone."""
    tz = source.timezone
    failures = [Failure("not_null", times.is_null() & ~unconvertible, "are null: every event needs a time")]
    if times.dtype.time_zone is None:  # type: ignore[union-attr]
        local = times.dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
        failures.append(
            Failure(
                "nonexistent_local_time",
                times.is_not_null() & local.is_null(),
                f"do not exist in {tz} (a clock-change gap); fix the file or declare the right timezone",
            )
        )
    else:
        local = times
    utc = local.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    limit = (now or datetime.now(UTC)) + FUTURE_TOLERANCE
    failures.append(
        Failure("not_future", (utc > limit).fill_null(False), f"are in the future (after {limit:%Y-%m-%d %H:%M} UTC)")
    )
    return utc, failures


def examples(values: pl.Series) -> list:
    """A few distinct offending values as the file had them (times as text, numbers and text as they are)."""
    out = values.unique(maintain_order=True).head(EXAMPLES).to_list()
    out = [v if v is None or isinstance(v, int | float | str) else str(v) for v in out]
    return [f"{v[:60]}... ({len(v):,} characters)" if isinstance(v, str) and len(v) > 80 else v for v in out]


def _any(height: int, masks: list[pl.Series]) -> pl.Series:
    out = pl.repeat(False, height, eager=True).alias("bad")
    for mask in masks:
        out = out | mask.fill_null(False)
    return out


def _quarantine_rows(
    source: BatchSource, path: str, raw: pl.DataFrame, bad: pl.Series, failures: list[tuple[str, Failure]]
) -> pl.DataFrame:
    """The bad rows as the file had them (JSON), with the rules they broke and why."""
    reasons = pl.DataFrame(
        {
            f"r{i}": pl.repeat(None, raw.height, dtype=pl.String, eager=True).set(
                f.mask, f"column {column!r}: {f.rule} ({f.meaning})"
            )
            for i, (column, f) in enumerate(failures)
        }
    )
    rules = pl.DataFrame(
        {
            f"r{i}": pl.repeat(None, raw.height, dtype=pl.String, eager=True).set(f.mask, f"{column}:{f.rule}")
            for i, (column, f) in enumerate(failures)
        }
    )
    originals = raw.select(
        [pl.col(c).bin.encode("hex") if raw[c].dtype == pl.Binary else pl.col(c).cast(pl.String) for c in raw.columns]
    )
    return pl.DataFrame(
        {
            "source": pl.repeat(source.name, raw.height, dtype=pl.String, eager=True),
            "file": pl.repeat(path, raw.height, dtype=pl.String, eager=True),
            "row": pl.int_range(raw.height, dtype=pl.Int64, eager=True),
            "rules": rules.select(pl.concat_str(pl.all(), separator="; ", ignore_nulls=True)).to_series(),
            "reason": reasons.select(pl.concat_str(pl.all(), separator="; ", ignore_nulls=True)).to_series(),
            "record": originals.select(pl.struct(pl.all()).struct.json_encode()).to_series(),
        }
    ).filter(bad)
