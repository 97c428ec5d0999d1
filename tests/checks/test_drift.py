"""Drift metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from feature_pipelines.checks.drift import decile_edges, drift, js_distance, psi, psi_from_shares, shares
from feature_pipelines.spec import Feature


def test_psi_matches_a_hand_computation():
    reference, current = [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]
    by_hand = (
        (0.1 - 0.25) * math.log(0.1 / 0.25)
        + (0.2 - 0.25) * math.log(0.2 / 0.25)
        + (0.3 - 0.25) * math.log(0.3 / 0.25)
        + (0.4 - 0.25) * math.log(0.4 / 0.25)
    )
    assert psi_from_shares(np.array(reference), np.array(current)) == pytest.approx(by_hand)
    assert by_hand == pytest.approx(0.2282, abs=1e-4)


def test_psi_on_values_uses_reference_deciles():
    reference = np.arange(100, dtype=float)  # deciles at 9.9, 19.8, ...: ten bins of ten values
    edges = decile_edges(reference)
    assert len(edges) == 9 and shares(reference, edges) == pytest.approx([0.1] * 10)
    current = np.concatenate([np.full(50, 5.0), np.full(50, 95.0)])  # half in the first bin, half in the last
    expected = psi_from_shares(np.full(10, 0.1), np.array([0.5] + [0] * 8 + [0.5]))
    assert psi(reference, current) == pytest.approx(expected)
    assert psi(reference, reference) == pytest.approx(0.0)


def test_js_distance_bounds_and_value():
    a = pl.Series("c", ["x"] * 50 + ["y"] * 50)
    assert js_distance(a, a) == pytest.approx(0.0)
    assert js_distance(pl.Series("c", ["x"] * 10), pl.Series("c", ["y"] * 10)) == pytest.approx(1.0)
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4); JSD = 1/2 KL(p||m) + 1/2 KL(q||m), base 2.
    kl_p = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_q = math.log2(1 / 0.75)
    assert js_distance(a, pl.Series("c", ["x"] * 30)) == pytest.approx(math.sqrt(0.5 * kl_p + 0.5 * kl_q))


def test_drift_flags_only_real_shifts():
    rng = np.random.default_rng(0)
    feats = (Feature(name="n", dtype=pl.Float64, description="d"), Feature(name="c", dtype=pl.String, description="d"))
    ref = pl.DataFrame({"n": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    same = pl.DataFrame({"n": rng.normal(size=1000), "c": rng.choice(["a", "b"], 1000)})
    moved = pl.DataFrame({"n": rng.normal(loc=2, size=1000), "c": ["a"] * 1000})
    assert not any(d.drifted for d in drift(feats, ref, same))
    assert {d.feature for d in drift(feats, ref, moved) if d.drifted} == {"n", "c"}
