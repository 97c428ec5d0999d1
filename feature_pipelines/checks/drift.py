"""Distribution drift of a new partition against a reference window of earlier partitions.

Numeric features: the Population Stability Index over the reference's deciles. Categorical features
(strings, booleans): the Jensen-Shannon distance (base 2, in [0, 1]) over the categories. Defaults are
the usual "significant shift" levels, so ordinary day-to-day noise does not page anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from feature_pipelines.spec import Feature

DEFAULT_PSI = 0.25
DEFAULT_JS = 0.2
EPSILON = 1e-4
"""Floor for an empty bin's share, so that PSI stays finite (the usual convention)."""


@dataclass(frozen=True)
class Drift:
    feature: str
    metric: str  # "psi" or "js"
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.value > self.threshold


def psi_from_shares(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI = sum over bins of (current - reference) * ln(current / reference), shares floored at EPSILON."""
    p = np.clip(np.asarray(reference, dtype=float), EPSILON, None)
    q = np.clip(np.asarray(current, dtype=float), EPSILON, None)
    return float(np.sum((q - p) * np.log(q / p)))


def decile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges: the reference's quantiles (duplicates merged, so constant data is one bin)."""
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])


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


def drift(features: tuple[Feature, ...], reference: pl.DataFrame, current: pl.DataFrame) -> list[Drift]:
    out = []
    for feat in features:
        dtype = feat.polars_dtype
        ref, cur = reference[feat.name], current[feat.name]
        if dtype.is_numeric():
            ref_v, cur_v = ref.drop_nulls().to_numpy(), cur.drop_nulls().to_numpy()
            if len(ref_v) == 0 or len(cur_v) == 0:
                continue
            out.append(Drift(feat.name, "psi", psi(ref_v, cur_v), feat.drift_threshold or DEFAULT_PSI))
        elif dtype in (pl.String, pl.Boolean):
            out.append(Drift(feat.name, "js", js_distance(ref, cur), feat.drift_threshold or DEFAULT_JS))
    return out
