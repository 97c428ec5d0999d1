"""Privacy fixtures: the real catalog, a lake in a tmp dir, the real Redis, and a way to publish
`user_context` partitions from a real Delta table the way the online asset does."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from feature_pipelines.offline.compute import partition_end
from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from feature_pipelines.publish import Published, publish
from feature_pipelines.settings import Settings
from feature_pipelines.spec import EVENT_TIMESTAMP, PARTITION_DATE

VIEW = "user_context"


@pytest.fixture
def settings(tmp_path, redis_url) -> Settings:
    return Settings(lake_dir=tmp_path / "lake", redis_url=redis_url)


@pytest.fixture
def store(settings, catalog) -> OnlineStore:
    s = OnlineStore(connect(settings.redis_url), OnlineLayout.from_catalog(catalog), 3)
    yield s
    s.r.close()


def context_rows(day: str, ids: list[int]) -> pl.DataFrame:
    """`user_context` rows for partition `day`: every customer in the UK."""
    end = partition_end(date.fromisoformat(day))
    return pl.DataFrame(
        {
            "customer_id": ids,
            "country": ["United Kingdom"] * len(ids),
            "locale": ["en_GB"] * len(ids),
            "currency": ["GBP"] * len(ids),
            EVENT_TIMESTAMP: [end] * len(ids),
            PARTITION_DATE: [day] * len(ids),
        },
        schema_overrides={"customer_id": pl.Int64, EVENT_TIMESTAMP: pl.Datetime("us", "UTC")},
    )


def write_partition(settings: Settings, day: str, ids: list[int], view: str = VIEW) -> None:
    overwrite_partitions(settings.feature_table(view), context_rows(day, ids), PARTITION_DATE, day, day)


def publish_day(catalog, settings: Settings, store: OnlineStore, day: str, view: str = VIEW) -> Published:
    """Push partition `day` of the view's Delta table through the consent guard, as the online asset does."""
    return publish(
        store,
        view,
        settings.feature_table(view),
        day,
        run_id="test",
        definition_hash=catalog.views[view].definition_hash(),
        sample=1000,
        guard=OnlineGuard(PrivacyPolicy(catalog, settings), store),
    )
