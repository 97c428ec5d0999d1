"""The warn-level outlier check: robust statistics over each feature's own history, offending entities listed."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from feature_pipelines.checks.outliers import outliers
from feature_pipelines.orchestration.feature_checks import OUTLIER_CHECK, outlier_check
from feature_pipelines.spec import Feature
from tests.checks.test_quality import view_of

UNITS = Feature(name="units", dtype=pl.Int64, description="d", min=0)
RATE = Feature(name="rate", dtype=pl.Float64, description="d", min=0, max=1)
SPEND = Feature(name="spend", dtype=pl.Float64, description="d", min=0, outlier_z=None)


def history(days: int = 28, n: int = 300, seed: int = 1) -> pl.DataFrame:
    """Heavy-tailed counts (a few big buyers every day), a rate, and spend."""
    rng = np.random.default_rng(seed)
    parts = []
    for d in range(days):
        parts.append(
            pl.DataFrame(
                {
                    "user_id": np.arange(n),
                    "units": rng.lognormal(3, 1.2, n).astype(np.int64),
                    "rate": rng.random(n),
                    "spend": rng.lognormal(5, 1, n),
                    "partition_date": f"2024-01-{d + 1:02d}",
                }
            )
        )
    return pl.concat(parts)


def today(units: list[int], rate: list[float] | None = None) -> pl.DataFrame:
    n = len(units)
    return pl.DataFrame(
        {
            "user_id": list(range(1000, 1000 + n)),
            "units": units,
            "rate": rate or [0.5] * n,
            "spend": [1e12] * n,
            "partition_date": ["2024-01-29"] * n,
        }
    )


def test_an_absurd_value_is_listed_and_the_busiest_normal_entities_are_not():
    ref = history()
    biggest = int(ref["units"].max())
    current = today([20, 0, biggest, 1_000_000_000, 50])
    (units,) = outliers((UNITS, RATE, SPEND), "user_id", ref, current)  # rate is bounded, spend opted out
    assert units.feature == "units" and units.evaluated and units.reference_values == ref.height
    assert [r["user_id"] for r in units.rows] == [1003]
    assert units.rows[0]["value"] == 1_000_000_000 and units.rows[0]["robust_z"] > 10


def test_a_few_absurd_values_in_the_history_do_not_move_the_statistics():
    ref = history()
    spoiled = pl.concat([ref, ref.head(20).with_columns(pl.lit(10**12).alias("units"))])
    clean, dirty = (outliers((UNITS,), "user_id", r, today([1_000_000_000]))[0] for r in (ref, spoiled))
    assert abs(clean.median - dirty.median) < 0.05 and abs(clean.scale - dirty.scale) / clean.scale < 0.05
    assert dirty.count == 1


def test_a_history_without_spread_is_not_evaluated():
    ref = history().with_columns(pl.lit(0).alias("units"))
    (units,) = outliers((UNITS,), "user_id", ref, today([5]))
    assert not units.evaluated and units.count == 0


def test_the_dagster_check_warns_and_lists_the_entities():
    view, _ = view_of(UNITS, RATE, SPEND)
    ref = history()
    result = outlier_check(view, "user_id", ref, today([30, 10**9, 10**10]), date(2024, 1, 29))
    assert result.check_name == OUTLIER_CHECK and not result.passed and result.severity.value == "WARN"
    md = {k: v.value for k, v in result.metadata.items()}
    assert md["n_outliers"] == 2 and md["features"] == "units (2)" and md["partition"] == "2024-01-29"
    table = md["outlier_entities"]
    assert table.index("| units | 1002 | 10000000000") < table.index("| units | 1001 | 1000000000")  # worst first
    assert "| 1000 |" not in table
    short = outlier_check(
        view, "user_id", ref.filter(pl.col("partition_date") < "2024-01-05"), today([10**9]), date(2024, 1, 29)
    )
    assert short.passed and "not evaluated" in short.metadata["note"].value  # 4 partitions of history: too few
