"""The declarative spec: small, typed, immutable objects that data engineers write in `feature_defs/`.

Everything else (Dagster assets and checks, GE suites, the Redis layout, docs, the catalog) is derived from
these objects, so a fact about a feature is written exactly once. Nothing here imports Dagster.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl

Sensitivity = Literal["public", "internal", "confidential", "restricted"]
KeyNormalization = Literal["strip", "upper", "lower", "nfkc"]
Severity = Literal["blocking", "warn"]
SENSITIVITIES: tuple[str, ...] = ("public", "internal", "confidential", "restricted")


def _caller_location() -> str:
    """Where the spec object was written, as `path:line`, so every error can point a human at it."""
    frame = inspect.currentframe()
    frame = frame.f_back.f_back if frame and frame.f_back else None  # skip this function and __post_init__
    while frame is not None:  # frames, not inspect.stack(): that reads every caller's source, 100x slower
        filename = frame.f_code.co_filename
        if not filename.endswith(("spec.py", "dataclasses.py")) and "<" not in filename:
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _located(cls):
    """Record the definition site of each instance without making it part of equality."""
    original_post_init = getattr(cls, "__post_init__", None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defined_at", _caller_location())
        if original_post_init:
            original_post_init(self)

    cls.__post_init__ = __post_init__
    return cls


@dataclass(frozen=True, kw_only=True)
@_located
class Entity:
    """A thing features describe (a user, an item), identified by one join key.

    Attributes:
        name: catalog name, e.g. "customer".
        join_key: column that identifies the entity in sources and feature tables.
        dtype: polars dtype of the join key.

    Key rules, enforced by `feature_pipelines.entity_keys` wherever ids enter (ingest, training entity
    frames, serving reads):
        normalize: steps applied to text keys first, e.g. ("strip", "upper"). Without "nfkc", a key holding
            look-alike Unicode characters (full-width digits) fails its pattern instead of becoming a new key.
        pattern: regex a (normalized) text key must match; `\\d`, `\\w` and `\\s` mean their ASCII classes.
        min, max: inclusive bounds of an integer key (e.g. min=1: ids are positive).
        non_key_pattern: values a source's key column may hold that are not entities (service codes such as
            POST): they pass ingest but are never keys of a training set or a serving read.

    personal: its ids identify people (data subjects): consent (`Purpose`) and erasure (`fstore erase`)
        act on them, and views of it must declare their purposes.
    """

    name: str
    join_key: str
    dtype: pl.DataType | type[pl.DataType]
    description: str = ""
    normalize: tuple[KeyNormalization, ...] = ()
    pattern: str | None = None
    min: int | None = None
    max: int | None = None
    non_key_pattern: str | None = None
    personal: bool = False
    defined_at: str = field(default="", compare=False, repr=False)

    @property
    def polars_dtype(self) -> pl.DataType:
        return resolve_dtype(self.dtype)


@dataclass(frozen=True, kw_only=True)
@_located
class Purpose:
    """What personal data may be used for (personalization, analytics, ads): the unit of consent.

    Views declare the purposes their rows serve, feature services the one purpose their model serves.
    A subject (an id of a `personal` entity) is left out of a view unless they consent to every purpose it
    declares, and out of a training set unless they consent to its service's purpose.

    Attributes:
        opt_in: consent must have been granted (no ledger event: no consent). False: consent holds until
            revoked (a legitimate-interest purpose such as fraud prevention or service analytics).
    """

    name: str
    description: str
    opt_in: bool = False
    defined_at: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
@_located
class ColumnContract:
    """What every value of one source column must satisfy; the raw gate checks each row before the commit.

    Attributes:
        not_null: no null value.
        min, max: inclusive bounds (numbers, or dates/timestamps for temporal columns).
        finite: no inf/NaN (float columns). True by default: a float column without a contract is finite too.
        pattern: regex a text value must match (`\\d`, `\\w`, `\\s` are ASCII classes).
        allowed: the set of allowed values.
        max_length: longest text value, in characters.
        unless: a polars SQL condition over the file's columns; rows where it holds are exempt from min, max,
            pattern and allowed, e.g. `unless="InvoiceNo LIKE 'A%'"` for bad-debt adjustments.
    """

    not_null: bool = False
    min: float | int | date | datetime | None = None
    max: float | int | date | datetime | None = None
    finite: bool = True
    pattern: str | None = None
    allowed: tuple[Any, ...] | None = None
    max_length: int | None = None
    unless: str | None = None
    description: str = ""
    defined_at: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
@_located
class BatchSource:
    """A batch source: files of events, and how to normalize them into the raw Delta table.

    Attributes:
        location: file path or glob, relative to the `feature_defs` package unless absolute.
        format: "parquet" or "csv".
        schema: the columns a file must have, by their names in the file, with their dtypes.
        event_time: the column holding when each event happened.
        timezone: the wall-clock zone of naive event times; they are converted to UTC.
        timestamp_format: strptime format for the event time in text formats (csv).
        column_names: "snake_case" renames columns (CustomerID -> customer_id); "as_is" keeps them.
        start, end: the first and last day (UTC) of data; they bound the daily partitions. `end=None`
            means "up to today".

    The door (invariant 2), enforced by `feature_pipelines.offline.contracts` before any raw commit:
        contracts: per source column (by its name in the file), a `ColumnContract`. A column that is an
            entity's join key also obeys the entity's key rules; float columns are finite by default.
        on_bad_rows: "reject" (default): a file with any bad row is refused and nothing is committed.
            "quarantine": bad rows go to `lake/quarantine/<source>/` with their reasons and the rest proceeds,
            unless more than `max_bad_fraction` of a file's rows are bad (then the file is refused).
        max_shrink: a re-delivery may not shrink a day that had rows by more than this fraction, nor to zero,
            without an explicit override (`fstore ingest --allow-shrink`, run tag `allow_shrink=true`).
        closures: days, (first, last) ranges or weekday names ("Saturday") on which the source is expected to
            be silent (holidays, a shop closed on Saturdays).
        retention: how long raw rows (and quarantined ones) are kept, counted from their event day to the
            clock: the daily retention job deletes older days (`feature_pipelines.privacy.retention`) and the
            purge vacuums them. Whole days; longer than the lookback of every view reading the source. None:
            kept until a retention is declared.
    """

    name: str
    location: str
    format: Literal["parquet", "csv"]
    schema: Mapping[str, Any]
    event_time: str
    start: date
    end: date | None = None
    timezone: str = "UTC"
    timestamp_format: str = "%Y-%m-%d %H:%M:%S"
    column_names: Literal["snake_case", "as_is"] = "snake_case"
    description: str = ""
    owner: str = ""
    contracts: Mapping[str, ColumnContract] = field(default_factory=dict)
    on_bad_rows: Literal["reject", "quarantine"] = "reject"
    max_bad_fraction: float = 0.01
    max_shrink: float = 0.5
    closures: tuple[date | tuple[date, date] | str, ...] = ()
    retention: timedelta | None = None
    defined_at: str = field(default="", compare=False, repr=False)

    def column(self, source_name: str) -> str:
        """The raw-table name of a source column."""
        return normalize_column_name(source_name) if self.column_names == "snake_case" else source_name

    @property
    def raw_schema(self) -> dict[str, pl.DataType]:
        """Columns of the raw Delta table: normalized names, UTC event time, and the partition column."""
        cols: dict[str, pl.DataType] = {self.column(c): resolve_dtype(t) for c, t in self.schema.items()}
        cols[self.column(self.event_time)] = pl.Datetime("us", "UTC")
        cols[EVENT_DATE] = pl.String()
        return cols

    @property
    def event_time_column(self) -> str:
        return self.column(self.event_time)

    def resolve_location(self, base: Path) -> str:
        path = Path(self.location)
        return str(path if path.is_absolute() else base / path)

    def is_closed(self, day: date) -> bool:
        """Whether `day` is a declared closure: an expected gap, on which freshness and completeness stay quiet."""
        for closure in self.closures:
            if isinstance(closure, str):
                if WEEKDAYS.index(closure) == day.weekday():
                    return True
            elif isinstance(closure, tuple):
                if closure[0] <= day <= closure[1]:
                    return True
            elif closure == day:
                return True
        return False


WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, kw_only=True)
@_located
class Expectation:
    """Any Great Expectations 1.x expectation by its snake_case name, e.g.
    `Expectation("expect_column_values_to_match_regex", regex="^[A-Z]{2}$")`. The column is filled in."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    severity: Severity = "blocking"
    defined_at: str = field(default="", compare=False, repr=False)

    def __init__(self, name: str, severity: Severity = "blocking", **kwargs: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "severity", severity)
        object.__setattr__(self, "kwargs", dict(kwargs))
        self.__post_init__()


