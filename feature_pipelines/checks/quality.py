"""Great Expectations suites generated from the spec, and the validation that gates every commit.

The suite of a view is derived from its features (types, nulls, ranges, allowed values, extra
expectations) plus one rule of the store itself: one row per entity per partition. Validation runs on the
computed frame *before* anything is written, so a failed blocking expectation commits nothing.

**Per partition.** A run may compute many partitions, and each partition must pass or fail exactly as it
would in a daily run of its own. Row-level expectations (a value is null, out of range, not allowed; the
column types) do not depend on the batch: they run once over the whole frame, and the offending rows name
their partitions. Expectations that do depend on the batch (`max_null_fraction` and any `mostly < 1`,
aggregates such as a mean, uniqueness across rows) are evaluated per partition: the null share with
polars, the others with one GE pass per partition. Every failure names its partitions.

**Finite values.** A float feature's inf, -inf and NaN fail `expect_column_values_to_be_finite`, blocking,
unless the feature declares `allow_non_finite=True`. It is evaluated with polars: GE sees pandas, where a
null float is NaN, so it cannot tell a null (governed by `nullable`) from a NaN; and a range such as
`min=0` lets inf through.

A vector of floats (a list or array feature) is guarded element by element: one inf, NaN or null
element fails the same expectation. A list feature's declared width (`Feature.length`, or an Array dtype's)
is `expect_column_value_lengths_to_equal`, blocking, also evaluated with polars (GE sees a pandas object
column of arrays there).

**Types.** Integer and boolean columns reach GE as pandas' nullable dtypes (`Int64`, `boolean`): a plain
conversion makes an integer column with a null float64 and a boolean one object, which fail a correct
type check.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
import polars as pl
import pyarrow as pa
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.expectations.expectation import (
    ColumnMapExpectation,
    ColumnPairMapExpectation,
    MulticolumnMapExpectation,
)

from feature_pipelines.catalog import Catalog
from feature_pipelines.spec import PARTITION_DATE, Feature, FeatureView, output_schema

# pandas dtype names a polars column becomes through `to_pandas` below (GE resolves "Int64Dtype" and
# "BooleanDtype" to pandas' nullable dtypes; a bare "Int64" or "boolean" matches nothing in GE 1.24).
_PANDAS_TYPES: dict[type[pl.DataType], list[str]] = {
    pl.Int64: ["int64", "Int64Dtype", "int64[pyarrow]"],
    pl.Int32: ["int32", "Int32Dtype", "int32[pyarrow]"],
    pl.Float64: ["float64", "Float64", "double[pyarrow]"],
    pl.Float32: ["float32", "Float32", "float[pyarrow]"],
    pl.Boolean: ["bool", "BooleanDtype", "bool[pyarrow]"],
}
# Strings are absent on purpose: GE 1.24 does not recognize pandas 3's `str` dtype in type checks, so a
# string column's type is enforced by `schema_failures` (polars dtypes) and its presence by GE.


@dataclass(frozen=True)
class Failure:
    """One failed expectation, in words an on-call engineer can act on."""

    expectation: str
    column: str | None
    severity: str
    observed: Any
    unexpected_count: int | None
    examples: list[Any] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    partitions: tuple[str, ...] = ()
    """The partitions that fail it (each would fail a daily run of its own)."""
    kwargs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The expectation's arguments, so that the offending rows can be found again (`offending_rows`)."""
    row_level: bool = False
    """Whether each row passes or fails it on its own (a value out of range, null, not allowed, non-finite):
    such a failure can be pinned on entities and held back (`feature_pipelines.checks.holdback`)."""

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        n = f", {self.unexpected_count} rows" if self.unexpected_count is not None else ""
        ex = f", e.g. {self.examples}" if self.examples else ""
        return f"{self.expectation} on {where}{n}{ex} (observed: {self.observed}){self.where}"

    @property
    def where(self) -> str:
        if not self.partitions:
            return ""
        shown = ", ".join(self.partitions[:10])
        more = f" and {len(self.partitions) - 10} more" if len(self.partitions) > 10 else ""
        return f" in partition{'s' if len(self.partitions) > 1 else ''} {shown}{more}"


