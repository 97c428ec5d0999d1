"""Compute: integer aggregates never wrap silently."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline.compute import IntegerOverflowError, compute_partitions
from feature_pipelines.spec import BatchSource, Entity, Feature, FeatureView, WindowContext

user = Entity(name="user", join_key="user_id", dtype=pl.Int64)
source = BatchSource(
    name="orders",
    location="x",
    format="parquet",
    schema={"ts": pl.Datetime("us"), "user_id": pl.Int64, "quantity": pl.Int64},
    event_time="ts",
    start=date(2024, 1, 1),
)


def units(events: pl.LazyFrame, ctx: WindowContext) -> pl.LazyFrame:
    return events.group_by("user_id").agg(
        pl.col("quantity").sum().alias("units_7d"), pl.col("quantity").max().alias("largest_7d")
    )


view = FeatureView(
    name="orders_7d",
    entity=user,
    source=source,
    owner="team:t",
    description="d",
    windows=(timedelta(days=7),),
    features=(
        Feature(name="units_7d", dtype=pl.Int64, description="d", inputs=("quantity",)),
        Feature(name="largest_7d", dtype=pl.Int64, description="d", inputs=("quantity",)),
    ),
    transformation=units,
)
catalog = Catalog(entities={"user": user}, sources={"orders": source}, views={"orders_7d": view}, services={})


def raw(rows: list[tuple[int, int, int]]) -> pl.DataFrame:
    """(day of January 2024, user, quantity) rows."""
    return pl.DataFrame(
        {
            "ts": [datetime(2024, 1, d, 12, tzinfo=UTC) for d, _, _ in rows],
            "user_id": [u for _, u, _ in rows],
            "quantity": [q for _, _, q in rows],
        },
        schema={"ts": pl.Datetime("us", "UTC"), "user_id": pl.Int64, "quantity": pl.Int64},
    )


def test_a_sum_that_would_wrap_is_an_error_naming_view_feature_partition_and_entities():
    huge = 5_000_000_000_000_000_000  # two of them wrap into a negative count in Int64
    events = raw([(1, 1, huge), (2, 1, huge), (2, 2, 3), (3, 3, huge), (3, 4, 5)])
    assert events.group_by("user_id").agg(pl.col("quantity").sum()).filter(pl.col("user_id") == 1)["quantity"][0] < 0
    with pytest.raises(IntegerOverflowError) as info:
        compute_partitions(view, catalog, events, [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)])
    # Day 1's window holds one huge row only; the windows of days 2 and 3 hold user 1's two (user 3 has one).
    assert [o.partition for o in info.value.overflows] == ["2024-01-02", "2024-01-03"]
    overflow = info.value.overflows[0]
    assert overflow.column == "quantity"
    assert overflow.features == ("units_7d", "largest_7d") and overflow.count == 1
    assert overflow.examples == [{"user_id": 1, "sum_abs_quantity": "10000000000000000000"}]
    message = str(info.value)
    assert "'orders_7d'" in message and "'quantity'" in message and "partition 2024-01-02" in message
    assert "units_7d" in message and "1 entities" in message


def test_large_values_that_fit_are_computed_exactly():
    big = 4_000_000_000_000_000_000
    events = raw([(1, 1, big), (1, 1, big), (1, 2, -big), (1, 2, 7)])
    out = compute_partitions(view, catalog, events, [date(2024, 1, 1)])
    assert out.select("user_id", "units_7d").rows() == [(1, 2 * big), (2, 7 - big)]
