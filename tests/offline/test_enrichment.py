"""Identity-keyed views computed without Dagster: events resolved to persons through a real alias map (Delta)
as known at each partition's end, lookups point in time, and the same rows when recomputed after a merge."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines.identity.graph import person_id
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.offline.compute import compute_partitions, partition_end
from feature_pipelines.offline.enrichment import MissingInputError, ViewInputs, derive_lookups
from feature_pipelines.spec import PARTITION_DATE

DAY1, DAY2 = date(2011, 3, 1), date(2011, 3, 2)
T1 = datetime(2011, 3, 1, 9, tzinfo=UTC)


def events(rows: list[tuple]) -> pl.DataFrame:
    """(hours after T1, anonymous_id, customer_id, event_type, stock_code) -> behaviour events (raw schema)."""
    n = len(rows)
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_time": [T1 + timedelta(hours=r[0]) for r in rows],
            "anonymous_id": [r[1] for r in rows],
            "device_id": [None] * n,
            "customer_id": [r[2] for r in rows],
            "event_type": [r[3] for r in rows],
            "session_id": [f"s-{r[1]}-{int(r[0] // 24)}" for r in rows],
            "stock_code": [r[4] for r in rows],
            "invoice_no": [None] * n,
            "device_type": ["mobile"] * n,
            "locale": ["en-GB"] * n,
            "referrer": ["direct"] * n,
        },
        schema_overrides={
            "customer_id": pl.Int64,
            "device_id": pl.String,
            "invoice_no": pl.String,
            "stock_code": pl.String,
            "event_time": pl.Datetime("us", "UTC"),
        },
    ).with_columns(pl.col("event_time").dt.date().cast(pl.String).alias("event_date"))


RETAIL = pl.DataFrame(
    {
        "invoice_no": ["536365", "536366"],
        "stock_code": ["85123A", "20725"],
        "description": ["WHITE HANGING HEART T-LIGHT HOLDER", "LUNCH BAG RED RETROSPOT"],
        "quantity": [6, 10],
        "invoice_date": [T1 - timedelta(days=30), T1 + timedelta(hours=30)],  # 20725 first sold on day 2
        "unit_price": [2.55, 1.65],
        "customer_id": [17850, 13047],
        "country": ["United Kingdom", "United Kingdom"],
    },
    schema_overrides={"invoice_date": pl.Datetime("us", "UTC")},
)

# Day 1: cookie A browses anonymously, cookie B is customer 7's. Day 2: A logs in as customer 7 (a merge).
DAY1_EVENTS = [
    (0, "A", None, "product_view", "85123A"),
    (1, "A", None, "product_view", "20725"),
    (2, "B", 7, "login", None),
    (3, "B", 7, "add_to_cart", "85123A"),
    (4, "unknown", None, "page_view", None),  # a broken tracker's cookie: nobody's
]
DAY2_EVENTS = [(26, "A", 7, "login", None), (27, "A", 7, "purchase", "20725"), (28, "N", None, "page_view", None)]


def compute(catalog, store: IdentityStore, raw: pl.DataFrame, days: list[date]) -> pl.DataFrame:
    view = catalog.views["person_profile"]
    inputs = ViewInputs(aliases=store.alias_map(), lookups=derive_lookups(view, {"online_retail": RETAIL}))
    return compute_partitions(view, catalog, raw, days, inputs)


def test_events_become_persons_as_known_at_each_partition_end(tmp_path, catalog):
    store = IdentityStore(tmp_path)
    day1 = events(DAY1_EVENTS)
    store.full(day1, now=partition_end(DAY1))  # the day's identity run, known at the day's end
    both = pl.concat([day1, events(DAY2_EVENTS)])
    store.update(events(DAY2_EVENTS), now=partition_end(DAY2))
    out = compute(catalog, store, both, [DAY1, DAY2])

    a, c7, n = person_id("anonymous_id", "A"), person_id("customer_id", "7"), person_id("anonymous_id", "N")
    first = out.filter(pl.col(PARTITION_DATE) == str(DAY1))
    # Day 1: A is a person of their own; B is customer 7's person; the "unknown" cookie is nobody.
    assert sorted(first["person_id"]) == sorted([a, c7])
    row = first.filter(pl.col("person_id") == a).row(0, named=True)
    assert row["product_views_30d"] == 2
    # 85123A was sold before day 1 (lighting); 20725 only from day 2: no category yet, so "other".
    assert (row["interest_lighting"], row["interest_other"], row["interest_bags"]) == (0.5, 0.5, 0.0)
    second = out.filter(pl.col(PARTITION_DATE) == str(DAY2))
    # Day 2: A's login merged it with customer 7's person; A's id is the older, it survives and holds all
    # the events of both (the unknown cookie's aside).
    merged = store.alias_map().current().filter(pl.col("identifier") == "7")["person_id"][0]
    assert merged == a
    assert sorted(second["person_id"]) == sorted([a, n])
    row = second.filter(pl.col("person_id") == a).row(0, named=True)
    assert (row["events_30d"], row["purchases_30d"], row["add_to_carts_30d"]) == (6, 1, 1)
    assert row["interest_bags"] > 0  # 20725 is a bag from day 2 on
    assert len(row["profile_vector"]) == 32

    # Recomputed after the merge, day 1 is unchanged: identity as known at its end, not as known now.
    again = compute(catalog, store, both, [DAY1])
    assert again.equals(first)


def test_a_visitor_the_map_does_not_know_yet_is_their_own_person(tmp_path, catalog):
    store = IdentityStore(tmp_path)
    day1 = events(DAY1_EVENTS)
    store.full(day1, now=partition_end(DAY2))  # the identity run committed after day 1's end
    out = compute(catalog, store, day1, [DAY1])
    # Known at day 1's end: nothing; every cookie is its own person, customer 7's cookie B included.
    assert sorted(out["person_id"]) == sorted([person_id("anonymous_id", "A"), person_id("anonymous_id", "B")])


def test_an_identity_keyed_view_without_an_alias_map_says_what_is_missing(catalog):
    view = catalog.views["person_profile"]
    with pytest.raises(MissingInputError, match="identity"):
        compute_partitions(view, catalog, events(DAY1_EVENTS), [DAY1])
    with pytest.raises(MissingInputError, match="online_retail"):
        derive_lookups(view, {})