@dataclass(frozen=True)
class Report:
    view: str
    rows: int
    evaluated: int
    failures: list[Failure]
    result: dict[str, Any] = field(default_factory=dict, repr=False)
    partition_results: dict[str, Any] = field(default_factory=dict, repr=False)
    """GE results of the batch-dependent expectations, per partition (when the run had several)."""

    @property
    def passed(self) -> bool:
        """True unless a blocking expectation failed; warn-level failures are reported, not blocking."""
        return not self.blocking_failures

    @property
    def blocking_failures(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == "blocking"]

    @property
    def warnings(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == "warn"]

    @property
    def failed_partitions(self) -> list[str]:
        """The partitions a blocking failure names: exactly those daily runs would block."""
        return sorted({p for f in self.blocking_failures for p in f.partitions})

    def markdown(self, failures: list[Failure]) -> str:
        """What the Dagster UI shows: expectation, column, observed value, a few offending rows."""
        if not failures:
            return "none"
        out = []
        for f in failures:
            out.append(
                f"**{f.expectation}** on `{f.column}` [{f.severity}]: observed {f.observed}, "
                f"{f.unexpected_count} unexpected rows{f.where}"
            )
            if f.rows:
                cols = list(f.rows[0])
                out.append("| " + " | ".join(cols) + " |")
                out.append("|" + "---|" * len(cols))
                out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in f.rows]
            out.append("")
        return "\n".join(out)

    def summary(self) -> str:
        if not self.failures:
            return f"{self.view}: {self.evaluated} expectations passed on {self.rows} rows"
        lines = [f"{self.view}: {len(self.failures)} of {self.evaluated} expectations failed on {self.rows} rows:"]
        lines += [f"  [{f.severity}] {f}" for f in self.failures]
        if self.failed_partitions:
            lines.append(f"  blocked partitions: {', '.join(self.failed_partitions)}")
        return "\n".join(lines)


def build_suite(view: FeatureView, catalog: Catalog) -> gx.ExpectationSuite:
    """The view's GE suite; each expectation carries its severity in `meta`."""
    _context()
    suite = gx.ExpectationSuite(name=f"features.{view.name}")

    def add(expectation: gxe.Expectation, level: str = "blocking") -> None:
        expectation.meta = {**(expectation.meta or {}), "severity": level}
        suite.add_expectation(expectation)

    key = catalog.entity_of(view).join_key
    add(gxe.ExpectColumnValuesToNotBeNull(column=key))
    add(gxe.ExpectCompoundColumnsToBeUnique(column_list=[key, PARTITION_DATE]))
    for feat in view.features:
        for exp, level in feature_expectations(feat):
            add(exp, level)
    return suite


def feature_expectations(feat: Feature) -> list[tuple[gxe.Expectation, str]]:
    level = feat.severity
    out: list[tuple[gxe.Expectation, str]] = []
    type_list = _PANDAS_TYPES.get(type(feat.polars_dtype))
    if type_list:
        out.append((gxe.ExpectColumnValuesToBeInTypeList(column=feat.name, type_list=type_list), "blocking"))
    else:
        out.append((gxe.ExpectColumnToExist(column=feat.name), "blocking"))
    if feat.max_null_fraction is not None:
        out.append((gxe.ExpectColumnValuesToNotBeNull(column=feat.name, mostly=1 - feat.max_null_fraction), level))
    elif not feat.nullable:
        out.append((gxe.ExpectColumnValuesToNotBeNull(column=feat.name), level))
    if feat.min is not None or feat.max is not None:
        out.append((gxe.ExpectColumnValuesToBeBetween(column=feat.name, min_value=feat.min, max_value=feat.max), level))
    if feat.allowed is not None:
        out.append((gxe.ExpectColumnValuesToBeInSet(column=feat.name, value_set=list(feat.allowed)), level))
    if feat.unique:
        out.append((gxe.ExpectCompoundColumnsToBeUnique(column_list=[feat.name, PARTITION_DATE]), level))
    for extra in feat.expectations:
        cls = getattr(gxe, _camel(extra.name), None)
        if cls is None:
            raise ValueError(f"{extra.defined_at}: {extra.name!r} is not a Great Expectations expectation")
        kwargs = {"column": feat.name, **extra.kwargs}
        out.append((cls(**kwargs), extra.severity))
    return out


