"""Outliers: a feature's values in the newest partition against that feature's own history.

Ranges in the spec catch the impossible (a negative count); they cannot catch the absurd (a 1e9-unit
order is a valid count). This check compares each entity's value with the distribution of the same feature
over the previous partitions, with robust statistics that a few absurd values do not move: the median and
the median absolute deviation (MAD), on a signed log scale (`sign(x) log(1 + |x|)`: counts and amounts
are heavy-tailed, and on a linear scale every busy customer would be listed every day). An entity whose robust z-score `|x - median| / (1.4826 MAD)` is above
the feature's `outlier_z` is listed. When more than half the history sits on one value (MAD = 0, e.g. a
count that is mostly 1), the 5%-95% range stands in (/ 3.29); a history that sits on one value for more
than 90% of its rows (a return rate that is mostly 0) has no robust spread and is not evaluated. A feature bounded both ways in the spec (`min` and `max`, e.g. a rate) is left to the gate.

It warns, never blocks: an outlier may be the best customer of the year.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from feature_pipelines.spec import Feature

MAD_SCALE = 1.4826
"""MAD * this estimates the standard deviation of a normal distribution."""
NORMAL_90 = 3.2897
"""The 5%-95% range of a normal distribution, in standard deviations."""


@dataclass(frozen=True)
class FeatureOutliers:
    """One feature's outliers in the current partition."""

    feature: str
    median: float
    """On the signed log scale, as `scale`."""
    scale: float
    """The robust standard deviation the z-scores divide by (0: no spread, not evaluated)."""
    threshold: float
    reference_values: int
    rows: list[dict] = field(default_factory=list)
    """Every outlier, the most extreme first: the entity, its value and its robust z-score."""

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def evaluated(self) -> bool:
        return self.scale > 0


def outliers(
    features: tuple[Feature, ...], key: str, reference: pl.DataFrame, current: pl.DataFrame
) -> list[FeatureOutliers]:
    """The outliers of each numeric feature with an `outlier_z` in `current` (one partition's rows), against
    the feature's values in `reference` (the partitions before it)."""
    out = []
    for feat in features:
        dtype = feat.polars_dtype
        if feat.outlier_z is None or not dtype.is_numeric() or feat.name not in reference.columns:
            continue
        if feat.min is not None and feat.max is not None:
            continue  # bounded both ways: the gate's range is the whole story (a rate in 0..1)
        c = _symlog(pl.col(feat.name).cast(pl.Float64))
        history = reference.select(c).filter(c.is_not_null() & c.is_finite())[feat.name]
        if history.len() == 0:
            continue
        median = float(history.median())
        deviations = (history - median).abs()
        scale = MAD_SCALE * float(deviations.median())
        if scale == 0:  # more than half the history on one value: the spread of the central 90% instead
            scale = float(history.quantile(0.95) - history.quantile(0.05)) / NORMAL_90
        found = FeatureOutliers(feat.name, median, scale, feat.outlier_z, history.len())
        if scale > 0 and feat.name in current.columns:
            flagged = (
                current.select(key, pl.col(feat.name).alias("value"), c.alias("scaled"))
                .filter(pl.col("scaled").is_not_null() & pl.col("scaled").is_finite())
                .with_columns(((pl.col("scaled") - median).abs() / scale).alias("robust_z"))
                .drop("scaled")
                .filter(pl.col("robust_z") > feat.outlier_z)
                .sort("robust_z", key, descending=[True, False])
            )
            found = FeatureOutliers(feat.name, median, scale, feat.outlier_z, history.len(), flagged.to_dicts())
        out.append(found)
    return out


def _symlog(x: pl.Expr) -> pl.Expr:
    """sign(x) log(1 + |x|): counts and amounts are heavy-tailed (the best customer spends a hundred times
    the median one, every day); on this scale a normal busy day is a few robust deviations away, a
    1e9-unit order dozens."""
    return x.sign() * x.abs().log1p()
