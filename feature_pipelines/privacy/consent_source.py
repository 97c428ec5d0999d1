"""Consent as a source: rows of a consent-events source, ingested like any source, folded into the ledger.

The source's contract (`feature_defs/sources.py` `consent_events`): `consent_id`, `subject_type`
("customer_id" or "anonymous_id"), `subject_id`, `purpose`, `granted`, `event_time`, `origin`. A fold
reads partitions of its raw table and appends each row the ledger does not hold yet as a ledger event:
- a customer id's choice goes to the entity whose join key is `customer_id` (`customer`), a cookie's to
  the ledger entity `alias:anonymous_id` (a cookie is no entity: its choice applies to the person it
  stitches to, `PrivacyPolicy`);
- `event_time` is the choice's time; `known_time` is when the store learned it: the time of the commit
  that ingested the row's day (bitemporal: a training set built as known earlier does not see it);
- `origin` is `<source>:<origin>`, `by` the source's name.

Idempotent per partition: an event already in the ledger (same entity, subject, purpose, grant, event time
and origin) is not appended again, so re-running a day adds nothing; a corrected re-delivery adds the
corrected event, known from its own ingest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import delta, history
from feature_pipelines.privacy.consent import SCHEMA, ConsentError, ConsentLedger
from feature_pipelines.privacy.tombstones import Tombstones, alias_entity
from feature_pipelines.settings import Settings
from feature_pipelines.spec import EVENT_DATE

CONSENT_SOURCE = "consent_events"
"""The source the `privacy/consent` asset folds (declared in `feature_defs/sources.py`)."""
COLUMNS = ("consent_id", "subject_type", "subject_id", "purpose", "granted", "event_time", "origin")
SAME_EVENT = ["entity", "subject", "purpose", "granted", "event_time", "origin"]


@dataclass(frozen=True)
class Folded:
    """What one fold did: rows read, events appended, those already in the ledger, subjects changed."""

    rows: int
    appended: int
    already: int
    ledger_version: int | None
    changed: dict[str, set[str]] = field(default_factory=dict)
    """Ledger entity -> subjects with a new event (what Redis must be brought in line with)."""


def ledger_entities(catalog: Catalog) -> dict[str, str]:
    """subject_type -> ledger entity: a personal entity keyed by it, else the id type's alias entity."""
    by_key = {e.join_key: e.name for e in catalog.entities.values() if e.personal}
    return {kind: by_key.get(kind, alias_entity(kind)) for kind in ("customer_id", "anonymous_id")}


def known_times(raw_uri: str, version: int) -> pl.DataFrame:
    """event_date -> known_time: the commit time of the live files of each raw day at `version`."""
    lives = history.read_history(raw_uri, version, partition_column=EVENT_DATE).files
    live = [(f.partition, f.added_at) for f in lives if f.removed is None or f.removed > version]
    frame = pl.DataFrame(live, schema={EVENT_DATE: pl.String, "known_time": SCHEMA["known_time"]}, orient="row")
    return frame.group_by(EVENT_DATE).agg(pl.col("known_time").max())


def ledger_rows(catalog: Catalog, raw: pl.DataFrame, known: pl.DataFrame, source: str) -> pl.DataFrame:
    """The ledger events of raw consent rows (columns COLUMNS and event_date), in the ledger's SCHEMA."""
    missing = [c for c in (*COLUMNS, EVENT_DATE) if c not in raw.columns]
    if missing:
        raise ConsentError(f"source {source!r}: raw rows lack the consent columns {missing} (have {raw.columns})")
    entities = ledger_entities(catalog)
    unknown = raw.filter(~pl.col("subject_type").is_in(list(entities)))
    if unknown.height:
        raise ConsentError(
            f"source {source!r}: {unknown.height} rows have a subject_type other than {sorted(entities)}, e.g. "
            f"{unknown['subject_type'].unique().sort().head(3).to_list()} (consent_id "
            f"{unknown['consent_id'].head(3).to_list()})"
        )
    purposes = raw.filter(~pl.col("purpose").is_in(list(catalog.purposes)))
    if purposes.height:
        raise ConsentError(
            f"source {source!r}: {purposes.height} rows name undeclared purposes "
            f"{purposes['purpose'].unique().sort().head(3).to_list()} (declared: {sorted(catalog.purposes)})"
        )
    rows = raw.join(known, on=EVENT_DATE, how="left")
    if rows["known_time"].null_count():
        days = rows.filter(pl.col("known_time").is_null())[EVENT_DATE].unique().sort().head(3).to_list()
        raise ConsentError(f"source {source!r}: no ingest commit found for the raw days {days}")
    return rows.select(
        pl.col("subject_type").replace_strict(entities, return_dtype=pl.String).alias("entity"),
        pl.col("subject_id").alias("subject"),
        "purpose",
        "granted",
        pl.col("event_time").cast(SCHEMA["event_time"]),
        "known_time",
        (pl.lit(f"{source}:") + pl.col("origin")).alias("origin"),
        pl.lit(source).alias("by"),
    ).sort("event_time", "entity", "subject", "purpose", "granted")