def _camel(snake: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"_+", snake))


@cache
def _context():
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


FINITE = "expect_column_values_to_be_finite"


LENGTH = "expect_column_value_lengths_to_equal"


def finite_features(view: FeatureView) -> list[str]:
    """Float features and float vectors whose non-finite values block (all but the opted-out ones)."""
    return [f.name for f in view.features if (f.polars_dtype.is_float() or f.float_elements) and not f.allow_non_finite]


def length_features(view: FeatureView) -> dict[str, int]:
    """List features with a declared width: feature -> the element count each value must have."""
    return {f.name: n for f in view.features if (n := f.expected_length) is not None}


def _is_vector(dtype: pl.DataType) -> bool:
    return isinstance(dtype, pl.List | pl.Array)


def _elements(column: str, dtype: pl.DataType) -> pl.Expr:
    """A list or array column as a list expression (the `list` namespace serves both)."""
    c = pl.col(column)
    return c.arr.to_list() if isinstance(dtype, pl.Array) else c


def finite_failures(view: FeatureView, catalog: Catalog, frame: pl.DataFrame) -> list[Failure]:
    """inf, -inf or NaN in a float feature that does not allow them (or such or a null element in a float
    vector): one blocking failure per feature."""
    out = []
    for name in finite_features(view):
        dtype = frame.schema.get(name)
        if dtype is None or not (dtype.is_float() or (_is_vector(dtype) and dtype.inner.is_float())):
            continue  # reported by schema_failures
        bad = _offending(frame, {"column": name}, FINITE)
        if bad is None or bad.height == 0:
            continue
        if _is_vector(dtype):
            wrong = pl.element().is_null() | ~pl.element().is_finite()
            examples = bad.select(_elements(name, dtype).list.eval(pl.element().filter(wrong)).list.first())
            observed = f"{bad.height} vectors with inf, NaN or null elements"
        else:
            examples, observed = bad.select(name), f"{bad.height} non-finite values"
        out.append(_polars_failure(view, catalog, frame, bad, FINITE, name, observed, examples[name].head(5)))
    return out


def length_failures(view: FeatureView, catalog: Catalog, frame: pl.DataFrame) -> list[Failure]:
    """List features whose values do not have the declared element count (a null value is governed by
    `nullable`): one blocking failure per feature, its examples the counts found."""
    out = []
    for name, n in length_features(view).items():
        if name not in frame.columns or not _is_vector(frame.schema[name]):
            continue  # reported by schema_failures
        bad = _offending(frame, {"column": name, "value": n}, LENGTH)
        if bad is None or bad.height == 0:
            continue
        counts = bad.select(_elements(name, frame.schema[name]).list.len())[name]
        observed = f"{bad.height} values without exactly {n} elements (found {sorted(set(counts.to_list()))[:5]})"
        out.append(_polars_failure(view, catalog, frame, bad, LENGTH, name, observed, counts.head(5), value=n))
    return out


def _polars_failure(
    view: FeatureView,
    catalog: Catalog,
    frame: pl.DataFrame,
    bad: pl.DataFrame,
    expectation: str,
    name: str,
    observed: str,
    examples: pl.Series,
    **kwargs: Any,
) -> Failure:
    """A blocking, row-level failure found with polars: the offending rows by entity and partition."""
    key = catalog.entity_of(view).join_key
    partitioned = PARTITION_DATE in frame.columns
    return Failure(
        expectation=expectation,
        column=name,
        severity="blocking",
        observed=observed,
        unexpected_count=bad.height,
        examples=examples.to_list(),
        rows=bad.select(list(dict.fromkeys([key, *([PARTITION_DATE] if partitioned else []), name])))
        .head(5)
        .to_dicts(),
        partitions=tuple(sorted(bad[PARTITION_DATE].unique().to_list())) if partitioned else (),
        kwargs={"column": name, **kwargs},
        row_level=True,
    )


