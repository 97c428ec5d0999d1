"""Rows of a person-keyed view with every feature of its declared dtype, for tests that serve or train on
the real catalog's person views without running the behaviour pipeline."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from feature_pipelines.spec import FeatureView


def _value(feature, n: int):
    dtype = feature.polars_dtype
    if feature.allowed:
        return feature.allowed[n % len(feature.allowed)]
    if dtype == pl.Int64:
        return n
    if dtype == pl.Float64:
        return n / 64  # exact in binary: a read compares equal
    if dtype == pl.Boolean:
        return n % 2 == 1
    if dtype == pl.String:
        return f"{feature.name}-{n}"
    if isinstance(dtype, pl.Datetime):
        return datetime(2011, 12, 1, n % 24, tzinfo=UTC)
    if isinstance(dtype, pl.List | pl.Array):
        width = dtype.size if isinstance(dtype, pl.Array) else 32
        return [n / 64] * width
    raise TypeError(f"no test value for feature {feature.name!r} of dtype {dtype}")


def view_rows(view: FeatureView, join_key: str, persons: dict[str, int]) -> pl.DataFrame:
    """One row per person; each feature's value derives from the person's number, so a read shows whose
    row it got. Columns: the join key, then the view's features in order, with their declared dtypes."""
    ids = sorted(persons)
    columns = {join_key: pl.Series(join_key, ids, dtype=pl.String)}
    for f in view.features:
        columns[f.name] = pl.Series(f.name, [_value(f, persons[p]) for p in ids], dtype=f.polars_dtype)
    return pl.DataFrame(columns)
