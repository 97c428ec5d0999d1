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


def write(uri: str, day: str, rows: dict[int, int], historical: bool = False) -> None:
    """Overwrite partition `day`; `historical` declares the write part of the initial historical load."""
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
    overwrite_partitions(uri, frame, "partition_date", day, day, historical_load=historical)


@pytest.fixture
def table(tmp_path) -> str:
    """Three partitions of 2024, loaded as declared history: each known at its partition's end."""
    uri = str(tmp_path / "clicks")
    write(uri, "2024-01-01", {1: 10, 2: 20}, historical=True)  # describes 2024-01-02T00:00Z
    write(uri, "2024-01-02", {1: 11}, historical=True)  # describes 2024-01-03T00:00Z
    write(uri, "2024-01-05", {1: 15}, historical=True)  # describes 2024-01-06T00:00Z
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
        (2, utc(2024, 1, 2, 12)),  # user 2 is in the newest partition (01-01) -> 20
        (2, utc(2024, 1, 3, 12)),  # the newest partition (01-02) has no row for user 2 -> null, no fallback
        (3, utc(2024, 1, 6)),  # no history at all -> null
        (1, utc(2024, 1, 2)),  # a duplicate entity row is kept, and answered the same
        (1, utc(2024, 1, 7)),  # the 01-06 row
        (1, utc(2024, 1, 8, 1)),  # the newest partition (01-05) is 2 days 1 hour old -> null
    ]
    frame = entities(rows, label=list(range(len(rows))))
    result = build(CATALOG, "model", frame, lambda _: table, timestamp_column="ts")
    assert result.frame["clicks"].to_list() == [10, None, 11, None, 20, None, None, 10, 15, None]
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
    write(uri, day, {1: 5}, historical=True)
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
    write(uri, "2024-01-01", {1: 1}, historical=True)
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