def schema_failures(view: FeatureView, catalog: Catalog, frame: pl.DataFrame) -> list[Failure]:
    """Declared columns missing from the frame or of another polars dtype."""
    out = []
    for name, dtype in output_schema(view, catalog.entity_of(view)).items():
        actual = frame.schema.get(name)
        if actual != dtype:
            out.append(Failure("expect_column_dtype", name, "blocking", str(actual), frame.height, []))
    return out


@cache
def _batch_definition():
    source = _context().data_sources.add_pandas("feature_store")
    return source.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole")


_NULLABLE = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


def to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """The frame GE validates: integers and booleans as nullable pandas dtypes, nulls kept as nulls."""
    return frame.to_pandas(types_mapper=_NULLABLE.get)


_SCHEMA_KINDS = {
    "expect_column_to_exist",
    "expect_column_values_to_be_in_type_list",
    "expect_column_values_to_be_of_type",
}
_UNIQUE_KINDS = {"expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"}
_ROW_LEVEL = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)


def _batch_dependent(exp: gxe.Expectation) -> bool:
    """Whether the outcome depends on which rows share the batch (so it must be evaluated per partition)."""
    kind = exp.expectation_type
    if kind in _SCHEMA_KINDS:
        return False
    if kind in _UNIQUE_KINDS:
        return PARTITION_DATE not in (getattr(exp, "column_list", None) or [])
    if isinstance(exp, _ROW_LEVEL):
        return (getattr(exp, "mostly", None) or 1.0) < 1.0
    return True  # aggregates and table-level expectations describe a batch


def _row_level(exp: gxe.Expectation) -> bool:
    """Whether each row passes or fails `exp` on its own, whatever else is in the batch."""
    return (
        isinstance(exp, ColumnMapExpectation)
        and exp.expectation_type not in _SCHEMA_KINDS | _UNIQUE_KINDS
        and (getattr(exp, "mostly", None) or 1.0) >= 1.0
    )


def _null_share(exp: gxe.Expectation) -> bool:
    return exp.expectation_type == "expect_column_values_to_not_be_null" and (exp.mostly or 1.0) < 1.0


def _ge(expectations: list[gxe.Expectation], frame: pl.DataFrame) -> Any:
    suite = gx.ExpectationSuite(name="features.subset", expectations=[e.copy() for e in expectations])
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": to_pandas(frame)})
    return batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5})


def validate(view: FeatureView, catalog: Catalog, frame: pl.DataFrame) -> Report:
    """Run the view's suite on `frame`: once over all partitions of a run for what does not depend on the
    batch, per partition for what does (see the module docstring)."""
    suite = build_suite(view, catalog)
    key = catalog.entity_of(view).join_key
    partitioned = PARTITION_DATE in frame.columns
    partitions = tuple(sorted(frame[PARTITION_DATE].unique().to_list())) if partitioned and frame.height else ()
    nulls = [e for e in suite.expectations if _null_share(e) and partitioned]
    per_partition = [e for e in suite.expectations if _batch_dependent(e) and e not in nulls]
    whole = [e for e in suite.expectations if not _batch_dependent(e)]
    if len(partitions) <= 1:  # one batch is the partition: a single GE pass answers everything
        whole, per_partition = whole + per_partition, []
    failures = [dataclasses.replace(f, partitions=partitions) for f in schema_failures(view, catalog, frame)]
    failures += finite_failures(view, catalog, frame)
    failures += length_failures(view, catalog, frame)
    result = _ge(whole, frame)
    for res in result.results:
        if not res.success:
            failure = _failure(res, frame, key)
            failures.append(
                dataclasses.replace(
                    failure,
                    partitions=_failing_partitions(res, frame, partitions),
                    row_level=_row_level(res.expectation_config.to_domain_obj()),
                )
            )
    partition_results: dict[str, Any] = {}
    if per_partition:
        for part in partitions:
            batch = frame.filter(pl.col(PARTITION_DATE) == part)
            part_result = _ge(per_partition, batch)
            partition_results[part] = part_result.to_json_dict()
            failures += [
                dataclasses.replace(_failure(res, batch, key), partitions=(part,))
                for res in part_result.results
                if not res.success
            ]
    for exp in nulls:
        failures += _null_share_failures(exp, frame, key)
    evaluated = len(result.results) + len(per_partition) + len(nulls) + len(view.features) + 1
    evaluated += len(finite_features(view)) + len(length_features(view))
    return Report(
        view=view.name,
        rows=frame.height,
        evaluated=evaluated,
        failures=failures,
        result=result.to_json_dict(),
        partition_results=partition_results,
    )


