"""Point-in-time correct training sets, as known at each row's time by default, rebuildable from a manifest.

For every entity row (ids + a timestamp T) and every view of a feature service, the value is the feature
row with the latest event time `<= T` and `>= T - offline_lookback`, or null. Rows are never dropped nor
duplicated and come back in input order.

**As of known time** (the default). A feature row counts only if it was known at T. Knowledge comes from
the Delta log, so re-running a partition with the same data changes nothing: the first version of a
partition counts as known at the partition's end (when a timely run produces it, also for backfilled
history), and every later rewrite of that partition (a late correction) is known only from its commit
time; the version it replaced stays known until then. `mode="latest"` ignores knowledge and reads the
current snapshot.

**Reproducible.** Every build records the Delta version of each table it read; `rebuild(manifest, ...)`
reads exactly those versions (time travel), so later data, backfills and corrections do not change it.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl
from deltalake import DeltaTable

from feature_pipelines.catalog import Catalog
from feature_pipelines.entity_keys import EntityKeyError, normalize_keys
from feature_pipelines.offline.compute import partition_end
from feature_pipelines.offline.history import FAR_FUTURE, HistoryError, read_history
from feature_pipelines.spec import EVENT_TIMESTAMP, PARTITION_DATE, FeatureView

Mode = Literal["known", "latest"]
_ROW = "__row"


class TrainingSetError(ValueError):
    pass


@dataclass(frozen=True)
class ViewRead:
    view: str
    table: str
    delta_version: int
    definition_hash: str
    offline_lookback_s: float
    features: list[str]


@dataclass
class Manifest:
    service: str
    mode: Mode
    timestamp_column: str
    rows: int
    entities_sha256: str
    created_at: str
    views: list[ViewRead] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        data["views"] = [ViewRead(**v) for v in data["views"]]
        return cls(**data)


@dataclass(frozen=True)
class TrainingSet:
    frame: pl.DataFrame
    manifest: Manifest

    def write(self, path: str | Path) -> Path:
        """Write the frame as Parquet and its manifest beside it (`<name>.manifest.json`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame.write_parquet(path)
        manifest_path = path.with_suffix(".manifest.json")
        manifest_path.write_text(self.manifest.to_json())
        return manifest_path


def build(
    catalog: Catalog,
    service: str,
    entities: pl.DataFrame,
    table_uri: Callable[[str], str],
    *,
    timestamp_column: str = "event_timestamp",
    mode: Mode = "known",
    versions: dict[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
    plan: dict[str, list[str]] | None = None,
) -> TrainingSet:
    """Features of `service` for each row of `entities`, point in time at `entities[timestamp_column]`.

    `table_uri(view_name)` locates each view's Delta table; `versions` pins their Delta versions and
    `plan` the features per view (a rebuild passes the manifest's), otherwise the service's current
    definition and the newest versions are used and recorded."""
    if mode not in ("known", "latest"):
        raise TrainingSetError(f"mode must be 'known' or 'latest', got {mode!r}")
    ts = _utc_timestamps(entities, timestamp_column)
    by_view: dict[str, list[str]] = {}
    if plan is not None:
        by_view = {view: list(features) for view, features in plan.items()}
    else:
        for ref in catalog.resolve_service(service):
            by_view.setdefault(ref.view.name, []).append(ref.feature)
    clashes = set(entities.columns) & {f for feats in by_view.values() for f in feats}
    if clashes:
        raise TrainingSetError(f"entity frame columns {sorted(clashes)} clash with feature names of {service!r}")
    left = _keyed(catalog, by_view, entities).with_columns(ts.alias("__ts")).with_row_index(_ROW)
    manifest = Manifest(
        service=service,
        mode=mode,
        timestamp_column=timestamp_column,
        rows=entities.height,
        entities_sha256=_frame_hash(entities),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    out = entities
    for view_name, features in by_view.items():
        view = catalog.views[view_name]
        key = catalog.entity_of(view).join_key
        if key not in entities.columns:
            raise TrainingSetError(f"entity frame has no {key!r} column, needed by view {view_name!r}")
        uri = table_uri(view_name)
        version = (versions or {}).get(view_name)
        if version is None:
            version = DeltaTable(uri).version()
        if progress:
            progress(f"{view_name} @ Delta v{version}")
        values = _point_in_time(view, key, features, left.select(_ROW, key, "__ts"), uri, version, mode)
        out = out.with_columns(values.drop(_ROW))
        manifest.views.append(
            ViewRead(
                view=view_name,
                table=uri,
                delta_version=version,
                definition_hash=view.definition_hash(),
                offline_lookback_s=view.offline_lookback.total_seconds(),
                features=features,
            )
        )
    return TrainingSet(out, manifest)


def rebuild(
    catalog: Catalog, manifest: Manifest, entities: pl.DataFrame, progress: Callable[[str], None] | None = None
) -> TrainingSet:
    """The same training set again: same service, mode and Delta versions; refuses other entities."""
    if _frame_hash(entities) != manifest.entities_sha256:
        raise TrainingSetError("these entity rows are not the ones the manifest was built from (hash differs)")
    for read in manifest.views:
        current = catalog.views[read.view].definition_hash()
        if current != read.definition_hash:
            raise TrainingSetError(
                f"view {read.view!r} changed since the manifest (definition {read.definition_hash} -> {current}); "
                "the Delta versions still reproduce the old values, but the catalog no longer describes them"
            )
    tables = {r.view: r.table for r in manifest.views}
    return build(
        catalog,
        manifest.service,
        entities,
        tables.__getitem__,
        timestamp_column=manifest.timestamp_column,
        mode=manifest.mode,
        versions={r.view: r.delta_version for r in manifest.views},
        progress=progress,
        plan={r.view: r.features for r in manifest.views},  # the features it had then, not the service now
    )


def _keyed(catalog: Catalog, by_view: dict[str, list[str]], entities: pl.DataFrame) -> pl.DataFrame:
    """The entity frame with its join keys converted and normalized by the entities' key rules, the same
    function ingest applies (`" 85123a"` joins the stored `"85123A"`; a fractional or negative customer id is an
    error, never truncated). The returned training set keeps the columns as given."""
    keyed = entities
    for view_name in by_view:
        entity = catalog.entity_of(catalog.views[view_name])
        if entity.join_key in entities.columns:
            try:
                values = normalize_keys(entity, entities[entity.join_key], "entity frame")
            except EntityKeyError as exc:
                raise TrainingSetError(str(exc)) from exc
            keyed = keyed.with_columns(values.alias(entity.join_key))
    return keyed


def _utc_timestamps(entities: pl.DataFrame, column: str) -> pl.Series:
    if column not in entities.columns:
        raise TrainingSetError(f"entity frame has no timestamp column {column!r} (columns: {entities.columns})")
    col = entities[column]
    if not isinstance(col.dtype, pl.Datetime):
        raise TrainingSetError(f"entity frame column {column!r} must be a Datetime, got {col.dtype}")
    if col.dtype.time_zone is None:
        raise TrainingSetError(
            f"entity frame column {column!r} is timezone-naive; say which zone it is in, e.g. "
            f"pl.col({column!r}).dt.replace_time_zone('UTC')"
        )
    if col.null_count():
        raise TrainingSetError(f"entity frame column {column!r} has {col.null_count()} null timestamps")
    return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")


def _frame_hash(frame: pl.DataFrame) -> str:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="uncompressed")
    return hashlib.sha256(buf.getvalue()).hexdigest()


@dataclass(frozen=True)
class _File:
    path: str
    partition: str
    known_from: datetime
    known_to: datetime

    @property
    def always_valid(self) -> bool:
        """Never rewritten and known at its partition's end: valid for every T at or after its rows."""
        return self.known_to == FAR_FUTURE and self.known_from == partition_end_of(self.partition)


def partition_end_of(partition: str) -> datetime:
    return partition_end(datetime.fromisoformat(partition).date())


def file_history(uri: str, version: int) -> list[_File]:
    """Every data file up to `version` with the interval in which its rows were the known truth."""
    try:
        history = read_history(uri, version, PARTITION_DATE)
    except HistoryError as exc:
        raise TrainingSetError(str(exc)) from exc
    first_write = history.first_write()
    files = []
    for life in history.files:
        end = partition_end_of(life.partition)
        known_from = end if life.added == first_write[life.partition] else max(life.added_at, end)
        files.append(_File(life.path, life.partition, known_from, life.removed_at))
    return files


def _point_in_time(
    view: FeatureView, key: str, features: list[str], left: pl.DataFrame, uri: str, version: int, mode: Mode
) -> pl.DataFrame:
    """One row per `left` row (same order): the view's features as of `left.__ts`."""
    lookback = view.offline_lookback
    if left.height == 0:
        empty = pl.scan_delta(uri, version=version).select(features).head(0).collect()
        return empty.with_columns(pl.lit(None, dtype=pl.UInt32).alias(_ROW)).select(_ROW, *features)
    # Partition D describes D+1 00:00, so the oldest partition a row can use is the day before its horizon.
    lo = (left["__ts"].min() - lookback - timedelta(days=1)).date().isoformat()  # type: ignore[operator]
    hi = left["__ts"].max().date().isoformat()  # type: ignore[union-attr]
    in_range = [f for f in file_history(uri, version) if lo <= f.partition <= hi]
    if mode == "latest":
        simple, conditional = [f for f in in_range if f.known_to == FAR_FUTURE], []
    else:
        simple = [f for f in in_range if f.always_valid]
        conditional = [f for f in in_range if not f.always_valid]
    columns = [key, EVENT_TIMESTAMP, *features]
    ordered = left.sort("__ts")
    # Rows known for good: one as-of join, the same work as a plain polars join_asof.
    empty = pl.scan_delta(uri, version=version).select(columns).head(0).collect()
    right = _read(simple, empty).sort(EVENT_TIMESTAMP)
    best = ordered.join_asof(
        right,
        left_on="__ts",
        right_on=EVENT_TIMESTAMP,
        by=key,
        strategy="backward",
        tolerance=lookback,
        check_sortedness=False,
    ).select(_ROW, EVENT_TIMESTAMP, *features)
    if conditional:
        # Rewritten partitions: each file counts only while it was the known truth (few rows, plain join).
        cond = _read(conditional, empty, with_interval=True)
        pairs = (
            left.join(cond, on=key, how="inner")
            .filter(
                (pl.col(EVENT_TIMESTAMP) <= pl.col("__ts"))
                & (pl.col(EVENT_TIMESTAMP) >= pl.col("__ts") - lookback)
                & (pl.col("__from") <= pl.col("__ts"))
                & (pl.col("__ts") < pl.col("__to"))
            )
            .sort(_ROW, EVENT_TIMESTAMP, "__from")
            .group_by(_ROW, maintain_order=True)
            .last()
            .select(_ROW, pl.col(EVENT_TIMESTAMP).alias("__cond_ts"), *[pl.col(f).alias(f"__c_{f}") for f in features])
        )
        use_cond = pl.col("__cond_ts").is_not_null() & (
            pl.col(EVENT_TIMESTAMP).is_null() | (pl.col("__cond_ts") > pl.col(EVENT_TIMESTAMP))
        )
        best = best.join(pairs, on=_ROW, how="left").with_columns(
            [pl.when(use_cond).then(pl.col(f"__c_{f}")).otherwise(pl.col(f)).alias(f) for f in features]
        )
    return best.sort(_ROW).select(_ROW, *features)


def _read(files: list[_File], empty: pl.DataFrame, with_interval: bool = False) -> pl.DataFrame:
    """The rows of `files` (columns and dtypes of `empty`), each tagged with its knowledge interval."""
    interval = [
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("__from"),
        pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("__to"),
    ]
    if not files:
        return empty.with_columns(interval) if with_interval else empty
    frames = []
    for f in files:
        frame = pl.scan_parquet(f.path).select(empty.columns).cast(dict(empty.schema))
        if with_interval:
            frame = frame.with_columns(
                pl.lit(f.known_from, dtype=pl.Datetime("us", "UTC")).alias("__from"),
                pl.lit(f.known_to, dtype=pl.Datetime("us", "UTC")).alias("__to"),
            )
        frames.append(frame)
    return pl.concat(frames, how="vertical").collect()
