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


def test_a_constant_reference_separates_values_that_moved():
    reference = np.full(1000, 3.0)
    edges = decile_edges(reference)
    # (-inf, 3), [3, 3+), [3+, inf): the constant has a bin of its own.
    assert len(edges) == 2 and edges[0] == 3.0 and edges[1] > 3.0
    assert shares(reference, edges) == pytest.approx([0, 1, 0])
    moved = np.full(500, 5.0)
    # All of the current is in a bin the reference left empty (floored at EPSILON): by hand,
    # (1e-4 - 1) ln(1e-4 / 1) + (1 - 1e-4) ln(1 / 1e-4) = 2 (1 - 1e-4) ln(1e4).
    assert psi(reference, moved) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4))
    assert psi(reference, np.full(500, 1.0)) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4))  # moved down
    assert psi(reference, np.full(500, 3.0)) == pytest.approx(0.0)
    # Half moved: shares (0, 0.5, 0.5) against (0, 1, 0).
    half = np.concatenate([np.full(250, 3.0), np.full(250, 7.0)])
    by_hand = (0.5 - 1) * math.log(0.5 / 1) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi(reference, half) == pytest.approx(by_hand)
    feats = (Feature(name="n", dtype=pl.Float64, description="d"),)
    (null_share, score) = drift(feats, pl.DataFrame({"n": reference}), pl.DataFrame({"n": moved}))
    assert score.metric == "psi" and score.drifted and not null_share.drifted


def test_a_zero_inflated_reference_keeps_zeros_apart_from_small_values():
    reference = np.concatenate([np.zeros(600), np.arange(1, 401, dtype=float)])
    edges = decile_edges(reference)
    assert 0.0 in edges and np.nextafter(0.0, 1.0) in edges
    # Zeros turned into 0.5s: before, [0, q7) held both and PSI was 0.
    current = np.concatenate([np.full(600, 0.5), np.arange(1, 401, dtype=float)])
    assert psi(reference, current) > 1.0


def test_a_feature_that_turned_all_null_fails_drift():
    feats = (Feature(name="n", dtype=pl.Float64, description="d"), Feature(name="c", dtype=pl.String, description="d"))
    ref = pl.DataFrame({"n": [1.0, 2.0, None, 4.0] * 25, "c": ["a", "b", None, "a"] * 25})
    gone = pl.DataFrame({"n": [None] * 40, "c": ["a", "b"] * 20}, schema={"n": pl.Float64, "c": pl.String})
    results = {(d.feature, d.metric): d for d in drift(feats, ref, gone)}
    assert ("n", "psi") not in results  # no distribution to compare ...
    nulls = results[("n", "null_share")]  # ... but the null share says it: 100% against 25%
    assert nulls.drifted and nulls.all_null and nulls.value == 1.0 and nulls.threshold == pytest.approx(0.45)
    assert "turned all-null" in nulls.describe()
    assert not results[("c", "null_share")].drifted  # 0% null against 25%: fewer nulls is not drift
    nan = pl.DataFrame({"n": [float("nan")] * 40, "c": ["a"] * 40})  # NaN is missing too
    assert {d.feature for d in drift(feats, ref, nan) if d.metric == "null_share" and d.drifted} == {"n"}
    # A rise of more than 0.2 drifts; a feature that was always null does not.
    more = pl.DataFrame({"n": [None, None, 1.0, 2.0] * 10, "c": ["a"] * 40})
    assert results_of(drift(feats, ref, more))["n"].drifted  # 50% against 25%
    always = pl.DataFrame({"n": [None] * 10}, schema={"n": pl.Float64})
    assert not drift(feats[:1], always, always)[0].drifted


def results_of(drifts):
    return {d.feature: d for d in drifts if d.metric == "null_share"}