@dataclass(frozen=True, kw_only=True)
@_located
class Feature:
    """One feature column: its dtype, meaning and what valid values look like.

    Each becomes a Great Expectations expectation with this feature's `severity` (blocking stops the
    online push; warn is recorded and the run goes on): `nullable=False` (the default) allows no null,
    `max_null_fraction` allows that share; `min`/`max` and `allowed` are range and set checks; `unique`
    means unique per partition; `expectations` adds any other GE expectation with its own severity.
    `drift_threshold` is the PSI (numeric) or Jensen-Shannon distance (categorical) above which the drift
    check warns. `inputs` names the source columns the feature is computed from (column lineage).

    Value guards (invariant 2): a float feature's non-finite values (inf, -inf, NaN) fail a blocking
    expectation unless `allow_non_finite=True` (null is governed by `nullable`). `outlier_z` is the robust
    z-score (|x - median| / (1.4826 MAD) over the previous partitions' values) above which the warn-level
    `outliers` check lists an entity; None turns it off for this feature. Neither changes what is computed,
    so neither is part of the definition hash. A vector (a list or array of floats) is guarded element by
    element: one inf, NaN or null element fails the same blocking expectation.

    `length` is the element count every non-null value of a list feature must have (a vector's width): a
    blocking expectation, evaluated on the computed frame. `pl.Array(inner, n)` fixes the width of a frame
    in memory but not what Delta stores (a list) nor what a transformation returns, so the width is declared
    here; on an Array feature it defaults to the array's width. A check, not a computation: not hashed.
    """

    name: str
    dtype: pl.DataType | type[pl.DataType]
    description: str
    nullable: bool = False
    max_null_fraction: float | None = None
    min: float | int | None = None
    max: float | int | None = None
    allowed: tuple[Any, ...] | None = None
    unique: bool = False
    expectations: tuple[Expectation, ...] = ()
    severity: Severity = "blocking"
    drift_threshold: float | None = None
    inputs: tuple[str, ...] = ()
    sensitivity: Sensitivity | None = None
    # Why and since when the feature is on its way out ("2011-06-01: use spend_30d"). New feature services
    # may not consume it; services whose lock already does get a warning. Not part of the definition hash
    # (hence repr=False): deprecating a feature does not change what is computed.
    deprecated: str | None = field(default=None, repr=False)
    allow_non_finite: bool = field(default=False, repr=False)
    outlier_z: float | None = field(default=10.0, repr=False)
    length: int | None = field(default=None, repr=False)
    defined_at: str = field(default="", compare=False, repr=False)

    @property
    def polars_dtype(self) -> pl.DataType:
        return resolve_dtype(self.dtype)

    @property
    def expected_length(self) -> int | None:
        """The element count each non-null value must have: `length`, else an Array dtype's width."""
        if self.length is not None:
            return self.length
        dtype = self.polars_dtype
        return dtype.size if isinstance(dtype, pl.Array) else None

    @property
    def float_elements(self) -> bool:
        """Whether the feature is a vector of floats (a list or array), guarded element by element."""
        dtype = self.polars_dtype
        return isinstance(dtype, pl.List | pl.Array) and dtype.inner.is_float()


