"""Point-in-time training sets, checked against hand-computed values."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.spec import BatchSource, Entity, Feature, FeatureService, FeatureView
from feature_pipelines.training import Manifest, TrainingSetError, build, rebuild

user = Entity(name="user", join_key="user_id", dtype=pl.Int64)
source = BatchSource(
    name="clicks_src",
    location="x",
    format="parquet",
    schema={"ts": pl.Datetime("us")},
    event_time="ts",
    start=date(2024, 1, 1),
)
clicks = FeatureView(
    name="clicks",
    entity=user,
    source=source,
    owner="team:t",
    description="d",
    features=(Feature(name="clicks", dtype=pl.Int64, description="d"),),
    transformation=lambda e, c: e,
    offline_lookback=timedelta(days=2),
)
CATALOG = Catalog(
    entities={"user": user},
    sources={"clicks_src": source},
    views={"clicks": clicks},
    services={"model": FeatureService(name="model", features=("clicks:*",), owner="team:t", description="d")},
)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def write(uri: str, day: str, rows: dict[int, int]) -> None:
    end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    frame = pl.DataFrame(
        {
            "user_id": list(rows),
            "clicks": list(rows.values()),
            "event_timestamp": [end] * len(rows),
            "partition_date": [day] * len(rows),
        },
        schema={
            "user_id": pl.Int64,
            "clicks": pl.Int64,
            "event_timestamp": pl.Datetime("us", "UTC"),
            "partition_date": pl.String,
        },
    )
    overwrite_partitions(uri, frame, "partition_date", day, day)


@pytest.fixture
def table(tmp_path) -> str:
    uri = str(tmp_path / "clicks")
    write(uri, "2024-01-01", {1: 10, 2: 20})  # describes 2024-01-02T00:00Z
    write(uri, "2024-01-02", {1: 11})  # describes 2024-01-03T00:00Z
    write(uri, "2024-01-05", {1: 15})  # describes 2024-01-06T00:00Z
    return uri


def entities(rows: list[tuple[int, datetime]], **extra) -> pl.DataFrame:
    return pl.DataFrame(
        {"user_id": [r[0] for r in rows], "ts": [r[1] for r in rows], **extra},
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def values(uri: str, frame: pl.DataFrame, **kw) -> list:
    result = build(CATALOG, "model", frame, lambda _: uri, timestamp_column="ts", **kw)
    return result.frame["clicks"].to_list()


def test_hand_computed_point_in_time_values(table):
    rows = [
        (1, utc(2024, 1, 2)),  # exactly the row's event time -> counts
        (1, utc(2024, 1, 1, 23, 59, 59)),  # before any row -> null
        (1, utc(2024, 1, 5)),  # newest row 01-03 is exactly 2 days old: inside the lookback
        (1, utc(2024, 1, 5, 0, 0, 1)),  # one second later it is outside -> null
        (2, utc(2024, 1, 3, 12)),  # user 2's row of 01-02 is 1.5 days old
        (3, utc(2024, 1, 6)),  # no history at all -> null
        (1, utc(2024, 1, 2)),  # a duplicate entity row is kept, and answered the same
        (1, utc(2024, 1, 7)),  # the 01-06 row
    ]
    frame = entities(rows, label=list(range(len(rows))))
    result = build(CATALOG, "model", frame, lambda _: table, timestamp_column="ts")
    assert result.frame["clicks"].to_list() == [10, None, 11, None, 20, None, 10, 15]
    assert result.frame.select("user_id", "ts", "label").equals(frame)  # order, count and labels kept


def test_lookback_boundary_alone(table):
    # The only row: the partition of 01-02 (describing 01-03 00:00) is exactly at the lookback horizon.
    assert values(table, entities([(1, utc(2024, 1, 5))])) == [11]


def test_timezone_aware_input_in_another_zone(table):
    berlin = pl.DataFrame({"user_id": [1], "ts": [datetime(2024, 1, 2, 1, 0)]}).with_columns(
        pl.col("ts").dt.replace_time_zone("Europe/Berlin")
    )  # 01:00 in Berlin is 00:00 UTC: exactly the row's time
    assert values(table, berlin) == [10]


def test_naive_timestamps_are_rejected(table):
    naive = pl.DataFrame({"user_id": [1], "ts": [datetime(2024, 1, 2)]})
    with pytest.raises(TrainingSetError, match="'ts' is timezone-naive"):
        values(table, naive)


def test_a_late_correction_is_not_known_before_its_commit(tmp_path):
    uri = str(tmp_path / "clicks")
    today = datetime.now(UTC).date()
    day = (today - timedelta(days=1)).isoformat()
    write(uri, day, {1: 5})
    before_commit = datetime.now(UTC)
    write(uri, day, {1: 50})  # a correction of the same partition, committed now
    after_commit = datetime.now(UTC) + timedelta(seconds=2)
    partition_end = datetime.combine(today, datetime.min.time(), UTC)
    frame = entities([(1, partition_end + timedelta(seconds=1)), (1, before_commit), (1, after_commit)])
    assert values(uri, frame) == [5, 5, 50]  # as known at each row's time
    assert values(uri, frame, mode="latest") == [50, 50, 50]  # latest known, leaks the correction


def test_rebuild_from_manifest_is_identical_after_new_data(table, tmp_path):
    frame = entities([(1, utc(2024, 1, 3)), (2, utc(2024, 1, 2, 6)), (1, utc(2024, 1, 7))])
    first = build(CATALOG, "model", frame, lambda _: table, timestamp_column="ts")
    path = tmp_path / "ts.parquet"
    manifest_path = first.write(path)
    manifest = Manifest.from_json(manifest_path.read_text())
    assert manifest.views[0].delta_version == 2 and manifest.mode == "known"
    write(table, "2024-01-02", {1: 111})  # a backfill rewrites a partition the set read
    write(table, "2024-01-06", {1: 16})  # and new data lands
    assert build(CATALOG, "model", frame, lambda _: table, timestamp_column="ts", mode="latest").frame[
        "clicks"
    ].to_list() == [111, 20, 16]
    again = rebuild(CATALOG, manifest, frame)
    assert again.frame.equals(first.frame) and again.frame.equals(pl.read_parquet(path))
    with pytest.raises(TrainingSetError, match="not the ones the manifest was built from"):
        rebuild(CATALOG, manifest, frame.head(2))


def test_cli_builds_and_rebuilds_from_the_manifest(table, tmp_path, monkeypatch):
    """`fstore training-set` on the real catalog's service, against a tiny lake made here."""
    from typer.testing import CliRunner

    from feature_pipelines.cli import app

    lake = tmp_path / "lake"
    monkeypatch.setenv("FS_LAKE_DIR", str(lake))
    frame = entities([(1, utc(2024, 1, 3)), (2, utc(2024, 1, 2, 6))], label=[1, 0])
    entities_path = tmp_path / "entities.parquet"
    frame.write_parquet(entities_path)
    runner = CliRunner()
    monkeypatch.setattr("feature_pipelines.catalog.load_catalog", lambda *a, **k: _catalog_in(lake, table))
    out = tmp_path / "out.parquet"
    first = runner.invoke(
        app, ["training-set", "model", str(entities_path), "-o", str(out), "--timestamp-column", "ts"]
    )
    assert first.exit_code == 0, first.output
    assert pl.read_parquet(out)["clicks"].to_list() == [11, 20]
    write(str(lake / "features" / "clicks"), "2024-01-02", {1: 999})  # a later backfill
    again = tmp_path / "again.parquet"
    rebuilt = runner.invoke(
        app,
        ["training-set", "--manifest", str(out.with_suffix(".manifest.json")), str(entities_path), "-o", str(again)],
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert pl.read_parquet(again).equals(pl.read_parquet(out))


def _catalog_in(lake, table):
    import shutil

    target = lake / "features" / "clicks"
    if not target.exists():
        shutil.copytree(table, target)
    return CATALOG


def test_empty_entity_frame_gives_an_empty_set(table):
    empty = entities([])
    result = build(CATALOG, "model", empty, lambda _: table, timestamp_column="ts")
    assert result.frame.height == 0 and result.frame.columns == ["user_id", "ts", "clicks"]


def test_restore_brings_old_rows_back(table):
    from deltalake import DeltaTable

    write(table, "2024-01-01", {1: 99, 2: 99})  # a bad rewrite ...
    DeltaTable(table).restore(2)  # ... undone with a Delta RESTORE
    frame = entities([(1, utc(2024, 1, 2, 12))])
    assert values(table, frame, mode="latest") == [10]
    assert values(table, frame) == [10]


def test_the_delta_log_is_kept_for_known_time_history(tmp_path):
    from deltalake import DeltaTable

    uri = str(tmp_path / "clicks")
    write(uri, "2024-01-01", {1: 1})
    DeltaTable(uri).alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 0 seconds", "delta.checkpointInterval": "2"}
    )
    for n in range(5):
        write(uri, "2024-01-01", {1: n})
    assert (tmp_path / "clicks" / "_delta_log" / f"{0:020d}.json").exists()
    assert values(uri, entities([(1, utc(2024, 1, 2, 12))])) == [1]  # the first write, as known then


def test_rebuild_uses_the_manifest_features_not_todays_service(table):
    import dataclasses

    frame = entities([(1, utc(2024, 1, 3))])
    first = build(CATALOG, "model", frame, lambda _: table, timestamp_column="ts")
    changed = dataclasses.replace(
        CATALOG, services={"model": dataclasses.replace(CATALOG.services["model"], features=("clicks:clicks",))}
    )
    assert rebuild(changed, first.manifest, frame).frame.equals(first.frame)
