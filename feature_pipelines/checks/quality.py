"""Great Expectations suites generated from the spec, and the validation that gates every commit.

The suite of a view is derived from its features (types, nulls, ranges, allowed values, extra
expectations) plus one rule of the store itself: one row per entity per partition. Validation runs on the
computed frame *before* anything is written, so a failed blocking expectation commits nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import great_expectations as gx
import polars as pl
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig

from feature_pipelines.catalog import Catalog
from feature_pipelines.spec import PARTITION_DATE, Feature, FeatureView, output_schema

# pandas dtype names a polars column becomes through `to_pandas()`.
_PANDAS_TYPES: dict[type[pl.DataType], list[str]] = {
    pl.Int64: ["int64", "Int64", "int64[pyarrow]"],
    pl.Int32: ["int32", "Int32", "int32[pyarrow]"],
    pl.Float64: ["float64", "Float64", "double[pyarrow]"],
    pl.Float32: ["float32", "Float32", "float[pyarrow]"],
    pl.Boolean: ["bool", "boolean", "bool[pyarrow]"],
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

    def __str__(self) -> str:
        where = f"column {self.column!r}" if self.column else "table"
        n = f", {self.unexpected_count} rows" if self.unexpected_count is not None else ""
        ex = f", e.g. {self.examples}" if self.examples else ""
        return f"{self.expectation} on {where}{n}{ex} (observed: {self.observed})"


@dataclass(frozen=True)
class Report:
    view: str
    rows: int
    evaluated: int
    failures: list[Failure]
    result: dict[str, Any] = field(default_factory=dict, repr=False)

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

    def markdown(self, failures: list[Failure]) -> str:
        """What the Dagster UI shows: expectation, column, observed value, a few offending rows."""
        if not failures:
            return "none"
        out = []
        for f in failures:
            out.append(
                f"**{f.expectation}** on `{f.column}` [{f.severity}]: observed {f.observed}, "
                f"{f.unexpected_count} unexpected rows"
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


def validate(view: FeatureView, catalog: Catalog, frame: pl.DataFrame) -> Report:
    """Run the view's suite on `frame` (all partitions of a run at once: one GE pass, not one per day)."""
    suite = build_suite(view, catalog)
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    result = batch.validate(suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5})
    key = catalog.entity_of(view).join_key
    failures = schema_failures(view, catalog, frame)
    for res in result.results:
        if res.success:
            continue
        cfg = res.expectation_config
        kwargs = cfg.kwargs
        detail = res.result or {}
        column = kwargs.get("column") or ",".join(kwargs.get("column_list", []) or []) or None
        examples = list(detail.get("partial_unexpected_list", []) or [])[:5]
        failures.append(
            Failure(
                expectation=cfg.type,
                column=column,
                severity=(cfg.meta or {}).get("severity", "blocking"),
                observed=detail.get("observed_value", detail.get("unexpected_percent")),
                unexpected_count=detail.get("unexpected_count"),
                examples=examples,
                rows=_offending_rows(frame, key, kwargs, cfg.type),
            )
        )
    evaluated = len(result.results) + len(view.features) + 1
    return Report(
        view=view.name, rows=frame.height, evaluated=evaluated, failures=failures, result=result.to_json_dict()
    )


def _offending_rows(frame: pl.DataFrame, key: str, kwargs: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """A few rows that break the expectation, with their entity and partition, computed with polars."""
    column = kwargs.get("column")
    if kind == "expect_compound_columns_to_be_unique":
        cols = list(kwargs["column_list"])
        bad = frame.filter(frame.select(cols).is_duplicated())
        return bad.select(list(dict.fromkeys([key, *cols]))).head(5).to_dicts()
    if column is None or column not in frame.columns:
        return []
    c = pl.col(column)
    if kind == "expect_column_values_to_not_be_null":
        bad = frame.filter(c.is_null())
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
        return []
    return bad.select(list(dict.fromkeys([key, PARTITION_DATE, column]))).head(5).to_dicts()


def save_result(report: Report, lake_dir: Path, view: str, days: list[date], run_id: str) -> Path:
    """Keep the GE validation result beside the Delta table, and index it by partition."""
    folder = Path(lake_dir).resolve() / "quality" / view
    path = folder / "runs" / f"{days[0]}_{days[-1]}_{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "view": view,
                "run_id": run_id,
                "passed": report.passed,
                "partitions": [d.isoformat() for d in days],
                "result": report.result,
            },
            default=str,
        )
    )
    index = folder / "partitions"
    index.mkdir(exist_ok=True)
    pointer = json.dumps({"result": str(path), "run_id": run_id, "passed": report.passed})
    for day in days:
        (index / f"{day}.json").write_text(pointer)
    return path
