"""The person profile's rules on hand-made events: values checked against what a person would count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from feature_defs.person_rules import (
    CATEGORIES,
    categorize,
    item_categories,
    person_location,
    person_profile,
    projection,
)
from feature_pipelines.spec import WindowContext

END = datetime(2011, 12, 10, tzinfo=UTC)
CTX = WindowContext(as_of=END, windows=(timedelta(days=1), timedelta(days=7), timedelta(days=30)))


def ev(person, hours_ago, kind, session, code=None, category="other", device="mobile", locale="en-GB", eid=None):
    return {
        "person_id": person,
        "event_time": END - timedelta(hours=hours_ago),
        "event_id": eid or f"{person}-{hours_ago}-{kind}",
        "event_type": kind,
        "session_id": session,
        "stock_code": code,
        "category": category,
        "device_type": device,
        "locale": locale,
    }


EVENTS = pl.DataFrame(
    [
        # p1: a session 20 days ago that bought a bag; today a session comparing three lamps, then a cart.
        ev("p1", 480, "product_view", "s1", "20725", "bags", device="desktop"),
        ev("p1", 479.5, "purchase", "s1", "20725", "bags", device="desktop"),
        ev("p1", 2, "product_view", "s2", "21000", "lighting"),
        ev("p1", 1.9, "product_view", "s2", "21001", "lighting"),
        ev("p1", 1.8, "product_view", "s2", "21002", "lighting"),
        ev("p1", 1.5, "add_to_cart", "s2", "21002", "lighting", locale="fr-FR"),
        # p2: a visitor who never logged in, browsing pages only, 3 days ago.
        ev("p2", 72, "page_view", "s3", device="tablet", locale="de-DE"),
        ev("p2", 71, "search", "s3", device="tablet", locale="de-DE"),
    ]
)


def test_profile_values_are_what_the_events_say():
    out = person_profile(EVENTS.lazy(), CTX).collect()
    p1, p2 = out.row(0, named=True), out.row(1, named=True)
    assert (p1["person_id"], p2["person_id"]) == ("p1", "p2")
    assert (p1["sessions_1d"], p1["sessions_7d"], p1["sessions_30d"]) == (1, 1, 2)
    assert (p1["events_1d"], p1["events_7d"], p1["events_30d"]) == (4, 4, 6)
    assert (p1["product_views_30d"], p1["add_to_carts_30d"], p1["purchases_30d"]) == (4, 1, 1)
    assert p1["view_to_purchase_rate_30d"] == 0.25
    assert p1["avg_session_minutes_30d"] == pytest.approx((30 + 30) / 2)
    assert p1["last_seen_at"] == END - timedelta(hours=1.5)
    assert (p1["last_device_type"], p1["last_locale"]) == ("mobile", "fr-FR")
    # Interests: weighted shares (view 1, cart 3, purchase 5): bags 1+5, lighting 3+3 -> 0.5 each.
    assert p1["interest_bags"] == 0.5 and p1["interest_lighting"] == 0.5 and p1["interest_kitchen"] == 0.0
    assert sum(p1[f"interest_{c}"] for c in CATEGORIES) == pytest.approx(1.0)
    assert (p1["intent_ready_to_buy"], p1["intent_comparing"], p1["intent_browsing"]) == (True, True, False)
    assert (p2["intent_ready_to_buy"], p2["intent_comparing"], p2["intent_browsing"]) == (False, False, True)
    assert p2["view_to_purchase_rate_30d"] is None and p2["avg_session_minutes_30d"] == 60.0
    assert all(p2[f"interest_{c}"] == 0.0 for c in CATEGORIES) and p2["profile_vector"] == [0.0] * 32
    vector = np.array(p1["profile_vector"], dtype=np.float32)
    assert out.schema["profile_vector"] == pl.List(pl.Float32) and vector.shape == (32,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    scores = np.array([p1[f"interest_{c}"] for c in CATEGORIES], dtype=np.float32)
    expected = scores @ projection()
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)


def test_the_profile_is_deterministic_whatever_the_row_order():
    a = person_profile(EVENTS.lazy(), CTX).collect()
    b = person_profile(EVENTS.reverse().lazy(), CTX).collect()
    assert a.equals(b)


def test_categories_come_from_descriptions_by_ordered_keyword_rules():
    descriptions = pl.Series(
        ["WHITE HANGING HEART T-LIGHT HOLDER", "JUMBO BAG RED RETROSPOT", "CHRISTMAS LIGHTS", None, "FOLDING SHOE TIDY"]
    )
    got = pl.select(categorize(pl.lit(descriptions))).to_series().to_list()
    assert got == ["lighting", "bags", "christmas", "other", "other"]
    t0 = datetime(2011, 1, 5, 9, tzinfo=UTC)
    retail = pl.LazyFrame(
        {
            "stock_code": ["85123A", "85123A", "85123A", "22423", "22086", "POST"],
            "description": ["HEART T-LIGHT HOLDER", "JUMBO BAG", "XMAS HEART", "REGENCY CAKESTAND", None, "POSTAGE"],
            "quantity": [6, 2, 1, -1, 4, 1],
            "unit_price": [2.55, 1.0, 0.0, 12.75, 2.1, 18.0],
            "invoice_date": [t0 + timedelta(days=d) for d in (3, 1, 0, 2, 0, 0)],
        }
    )
    # 85123A: its first sale (the XMAS line has price 0: not a sale) says BAG; 22423 was only cancelled,
    # 22086 has no description, POST is no product: no category.
    assert item_categories(retail).collect().rows() == [("85123A", "bags", t0 + timedelta(days=1))]


def test_the_sensitive_location_is_the_most_seen_country():
    out = person_location(EVENTS.lazy(), CTX).collect()
    assert out.rows() == [("p1", "GB"), ("p2", "DE")]