BadEntityPolicy = Literal["keep_previous", "null"]


def versioned_name(name: str, version: int) -> str:
    """How version `version` of view `name` is named wherever it is deployed: its Delta table
    (`lake/features/<name>`), its online view (Redis keys, serving metadata) and its catalog key. Version 1
    keeps the bare name, so tables and keys written before views had versions stay where they are; a bumped
    version is written side by side as `<name>@<version>` (e.g. `user_context@2`)."""
    return name if version == 1 else f"{name}@{version}"


def parse_versioned_name(deployed: str) -> tuple[str, int]:
    """`user_context@2` -> ("user_context", 2); `user_context` -> ("user_context", 1)."""
    name, sep, version = deployed.partition("@")
    return (name, int(version)) if sep and version.isdigit() else (deployed, 1)


def asset_name(deployed: str) -> str:
    """The deployed name as a Dagster asset key part (`[A-Za-z0-9_]` only): `user_context@2` -> `user_context__v2`."""
    return deployed.replace("@", "__v")


VIEW_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
"""View names: a letter, then letters, digits and underscores (no `__`: asset keys spell versions with it)."""


@dataclass(frozen=True)
class WindowContext:
    """What a transformation gets besides the events: the instant its features describe and the windows."""

    as_of: datetime
    windows: tuple[timedelta, ...]

    def since(self, window: timedelta) -> datetime:
        return self.as_of - window


