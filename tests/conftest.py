"""Shared fixtures: the real Redis, a Dagster instance on the real PostgreSQL, Delta tables in tmp dirs."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import redis

from feature_pipelines.catalog import Catalog, load_catalog
from feature_pipelines.online.local_server import answers
from feature_pipelines.online.store import OnlineStore, Outcome
from feature_pipelines.orchestration.asset_keys import feature_key, online_key, raw_key
from feature_pipelines.orchestration.factory import build_asset_defs
from feature_pipelines.orchestration.resources import FeatureStoreResource

ROOT = Path(__file__).resolve().parent.parent
TEST_REDIS_URL = os.environ.get("FS_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
TEST_PG_URL = os.environ.get("FS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
"""Server of the test databases: each session creates its own database there and drops it afterwards."""
REAL_DATA = ROOT / "feature_defs" / "data" / "online_retail.parquet"


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    if not answers(TEST_REDIS_URL):
        pytest.fail(f"tests need a Redis at {TEST_REDIS_URL} (set FS_TEST_REDIS_URL); .ci/run starts one")
    return TEST_REDIS_URL


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The test database of the real Redis, emptied before each test that uses it."""
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    client.close()
    return redis_server_url


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A fresh database on the real PostgreSQL for this test session, dropped at the end."""
    import uuid

    import psycopg2

    admin = os.environ.get("FS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"fs_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg2.connect(admin)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"tests need PostgreSQL at {admin} (set FS_TEST_PG_ADMIN_URL); .ci/run starts it: {exc}")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    yield TEST_PG_URL.rsplit("/", 1)[0] + "/" + name
    conn.cursor().execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
    )
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


@pytest.fixture(scope="session")
def pg_instance(tmp_path_factory, pg_url) -> dg.DagsterInstance:
    """A Dagster instance configured by the project's own dagster.yaml, on the real PostgreSQL."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_PG_URL"] = pg_url
    instance = dg.DagsterInstance.from_config(str(home))
    yield instance
    instance.dispose()


@pytest.fixture
def store_resource(tmp_path: Path, redis_url: str) -> FeatureStoreResource:
    return FeatureStoreResource(lake_dir=str(tmp_path / "lake"), redis_url=redis_url, versions_kept=3)


def with_source_file(catalog: Catalog, path: Path, name: str = "online_retail") -> Catalog:
    """The same catalog reading its source `name` from `path` (the other sources unchanged)."""
    source = catalog.sources[name]
    return dataclasses.replace(
        catalog, sources={**catalog.sources, name: dataclasses.replace(source, location=str(path))}
    )


def retail_only(catalog: Catalog) -> Catalog:
    """The catalog's retail part: the views of the real retail data and the services reading only them
    (person views need the synthetic events and the identity graph: their tests build those)."""
    views = {n: v for n, v in catalog.views.items() if v.source_name == "online_retail" and not v.identity}
    names = {v.name for v in views.values()}
    services = {
        n: s for n, s in catalog.services.items() if all(ref.split(":")[0].split("@")[0] in names for ref in s.features)
    }
    return dataclasses.replace(catalog, views=views, services=services)


def with_persons(retail: Catalog, catalog: Catalog) -> Catalog:
    """The whole catalog (person views too) reading the retail data where the `retail` fixture put it."""
    return dataclasses.replace(catalog, sources={**catalog.sources, "online_retail": retail.sources["online_retail"]})


def real_data(first: str | None = None, last: str | None = None) -> pl.DataFrame:
    """The shipped UCI rows, optionally cut to invoice dates first..last (inclusive, local time)."""
    frame = pl.read_parquet(REAL_DATA)
    if first:
        frame = frame.filter(pl.col("InvoiceDate").dt.date().cast(pl.String) >= first)
    if last:
        frame = frame.filter(pl.col("InvoiceDate").dt.date().cast(pl.String) <= last)
    return frame


DAY = "2011-03-01"
RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def run(catalog, instance, store, keys, *, partition=None, first=None, last=None, tags=None):
    defs = build_asset_defs(catalog)
    assets = [a for a in defs.assets if any(k in a.keys for k in keys)]
    tags = {**({RANGE[0]: first, RANGE[1]: last} if first else {}), **(tags or {})} or None
    return dg.materialize(
        assets, instance=instance, partition_key=partition, tags=tags, resources={"store": store}, raise_on_error=False
    )


def chain(catalog, view_names=None):
    views = [catalog.views[v] for v in (view_names or catalog.views)]
    return [k for v in views for k in (feature_key(v), online_key(v))]


@pytest.fixture
def retail(tmp_path, catalog, pg_instance, store_resource):
    """Raw table holding Dec 2010 to early March 2011 of the real data."""
    path = tmp_path / "retail.parquet"
    real_data(None, "2011-03-05").write_parquet(path)
    cat = with_source_file(retail_only(catalog), path)
    source = cat.sources["online_retail"]
    res = run(cat, pg_instance, store_resource, [raw_key(source)], first="2010-12-01", last="2011-03-05")
    assert res.success
    return cat


@dataclasses.dataclass(frozen=True)
class Pushed:
    """A version written and offered for promotion, as a test sees it."""

    version: int
    rows: int
    outcome: Outcome
    serving_version: int | None
    reason: str

    @property
    def promoted(self) -> bool:
        return self.outcome is Outcome.PROMOTED


def push(
    store: OnlineStore,
    view: str,
    frames,
    *,
    partition: str,
    delta_table: str = "/nowhere",
    delta_version: int | None = None,
    run_id: str = "test",
    definition_hash: str = "h",
) -> Pushed:
    """Write `frames` as a new version of `view`, then promote it (no check in between)."""
    written = store.write(
        view,
        frames,
        partition=partition,
        delta_table=delta_table,
        delta_version=delta_version,
        run_id=run_id,
        definition_hash=definition_hash,
    )
    promotion = store.promote(written)
    return Pushed(written.version, written.rows, promotion.outcome, promotion.serving_version, promotion.reason)


def push_from_delta(store: OnlineStore, view: str, frame: pl.DataFrame, *, partition: str, uri: str) -> Pushed:
    """Commit `frame` as partition `partition` of the Delta table `uri`, then push it from there: the version
    records where its ids come from, so rollback (key refresh) and prune (key removal) can find its keys."""
    from feature_pipelines.offline.delta import overwrite_partitions
    from feature_pipelines.spec import PARTITION_DATE

    commit = overwrite_partitions(
        uri, frame.with_columns(pl.lit(partition).alias(PARTITION_DATE)), PARTITION_DATE, partition, partition
    )
    return push(store, view, [frame], partition=partition, delta_table=uri, delta_version=commit.version)
