"""The GE gate on crafted frames: nullable dtypes, and a range run that blocks exactly what daily runs block."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.checks import quality
from feature_pipelines.spec import BatchSource, Entity, Expectation, Feature, FeatureView

user = Entity(name="user", join_key="user_id", dtype=pl.Int64)
source = BatchSource(
    name="src",
    location="x",
    format="parquet",
    schema={"ts": pl.Datetime("us")},
    event_time="ts",
    start=date(2024, 1, 1),
)
DAYS = ["2024-01-01", "2024-01-02", "2024-01-03"]


def view_of(*features: Feature) -> tuple[FeatureView, Catalog]:
    view = FeatureView(
        name="v", entity=user, source=source, owner="team:t", description="d", features=features, transformation=None
    )
    return view, Catalog(entities={"user": user}, sources={"src": source}, views={"v": view}, services={})


def frame(columns: dict[str, dict[str, list]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """One frame of several partitions: `columns[day][feature]` lists the values, user ids 0..n-1."""
    parts = []
    for day, values in columns.items():
        n = len(next(iter(values.values())))
        end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        parts.append(
            pl.DataFrame({"user_id": list(range(n)), **values}, schema={"user_id": pl.Int64, **schema}).with_columns(
                pl.lit(end, dtype=pl.Datetime("us", "UTC")).alias("event_timestamp"),
                pl.lit(day).alias("partition_date"),
            )
        )
    return pl.concat(parts)


def daily_blocks(view, catalog, data: pl.DataFrame) -> list[str]:
    """The partitions that daily runs (one partition each) block."""
    return [
        day
        for day in sorted(data["partition_date"].unique())
        if not quality.validate(view, catalog, data.filter(pl.col("partition_date") == day)).passed
    ]


def test_nullable_int_and_boolean_pass_and_a_wrong_dtype_still_fails():
    view, catalog = view_of(
        Feature(name="visits", dtype=pl.Int64, description="d", nullable=True, min=0),
        Feature(name="active", dtype=pl.Boolean, description="d", nullable=True, allowed=(True, False)),
    )
    good = frame(
        {DAYS[0]: {"visits": [1, None, 3], "active": [True, None, False]}}, {"visits": pl.Int64, "active": pl.Boolean}
    )
    report = quality.validate(view, catalog, good)
    assert report.passed, report.summary()  # int with a null stays Int64, boolean stays boolean
    assert quality.validate(view, catalog, pl.concat([good, good.with_columns(partition_date=pl.lit(DAYS[1]))])).passed
    wrong = good.with_columns(pl.col("visits").cast(pl.Float64))  # a transformation that produced floats
    report = quality.validate(view, catalog, wrong)
    assert not report.passed
    kinds = {(f.expectation, f.column) for f in report.blocking_failures}
    assert kinds == {("expect_column_dtype", "visits"), ("expect_column_values_to_be_in_type_list", "visits")}
    assert report.failed_partitions == [DAYS[0]]


def test_null_fraction_is_per_partition_and_a_range_run_blocks_what_daily_runs_block():
    view, catalog = view_of(
        Feature(name="score", dtype=pl.Float64, description="d", max_null_fraction=0.2, allow_non_finite=True)
    )
    ten = list(range(10))
    data = frame(
        {
            DAYS[0]: {"score": [None] + ten[1:]},  # 10% null: fine
            DAYS[1]: {"score": [None, None, None] + ten[3:]},  # 30% null: too many
            DAYS[2]: {"score": [float("nan"), None] + ten[2:]},  # 20% (NaN counts as null, as in GE): fine
        },
        {"score": pl.Float64},
    )
    assert daily_blocks(view, catalog, data) == [DAYS[1]]
    report = quality.validate(view, catalog, data)  # 20% null over the run: passed per run before
    assert not report.passed and report.failed_partitions == [DAYS[1]]
    (failure,) = report.blocking_failures
    assert failure.partitions == (DAYS[1],) and failure.unexpected_count == 3
    assert "in partition 2024-01-02" in str(failure) and "30.00% null" in str(failure.observed)
    assert {r["partition_date"] for r in failure.rows} == {DAYS[1]}


def test_row_level_and_aggregate_failures_name_their_partitions_as_daily_runs_do():
    view, catalog = view_of(
        Feature(
            name="price",
            dtype=pl.Float64,
            description="d",
            max=100,
            expectations=(
                Expectation("expect_column_mean_to_be_between", min_value=0, max_value=50),
                Expectation("expect_column_values_to_match_regex", regex="^x", severity="warn"),
            ),
        ),
        Feature(
            name="code",
            dtype=pl.String,
            description="d",
            expectations=(Expectation("expect_column_value_lengths_to_equal", value=2),),
        ),
    )
    data = frame(
        {
            DAYS[0]: {"price": [10.0, 20.0, 30.0], "code": ["ab", "cd", "ef"]},
            DAYS[1]: {"price": [10.0, 200.0, 30.0], "code": ["ab", "cd", "ef"]},  # above max (and a mean of 80)
            DAYS[2]: {"price": [60.0, 70.0, 80.0], "code": ["ab", "cde", "ef"]},  # mean 70; a 3-letter code
        },
        {"price": pl.Float64, "code": pl.String},
    )
    # Over the whole run the mean is 56.7 (above 50 as well), but only the per-partition answer counts.
    assert daily_blocks(view, catalog, data) == [DAYS[1], DAYS[2]]
    report = quality.validate(view, catalog, data)
    assert report.failed_partitions == [DAYS[1], DAYS[2]]
    by_kind = {
        f.expectation: f.partitions
        for f in report.blocking_failures
        if f.expectation != "expect_column_mean_to_be_between"
    }
    assert by_kind == {
        "expect_column_values_to_be_between": (DAYS[1],),
        "expect_column_value_lengths_to_equal": (DAYS[2],),  # found by GE, one partition at a time
    }
    means = sorted(
        f.partitions for f in report.blocking_failures if f.expectation == "expect_column_mean_to_be_between"
    )
    assert means == [(DAYS[1],), (DAYS[2],)]
    # A mean that passes per partition does not fail a range run either.
    calm = data.with_columns(pl.lit(10.0).alias("price"), pl.lit("ab").alias("code"))
    assert quality.validate(view, catalog, calm).passed


def test_the_partition_index_is_written_only_after_the_commit(tmp_path):
    view, catalog = view_of(Feature(name="score", dtype=pl.Float64, description="d", min=0))
    days = [date(2024, 1, 1)]
    good = frame({DAYS[0]: {"score": [1.0]}}, {"score": pl.Float64})
    ok = quality.validate(view, catalog, good)
    first = quality.save_result(ok, tmp_path, "v", days, "run-1")
    index = tmp_path / "quality" / "v" / "partitions" / f"{DAYS[0]}.json"
    assert not index.exists()  # saving a result does not index it
    quality.index_result(first, tmp_path, "v", days, delta_version=0)
    bad = quality.validate(view, catalog, good.with_columns(pl.lit(-1.0).alias("score")))
    second = quality.save_result(bad, tmp_path, "v", days, "run-2")
    assert json.loads(second.read_text())["failed_partitions"] == [DAYS[0]]
    pointer = json.loads(index.read_text())  # a failed gate commits nothing and indexes nothing
    assert pointer == {"result": str(first), "run_id": "run-1", "passed": True, "delta_version": 0}


def test_suite_is_unchanged_for_a_daily_run():
    """One partition is one batch: everything runs in one GE pass, as before."""
    view, catalog = view_of(Feature(name="score", dtype=pl.Float64, description="d", max_null_fraction=0.5))
    data = frame({DAYS[0]: {"score": [None, 1.0]}}, {"score": pl.Float64})
    report = quality.validate(view, catalog, data)
    assert report.passed and report.partition_results == {}  # 50% null is allowed: at most, not more
    assert not quality.validate(view, catalog, data.with_columns(pl.lit(None, dtype=pl.Float64).alias("score"))).passed


def test_non_finite_values_block_by_default_and_a_feature_can_opt_out():
    inf, nan = float("inf"), float("nan")
    data = frame(
        {
            DAYS[0]: {"spend": [1.0, 2.0, 3.0], "rate": [0.1, None, 0.3]},
            DAYS[1]: {"spend": [1.0, inf, 3.0], "rate": [0.1, nan, -inf]},  # min=0 alone lets inf through
        },
        {"spend": pl.Float64, "rate": pl.Float64},
    )
    view, catalog = view_of(
        Feature(name="spend", dtype=pl.Float64, description="d", min=0),
        Feature(name="rate", dtype=pl.Float64, description="d", nullable=True),
    )
    report = quality.validate(view, catalog, data)
    finite = {f.column: f for f in report.blocking_failures if f.expectation == quality.FINITE}
    assert set(finite) == {"spend", "rate"} and report.failed_partitions == [DAYS[1]]
    assert finite["spend"].unexpected_count == 1 and finite["spend"].partitions == (DAYS[1],)
    assert finite["spend"].rows == [{"user_id": 1, "partition_date": DAYS[1], "spend": inf}]
    assert finite["rate"].unexpected_count == 2 and finite["rate"].row_level  # a null is not non-finite
    assert "expect_column_values_to_be_finite on column 'spend', 1 rows" in report.summary()
    assert daily_blocks(view, catalog, data) == [DAYS[1]]

    opted, catalog = view_of(
        Feature(name="spend", dtype=pl.Float64, description="d", min=0),
        Feature(name="rate", dtype=pl.Float64, description="d", nullable=True, allow_non_finite=True),
    )
    report = quality.validate(opted, catalog, data)
    assert {f.column for f in report.blocking_failures} == {"spend"}


def test_the_profile_vector_must_hold_exactly_its_width_of_finite_values(catalog):
    """The real person_profile: its spec declares the vector's width; one NaN, inf or null element, or a
    vector of another width, blocks the partition and names the person."""
    from feature_defs.person_rules import VECTOR_SIZE
    from feature_pipelines.identity.graph import person_id
    from tests.profile_rows import view_rows

    view = catalog.views["person_profile"]
    assert quality.length_features(view) == {"profile_vector": VECTOR_SIZE} == {"profile_vector": 32}
    assert "profile_vector" in quality.finite_features(view)
    persons = {person_id("anonymous_id", f"a-{i}"): i + 1 for i in range(3)}
    end = datetime(2011, 12, 2, tzinfo=UTC)
    good = view_rows(view, "person_id", persons).with_columns(
        pl.lit(end, dtype=pl.Datetime("us", "UTC")).alias("event_timestamp"),
        pl.lit("2011-12-01").alias("partition_date"),
    )
    assert quality.validate(view, catalog, good).passed, quality.validate(view, catalog, good).summary()
    victim = sorted(persons)[1]

    def with_vector(vector: list) -> pl.DataFrame:
        vectors = [vector if p == victim else v for p, v in zip(good["person_id"], good["profile_vector"], strict=True)]
        return good.with_columns(pl.Series("profile_vector", vectors, dtype=pl.List(pl.Float32)))

    for bad_element in (float("nan"), float("inf"), float("-inf"), None):
        vector = [0.1] * VECTOR_SIZE
        vector[7] = bad_element
        report = quality.validate(view, catalog, with_vector(vector))
        (failure,) = report.blocking_failures
        assert failure.expectation == quality.FINITE and failure.column == "profile_vector", report.summary()
        assert failure.unexpected_count == 1 and failure.row_level and report.failed_partitions == ["2011-12-01"]
        assert failure.rows[0]["person_id"] == victim
        assert len(quality.offending_rows(with_vector(vector), failure)) == 1  # held back by entity
        if bad_element is not None:
            assert str(failure.examples[0]) == str(float(bad_element))

    for width in (VECTOR_SIZE - 1, VECTOR_SIZE + 1, 0):
        report = quality.validate(view, catalog, with_vector([0.1] * width))
        (failure,) = report.blocking_failures
        assert failure.expectation == quality.LENGTH and failure.column == "profile_vector"
        assert failure.examples == [width] and failure.rows[0]["person_id"] == victim
        assert f"without exactly {VECTOR_SIZE} elements" in str(failure)


def test_a_vector_width_is_declared_once_and_checked_on_arrays_too():
    arrays, catalog = view_of(Feature(name="emb", dtype=pl.Array(pl.Float32, 4), description="d"))
    assert quality.length_features(arrays) == {"emb": 4} and quality.finite_features(arrays) == ["emb"]
    data = frame(
        {DAYS[0]: {"emb": [[0.0, 1.0, 2.0, 3.0], [0.0, float("nan"), 0.0, 0.0]]}}, {"emb": pl.Array(pl.Float32, 4)}
    )
    (failure,) = quality.validate(arrays, catalog, data).blocking_failures
    assert failure.expectation == quality.FINITE and failure.rows[0]["user_id"] == 1
    problems = validate_catalog(
        Feature(name="a", dtype=pl.Array(pl.Float32, 4), description="d", length=3),
        Feature(name="b", dtype=pl.Float64, description="d", length=3),
        Feature(name="c", dtype=pl.List(pl.Float32), description="d", length=0),
    )
    assert any("v:a: length 3 contradicts the dtype's width (Array(Float32, shape=(4,)))" in p for p in problems)
    assert any("v:b: length is for list or array features, the dtype is Float64" in p for p in problems)
    assert any("v:c: length must be a positive int, got 0" in p for p in problems)


def validate_catalog(*features: Feature) -> list[str]:
    from feature_pipelines.catalog import validate

    return validate(view_of(*features)[1])