Transformation = Callable[[pl.LazyFrame, WindowContext], pl.LazyFrame]
Preparation = Callable[[pl.LazyFrame], pl.LazyFrame]


def keep_all(events: pl.LazyFrame) -> pl.LazyFrame:
    return events


PERSON_ID = "person_id"
"""The column an identity-keyed view's events get: the person their ids resolve to (the alias map's)."""


@dataclass(frozen=True, kw_only=True)
@_located
class ThroughIdentity:
    """Declares a view keyed through the identity graph: its source's events carry ids (a cookie, a device, a
    customer), not persons. Before the transformation, each prepared event gets `person_id`: the person the
    alias map (`<lake>/identity/alias_map`) gives its ids at the partition's end, *as known at the partition's
    end*, so recomputing a partition later (after more logins, a merge or an un-merge) gives the same rows and
    a later login never reaches an earlier partition.

    Attributes:
        ids: event columns holding ids, each named as its identifier type in the alias map, most trusted first
            (a logged-in event's customer_id before its cookie): the first that resolves wins.
        own: the column whose id makes an event's own person when no id resolves (an id first seen after the
            map's last run that knew of it): a visitor the map does not know yet is a person of their own
            (`p_` + the id's hash, the id the identity graph gives a lone id). Blocked values (the identity
            guardrails': "", "unknown", ...) are never a person: such events are left out and counted.
    """

    ids: tuple[str, ...] = ("customer_id", "anonymous_id")
    own: str = "anonymous_id"
    defined_at: str = field(default="", compare=False, repr=False)


Derivation = Callable[[pl.LazyFrame], pl.LazyFrame]


@dataclass(frozen=True, kw_only=True)
@_located
class Lookup:
    """A dimension joined onto a view's events by key, derived from another source's raw rows (stock code ->
    category from the retail lines' descriptions).

    `derive(raw rows of source) -> LazyFrame` with `key`, the `columns` and `valid_from` (UTC: when the value
    became true, e.g. the first line that carried it): one row per key. A partition sees a key's value only
    if `valid_from` is before its end (a product first sold later has no category yet); other events get
    `defaults` (a key without a value is not dropped). Deterministic, point in time, and computed once per run.
    """

    name: str
    source: BatchSource | str
    key: str
    columns: Mapping[str, Any]
    derive: Derivation = field(repr=False)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    defined_at: str = field(default="", compare=False, repr=False)

    @property
    def source_name(self) -> str:
        return self.source if isinstance(self.source, str) else self.source.name

    @property
    def polars_columns(self) -> dict[str, pl.DataType]:
        return {c: resolve_dtype(t) for c, t in self.columns.items()}


VALID_FROM = "valid_from"
"""A `Lookup` derivation's column: from when each value holds."""