def fold(catalog: Catalog, settings: Settings, first: str, last: str, source: str = CONSENT_SOURCE) -> Folded:
    """Append the consent events of raw days `first..last` the ledger does not hold yet (one commit)."""
    raw_uri = settings.raw_table(source)
    version = delta.table_version(raw_uri)
    if version is None:
        raise ConsentError(f"raw table {raw_uri} does not exist: ingest the source {source!r} first")
    raw = delta.read_partitions(raw_uri, EVENT_DATE, first, last, version)
    events = ledger_rows(catalog, raw, known_times(raw_uri, version), source)
    erased = Tombstones(settings.privacy_table("tombstones")).all().select("entity", "subject")
    events = events.join(erased, on=["entity", "subject"], how="anti")  # an erased subject's choices are gone too
    ledger = ConsentLedger(settings.privacy_table("consent"))
    held = ledger.events().select(SAME_EVENT).unique()
    new = events.join(held, on=SAME_EVENT, how="anti", nulls_equal=True).unique(SAME_EVENT, maintain_order=True)
    changed: dict[str, set[str]] = {}
    for entity, subject in new.select("entity", "subject").unique().iter_rows():
        changed.setdefault(entity, set()).add(subject)
    written = ledger.record(new) if new.height else None
    return Folded(raw.height, new.height, events.height - new.height, written, changed)


def is_consent_source(columns: object) -> bool:
    """A source (or frame) in the consent contract: it names subjects by `subject_type` and `subject_id`."""
    return "subject_type" in columns and "subject_id" in columns  # type: ignore[operator]


def subject_predicate(subject_type: str, ids: list[str]) -> str:
    """A DELETE predicate of the consent rows of ids of one type (an erasure)."""
    quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
    return f"subject_type = '{subject_type}' AND subject_id IN ({quoted})"


def quarantine_predicate(ids: list[str]) -> str:
    """Quarantined consent rows (the file's values as JSON) naming one of `ids`."""
    texts = [i.replace("'", "''").replace("%", "\\%").replace("_", "\\_") for i in ids]
    return " OR ".join(f'''record LIKE '%"subject_id":"{t}"%''' for t in texts)


def erase_subjects(catalog: Catalog, settings: Settings, subject_type: str, ids: list[str], metadata: dict[str, str]):
    """Delete the rows of `ids` (of `subject_type`) from every consent source's raw and quarantine tables;
    returns table uri -> `delta.Deleted`."""
    out: dict[str, delta.Deleted] = {}
    if not ids:
        return out
    for source in catalog.sources.values():
        if is_consent_source(source.raw_schema):
            out[settings.raw_table(source.name)] = delta.delete(
                settings.raw_table(source.name), subject_predicate(subject_type, ids), metadata
            )
            uri = settings.quarantine_table(source.name)
            out[uri] = delta.delete(uri, quarantine_predicate(ids), metadata)
    return out


def without_erased(frame: pl.DataFrame, catalog: Catalog, erased: pl.DataFrame) -> pl.DataFrame:
    """Consent rows without those of tombstoned subjects (`erased`: columns entity, subject)."""
    if not is_consent_source(frame.columns) or frame.height == 0:
        return frame
    entities = ledger_entities(catalog)
    tagged = frame.with_columns(
        pl.col("subject_type").replace_strict(entities, default=None, return_dtype=pl.String).alias("__entity")
    )
    return tagged.join(
        erased.select(pl.col("entity").alias("__entity"), pl.col("subject").alias("subject_id")),
        on=["__entity", "subject_id"],
        how="anti",
        maintain_order="left",
    ).drop("__entity")