def _failure(res: Any, frame: pl.DataFrame, key: str) -> Failure:
    cfg = res.expectation_config
    kwargs = cfg.kwargs
    detail = res.result or {}
    column = kwargs.get("column") or ",".join(kwargs.get("column_list", []) or []) or None
    return Failure(
        expectation=cfg.type,
        column=column,
        severity=(cfg.meta or {}).get("severity", "blocking"),
        observed=detail.get("observed_value", detail.get("unexpected_percent")),
        unexpected_count=detail.get("unexpected_count"),
        examples=list(detail.get("partial_unexpected_list", []) or [])[:5],
        rows=_offending_rows(frame, key, kwargs, cfg.type),
        kwargs=dict(kwargs),
    )


def _failing_partitions(res: Any, frame: pl.DataFrame, partitions: tuple[str, ...]) -> tuple[str, ...]:
    """The partitions of a row-level failure over the whole run: those holding an offending row."""
    cfg = res.expectation_config
    if len(partitions) <= 1 or cfg.type in _SCHEMA_KINDS:
        return partitions  # a column's type is the same in every partition of the run
    bad = _offending(frame, cfg.kwargs, cfg.type)
    if bad is not None and bad.height:
        return tuple(sorted(bad[PARTITION_DATE].unique().to_list()))
    # An expectation polars does not evaluate here (e.g. a regex): ask GE, one partition at a time.
    exp = cfg.to_domain_obj()
    return tuple(p for p in partitions if not _ge([exp], frame.filter(pl.col(PARTITION_DATE) == p)).results[0].success)


def _null_share_failures(exp: gxe.Expectation, frame: pl.DataFrame, key: str) -> list[Failure]:
    """`max_null_fraction` (`mostly`) per partition, as GE counts nulls (NaN is null too)."""
    column = exp.column
    if column not in frame.columns or frame.height == 0:
        return []
    c = pl.col(column)
    missing = c.is_null() | c.is_nan() if frame.schema[column].is_float() else c.is_null()
    shares = (
        frame.group_by(PARTITION_DATE)
        .agg(missing.sum().alias("nulls"), pl.len().alias("rows"))
        .sort(PARTITION_DATE)
        .with_columns(((pl.col("rows") - pl.col("nulls")) / pl.col("rows")).alias("ok"))
    )
    out = []
    for part, nulls, rows, _ok in shares.filter(pl.col("ok") < exp.mostly).iter_rows():
        offending = frame.filter((pl.col(PARTITION_DATE) == part) & missing)
        out.append(
            Failure(
                expectation=exp.expectation_type,
                column=column,
                severity=(exp.meta or {}).get("severity", "blocking"),
                observed=f"{nulls / rows:.2%} null, at most {1 - exp.mostly:.2%} allowed",
                unexpected_count=nulls,
                examples=[],
                rows=offending.select(list(dict.fromkeys([key, PARTITION_DATE, column]))).head(5).to_dicts(),
                partitions=(part,),
            )
        )
    return out