@dataclass(frozen=True, kw_only=True)
@_located
class FeatureView:
    """A table of features for one entity, computed per daily partition from trailing windows of a source.

    Attributes:
        transformation: `(events, ctx) -> LazyFrame` with one row per entity: the join key and every
            declared feature. `events` holds the prepared rows in `[ctx.as_of - lookback, ctx.as_of)`,
            sorted by event time.
        prepare: row-wise cleaning that does not depend on the window (filters, de-duplication, derived
            columns). It runs once per run over all the raw rows a run reads, not once per partition.
        windows: trailing windows the transformation aggregates over (they also size the raw read).
        online_ttl: how long a pushed value may be served (Redis key expiry), refreshed by every push.
        offline_lookback: how old the newest known partition may be for a point-in-time join to use it
            (older: null; see `training.py`).
        version: bump it when the meaning of a feature changes; it is part of the definition hash.
        max_source_lag: the freshness check warns when the newest source event a partition saw is older
            than this at the partition's end.
        min_completeness: the completeness check warns when fewer than this share of the entities active
            on the partition's day got a row.
        skew_sample: how many entities the round-trip and consistency checks compare after a push.
        freshness_sla: how long after its day ends a partition must be in Delta and serving in Redis.
        identity: `ThroughIdentity(...)` for a view keyed by person whose source carries ids: the events get
            `person_id` from the alias map as known at the partition's end (before the transformation).
        lookups: dimensions joined onto the prepared events by key (`Lookup`), point in time.

    What the transformation receives is the source's raw columns, then `person_id` (identity) and each
    lookup's columns, in that order (`transformation_input_schema`).
        purposes: names of the `Purpose`s its rows serve; required for views of a `personal` entity. A
            subject without consent for every one of them is left out at compute, push, serve and train.

    Blast radius (invariant 2 without one bad row blocking every entity):
        max_bad_fraction: the share of a partition's entities whose rows may fail a blocking row-level
            expectation (a value out of range, not allowed, null, non-finite) and be held back while the rest
            is committed and promoted. 0 (the default): any bad row blocks the view, as do table-level
            failures (types, uniqueness, null shares) and a bad share above this, whatever the policy.
        on_bad_entities: what a held-back entity serves. "keep_previous": its row in the previous committed
            partition is carried into this one (stamped with this partition's date), so its previous values
            keep serving; an entity without a previous row is left out. "null": its row is left out of the
            partition, so serving returns no values for it. The gate check lists who was held back.
        Neither is part of the definition hash: they decide which rows the gate withholds, not how a value
        is computed.
        retention: how long its feature table keeps a partition, counted from the partition's day to the
            clock (the daily retention job deletes older ones). Whole days, at least `offline_lookback`.
            None: kept until a retention is declared. With `online_ttl` (Redis) and the source's retention
            (raw rows) it is one of the three TTLs the catalog shows.
    """

    name: str
    entity: Entity | str
    source: BatchSource | str
    features: tuple[Feature, ...]
    transformation: Transformation
    owner: str
    prepare: Preparation = keep_all
    description: str
    windows: tuple[timedelta, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    sensitivity: Sensitivity = "internal"
    version: int = 1
    online: bool = True
    online_ttl: timedelta | None = timedelta(days=2)
    offline_lookback: timedelta = timedelta(days=2)
    max_source_lag: timedelta = timedelta(days=3)
    min_completeness: float = 0.9
    skew_sample: int = 200
    freshness_sla: timedelta = timedelta(hours=12)
    identity: ThroughIdentity | None = None
    lookups: tuple[Lookup, ...] = ()
    purposes: tuple[str, ...] = ()
    # What the gate withholds, not how a value is computed: not part of the definition hash (repr=False).
    max_bad_fraction: float = field(default=0.0, repr=False)
    on_bad_entities: BadEntityPolicy = field(default="keep_previous", repr=False)
    retention: timedelta | None = None
    defined_at: str = field(default="", compare=False, repr=False)

    @property
    def entity_name(self) -> str:
        return self.entity if isinstance(self.entity, str) else self.entity.name

    @property
    def source_name(self) -> str:
        return self.source if isinstance(self.source, str) else self.source.name

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def namespace_sensitivity(self) -> str:
        """The most sensitive of the view's own sensitivity and its features': it decides the Redis namespace,
        so one confidential feature makes the whole view readable only by those granted confidential data
        (a feature's sensitivity is never weaker than its view's: a lower one changes nothing)."""
        declared = [self.sensitivity, *(f.sensitivity for f in self.features if f.sensitivity)]
        return max(declared, key=lambda s: SENSITIVITIES.index(s) if s in SENSITIVITIES else -1)

    @property
    def lookback(self) -> timedelta:
        """How much raw history one partition's computation reads."""
        return max(self.windows, default=timedelta(days=1))

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature view {self.name!r} has no feature {name!r}")

    @property
    def deployed_name(self) -> str:
        """This version's name in Delta, Redis and the catalog (see `versioned_name`)."""
        return versioned_name(self.name, self.version)

    @property
    def asset_name(self) -> str:
        """This version's name in Dagster asset keys (see `asset_name`)."""
        return asset_name(self.deployed_name)

    def code_hash(self) -> str:
        """A short hash of `prepare` and `transformation` and of every helper, constant, closure value and
        default argument they use, transitively (see `feature_pipelines.fingerprint`)."""
        from feature_pipelines.fingerprint import fingerprint

        return fingerprint(self.prepare, self.transformation, *[lookup.derive for lookup in self.lookups])

    def definition_hash(self) -> str:
        """A short hash of everything that defines the view's output: its declared fields and its code,
        with what the code uses (`code_hash`). Inputs a view does not use (no identity, no lookups) are not
        part of it, so views declared before those fields existed keep their hash."""
        payload = {
            f.name: repr(getattr(self, f.name))
            for f in fields(self)
            # Purposes and the blast radius decide whose rows are kept, retention how long; none of them
            # changes a kept row's values.
            if f.name not in NOT_HASHED and not (f.name in ("identity", "lookups") and not getattr(self, f.name))
        }
        payload["code"] = self.code_hash()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


NOT_HASHED = (
    "transformation",  # hashed through `code_hash`, with what it uses
    "prepare",
    "defined_at",
    "purposes",
    "retention",
    "max_bad_fraction",
    "on_bad_entities",
)
"""FeatureView fields outside the definition hash."""


@dataclass(frozen=True, kw_only=True)
@_located
class FeatureService:
    """The contract of one model: the features it consumes, as `"view:feature"` or `"view:*"` references.

    `"view@2:feature"` names a view version explicitly; otherwise the version is the one the service's lock
    (`feature_defs/services.lock.json`, written by `fstore lock`) records, else the newest in the catalog.
    The lock pins the view versions and dtypes a model consumes: the catalog refuses a change that breaks it,
    and serving and training refuse a deployment that does not match it.

    `purpose` names the `Purpose` the model serves; every view it consumes must declare it (required when
    it consumes a view of a `personal` entity). Training sets leave out subjects without consent for it.

    `consumers` names who reads the service online (`"team:ranking"`, `"service:search-api"`): each gets a
    Redis ACL user (`fstore acl`) that may read exactly the keys of the views its services consume."""

    name: str
    features: tuple[str, ...]
    owner: str
    description: str
    purpose: str | None = None
    consumers: tuple[str, ...] = ()
    defined_at: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
@_located
class TrainingSetSpec:
    """A training set a model team can materialize from the Dagster UI: a feature service joined, point in
    time, onto a label table (entity ids, a timezone-aware timestamp, labels)."""

    name: str
    service: str
    labels: str
    timestamp_column: str = "event_timestamp"
    mode: Literal["known", "latest"] = "known"
    owner: str
    description: str
    defined_at: str = field(default="", compare=False, repr=False)

    def resolve_labels(self, base: Path) -> str:
        path = Path(self.labels)
        return str(path if path.is_absolute() else base / path)


EVENT_DATE = "event_date"
"""Partition column of raw tables: the UTC date of the event, as `YYYY-MM-DD`."""
PARTITION_DATE = "partition_date"
"""Partition column of feature tables: the day whose end the row describes, as `YYYY-MM-DD`."""
EVENT_TIMESTAMP = "event_timestamp"
"""Feature tables: the instant a row describes (end of its partition day, exclusive), UTC."""


def transformation_input_schema(view: FeatureView, source: BatchSource) -> dict[str, pl.DataType]:
    """The columns a view's `prepare` output gains before its transformation sees it: `person_id` for an
    identity-keyed view, then every lookup's columns."""
    schema = dict(source.raw_schema)
    if view.identity is not None:
        schema[PERSON_ID] = pl.String()
    for lookup in view.lookups:
        schema.update(lookup.polars_columns)
    return schema


def output_schema(view: FeatureView, entity: Entity) -> dict[str, pl.DataType]:
    """What a view's transformation must produce: the join key, then every declared feature."""
    return {entity.join_key: entity.polars_dtype, **{f.name: f.polars_dtype for f in view.features}}


def normalize_column_name(name: str) -> str:
    """`CustomerID` -> `customer_id`, `InvoiceNo` -> `invoice_no`, `unit price` -> `unit_price`."""
    out: list[str] = []
    for i, ch in enumerate(name):
        if ch in " -.":
            out.append("_")
            continue
        prev_lower = i > 0 and (name[i - 1].islower() or name[i - 1].isdigit())
        next_lower = i + 1 < len(name) and name[i + 1].islower()
        prev_upper = i > 0 and name[i - 1].isupper()
        if ch.isupper() and i > 0 and (prev_lower or (prev_upper and next_lower)):
            out.append("_")
        out.append(ch.lower())
    return "".join(out).replace("__", "_")


def resolve_dtype(dtype: pl.DataType | type[pl.DataType]) -> pl.DataType:
    """`pl.Int64` and `pl.Int64()` both name a dtype in the spec; polars compares instances."""
    return dtype() if isinstance(dtype, type) else dtype