def test_a_late_first_commit_is_unknown_until_its_commit(tmp_path):
    """The gate of partition D failed on D+1 and was fixed later: rows between D's end and the commit that
    finally wrote D read D-1 (what serving served then), not D."""
    uri = str(tmp_path / "clicks")
    today = datetime.now(UTC).date()
    d_minus_1, d = (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    end_of_d = datetime.combine(today, datetime.min.time(), UTC)  # D describes today 00:00
    write(uri, d_minus_1, {1: 7, 2: 8}, historical=True)  # history, known at its end (yesterday 00:00)
    before_commit = datetime.now(UTC)
    write(uri, d, {1: 70})  # the late first commit of D: a regular run, known from now on
    after_commit = datetime.now(UTC) + timedelta(seconds=2)
    frame = entities(
        [
            (1, end_of_d - timedelta(hours=1)),  # before D's instant: D-1
            (1, end_of_d),  # D's instant, D not committed yet: still D-1 (the old rule leaked 70 here)
            (1, before_commit),  # just before the commit: D-1
            (2, before_commit),  # user 2 is in D-1: 8
            (1, after_commit),  # D is known now
            (2, after_commit),  # ... and user 2 is absent from D: null
        ]
    )
    assert values(uri, frame) == [7, 7, 7, 8, 70, None]
    assert values(uri, frame, mode="latest") == [7, 70, 70, None, 70, None]  # ignores knowledge: leaks D


def test_a_declared_historical_load_counts_at_partition_ends_and_only_as_the_initial_load(tmp_path):
    from feature_pipelines.offline.history import read_history

    uri = str(tmp_path / "clicks")
    write(uri, "2024-01-01", {1: 10}, historical=True)
    write(uri, "2024-01-02", {1: 11}, historical=True)
    write(uri, "2024-01-03", {1: 12})  # the first regular write: the initial load is over
    write(uri, "2024-01-04", {1: 13}, historical=True)  # declared too late: counts from its commit
    history = read_history(uri)
    assert [history.commit(v).declared_historical_load for v in range(4)] == [True, True, False, True]
    assert history.initial_load() == {0, 1} and not history.initial_load_open
    frame = entities([(1, utc(2024, 1, 2)), (1, utc(2024, 1, 3, 6)), (1, utc(2024, 1, 4, 6)), (1, utc(2024, 1, 5, 6))])
    # 01-03 and 01-04 were committed now: in 2024 the newest known partition is 01-02 (after 2 days: null).
    assert values(uri, frame) == [10, 11, 11, None]
    assert values(uri, frame, mode="latest") == [10, 11, 12, 13]
    now = datetime.now(UTC) + timedelta(seconds=2)
    assert values(uri, frame, known_at=now) == [10, 11, 12, 13]  # everything is known now


def test_known_at_is_recorded_and_rebuilt(table):
    frame = entities([(1, utc(2024, 1, 3)), (1, utc(2024, 1, 7))])
    known_at = datetime.now(UTC)
    first = build(CATALOG, "model", frame, lambda _: table, timestamp_column="ts", known_at=known_at)
    assert first.frame["clicks"].to_list() == [11, 15]
    write(table, "2024-01-05", {1: 150})  # a correction after known_at
    manifest = Manifest.from_json(first.manifest.to_json())
    assert manifest.known_at == known_at.isoformat()
    assert rebuild(CATALOG, manifest, frame).frame.equals(first.frame)
    later = datetime.now(UTC) + timedelta(seconds=2)
    assert values(table, frame, known_at=later) == [11, 150]
    with pytest.raises(TrainingSetError, match="known_at needs mode='known'"):
        values(table, frame, known_at=later, mode="latest")


def test_two_rows_for_one_entity_in_a_partition_is_an_error(tmp_path):
    uri = str(tmp_path / "clicks")
    write(uri, "2024-01-01", {1: 10}, historical=True)
    frame = pl.DataFrame(
        {"user_id": [1], "clicks": [99], "event_timestamp": [utc(2024, 1, 2)], "partition_date": ["2024-01-01"]},
        schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
    )
    from deltalake import write_deltalake

    write_deltalake(uri, frame, mode="append", partition_by=["partition_date"])  # a foreign writer's duplicate
    with pytest.raises(
        TrainingSetError, match=r"more than one row for an entity in one partition.*\(1, '2024-01-01'\)"
    ):
        values(uri, entities([(1, utc(2024, 1, 2, 12))]), mode="latest")


def test_known_time_equals_an_independent_reference_over_a_history_of_writes(tmp_path):
    """Historical load, late first commits, corrections and a new partition, checked against a reference
    computed here from the writes and their commit times (read through deltalake, not our log reader)."""
    import dataclasses
    import time

    from deltalake import DeltaTable

    view = dataclasses.replace(clicks, offline_lookback=timedelta(days=3))
    catalog = dataclasses.replace(CATALOG, views={"clicks": view})
    uri = str(tmp_path / "clicks")
    today = datetime.now(UTC).date()
    day = {k: (today - timedelta(days=k)).isoformat() for k in range(1, 6)}
    writes = [  # (partition, rows, declared historical)
        (day[5], {1: 50, 2: 51}, True),
        (day[4], {1: 40, 3: 43}, True),
        (day[3], {1: 30, 2: 32, 3: 33}, False),  # D-3's first commit, days after its end
        (day[3], {1: 300, 3: 330}, False),  # its correction
        (day[2], {1: 20, 2: 22}, False),  # D-2, late too
        (day[4], {2: 402}, False),  # a correction of a historical partition
        (day[1], {3: 13}, False),
        (day[1], {1: 100, 3: 130}, False),  # a correction of the newest partition
    ]
    checkpoints = []
    for partition, rows, historical in writes:
        checkpoints.append(datetime.now(UTC))
        time.sleep(0.005)
        write(uri, partition, rows, historical=historical)
        time.sleep(0.005)
    checkpoints.append(datetime.now(UTC))
    history = sorted(DeltaTable(uri).history(), key=lambda c: c["version"])
    committed = [datetime.fromtimestamp(c["timestamp"] / 1000, UTC) for c in history]

    def end(partition: str) -> datetime:
        return datetime.fromisoformat(partition).replace(tzinfo=UTC) + timedelta(days=1)

    # Each write is the truth of its partition from its known time until the next write of that partition.
    lives = []
    for n, (partition, rows, historical) in enumerate(writes):
        first = all(p != partition for p, _, _ in writes[:n])
        initial = all(h for _, _, h in writes[: n + 1])
        known = end(partition) if (historical and first and initial) else max(committed[n], end(partition))
        later = [committed[m] for m in range(n + 1, len(writes)) if writes[m][0] == partition]
        lives.append((partition, rows, known, later[0] if later else None))

    def reference(user: int, t: datetime, known_at: datetime | None = None) -> int | None:
        k = known_at or t  # knowledge as of the row's time unless fixed
        valid = [(p, rows) for p, rows, frm, to in lives if frm <= k and (to is None or k < to) and end(p) <= t]
        if not valid:
            return None
        partition, rows = max(valid, key=lambda v: v[0])
        return rows.get(user) if t - end(partition) <= timedelta(days=3) else None

    instants = [end(p) + delta for p in day.values() for delta in (timedelta(0), timedelta(hours=5))]
    times = instants + checkpoints + [c + timedelta(microseconds=1) for c in committed]
    rows = [(u, t) for u in (1, 2, 3, 4) for t in times]
    frame = entities(rows)
    got = build(catalog, "model", frame, lambda _: uri, timestamp_column="ts").frame["clicks"].to_list()
    expected = [reference(u, t) for u, t in rows]
    assert got == expected
    assert {50, 51, 40, 43, 30, 32, 300, 330, 20, 22, 13, 100, 130} <= set(expected)  # every write is seen
    for known_at in checkpoints[2:]:
        fixed = build(catalog, "model", frame, lambda _: uri, timestamp_column="ts", known_at=known_at)
        assert fixed.frame["clicks"].to_list() == [reference(u, t, known_at) for u, t in rows]
