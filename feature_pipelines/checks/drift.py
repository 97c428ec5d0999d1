"""Distribution drift of a new partition against a reference window of earlier partitions.

Numeric features: the Population Stability Index over the reference's deciles; a value that holds a
decile or more of the reference (a constant feature, a zero-inflated count) gets a bin of its own, so
values that move off it land in another bin. Categorical features (strings, booleans): the Jensen-Shannon
distance (base 2, in [0, 1]) over the categories. Every feature: its null share (NaN counts as null)
drifts when it rises more than 0.2 above the reference's, and always when the feature turned all-null
while the reference had values (there is nothing left to compare the distribution of). Defaults are the
usual "significant shift" levels, so ordinary day-to-day noise does not page anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from feature_pipelines.spec import Feature

DEFAULT_PSI = 0.25
DEFAULT_JS = 0.2
DEFAULT_NULL_SHIFT = 0.2
EPSILON = 1e-4
"""Floor for an empty bin's share, so that PSI stays finite (the usual convention)."""


@dataclass(frozen=True)
class Drift:
    feature: str
    metric: str  # "psi", "js" or "null_share"
    value: float
    threshold: float
    all_null: bool = False
    """The feature has no value left in the current partition (and had some in the reference)."""

    @property
    def drifted(self) -> bool:
        return self.all_null or self.value > self.threshold

    def describe(self) -> str:
        if self.all_null:
            return f"{self.feature} (turned all-null; null share threshold {self.threshold:.3f})"
        return f"{self.feature} ({self.metric} {self.value:.3f} > {self.threshold})"


def psi_from_shares(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI = sum over bins of (current - reference) * ln(current / reference), shares floored at EPSILON."""
    p = np.clip(np.asarray(reference, dtype=float), EPSILON, None)
    q = np.clip(np.asarray(current, dtype=float), EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def decile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges: the reference's quantiles (duplicates merged). A value found at two quantiles holds
    at least a `1/bins` share of the reference (a point mass: all of a constant reference): it gets a bin of
    its own, `[v, next float after v)`, so values below and above it are told apart from it."""
    quantiles = np.quantile(reference, np.linspace(0, 1, bins + 1))
    values, counts = np.unique(quantiles, return_counts=True)
    masses = values[counts > 1]
    return np.unique(np.concatenate([quantiles[1:-1], masses, np.nextafter(masses, np.inf)]))


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of values in each bin: (-inf, e0), [e0, e1), ..., [e_last, inf)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    edges = decile_edges(reference, bins)
    return psi_from_shares(shares(reference, edges), shares(current, edges))


def js_distance(reference: pl.Series, current: pl.Series) -> float:
    """Jensen-Shannon distance between the category frequencies of two series (nulls are a category)."""
    ref = reference.cast(pl.String).fill_null("<null>").value_counts()
    cur = current.cast(pl.String).fill_null("<null>").value_counts()
    name = reference.name
    both = ref.join(cur, on=name, how="full", coalesce=True, suffix="_cur").fill_null(0)
    p = both["count"].to_numpy().astype(float)
    q = both["count_cur"].to_numpy().astype(float)
    p, q = p / max(p.sum(), 1), q / max(q.sum(), 1)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(np.sqrt(max(0.5 * kl(p) + 0.5 * kl(q), 0.0)))


def _values(series: pl.Series) -> pl.Series:
    """The values that are not missing: nulls dropped, and NaN too for floats."""
    series = series.drop_nulls()
    return series.filter(~series.is_nan()) if series.dtype.is_float() else series


def null_share(series: pl.Series) -> float:
    return 1 - _values(series).len() / series.len() if series.len() else 0.0


def drift(features: tuple[Feature, ...], reference: pl.DataFrame, current: pl.DataFrame) -> list[Drift]:
    out = []
    for feat in features:
        dtype = feat.polars_dtype
        ref, cur = reference[feat.name], current[feat.name]
        ref_null, cur_null = null_share(ref), null_share(cur)
        out.append(
            Drift(
                feat.name,
                "null_share",
                cur_null,
                min(ref_null + DEFAULT_NULL_SHIFT, 1.0),
                all_null=cur.len() > 0 and cur_null == 1.0 and ref_null < 1.0,
            )
        )
        if dtype.is_numeric():
            ref_v, cur_v = _values(ref).to_numpy(), _values(cur).to_numpy()
            if len(ref_v) == 0 or len(cur_v) == 0:
                continue  # no distribution on one side: the null share above says so
            out.append(Drift(feat.name, "psi", psi(ref_v, cur_v), feat.drift_threshold or DEFAULT_PSI))
        elif dtype in (pl.String, pl.Boolean):
            out.append(Drift(feat.name, "js", js_distance(ref, cur), feat.drift_threshold or DEFAULT_JS))
    return out
