"""Value rules shared by source contracts and entity keys: lossless dtype conversion, ASCII-class patterns and
text normalization. Nothing is ever cast silently: every conversion returns the rows it could not convert
exactly, with the rule that failed, so the caller can name the column, the count and examples.

- A fractional value never becomes an integer, an out-of-range integer never wraps or saturates, an
  integer above 2**53 never becomes an inexact float, and a float never becomes text.
- A timezone-aware timestamp is converted from its own zone, never reinterpreted as wall-clock time; integers
  (epoch seconds? milliseconds?) are never guessed into timestamps.
- In patterns, `\\d`, `\\w` and `\\s` are ASCII classes: full-width digits such as `８` do not pass `\\d`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

MAX_EXACT_FLOAT_INT = 2**53
"""Largest integer magnitude a Float64 holds exactly."""

_ASCII_CLASSES = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "w": "[0-9A-Za-z_]",
    "W": "[^0-9A-Za-z_]",
    "s": "[\\t\\n\\x0B\\f\\r ]",
    "S": "[^\\t\\n\\x0B\\f\\r ]",
}


class ColumnTypeError(ValueError):
    """A whole column has a type that cannot become the declared one (e.g. integers for a timestamp).

    `meaning` reads after "N rows", e.g. "hold Int64 numbers where a timestamp is declared"."""

    def __init__(self, column: str, rule: str, meaning: str) -> None:
        self.column, self.rule, self.meaning = column, rule, meaning
        super().__init__(f"column {column!r}, rule {rule}: values {meaning}")


@dataclass(frozen=True)
class Failure:
    """Rows (a boolean mask) that break one rule, and what the rule means in words."""

    rule: str
    mask: pl.Series
    meaning: str


@dataclass(frozen=True)
class Cast:
    """A converted column, the rows that could not be converted exactly (per rule), and a note on a
    lossless conversion worth reporting (e.g. "converted from its own zone")."""

    values: pl.Series
    failures: tuple[Failure, ...] = ()
    note: str = ""


def _failed(values: pl.Series, *failures: tuple[str, pl.Series, str], note: str = "") -> Cast:
    """A Cast keeping only the rules some row actually breaks."""
    kept = tuple(Failure(rule, mask.fill_null(False), meaning) for rule, mask, meaning in failures if mask.any())
    return Cast(values, kept, note)


def ascii_pattern(pattern: str) -> str:
    """`pattern` with `\\d \\w \\s` (and their negations) spelled as ASCII classes, inside or outside `[...]`.

    The regex engine's classes are Unicode-aware: `\\d` matches `８` (full-width eight), so a pattern written
    for ASCII codes would admit look-alike keys. A nested class such as `[[0-9]-]` is valid in polars' regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(_ASCII_CLASSES.get(nxt, ch + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def check_pattern(pattern: str) -> str | None:
    """None if `pattern` compiles (as polars will run it), else the error."""
    try:
        pl.Series([""], dtype=pl.String).str.contains(ascii_pattern(pattern))
    except pl.exceptions.PolarsError as exc:
        return " ".join(str(exc).split())
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    return None


def matches(values: pl.Series, pattern: str) -> pl.Series:
    """Whether each text value matches `pattern` (ASCII classes); null stays null."""
    return values.str.contains(ascii_pattern(pattern))


def normalize_text(values: pl.Series, steps: tuple[str, ...]) -> pl.Series:
    for step in steps:
        if step == "strip":
            values = values.str.strip_chars()
        elif step == "upper":
            values = values.str.to_uppercase()
        elif step == "lower":
            values = values.str.to_lowercase()
        elif step == "nfkc":
            values = values.str.normalize("NFKC")
        else:
            raise ValueError(f"unknown normalization {step!r}: strip, upper, lower or nfkc")
    return values


def lossless_cast(values: pl.Series, target: pl.DataType, *, timestamp_format: str | None = None) -> Cast:
    """Convert `values` to `target` exactly, or say which rows cannot be (`Cast.bad`) and why (`Cast.rule`).

    Raises `ColumnTypeError` when the column's type cannot become `target` at all. A timezone-aware
    Datetime stays timezone-aware (converted to the target's zone if it has one): the caller, which
    knows the source's wall-clock zone, decides what naive times mean."""
    source = values.dtype
    name = values.name
    if source == target:
        return Cast(values)
    if source == pl.Null:
        return Cast(values.cast(target))
    if isinstance(target, pl.Datetime):
        return _to_datetime(values, target, timestamp_format)
    if source == pl.String and target == pl.Date:
        parsed = values.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        return _with_failures(parsed, values, "unparseable_date", "cannot be parsed as a date (YYYY-MM-DD)")
    if target == pl.String:
        if source == pl.Binary:  # polars refuses the whole column on one bad value: decode each
            text = pl.Series(name, [_utf8(b) for b in values.to_list()], dtype=pl.String)
            return _with_failures(text, values, "invalid_utf8", "are bytes that are not valid UTF-8")
        if source.is_integer() or isinstance(source, pl.Categorical | pl.Enum):
            return Cast(values.cast(pl.String))
        raise ColumnTypeError(name, "dtype", f"hold {source} values where text is declared (not turned into text)")
    if target.is_integer():
        return _to_integer(values, target)
    if target.is_float():
        return _to_float(values, target)
    if target == pl.Boolean and source == pl.String:
        lowered = values.str.to_lowercase()
        parsed = pl.select(
            pl.when(lowered == "true").then(True).when(lowered == "false").then(False).otherwise(None).alias(name)
        ).to_series()
        return _with_failures(parsed, values, "not_a_boolean", "cannot be read as Boolean (true/false)")
    try:
        cast = values.cast(target, strict=False)
        back = cast.cast(source, strict=False)
    except pl.exceptions.PolarsError as exc:
        raise ColumnTypeError(name, "dtype", f"hold {source} values, which cannot become {target}") from exc
    bad = values.is_not_null() & (cast.is_null() | (back != values).fill_null(True))
    return _failed(cast, ("lossy_conversion", bad, f"cannot become {target} exactly (the file stores {source})"))


