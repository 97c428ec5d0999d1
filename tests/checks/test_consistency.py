"""Serving and training agree (consistency), and a version reads back as its Delta rows (round trip), on a
view with the values plain `==` gets wrong: NaN floats, naive datetimes, nullable ints and booleans."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines.catalog import Catalog
from feature_pipelines.checks import consistency
from feature_pipelines.checks.equality import same_value
from feature_pipelines.offline.delta import overwrite_partitions, table_version
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.publish import publish
from feature_pipelines.spec import BatchSource, Entity, Feature, FeatureView
from tests.conftest import push

user = Entity(name="user", join_key="user_id", dtype=pl.Int64)
source = BatchSource(
    name="src",
    location="x",
    format="parquet",
    schema={"ts": pl.Datetime("us")},
    event_time="ts",
    start=date(2024, 1, 1),
)
mixed = FeatureView(
    name="mixed",
    entity=user,
    source=source,
    owner="team:t",
    description="d",
    features=(
        Feature(name="score", dtype=pl.Float64, description="d", nullable=True),
        Feature(name="seen_at", dtype=pl.Datetime("us"), description="naive", nullable=True),
        Feature(name="visits", dtype=pl.Int64, description="d", nullable=True),
        Feature(name="active", dtype=pl.Boolean, description="d", nullable=True),
    ),
    transformation=lambda e, c: e,
    offline_lookback=timedelta(days=3),
)
CATALOG = Catalog(entities={"user": user}, sources={"src": source}, views={"mixed": mixed}, services={})
SCHEMA = {
    "user_id": pl.Int64,
    "score": pl.Float64,
    "seen_at": pl.Datetime("us"),
    "visits": pl.Int64,
    "active": pl.Boolean,
    "event_timestamp": pl.Datetime("us", "UTC"),
    "partition_date": pl.String,
}
DAY, BEFORE = "2024-01-05", "2024-01-04"


def partition(day: str, ids: range, nan_every: int = 3) -> pl.DataFrame:
    end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    n = len(ids)
    return pl.DataFrame(
        {
            "user_id": list(ids),
            "score": [math.nan if i % nan_every == 0 else (None if i % 5 == 0 else i / 7) for i in ids],
            "seen_at": [None if i % 4 == 0 else datetime(2024, 1, 1, 12) + timedelta(minutes=i) for i in ids],
            "visits": [None if i % 6 == 0 else i for i in ids],
            "active": [None if i % 7 == 0 else i % 2 == 0 for i in ids],
            "event_timestamp": [end] * n,
            "partition_date": [day] * n,
        },
        schema=SCHEMA,
    )


@pytest.fixture
def lake(tmp_path, redis_url):
    """Two partitions in Delta: 01-04 with users 0..79, 01-05 with users 0..59 (60..79 are absent from it)."""
    uri = str(tmp_path / "mixed")
    overwrite_partitions(uri, partition(BEFORE, range(80)), "partition_date", BEFORE, BEFORE, historical_load=True)
    overwrite_partitions(uri, partition(DAY, range(60)), "partition_date", DAY, DAY)
    layout = OnlineLayout.from_catalog(CATALOG)
    store = OnlineStore(connect(redis_url), layout)
    return uri, store, OnlineClient(store.r, layout=layout)


def test_same_value_rules():
    assert same_value(math.nan, math.nan) and not same_value(math.nan, None) and not same_value(None, 0.0)
    assert same_value(datetime(2024, 1, 1, 12), datetime(2024, 1, 1, 12, tzinfo=UTC))
    assert not same_value(datetime(2024, 1, 1, 12), datetime(2024, 1, 1, 13, tzinfo=UTC))
    assert same_value([1.0, math.nan], [1.0, math.nan]) and not same_value([1.0], [1.0, 2.0])
    assert same_value(None, None) and not same_value(1, 2)


def test_a_version_with_nan_and_naive_datetimes_round_trips_and_agrees_with_training(lake):
    uri, store, client = lake
    published = publish(store, "mixed", uri, DAY, run_id="r", definition_hash="h", sample=500)
    assert published.roundtrip.passed, published.roundtrip.describe()  # NaN == NaN, naive == aware UTC
    assert published.roundtrip.compared == 60 and published.promotion.promoted
    meta = store.serving_meta("mixed")
    result = consistency.check(client, mixed, meta, sample=500)
    assert result.passed, result.describe()
    assert (result.compared, result.absent_compared) == (80, 20)  # 60 served + the 20 absent from 01-05
    assert result.instant == datetime(2024, 1, 6, tzinfo=UTC)
    served = client.get_view("mixed", [3, 70])
    assert math.isnan(served[0]["score"]) and served[1]["score"] is None  # 70 is absent: null, no fallback


def test_consistency_fails_on_a_wrong_served_row(lake):
    uri, store, client = lake
    rows = partition(DAY, range(60)).with_columns(
        pl.when(pl.col("user_id") == 10).then(999).otherwise(pl.col("visits")).alias("visits")
    )
    pushed = push(store, "mixed", [rows], partition=DAY, delta_table=uri, delta_version=table_version(uri))
    result = consistency.check(client, mixed, store.meta("mixed", pushed.version), sample=500)
    assert not result.passed and result.differing == {"visits": [10]}
    assert result.examples == [{"user_id": 10, "feature": "visits", "served": 999, "training": 10}]
    assert "visits (1 of 80 entities, e.g. [10])" in result.describe()


def test_consistency_fails_when_serving_has_an_entity_training_does_not_return(lake):
    uri, store, client = lake
    # A writer bug: the entity 71, absent from 01-05, is served with its 01-04 row (the old training fallback).
    rows = pl.concat([partition(DAY, range(60)), partition(BEFORE, range(71, 72))])
    pushed = push(store, "mixed", [rows], partition=DAY, delta_table=uri, delta_version=table_version(uri))
    result = consistency.check(client, mixed, store.meta("mixed", pushed.version), sample=500)
    assert not result.passed
    assert result.differing == {f: [71] for f in ("score", "seen_at", "visits", "active")}


def test_consistency_fails_when_training_returns_an_entity_serving_does_not(lake):
    uri, store, client = lake
    rows = partition(DAY, range(60)).filter(pl.col("user_id") != 11)
    pushed = push(store, "mixed", [rows], partition=DAY, delta_table=uri, delta_version=table_version(uri))
    result = consistency.check(client, mixed, store.meta("mixed", pushed.version), sample=500)
    assert not result.passed and all(ids == [11] for ids in result.differing.values())
    assert set(result.differing) == {"score", "seen_at", "visits", "active"}


def test_the_sample_is_deterministic_and_bounded(lake):
    uri, _, _ = lake
    first = consistency.sample_entities(uri, 1, "user_id", DAY, timedelta(days=3), 20, seed=5)
    again = consistency.sample_entities(uri, 1, "user_id", DAY, timedelta(days=3), 20, seed=5)
    assert first[0].to_list() == again[0].to_list() and first[1].to_list() == again[1].to_list()
    assert first[0].len() == 20 and first[1].len() == 10
    assert set(first[1].to_list()) <= set(range(60, 80)) and set(first[0].to_list()) <= set(range(60))
