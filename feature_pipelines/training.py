"""Point-in-time correct training sets, as known at each row's time by default, rebuildable from a manifest.

**One rule for training and serving.** A partition `D` of a view is a full snapshot of the view at its
instant `D+1 00:00 UTC` (trailing windows), and serving answers from the newest promoted snapshot. So for
every entity row (ids + a timestamp T) and every view of a feature service, the value is read from the
newest partition *known at T* whose instant is `<= T`:
- if that partition's instant is older than the view's `offline_lookback` at T, the value is null;
- an entity absent from that partition gets null: absence is "no value", there is no per-entity
  fallback to an older partition (serving has none either);
- an empty partition is no snapshot (no file in Delta; serving rejects an empty version): the one before
  it answers.
Rows are never dropped nor duplicated and come back in input order.

**As of known time** (the default). A row at T never sees a value the online store could not have served
at T. Knowledge comes from the Delta log: every write counts as known from its commit time (never before
its partition's instant), and a rewrite (a late correction, a backfill) replaces the version before it
only from its commit on, so a partition whose first successful commit came days late is unknown until
then. The one exception is a declared **initial historical load** (`delta.overwrite_partitions(...,
historical_load=True)`, recorded in the commit metadata; the Dagster run tag `fs/historical_load=true`):
partitions it writes first count as known at their ends, as if timely runs had produced them. Any later
write, declared or not, counts from its commit. `mode="latest"` ignores knowledge and reads the current
snapshot; `known_at=K` reads what was known at the fixed time K for every row (still point in time on T).

**Reproducible.** Every build records the Delta version of each table it read; `rebuild(manifest, ...)`
reads exactly those versions (time travel) and their log up to them, so later data, backfills and
corrections do not change it.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl
from deltalake import DeltaTable

from feature_pipelines.catalog import Catalog
from feature_pipelines.contract import mismatches
from feature_pipelines.entity_keys import EntityKeyError, normalize_keys
from feature_pipelines.offline.compute import partition_end
from feature_pipelines.offline.history import FAR_FUTURE, HistoryError, read_history
from feature_pipelines.spec import PARTITION_DATE, FeatureView

if TYPE_CHECKING:
    from feature_pipelines.privacy.policy import PrivacyPolicy

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
    known_at: str | None = None
    withheld: int = 0
    """Rows left out: their subject had no consent for the service's purpose at the row's time (as known
    then), has revoked it since, or was erased. A rebuild recomputes it: erasure wins over reproducibility."""

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
    known_at: datetime | None = None,
    privacy: PrivacyPolicy | None = None,
) -> TrainingSet:
    """Features of `service` for each row of `entities`, point in time at `entities[timestamp_column]`.

    `table_uri(view_name)` locates each view's Delta table; `versions` pins their Delta versions and
    `plan` the features per view (a rebuild passes the manifest's), otherwise the service's current
    definition and the newest versions are used and recorded. `known_at` (timezone-aware) fixes the
    knowledge time for every row instead of each row's own time. With `privacy`, rows of subjects that may
    not be used for the service's purpose are left out (`Manifest.withheld` counts them)."""
    if mode not in ("known", "latest"):
        raise TrainingSetError(f"mode must be 'known' or 'latest', got {mode!r}")
    if known_at is not None and (mode != "known" or known_at.tzinfo is None):
        raise TrainingSetError("known_at needs mode='known' and a timezone-aware datetime")
    ts = _utc_timestamps(entities, timestamp_column)
    by_view: dict[str, list[str]] = {}
    if plan is not None:
        by_view = {view: list(features) for view, features in plan.items()}
    else:
        for ref in catalog.resolve_service(service):
            by_view.setdefault(ref.view.deployed_name, []).append(ref.feature)
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
        known_at=known_at.astimezone(UTC).isoformat() if known_at else None,
    )
    out = entities
    contract = catalog.contract(service) if plan is None else {}
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
        deployed = dict(pl.scan_delta(uri, version=version).collect_schema())
        problems = mismatches(
            service,
            view_name,
            contract.get(view_name, {}),
            {c: str(d) for c, d in deployed.items()},
            f"Delta table {uri} at version {version}",
        )
        if problems:
            raise TrainingSetError("; ".join(problems))
        # A feature merged into the table after these rows were written, or not written yet, reads as null
        # (as serving returns it), with its declared dtype.
        present = [f for f in features if f in deployed]
        values = _point_in_time(view, key, present, left.select(_ROW, key, "__ts"), uri, version, mode, known_at)
        values = values.with_columns(
            pl.lit(None, dtype=view.feature(f).polars_dtype).alias(f) for f in features if f not in deployed
        ).select(_ROW, *features)
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
    if privacy is not None:
        keep = _consented(catalog, privacy, service, by_view, left, mode, known_at)
        manifest.withheld = int((~keep).sum())
        out = out.filter(keep)
        if progress and manifest.withheld:
            progress(f"{manifest.withheld} rows withheld (no consent for the service's purpose, or erased)")
    return TrainingSet(out, manifest)