def _utf8(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _with_failures(converted: pl.Series, original: pl.Series, rule: str, meaning: str) -> Cast:
    return _failed(converted.alias(original.name), (rule, original.is_not_null() & converted.is_null(), meaning))


def _to_integer(values: pl.Series, target: pl.DataType) -> Cast:
    source = values.dtype
    if source == pl.String:
        cast = values.cast(target, strict=False)
        # "12346.0" (a float export of an integer column) is the integer 12346, exactly: within 2**53.
        floats = values.cast(pl.Float64, strict=False)
        whole = cast.is_null() & floats.is_finite() & (floats == floats.floor()) & (floats.abs() < MAX_EXACT_FLOAT_INT)
        cast = (
            pl.select(pl.when(whole).then(floats.cast(target, strict=False)).otherwise(cast))
            .to_series()
            .alias(values.name)
        )
        bad = values.is_not_null() & cast.is_null()
        # Tell a number that does not fit from text that is no integer at all.
        big = bad & values.cast(pl.Int128, strict=False).is_not_null()
        return _failed(
            cast,
            ("out_of_range", big, f"are integers outside the range of {target}"),
            ("not_an_integer", bad & ~big, f"cannot be read as {target} (the file stores {source})"),
        )
    if source.is_integer():
        cast = values.cast(target, strict=False)
        return _with_failures(cast, values, "out_of_range", f"outside the range of {target}")
    if source.is_float() or source.is_decimal():
        floats = values.cast(pl.Float64)
        finite = floats.is_finite().fill_null(True)
        fractional = finite & (floats != floats.floor()).fill_null(False)
        cast = values.cast(target, strict=False)
        return _failed(
            cast,
            ("not_finite", ~finite, f"are inf or NaN where {target} is declared"),
            ("fractional", fractional, f"are fractional where {target} is declared (never truncated)"),
            (
                "out_of_range",
                finite & ~fractional & values.is_not_null() & cast.is_null(),
                f"are outside the range of {target}",
            ),
        )
    raise ColumnTypeError(values.name, "dtype", f"hold {source} values, which cannot become {target}")


def _to_float(values: pl.Series, target: pl.DataType) -> Cast:
    source = values.dtype
    if source == pl.String:
        cast = values.cast(target, strict=False)
        return _with_failures(cast, values, "not_a_number", f"cannot be read as {target} (the file stores String)")
    if source.is_float():
        return Cast(values.cast(target))  # Float32 -> Float64 is exact; Float64 -> Float32 is refused below
    if source.is_integer():
        cast = values.cast(target)
        inexact = values.cast(pl.Int128).abs() > MAX_EXACT_FLOAT_INT
        return _failed(cast, ("not_exact_as_float", inexact, f"are integers {target} cannot hold exactly"))
    if source.is_decimal():  # the nearest float, as for the decimal text "2.55"
        return Cast(values.cast(target))
    raise ColumnTypeError(values.name, "dtype", f"hold {source} values, which cannot become {target}")


def _to_datetime(values: pl.Series, target: pl.Datetime, fmt: str | None) -> Cast:
    source = values.dtype
    name = values.name
    unit = target.time_unit or "us"
    if isinstance(source, pl.Datetime):
        out = values
        note = ""
        if source.time_zone is not None:
            note = f"timezone-aware ({source.time_zone}): converted from its own zone, not reinterpreted"
            if target.time_zone is not None:
                out = out.dt.convert_time_zone(target.time_zone)
        elif target.time_zone is not None:
            raise ColumnTypeError(
                name, "dtype", f"hold naive timestamps where {target.time_zone} timestamps are declared"
            )
        cast = out.dt.cast_time_unit(unit)
        # ns -> us drops sub-microsecond digits: refuse rather than truncate.
        back = cast.dt.cast_time_unit(source.time_unit or "us")
        lost = back.dt.epoch("ns") != out.dt.epoch("ns")
        return _failed(
            cast, ("sub_unit_precision", lost, f"have a precision finer than {unit} that would be dropped"), note=note
        )
    if source == pl.String:
        fmt = fmt or "%Y-%m-%d %H:%M:%S"
        parsed = values.str.strptime(pl.Datetime(unit), fmt, strict=False)
        if target.time_zone is not None:
            parsed = parsed.dt.replace_time_zone(target.time_zone)
        return _with_failures(
            parsed, values, "unparseable_timestamp", f"cannot be parsed as a timestamp with format {fmt!r}"
        )
    if source.is_integer() or source.is_float():
        raise ColumnTypeError(
            name,
            "epoch_numbers",
            f"hold {source} numbers where a timestamp is declared: epoch numbers are never guessed into "
            "timestamps (seconds? milliseconds? which zone?); write timestamps in the file",
        )
    if source == pl.Date:
        raise ColumnTypeError(name, "dtype", "hold dates without a time where a timestamp is declared")
    raise ColumnTypeError(name, "dtype", f"hold {source} values, which cannot become a timestamp")
