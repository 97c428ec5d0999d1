"""Great Expectations suites generated from the spec, and the validation that gates every commit.

The suite of a view is derived from its features (types, nulls, ranges, allowed values, extra
expectations) plus one rule of the store itself: one row per entity per partition. Validation runs on the
computed frame *before* anything is written, so a failed blocking expectation commits nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import great_expectations as gx
import polars as pl
from great_expectations import expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig

from feature_pipelines.catalog import Catalog
from feature_pipelines.spec import PARTITION_DATE, Feature, FeatureView

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

    @property
    def passed(self) -> bool:
        """True unless a blocking expectation failed; warn-level failures are reported, not blocking."""
        return not self.blocking_failures

    @property
    def blocking_failures(self) -> list[Failure]:
        return [f for f in self.failures if f.severity == "blocking"]

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
    out: list[tuple[gxe.Expectation, str]] = []
    type_list = _PANDAS_TYPES.get(type(feat.polars_dtype))
    if type_list:
        out.append((gxe.ExpectColumnValuesToBeInTypeList(column=feat.name, type_list=type_list), "blocking"))
    else:
        out.append((gxe.ExpectColumnToExist(column=feat.name), "blocking"))
    if not feat.nullable:
        out.append((gxe.ExpectColumnValuesToNotBeNull(column=feat.name), "blocking"))
    if feat.min is not None or feat.max is not None:
        out.append(
            (gxe.ExpectColumnValuesToBeBetween(column=feat.name, min_value=feat.min, max_value=feat.max), "blocking")
        )
    if feat.allowed is not None:
        out.append((gxe.ExpectColumnValuesToBeInSet(column=feat.name, value_set=list(feat.allowed)), "blocking"))
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
    expected = {catalog.entity_of(view).join_key: catalog.entity_of(view).dtype}
    expected.update({f.name: f.polars_dtype for f in view.features})
    for name, dtype in expected.items():
        dtype = dtype() if isinstance(dtype, type) else dtype
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
    failures = schema_failures(view, catalog, frame)
    for res in result.results:
        if res.success:
            continue
        cfg = res.expectation_config
        kwargs = cfg.kwargs
        detail = res.result or {}
        failures.append(
            Failure(
                expectation=cfg.type,
                column=kwargs.get("column") or ",".join(kwargs.get("column_list", []) or []) or None,
                severity=(cfg.meta or {}).get("severity", "blocking"),
                observed=detail.get("observed_value", detail.get("unexpected_percent")),
                unexpected_count=detail.get("unexpected_count"),
                examples=list(detail.get("partial_unexpected_list", []) or [])[:5],
            )
        )
    evaluated = len(result.results) + len(view.features) + 1
    return Report(view=view.name, rows=frame.height, evaluated=evaluated, failures=failures)
