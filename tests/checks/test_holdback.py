"""Blast radius on crafted frames through the real GE gate: bad entities held back, the rest goes on."""

from __future__ import annotations

import dataclasses

import polars as pl

from feature_pipelines.checks import holdback, quality
from feature_pipelines.spec import Expectation, Feature
from tests.checks.test_quality import DAYS, frame, view_of

COUNTRIES = ("UK", "FR", "DE")


def context_view(**policy):
    view, catalog = view_of(
        Feature(name="country", dtype=pl.String, description="d", allowed=COUNTRIES),
        Feature(name="spend", dtype=pl.Float64, description="d", min=0),
    )
    view = dataclasses.replace(view, **policy)
    return view, dataclasses.replace(catalog, views={"v": view})


def data(day1_countries: list[str], day1_spend: list[float]) -> pl.DataFrame:
    n = len(day1_countries)
    return frame(
        {
            DAYS[0]: {"country": ["UK"] * n, "spend": [float(i) for i in range(n)]},
            DAYS[1]: {"country": day1_countries, "spend": day1_spend},
        },
        {"country": pl.String, "spend": pl.Float64},
    )


def nothing_before(day):
    return pl.DataFrame()


def test_keep_previous_carries_the_previous_partitions_row_of_each_bad_entity_only():
    view, catalog = context_view(max_bad_fraction=0.2, on_bad_entities="keep_previous")
    countries = ["FR"] * 10
    countries[3] = "Atlantis"  # a country missing from the table
    spend = [100.0] * 10
    spend[7] = float("inf")
    rows = data(countries, spend)
    report = quality.validate(view, catalog, rows)
    assert not report.passed
    held = holdback.hold_back(view, catalog, rows, report, nothing_before)
    assert not held.blocked and held.count == 2 and held.carried == 2
    assert held.held.to_dicts() == [
        {"partition_date": DAYS[1], "user_id": 3, "reason": "expect_column_values_to_be_in_set on country"},
        {"partition_date": DAYS[1], "user_id": 7, "reason": "expect_column_values_to_be_finite on spend"},
    ]
    out = held.frame.filter(pl.col("partition_date") == DAYS[1]).sort("user_id")
    assert out.height == 10 and quality.validate(view, catalog, held.frame).passed
    before = rows.filter((pl.col("partition_date") == DAYS[0]) & (pl.col("user_id") == 3)).row(0, named=True)
    today = rows.filter(pl.col("partition_date") == DAYS[1])["event_timestamp"][0]
    assert out.filter(pl.col("user_id") == 3).row(0, named=True) == {
        **before,
        "event_timestamp": today,
        "partition_date": DAYS[1],
    }  # the previous day's values, stamped with this partition
    assert out.filter(pl.col("user_id") == 7)["spend"].item() == 7.0
    assert out.filter(~pl.col("user_id").is_in([3, 7]))["country"].unique().to_list() == ["FR"]  # the rest updated


def test_keep_previous_reads_the_previous_committed_partition_for_the_runs_first_day():
    view, catalog = context_view(max_bad_fraction=0.5)
    rows = data(["FR", "Atlantis"], [1.0, 2.0]).filter(pl.col("partition_date") == DAYS[1])
    asked = []

    def committed(day):
        asked.append(day.isoformat())
        return data(["FR", "FR"], [5.0, 6.0]).filter(pl.col("partition_date") == DAYS[0]).filter(pl.col("user_id") == 1)

    held = holdback.hold_back(view, catalog, rows, quality.validate(view, catalog, rows), committed)
    assert asked == [DAYS[1]] and held.carried == 1
    assert held.frame.sort("user_id")["country"].to_list() == ["FR", "UK"]

    held = holdback.hold_back(view, catalog, rows, quality.validate(view, catalog, rows), nothing_before)
    assert held.frame["user_id"].to_list() == [0] and held.carried == 0  # no previous value: left out


def test_null_policy_leaves_the_bad_entities_out():
    view, catalog = context_view(max_bad_fraction=0.2, on_bad_entities="null")
    rows = data(["FR", "Atlantis", "FR", "FR", "FR"], [1.0] * 5)
    held = holdback.hold_back(view, catalog, rows, quality.validate(view, catalog, rows), nothing_before)
    assert not held.blocked and held.carried == 0
    assert held.frame.filter(pl.col("partition_date") == DAYS[1])["user_id"].to_list() == [0, 2, 3, 4]
    assert held.frame.filter(pl.col("partition_date") == DAYS[0]).height == 5  # other partitions untouched


def test_past_the_threshold_or_without_one_the_whole_view_blocks():
    rows = data(["FR", "Atlantis", "Atlantis", "FR", "FR"], [1.0] * 5)  # 40% of day 2 is bad
    view, catalog = context_view(max_bad_fraction=0.2)
    held = holdback.hold_back(view, catalog, rows, quality.validate(view, catalog, rows), nothing_before)
    assert held.blocked == [
        "partition 2024-01-02: 2 of 5 entities (40.00%) fail a blocking expectation, more than max_bad_fraction=20.00%"
    ]
    assert held.frame is rows
    view, catalog = context_view()  # the default: any bad row blocks
    held = holdback.hold_back(view, catalog, rows, quality.validate(view, catalog, rows), nothing_before)
    assert held.blocked and held.frame is rows


def test_a_failure_not_pinned_on_rows_blocks_the_view():
    view, catalog = view_of(
        Feature(name="spend", dtype=pl.Float64, description="d", max_null_fraction=0.1),
    )
    view = dataclasses.replace(view, max_bad_fraction=0.5)
    rows = frame({DAYS[0]: {"spend": [None, None, 1.0, 2.0]}}, {"spend": pl.Float64})
    report = quality.validate(view, catalog, rows)
    held = holdback.hold_back(view, catalog, rows, report, nothing_before)
    assert len(held.blocked) == 1 and "not pinned on entities" in held.blocked[0]


def test_an_expectation_only_ge_evaluates_is_pinned_on_its_rows_through_ge():
    view, catalog = view_of(
        Feature(
            name="code",
            dtype=pl.String,
            description="d",
            expectations=(Expectation("expect_column_values_to_match_regex", regex="^[A-Z]{2}$"),),
        ),
    )
    view = dataclasses.replace(view, max_bad_fraction=0.5, on_bad_entities="null")
    rows = frame({DAYS[0]: {"code": ["GB", "gb!", "FR", "x"]}}, {"code": pl.String})
    report = quality.validate(view, catalog, rows)
    held = holdback.hold_back(view, catalog, rows, report, nothing_before)
    assert not held.blocked and held.held["user_id"].to_list() == [1, 3]
    assert held.frame["code"].to_list() == ["GB", "FR"]