def _offending_rows(frame: pl.DataFrame, key: str, kwargs: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """A few rows that break the expectation, with their entity and partition, computed with polars."""
    bad = _offending(frame, kwargs, kind)
    if bad is None:
        return []
    if kind == "expect_compound_columns_to_be_unique":
        return bad.select(list(dict.fromkeys([key, *kwargs["column_list"]]))).head(5).to_dicts()
    return bad.select(list(dict.fromkeys([key, PARTITION_DATE, kwargs["column"]]))).head(5).to_dicts()


def _offending(frame: pl.DataFrame, kwargs: dict[str, Any], kind: str) -> pl.DataFrame | None:
    """Every row that breaks a row-level expectation (None: a kind evaluated only by GE)."""
    column = kwargs.get("column")
    if kind == "expect_compound_columns_to_be_unique":
        return frame.filter(frame.select(list(kwargs["column_list"])).is_duplicated())
    if column is None or column not in frame.columns:
        return None
    c = pl.col(column)
    dtype = frame.schema[column]
    if kind == FINITE and _is_vector(dtype):
        wrong = pl.element().is_null() | ~pl.element().is_finite()
        bad = frame.filter(_elements(column, dtype).list.eval(wrong).list.any().fill_null(False))
    elif kind == LENGTH and _is_vector(dtype):
        bad = frame.filter(c.is_not_null() & (_elements(column, dtype).list.len() != kwargs["value"]))
    elif kind == FINITE:
        bad = frame.filter(c.is_infinite() | c.is_nan())
    elif kind == "expect_column_values_to_not_be_null":
        bad = frame.filter(c.is_null() | c.is_nan() if frame.schema[column].is_float() else c.is_null())
    elif kind == "expect_column_values_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        cond = pl.lit(False)
        if lo is not None:
            cond = cond | (c < lo)
        if hi is not None:
            cond = cond | (c > hi)
        bad = frame.filter(cond)
    elif kind == "expect_column_values_to_be_in_set":
        bad = frame.filter(c.is_not_null() & ~c.is_in(list(kwargs["value_set"])))
    else:
        return None
    return bad


def offending_rows(frame: pl.DataFrame, failure: Failure) -> pl.DataFrame:
    """Every row of `frame` that breaks a row-level failure's expectation: with polars when it can, else
    asking GE for the index of each unexpected row (e.g. a regex)."""
    bad = _offending(frame, failure.kwargs, failure.expectation)
    if bad is not None:
        return bad
    cls = getattr(gxe, _camel(failure.expectation))
    suite = gx.ExpectationSuite(name="features.offending", expectations=[cls(**failure.kwargs)])
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": to_pandas(frame)})
    res = batch.validate(suite, result_format={"result_format": "COMPLETE"}).results[0]
    index = (res.result or {}).get("unexpected_index_list") or []
    return frame[sorted(int(i) for i in index)] if index else frame.clear()


def save_result(
    report: Report, lake_dir: Path, view: str, days: list[date], run_id: str, extra: dict[str, Any] | None = None
) -> Path:
    """Keep the GE validation result of a run beside the Delta table (passed or not: a failed gate links it).

    It does not touch the partition index: that describes the data in Delta, see `index_result`."""
    path = Path(lake_dir).resolve() / "quality" / view / "runs" / f"{days[0]}_{days[-1]}_{run_id}.json"
    _write_atomically(
        path,
        json.dumps(
            {
                "view": view,
                "run_id": run_id,
                "passed": report.passed,
                "partitions": [d.isoformat() for d in days],
                "failed_partitions": report.failed_partitions,
                "failures": [str(f) for f in report.failures],
                "result": report.result,
                "partition_results": report.partition_results,
                **(extra or {}),
            },
            default=str,
        ),
    )
    return path


def index_result(result: Path, lake_dir: Path, view: str, days: list[date], delta_version: int) -> None:
    """Point each partition at the validation result of the data it now holds: call it only after the
    Delta commit (`delta_version`) that wrote them. The commit's metadata links the same result, so a
    crash between the two leaves an index that is old, never one that names data that was not written."""
    index = Path(lake_dir).resolve() / "quality" / view / "partitions"
    run = json.loads(Path(result).read_text())
    pointer = json.dumps(
        {"result": str(result), "run_id": run["run_id"], "passed": run["passed"], "delta_version": delta_version}
    )
    for day in days:
        _write_atomically(index / f"{day}.json", pointer)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