def _consented(
    catalog: Catalog,
    privacy: PrivacyPolicy,
    service: str,
    by_view: dict[str, list[str]],
    left: pl.DataFrame,
    mode: Mode,
    known_at: datetime | None,
) -> pl.Series:
    """Rows whose subjects (of every personal entity the views are keyed by) had consent for the service's
    purpose at the row's time as known then, still have it now, and are not erased."""
    keep = pl.Series([True] * left.height, dtype=pl.Boolean)
    purpose = catalog.services[service].purpose
    entities = {catalog.entity_of(catalog.views[v]).name for v in by_view}
    for name in sorted(entities):
        entity = catalog.entities[name]
        if not entity.personal:
            continue
        ids = left[entity.join_key]
        purposes = [purpose] if purpose else []
        known = None if mode == "latest" else (known_at or "row")
        keep = (
            keep & privacy.permitted(name, ids, purposes, left["__ts"], known) & privacy.permitted(name, ids, purposes)
        )
    return keep


def rebuild(
    catalog: Catalog,
    manifest: Manifest,
    entities: pl.DataFrame,
    progress: Callable[[str], None] | None = None,
    privacy: PrivacyPolicy | None = None,
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
        known_at=datetime.fromisoformat(manifest.known_at) if manifest.known_at else None,
        privacy=privacy,
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
    """A data file and the interval in which its rows were the known truth of its partition."""

    path: str
    partition: str
    known_from: datetime
    known_to: datetime


def partition_end_of(partition: str) -> datetime:
    return partition_end(datetime.fromisoformat(partition).date())


def file_history(uri: str, version: int) -> list[_File]:
    """Every data file up to `version` with the interval in which its rows were the known truth.

    A file counts from its commit, or from its partition's end if that is later (a partition describes its
    end: nothing uses it before). The one exception is the declared initial historical load: a partition
    it wrote first counts from the partition's end, as if a timely run had produced it then."""
    try:
        history = read_history(uri, version, PARTITION_DATE)
    except HistoryError as exc:
        raise TrainingSetError(str(exc)) from exc
    first_write = history.first_write()
    loaded = history.initial_load()
    files = []
    for life in history.files:
        end = partition_end_of(life.partition)
        as_history = life.added in loaded and life.added == first_write[life.partition]
        known_from = end if as_history else max(life.added_at, end)
        files.append(_File(life.path, life.partition, known_from, life.removed_at))
    return files


@dataclass(frozen=True)
class _Span:
    """From `start` until the next span's start, rows read the snapshot `partition` (its `files`), or none."""

    start: datetime
    partition: str | None
    files: frozenset[int]


def _timeline(files: list[_File]) -> list[_Span]:
    """Which snapshot a row at T reads: the newest partition with a file known at T (a sweep over the
    knowledge intervals; consecutive equal answers merged)."""
    starts: dict[datetime, list[int]] = {}
    stops: dict[datetime, list[int]] = {}
    for i, f in enumerate(files):
        if f.known_from < f.known_to:
            starts.setdefault(f.known_from, []).append(i)
            if f.known_to < FAR_FUTURE:
                stops.setdefault(f.known_to, []).append(i)
    live: dict[str, set[int]] = {}
    order: list[str] = []  # partitions with a known file, oldest first (ISO dates sort as days do)
    spans: list[_Span] = []
    for t in sorted(starts.keys() | stops.keys()):
        for i in stops.get(t, ()):  # intervals are half-open: a file stops counting at its known_to
            part = files[i].partition
            live[part].discard(i)
            if not live[part]:
                del live[part]
                order.pop(bisect.bisect_left(order, part))
        for i in starts.get(t, ()):
            part = files[i].partition
            if part not in live:
                live[part] = set()
                bisect.insort(order, part)
            live[part].add(i)
        newest = order[-1] if order else None
        chosen = frozenset(live[newest]) if newest else frozenset()
        if not spans or (spans[-1].partition, spans[-1].files) != (newest, chosen):
            spans.append(_Span(t, newest, chosen))
    return spans


def view_values(
    view: FeatureView,
    key: str,
    features: list[str],
    rows: pl.DataFrame,
    uri: str,
    version: int,
    mode: Mode = "known",
    known_at: datetime | None = None,
) -> pl.DataFrame:
    """The view's `features` for each of `rows` (columns `key` and `__ts`, UTC), in the same order.

    The rule of training and serving alike: at T, read the newest partition known at T (at `known_at`
    instead, when given; every live file with `mode="latest"`) whose instant is `<= T`; null if that
    instant is older than `offline_lookback` at T, null for an entity absent from it."""
    left = rows.select(key, "__ts").with_row_index(_ROW)
    out = _point_in_time(view, key, features, left, uri, version, mode, known_at)
    return out.drop(_ROW)


def _point_in_time(
    view: FeatureView,
    key: str,
    features: list[str],
    left: pl.DataFrame,
    uri: str,
    version: int,
    mode: Mode,
    known_at: datetime | None = None,
) -> pl.DataFrame:
    """One row per `left` row (same order): the view's features as of `left.__ts`."""
    lookback = view.offline_lookback
    empty = pl.scan_delta(uri, version=version).select(key, *features).head(0).collect()
    nothing = left.select(_ROW).with_columns(pl.lit(None, dtype=dtype).alias(f) for f, dtype in empty.schema.items())
    nothing = nothing.select(_ROW, *features)
    if left.height == 0:
        return nothing
    first, last = left["__ts"].min(), left["__ts"].max()
    files = []
    for f in file_history(uri, version):
        end = partition_end_of(f.partition)
        # Older than every row's horizon: it can only make a row null, as having no partition does.
        if end > last or end < first - lookback:  # type: ignore[operator]
            continue
        if mode == "latest":
            if f.known_to == FAR_FUTURE:
                files.append(_File(f.path, f.partition, end, FAR_FUTURE))
        elif known_at is not None:
            if f.known_from <= known_at < f.known_to:
                files.append(_File(f.path, f.partition, end, FAR_FUTURE))
        else:
            files.append(f)
    spans = _timeline(files)
    if not spans:
        return nothing
    us = pl.Datetime("us", "UTC")
    starts = pl.Series([s.start for s in spans], dtype=us)
    span_of = (starts.search_sorted(left["__ts"], side="right").cast(pl.Int64) - 1).alias("__span")
    # Each span that answers rows, with its snapshot's instant and files (one row per file).
    span_files = pl.DataFrame(
        [(n, partition_end_of(s.partition), i) for n, s in enumerate(spans) if s.partition for i in s.files],
        schema={"__span": pl.Int64, "__end": us, "__file": pl.UInt32},
        orient="row",
    )
    wanted = (
        left.select(_ROW, key, "__ts")
        .with_columns(span_of)
        .join(span_files, on="__span", how="inner")
        .filter(pl.col("__ts") - pl.col("__end") <= lookback)  # the snapshot is within the lookback at T
    )
    if wanted.height == 0:
        return nothing
    needed = sorted(set(wanted["__file"].unique().to_list()))
    right = _read([files[i] for i in needed], needed, empty)
    try:
        wanted = wanted.with_columns(pl.col(key).cast(empty.schema[key], strict=True))
    except pl.exceptions.InvalidOperationError as exc:
        raise TrainingSetError(
            f"entity column {key!r} ({left.schema[key]}) cannot be compared with view {view.name!r} ids "
            f"({empty.schema[key]}): {exc}"
        ) from exc
    matched = wanted.select(_ROW, key, "__file").join(right, on=[key, "__file"], how="inner")
    if matched.height != matched[_ROW].n_unique():
        dup = matched.filter(pl.col(_ROW).is_duplicated()).join(
            pl.DataFrame(
                {"__file": needed, "__partition": [files[i].partition for i in needed]},
                schema={"__file": pl.UInt32, "__partition": pl.String},
            ),
            on="__file",
        )
        examples = dup.select(key, "__partition").unique().head(5).rows()
        raise TrainingSetError(
            f"view {view.name!r} ({uri} v{version}) has more than one row for an entity in one partition "
            f"(entity, partition): {examples}"
        )
    return (
        left.select(_ROW)
        .join(matched.drop(key, "__file"), on=_ROW, how="left", maintain_order="left")
        .select(_ROW, *features)
    )


def _read(files: list[_File], ids: list[int], empty: pl.DataFrame) -> pl.DataFrame:
    """The rows of `files` (columns and dtypes of `empty`), each tagged with its file id (`__file`)."""
    frames = [
        # Columns merged into the table after this file was written read as null.
        pl.scan_parquet(f.path, schema=dict(empty.schema), missing_columns="insert", extra_columns="ignore")
        .select(empty.columns)
        .cast(dict(empty.schema))
        .with_columns(pl.lit(i, dtype=pl.UInt32).alias("__file"))
        for f, i in zip(files, ids, strict=True)
    ]
    return pl.concat(frames, how="vertical").collect()
