"""`fstore erase SUBJECT`: a subject removed from serving at once, from every Delta table by DELETE, kept
out for good by a tombstone, and physically purged by VACUUM within the declared purge window.

The order matters. The deny entry "*" goes first (every client stops serving the subject), then the
tombstone (every later ingest, compute, push, rollback and training build anti-joins it), then the Redis
keys (every view of the entity, every kept version, both namespaces), then Delta: raw tables first, then
their quarantine, then the feature tables, then the consent ledger (the tombstone supersedes it).

The honest guarantee: logically gone in seconds; physically gone once `purge` has vacuumed the files the
DELETE replaced (delta-rs rewrites files, it writes no deletion vectors): within
`Settings.erasure_purge_days`. Until then old table versions still hold the rows; every reader that time
travels (training rebuilds, rollbacks) filters tombstones, so they never come back through us.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.edges import IDENTIFIER_TYPES
from feature_pipelines.offline import delta
from feature_pipelines.online.layout import ERASED
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy import consent_source
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import now, subject_text
from feature_pipelines.privacy.tombstones import Tombstones, alias_entity
from feature_pipelines.settings import Settings
from feature_pipelines.spec import Entity


class ErasureError(ValueError):
    pass


@dataclass(frozen=True)
class Erasure:
    entity: str
    subject: str
    redis_keys_removed: int
    tables: dict[str, delta.Deleted] = field(default_factory=dict)
    seconds: float = 0.0
    online_seconds: float = 0.0
    """From the call until the subject's keys were gone from Redis."""

    @property
    def rows_deleted(self) -> int:
        return sum(d.rows for d in self.tables.values())

    @property
    def files_rewritten(self) -> int:
        return sum(d.files_rewritten for d in self.tables.values())


def literal(entity: Entity, subject: str) -> str:
    """The subject id as a SQL literal of its key's dtype, for a DELETE predicate."""
    if entity.polars_dtype.is_integer():
        return str(int(subject))
    return "'" + subject.replace("'", "''") + "'"


def subject_tables(catalog: Catalog, settings: Settings, entity: Entity) -> list[tuple[str, str]]:
    """Every Delta table that may hold the entity's ids, with the column holding them, upstream first:
    raw tables of sources with the entity's key column, then feature tables of the entity's views (every
    declared version). Quarantine tables hold JSON records and are handled apart."""
    tables: list[tuple[str, str]] = []
    for source in catalog.sources.values():
        if entity.join_key in source.raw_schema:
            tables.append((settings.raw_table(source.name), entity.join_key))
    for view in catalog.views.values():
        if view.entity_name == entity.name:
            tables.append((settings.feature_table(view.deployed_name), entity.join_key))
    return tables


def quarantine_predicate(catalog: Catalog, entity: Entity, source_name: str, subject: str) -> str | None:
    """Quarantined rows keep the file's original columns as JSON (`{"CustomerID":12346,...}`)."""
    source = catalog.sources[source_name]
    original = next((c for c in source.schema if source.column(c) == entity.join_key), None)
    if original is None:
        return None
    text = subject.replace("'", "''").replace("%", "\\%").replace("_", "\\_")
    # Values are kept as text (`"CustomerID":"12346"`), or as numbers by older writers; the key is followed
    # by a quote, a comma or the closing brace, so 1234 does not match 12345.
    forms = [f'"{original}":"{text}"']
    if entity.polars_dtype.is_integer():
        forms += [f'"{original}":{text}{end}' for end in (",", "}")]
    return " OR ".join(f"record LIKE '%{form}%'" for form in forms)


def erase(
    catalog: Catalog,
    settings: Settings,
    store: OnlineStore,
    subject: str,
    *,
    entity: str,
    by: str,
    reason: str = "",
    identifiers: list[tuple[str, str]] | None = None,
) -> Erasure:
    """Erase one subject everywhere (see the module doc). Idempotent: erasing again finds nothing left.
    `identifiers`: a person's (type, identifier) pairs, whose alias keys leave Redis with its data keys
    (`person_erasure.erase_person` passes them). A subject whose key is itself an identifier type of the
    identity graph (a customer id) is also tombstoned as that identifier, so stitching skips it."""
    started = time.perf_counter()
    if entity not in catalog.entities:
        raise ErasureError(f"unknown entity {entity!r}; known: {sorted(catalog.entities)}")
    ent = catalog.entities[entity]
    try:
        key = subject_text(pl.Series([subject]).cast(ent.polars_dtype, strict=True))[0]
    except pl.exceptions.InvalidOperationError as exc:
        raise ErasureError(f"{subject!r} is not a valid {ent.join_key} ({ent.polars_dtype})") from exc
    store.set_deny(entity, key, ERASED)
    at = now()
    purge_due = at + timedelta(days=settings.erasure_purge_days)
    stones = [(entity, key)]
    if ent.join_key in IDENTIFIER_TYPES:
        stones.append((alias_entity(ent.join_key), key))
    Tombstones(settings.privacy_table("tombstones")).add_many(stones, at=at, purge_due=purge_due, by=by, reason=reason)
    removed = store.remove_subject(entity, key, identifiers=identifiers or ())
    online_seconds = time.perf_counter() - started
    metadata = {"erasure": "true", "by": by}
    tables: dict[str, delta.Deleted] = {}
    for uri, column in subject_tables(catalog, settings, ent):
        tables[uri] = delta.delete(uri, f"{column} = {literal(ent, key)}", metadata)
    for source in catalog.sources.values():
        predicate = quarantine_predicate(catalog, ent, source.name, key)
        if predicate is not None:
            uri = settings.quarantine_table(source.name)
            tables[uri] = delta.delete(uri, predicate, metadata)
    if ent.join_key in IDENTIFIER_TYPES:  # its choices in consent sources (`subject_type` = the key)
        tables.update(consent_source.erase_subjects(catalog, settings, ent.join_key, [key], metadata))
    if ent.personal:
        uri = settings.privacy_table("consent")
        tables[uri] = delta.delete(uri, f"entity = '{entity}' AND subject = '{key}'", metadata)
    done = Erasure(entity, key, removed, tables, time.perf_counter() - started, online_seconds)
    AuditLog(settings.privacy_table("audit")).append(
        "erase",
        by=by,
        reason=reason,
        entity=entity,
        subject=key,
        details={
            "redis_keys_removed": removed,
            "rows_deleted": {uri: d.rows for uri, d in tables.items() if d.rows},
            "files_rewritten": done.files_rewritten,
            "purge_due": purge_due.isoformat(),
        },
    )
    return done
