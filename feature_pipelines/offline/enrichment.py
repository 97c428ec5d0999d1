"""What a view's events are joined to before its transformation: their persons and their lookups.

An identity-keyed view (`FeatureView.identity`) computes partition D from events that carry ids; each event
gets the person its ids resolve to in the alias map *at D's end, as known at D's end* (`AliasMap.resolve`),
so a partition recomputed after later logins, merges or un-merges gives the same rows, and a training set
reading it sees identity as it was known then. A `Lookup` adds a dimension (stock code -> category), each
value only from its `valid_from` on. Both are plain polars here: Dagster only decides which tables to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

import polars as pl

from feature_pipelines.identity.alias_map import AliasMap
from feature_pipelines.identity.edges import Guardrails
from feature_pipelines.identity.graph import person_id
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.offline import delta
from feature_pipelines.spec import EVENT_DATE, PERSON_ID, VALID_FROM, FeatureView, Lookup

if TYPE_CHECKING:
    from feature_pipelines.catalog import Catalog
    from feature_pipelines.settings import Settings


class MissingInputError(ValueError):
    """A view needs an input (the alias map, a lookup's source rows) that was not given or does not exist."""


@dataclass(frozen=True)
class ViewInputs:
    """A run's inputs besides the view's own raw rows: the alias map (identity-keyed views) and every lookup's
    derived frame, by lookup name (`derive_lookups`)."""

    aliases: AliasMap | None = None
    lookups: Mapping[str, pl.DataFrame] = field(default_factory=dict)


@dataclass
class Enriched:
    """A partition's events with their persons and lookups, and the events left out (blocked ids only)."""

    events: pl.DataFrame
    unresolved: int = 0
    own_persons: int = 0


def derive_lookups(view: FeatureView, raw_by_source: Mapping[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Each lookup's frame (key, columns, valid_from), derived once per run from its source's raw rows."""
    out: dict[str, pl.DataFrame] = {}
    for lookup in view.lookups:
        if lookup.source_name not in raw_by_source:
            raise MissingInputError(
                f"view {view.deployed_name!r}: lookup {lookup.name!r} needs the raw rows of source "
                f"{lookup.source_name!r}, which were not read"
            )
        frame = lookup.derive(raw_by_source[lookup.source_name].lazy()).collect()
        dups = frame.filter(pl.col(lookup.key).is_duplicated())
        if dups.height:
            examples = dups[lookup.key].unique().sort().head(5).to_list()
            raise ValueError(
                f"view {view.deployed_name!r}: lookup {lookup.name!r} derives {dups.height} rows with a repeated "
                f"key {lookup.key!r} (e.g. {examples}); a lookup has one value per key"
            )
        out[lookup.name] = frame.select(lookup.key, *lookup.columns, VALID_FROM).sort(lookup.key)
    return out


@dataclass(frozen=True)
class ReadInputs:
    """A run's inputs, and the Delta table versions they were read at (recorded in the feature commit)."""

    inputs: ViewInputs
    versions: dict[str, str]


def read_inputs(view: FeatureView, catalog: Catalog, settings: Settings, last_day: date) -> ReadInputs:
    """Read what `view` declares besides its source for partitions up to `last_day`: the alias map (newest
    version: resolution as known at each partition's end makes later facts invisible to it) and each
    lookup source's raw rows from its start to `last_day`, derived once."""
    versions: dict[str, str] = {}
    aliases = None
    if view.identity is not None:
        uri = IdentityStore(settings.lake_dir).uri("alias_map")
        version = delta.table_version(uri)
        if version is None:
            raise MissingInputError(
                f"view {view.deployed_name!r} is keyed through the identity graph, but the alias map {uri} does "
                "not exist: materialize identity/alias_map (or `fstore identity build`) first"
            )
        aliases = AliasMap(delta.scan(uri, version).collect())
        versions.update(alias_table=uri, alias_version=str(version))
    raw_by_source: dict[str, pl.DataFrame] = {}
    for lookup in view.lookups:
        source = catalog.sources[lookup.source_name]
        uri = settings.raw_table(source.name)
        version = delta.table_version(uri)
        if version is None:
            raise MissingInputError(
                f"view {view.deployed_name!r}: lookup {lookup.name!r} reads raw table {uri}, which does not exist: "
                f"materialize raw/{source.name} first"
            )
        if source.name not in raw_by_source:
            raw_by_source[source.name] = delta.read_partitions(uri, EVENT_DATE, source.start, last_day, version)
        versions[f"lookup_{lookup.name}_version"] = str(version)
    return ReadInputs(ViewInputs(aliases, derive_lookups(view, raw_by_source)), versions)


def check_inputs(view: FeatureView, inputs: ViewInputs) -> None:
    """Fail before any work when a view's declared inputs are missing."""
    if view.identity is not None and inputs.aliases is None:
        raise MissingInputError(
            f"view {view.deployed_name!r} is keyed through the identity graph, but no alias map was given: "
            "build identity first (`fstore identity build`, or the identity/alias_map asset)"
        )
    missing = [lookup.name for lookup in view.lookups if lookup.name not in inputs.lookups]
    if missing:
        raise MissingInputError(f"view {view.deployed_name!r}: lookups {missing} were not derived")


def enrich(view: FeatureView, events: pl.DataFrame, inputs: ViewInputs, end: datetime) -> Enriched:
    """`events` (prepared, one partition's window) with `person_id` and the lookup columns, as of `end`."""
    result = Enriched(events)
    if view.identity is not None:
        result = resolve_persons(view, events, inputs.aliases, end)  # type: ignore[arg-type]
    frame = result.events
    for lookup in view.lookups:
        frame = join_lookup(lookup, frame, inputs.lookups[lookup.name], end)
    result.events = frame
    return result


def resolve_persons(view: FeatureView, events: pl.DataFrame, aliases: AliasMap, end: datetime) -> Enriched:
    """Each event's person: its ids tried in the declared order, resolved at `end` as known at `end`; an event
    none of whose ids the map knew then is its own id's person (a visitor first seen after the map's last
    run); an event whose own id is a blocked value is left out. Row order is kept."""
    ident = view.identity
    assert ident is not None
    person = pl.lit(None, dtype=pl.String)
    frame = events
    for i, column in enumerate(ident.ids):
        ids = frame.select(pl.col(column).cast(pl.String).alias("_key")).drop_nulls().unique().sort("_key")
        resolved = aliases.resolve(ids, identifier_type=column, column="_key", at=end, known_at=end)
        frame = (
            frame.with_columns(pl.col(column).cast(pl.String).alias("_key"))
            .join(resolved.rename({PERSON_ID: f"_p{i}"}), on="_key", how="left", maintain_order="left")
            .drop("_key")
        )
        person = pl.coalesce(person, pl.col(f"_p{i}"))
    blocked = Guardrails().blocked(ident.own).fill_null(True)
    frame = frame.with_columns(person.alias(PERSON_ID), blocked.alias("_blocked"))
    own = frame.filter(pl.col(PERSON_ID).is_null() & ~pl.col("_blocked"))[ident.own].cast(pl.String).unique()
    own_map = pl.DataFrame(
        {"_own": own, "_own_person": [person_id(ident.own, v) for v in own.to_list()]},
        schema={"_own": pl.String, "_own_person": pl.String},
    )
    frame = (
        frame.with_columns(pl.col(ident.own).cast(pl.String).alias("_own"))
        .join(own_map, on="_own", how="left", maintain_order="left")
        .with_columns(pl.coalesce(PERSON_ID, "_own_person").alias(PERSON_ID))
    )
    unresolved = frame.filter(pl.col(PERSON_ID).is_null()).height
    kept = frame.filter(pl.col(PERSON_ID).is_not_null()).select(*events.columns, PERSON_ID)
    return Enriched(kept, unresolved=unresolved, own_persons=own_map.height)


def join_lookup(lookup: Lookup, events: pl.DataFrame, derived: pl.DataFrame, end: datetime) -> pl.DataFrame:
    """`events` with the lookup's columns: a key's value if it was valid before `end`, else the defaults."""
    valid = derived.filter(pl.col(VALID_FROM) < end).drop(VALID_FROM)
    dtypes = lookup.polars_columns
    return events.join(valid, on=lookup.key, how="left", maintain_order="left").with_columns(
        [
            pl.col(c).fill_null(pl.lit(lookup.defaults[c], dtype=dtypes[c]))
            for c in lookup.columns
            if c in lookup.defaults
        ]
    )


def active_persons(view: FeatureView, raw: pl.DataFrame, inputs: ViewInputs, days: list[date]) -> pl.DataFrame:
    """(person_id, event_date): the persons active on each of `days`, each day's events resolved as of its end,
    as the partition of that day resolves them (for the completeness check)."""
    prepared = view.prepare(raw.lazy()).collect()
    frames = [pl.DataFrame(schema={PERSON_ID: pl.String, EVENT_DATE: pl.String})]
    for day in days:
        todays = prepared.filter(pl.col(EVENT_DATE) == day.isoformat())
        end = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
        resolved = resolve_persons(view, todays, inputs.aliases, end).events  # type: ignore[arg-type]
        frames.append(resolved.select(PERSON_ID, EVENT_DATE).unique())
    return pl.concat(frames)
