"""Scored edges from a shared network fingerprint: merged above the threshold, the review band written to
`identity/review` and not merged, weak or public-network evidence dropped; a scored edge can be split."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from feature_pipelines.identity.graph import person_id
from feature_pipelines.identity.probabilistic import Scoring
from feature_pipelines.identity.stitch import IdentityStore

T0 = datetime(2011, 3, 1, 9, tzinfo=UTC)


def ev(rows: list[tuple]) -> pl.DataFrame:
    """(hours after T0, anonymous_id, customer_id, network_id) on desktop browsers in en-GB."""
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "event_time": [T0 + timedelta(hours=r[0]) for r in rows],
            "anonymous_id": [r[1] for r in rows],
            "device_id": [None] * len(rows),
            "customer_id": [r[2] for r in rows],
            "event_type": ["page_view"] * len(rows),
            "network_id": [r[3] for r in rows],
            "device_type": ["desktop"] * len(rows),
            "locale": ["en-GB"] * len(rows),
        },
        schema_overrides={"customer_id": pl.Int64, "device_id": pl.String, "event_time": pl.Datetime("us", "UTC")},
    )


ROWS = [
    (0, "A", 7, "N1"),  # customer 7 at home
    (48, "R", None, "N1"),  # two days later a fresh cookie on the same home network, never logs in: 1.0
    (1, "H1", 8, "N2"),  # customer 8 at home from 10:00 to 11:00...
    (2, "H1", 8, "N2"),
    (1.5, "H2", None, "N2"),  # ...someone else browsing there at the same time: 0.75, review
    *[(t, f"L{i}", None, "N3") for i in range(5) for t in (2, 3)],  # five at once behind one network: 0.64, dropped
    *[(3 + i, f"P{i}", None, "N4") for i in range(8)],  # a public network: no evidence
]


def person_of(store: IdentityStore, value: str) -> str:
    p = store.read("persons")
    return p.filter((pl.col("identifier_type") == "anonymous_id") & (pl.col("identifier") == value))["person_id"][0]


def test_threshold_review_band_and_split(tmp_path):
    store = IdentityStore(tmp_path)
    store.full(ev(ROWS), now=T0 + timedelta(days=3))
    assert person_of(store, "R") == person_of(store, "A") == person_id("customer_id", "7")  # merged
    assert person_of(store, "H2") == person_id("anonymous_id", "H2")  # review band: not merged
    review = store.read("review")
    assert review.select("anonymous_id", "other", "score").rows() == [("H2", "H1", 0.75)]
    scored = store.read("edges").filter(pl.col("other_type") == "anonymous_id")
    assert scored.select("anonymous_id", "other", "status").rows() == [("R", "A", "merged")]
    assert all(person_of(store, f"L{i}") == person_id("anonymous_id", f"L{i}") for i in range(5))
    assert all(person_of(store, f"P{i}") == person_id("anonymous_id", f"P{i}") for i in range(8))
    # A reviewer who disagrees splits the scored edge like any other.
    store.split("R", "A", now=T0 + timedelta(days=4))
    assert person_of(store, "R") == person_id("anonymous_id", "R")


def test_a_lower_threshold_merges_the_review_band(tmp_path):
    store = IdentityStore(tmp_path, scoring=Scoring(merge_threshold=0.7, review_from=0.6))
    store.full(ev(ROWS), now=T0 + timedelta(days=3))
    assert person_of(store, "H2") == person_of(store, "H1")
    assert store.read("review")["anonymous_id"].to_list() == ["L0", "L1", "L2", "L3", "L4"]


def test_incremental_scoring_equals_full(tmp_path):
    inc, full = IdentityStore(tmp_path / "inc"), IdentityStore(tmp_path / "full")
    first, second = ROWS[:1] + ROWS[2:], ROWS[1:2]  # R arrives on a later day
    inc.full(ev(first), now=T0 + timedelta(days=1))
    inc.update(ev(second).with_columns(pl.lit("e-late").alias("event_id")), now=T0 + timedelta(days=3))
    full.full(ev(ROWS), now=T0 + timedelta(days=3))
    assert inc.read("persons").equals(full.read("persons"))
    assert person_of(inc, "R") == person_of(inc, "A")
