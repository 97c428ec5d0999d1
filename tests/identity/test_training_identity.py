"""Training sets keyed by any alias: each row's person as the alias map knew it at the row's time, on real
Delta tables written by real stitching runs (a later login does not leak into earlier rows)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.graph import person_id
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.spec import BatchSource, Entity, Feature, FeatureService, FeatureView
from feature_pipelines.training import Manifest, TrainingSetError, build, rebuild

person = Entity(name="person", join_key="person_id", dtype=pl.String, pattern=r"^p_[0-9a-f]{16}$")
source = BatchSource(
    name="visits_src",
    location="x",
    format="parquet",
    schema={"ts": pl.Datetime("us")},
    event_time="ts",
    start=date(2011, 3, 1),
)
visits = FeatureView(
    name="visits",
    entity=person,
    source=source,
    owner="team:t",
    description="d",
    features=(Feature(name="visits", dtype=pl.Int64, description="d"),),
    transformation=lambda e, c: e,
    offline_lookback=timedelta(days=3),
)
CATALOG = Catalog(
    entities={"person": person},
    sources={"visits_src": source},
    views={"visits": visits},
    services={"profile": FeatureService(name="profile", features=("visits:*",), owner="team:t", description="d")},
)
P_A, P_C7 = person_id("anonymous_id", "A"), person_id("customer_id", "7")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def events(rows: list[tuple[datetime, str, str | None, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "event_time": [r[0] for r in rows],
            "anonymous_id": [r[1] for r in rows],
            "device_id": [r[2] for r in rows],
            "customer_id": [r[3] for r in rows],
            "event_type": ["page_view"] * len(rows),
        },
        schema_overrides={"customer_id": pl.Int64, "device_id": pl.String, "event_time": pl.Datetime("us", "UTC")},
    )


DAY1 = events([(utc(2011, 3, 1, 9), "A", None, None), (utc(2011, 3, 1, 10), "B", "D1", 7)])
DAY2 = events([(utc(2011, 3, 2, 12), "A", None, 7)])  # A logs in as 7: persons merge, A's (older) id survives


def write_view(uri: str) -> None:
    """Partition 03-01 as stitched after day 1 (two persons), 03-02 after day 2 (merged)."""
    for day, rows in (("2011-03-01", {P_A: 1, P_C7: 2}), ("2011-03-02", {P_A: 5})):
        end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        frame = pl.DataFrame(
            {
                "person_id": list(rows),
                "visits": list(rows.values()),
                "event_timestamp": [end] * len(rows),
                "partition_date": [day] * len(rows),
            },
            schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
        )
        overwrite_partitions(uri, frame, "partition_date", day, day, historical_load=True)


@pytest.fixture
def lake(tmp_path):
    store = IdentityStore(tmp_path)
    store.full(DAY1, now=utc(2011, 3, 2))  # the daily run after day 1
    store.update(DAY2, now=utc(2011, 3, 3))  # the daily run after day 2
    uri = str(tmp_path / "visits")
    write_view(uri)
    return store, uri


ROWS = pl.DataFrame(
    {
        "anonymous_id": ["A", None, None, "A", None, "Z", "B"],
        "device_id": [None, None, None, None, "D1", None, None],
        "customer_id": [None, 7, 7, None, None, None, 7],
        "ts": [
            utc(2011, 3, 2, 6),  # A, after run 1: its own person
            utc(2011, 3, 2, 6),  # 7 before the login of 03-02 12:00: still its own person, not A's
            utc(2011, 3, 3, 6),  # 7 after run 2: merged into A's person
            utc(2011, 3, 1, 9, 30),  # before the first stitching run: unknown
            utc(2011, 3, 3, 6),  # device D1 after run 2: A's person
            utc(2011, 3, 3, 6),  # an id the graph never saw
            utc(2011, 3, 2, 6),  # customer first among the alias columns
        ],
        "label": [1, 2, 3, 4, 5, 6, 7],
    },
    schema_overrides={"customer_id": pl.Int64, "ts": pl.Datetime("us", "UTC")},
)


def test_each_row_resolves_as_known_at_its_time(lake):
    store, uri = lake
    result = build(CATALOG, "profile", ROWS, lambda _: uri, timestamp_column="ts", alias_map_uri=store.uri("alias_map"))
    out = result.frame
    assert out["label"].to_list() == [1, 2, 3, 4, 5, 6, 7]  # rows kept, in order
    assert out["person_id"].to_list() == [P_A, P_C7, P_A, None, P_A, None, P_C7]
    assert out["visits"].to_list() == [1, 2, 5, None, 5, None, 2]
    assert result.manifest.alias_map_version is not None


def test_known_at_and_latest_modes(lake):
    store, uri = lake
    amap = store.uri("alias_map")
    # Known at 03-02 12:00: run 2 had not happened, so 7 is still its own person on 03-03.
    k = build(
        CATALOG, "profile", ROWS, lambda _: uri, timestamp_column="ts", alias_map_uri=amap, known_at=utc(2011, 3, 2, 12)
    )
    assert k.frame["person_id"][2] == P_C7
    # Latest knowledge: the valid time still holds (7 joined A's person only at 03-02 12:00), but the row
    # before the first run now resolves.
    latest = build(CATALOG, "profile", ROWS, lambda _: uri, timestamp_column="ts", alias_map_uri=amap, mode="latest")
    assert latest.frame["person_id"].to_list() == [P_A, P_C7, P_A, P_A, P_A, None, P_C7]


def test_rebuild_pins_the_alias_map_after_an_un_merge(lake, tmp_path):
    store, uri = lake
    first = build(CATALOG, "profile", ROWS, lambda _: uri, timestamp_column="ts", alias_map_uri=store.uri("alias_map"))
    store.split("A", "customer_id:7", now=utc(2011, 3, 3, 1))
    after = build(
        CATALOG,
        "profile",
        ROWS.with_columns(ts=pl.col("ts") + timedelta(hours=1)),
        lambda _: uri,
        timestamp_column="ts",
        alias_map_uri=store.uri("alias_map"),
    )
    assert after.frame["person_id"][2] == P_C7  # un-merged: 7's earlier id is back
    again = rebuild(CATALOG, Manifest.from_json(first.manifest.to_json()), ROWS)
    assert again.frame.equals(first.frame)


def test_historical_load_counts_facts_at_their_day_end(tmp_path):
    """The first run of a lake that loads history: without the declaration every fact is known from the run
    (a week later), so rows of the loaded days resolve to nothing; with it, from the end of their day."""
    rows = ROWS.slice(0, 2)
    both = pl.concat([DAY1, DAY2.with_columns(pl.lit("e9").alias("event_id"))])
    for historical, expected in ((False, [None, None]), (True, [P_A, P_C7])):
        store = IdentityStore(tmp_path / str(historical))
        store.commit(store.plan_full(both, now=utc(2011, 3, 9), historical=historical))
        uri = str(tmp_path / f"visits{historical}")
        write_view(uri)
        out = build(
            CATALOG, "profile", rows, lambda _, u=uri: u, timestamp_column="ts", alias_map_uri=store.uri("alias_map")
        )
        assert out.frame["person_id"].to_list() == expected


def test_errors_name_what_is_missing(lake, tmp_path):
    store, uri = lake
    with pytest.raises(TrainingSetError, match="nor an alias column"):
        build(
            CATALOG,
            "profile",
            ROWS.select("ts"),
            lambda _: uri,
            timestamp_column="ts",
            alias_map_uri=store.uri("alias_map"),
        )
    with pytest.raises(TrainingSetError, match="needs the identity alias map"):
        build(CATALOG, "profile", ROWS, lambda _: uri, timestamp_column="ts", alias_map_uri=str(tmp_path / "none"))


def test_fstore_training_set_of_the_personalization_service_by_anonymous_id(tmp_path, monkeypatch):
    """The real catalog's `personalization_profile_v1`, entity rows holding only cookies: each resolves to
    the person the alias map knew at the row's time, and gets that person's profile as known then."""
    from typer.testing import CliRunner

    from feature_pipelines.catalog import load_catalog
    from feature_pipelines.cli import app
    from tests.profile_rows import view_rows

    lake = tmp_path / "lake"
    monkeypatch.setenv("FS_LAKE_DIR", str(lake))
    identity = IdentityStore(lake)
    identity.full(DAY1, now=utc(2011, 3, 2))
    identity.update(DAY2, now=utc(2011, 3, 3))  # A logs in as 7 on 03-02: B (7's cookie) joins A's person
    view = load_catalog().views["person_profile"]
    for day, numbers in (("2011-03-01", {P_A: 1, P_C7: 2}), ("2011-03-02", {P_A: 5})):
        end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
        rows = view_rows(view, "person_id", numbers).with_columns(
            pl.lit(end).cast(pl.Datetime("us", "UTC")).alias("event_timestamp"), pl.lit(day).alias("partition_date")
        )
        table = str(lake / "features" / "person_profile")
        overwrite_partitions(table, rows, "partition_date", day, day, historical_load=True)
    keyed = pl.DataFrame(
        {
            "anonymous_id": ["A", "B", "B", "A", "Z"],
            "ts": [utc(2011, 3, 2, 6), utc(2011, 3, 2, 6), utc(2011, 3, 3, 6), utc(2011, 3, 1, 9, 30), utc(2011, 3, 3)],
            "label": [1, 2, 3, 4, 5],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    keyed.write_parquet(tmp_path / "rows.parquet")
    out = tmp_path / "ts.parquet"
    args = ["training-set", "personalization_profile_v1", str(tmp_path / "rows.parquet"), "-o", str(out)]
    done = CliRunner().invoke(app, [*args, "--timestamp-column", "ts"])
    assert done.exit_code == 0, done.output
    got = pl.read_parquet(out)
    assert got["label"].to_list() == [1, 2, 3, 4, 5]
    # B is 7's cookie: its own person until the login of 03-02 12:00 was stitched (run of 03-03), A's after.
    assert got["person_id"].to_list() == [P_A, P_C7, P_A, None, None]
    assert got["events_30d"].to_list() == [1, 2, 5, None, None]  # each person's row as of its partition
    assert got["profile_vector"][2].to_list() == [5 / 64] * 32
    assert set(view.feature_names) <= set(got.columns)
