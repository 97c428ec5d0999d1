"""Erasing a person, named by its person id or by any of its aliases (`fstore erase --entity person ID`).

A person is the identity graph's join of anonymous ids, devices and customer ids. Erasing one:
1. resolves the reference through the alias map (`AliasMap.current()`; `type:value` or a bare value, or a
   person id) and collects every identifier the map or the person table ever tied to that person;
2. tombstones the identifiers (`alias:<type>`), so a stitching run started from now on skips them, then
   erases the person like any subject (`erasure.erase`: deny entry, tombstone, its data keys and every
   alias key of its identifiers in Redis, its rows in person-keyed feature tables), and each customer id
   among its identifiers as a customer (raw retail and behaviour rows, customer views, consent);
3. deletes its rows from every identity table (identifiers, links, edges, violations, retractions,
   persons, alias map) and, from every raw table with identifier columns (the behaviour events), the rows
   carrying any of its anonymous or device ids, with their quarantined records.
The purge vacuums the identity tables too (`purge.lake_tables`), as every other lake table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity import stitch
from feature_pipelines.identity.edges import ANONYMOUS, CUSTOMER, IDENTIFIER_TYPES
from feature_pipelines.offline import delta
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy import consent_source
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import now
from feature_pipelines.privacy.erasure import Erasure, ErasureError, erase
from feature_pipelines.privacy.tombstones import Tombstones, alias_entity
from feature_pipelines.settings import Settings

PERSON_KEY = "person_id"
"""The join key of the identity graph's persons (`identity/graph.py`): an entity keyed by it is a person."""
PERSON_ID = re.compile(r"^p_[0-9a-f]{16}$")


@dataclass(frozen=True)
class PersonErasure:
    person_id: str
    identifiers: list[tuple[str, str]]
    person: Erasure
    customers: list[Erasure] = field(default_factory=list)
    deleted: dict[str, int] = field(default_factory=dict)
    """Identity and raw tables -> rows deleted (beyond what the person's and customers' erasures deleted)."""

    @property
    def redis_keys_removed(self) -> int:
        return self.person.redis_keys_removed + sum(c.redis_keys_removed for c in self.customers)

    @property
    def rows_deleted(self) -> int:
        return self.person.rows_deleted + sum(c.rows_deleted for c in self.customers) + sum(self.deleted.values())


def resolve_person(identity: stitch.IdentityStore, ref: str) -> str:
    """The person id `ref` names: a person id known to the graph, or an alias (`type:value` or a bare value
    that only one identifier type holds) resolved through the alias map as known now."""
    current = identity.alias_map().current()
    if PERSON_ID.match(ref) and current.filter(pl.col("person_id") == ref).height:
        return ref
    kind, _, value = ref.partition(":")
    hits = (
        current.filter((pl.col("identifier_type") == kind) & (pl.col("identifier") == value))
        if value and kind in IDENTIFIER_TYPES
        else current.filter(pl.col("identifier") == ref)
    )
    persons = hits["person_id"].unique()
    if persons.len() == 1:
        return persons[0]
    if persons.len() == 0:
        raise ErasureError(f"{ref!r} is neither a person id nor an alias the identity graph knows now")
    raise ErasureError(f"{ref!r} is ambiguous ({hits['identifier_type'].to_list()}): write type:value")


def person_identifiers(identity: stitch.IdentityStore, person: str) -> list[tuple[str, str]]:
    """Every (type, identifier) the alias map ever tied to `person`, or the person table ties to it now."""
    facts = identity.read("alias_map").filter(pl.col("person_id") == person).select("identifier_type", "identifier")
    members = identity.read("persons").filter(pl.col("person_id") == person).select("identifier_type", "identifier")
    both = pl.concat([facts, members]).unique().sort("identifier_type", "identifier")
    return [(t, i) for t, i in both.iter_rows()]


def _quoted(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _typed(ids: dict[str, list[str]], type_column: str, value_column: str) -> list[str]:
    return [
        f"({type_column} = '{kind}' AND {value_column} IN ({_quoted(values)}))"
        for kind, values in ids.items()
        if values
    ]


def _record_holds(column: str, value: str) -> str:
    """A quarantined record (the file's values as JSON text) holding `value` in `column`."""
    text = value.replace("'", "''").replace("%", "\\%").replace("_", "\\_")
    return f'record LIKE \'%"{column}":"{text}"%\''


def identity_predicates(person: str, ids: dict[str, list[str]]) -> dict[str, str]:
    """Per identity table, the DELETE predicate of the person's rows."""
    by_identifier = _typed(ids, "identifier_type", "identifier")
    links = ([f"anonymous_id IN ({_quoted(ids[ANONYMOUS])})"] if ids.get(ANONYMOUS) else []) + _typed(
        {k: v for k, v in ids.items() if k != ANONYMOUS}, "other_type", "other"
    )
    person_rows = [f"person_id = '{person}'"]
    out = {
        "identifiers": by_identifier,
        "violations": by_identifier,
        "links": links,
        "edges": links,
        "retractions": links,
        "persons": person_rows + by_identifier,
        "alias_map": person_rows + by_identifier,
    }
    return {table: " OR ".join(clauses) for table, clauses in out.items() if clauses}


def erase_person(
    catalog: Catalog, settings: Settings, store: OnlineStore, ref: str, *, entity: str, by: str, reason: str = ""
) -> PersonErasure:
    """Erase the person `ref` names, everywhere (see the module doc). Idempotent once the person is gone
    from the graph: a second call finds no alias to resolve and says so."""
    identity = stitch.IdentityStore(settings.lake_dir)
    person = resolve_person(identity, ref)
    identifiers = person_identifiers(identity, person)
    at = now()
    Tombstones(settings.privacy_table("tombstones")).add_many(
        [(alias_entity(t), i) for t, i in identifiers],
        at=at,
        purge_due=at + timedelta(days=settings.erasure_purge_days),
        by=by,
        reason=reason,
    )
    done = erase(catalog, settings, store, person, entity=entity, by=by, reason=reason, identifiers=identifiers)
    ids: dict[str, list[str]] = {kind: [] for kind in IDENTIFIER_TYPES}
    for kind, value in identifiers:
        ids.setdefault(kind, []).append(value)
    customer_entity = next((e.name for e in catalog.entities.values() if e.join_key == CUSTOMER), None)
    customers = [
        erase(catalog, settings, store, value, entity=customer_entity, by=by, reason=reason)
        for value in (ids[CUSTOMER] if customer_entity else [])
    ]
    metadata = {"erasure": "true", "by": by}
    deleted: dict[str, int] = {}
    for table, predicate in identity_predicates(person, ids).items():
        deleted[identity.uri(table)] = delta.delete(identity.uri(table), predicate, metadata).rows
    deleted.update(
        (uri, d.rows)
        for uri, d in consent_source.erase_subjects(catalog, settings, ANONYMOUS, ids[ANONYMOUS], metadata).items()
    )
    consent_uri = settings.privacy_table("consent")  # its cookies' choices (the customers' go with them)
    cookies = ids[ANONYMOUS]
    if cookies:
        predicate = f"entity = '{alias_entity(ANONYMOUS)}' AND subject IN ({_quoted(cookies)})"
        deleted[consent_uri] = delta.delete(consent_uri, predicate, metadata).rows
    for source in catalog.sources.values():
        columns = [k for k in (ANONYMOUS, "device_id") if k in source.raw_schema and ids.get(k)]
        if columns:
            predicate = " OR ".join(f"{c} IN ({_quoted(ids[c])})" for c in columns)
            deleted[settings.raw_table(source.name)] = delta.delete(
                settings.raw_table(source.name), predicate, metadata
            ).rows
            uri = settings.quarantine_table(source.name)
            forms = [_record_holds(c, v) for c in columns for v in ids[c]]
            deleted[uri] = delta.delete(uri, " OR ".join(forms), metadata).rows
    AuditLog(settings.privacy_table("audit")).append(
        "erase",
        by=by,
        reason=reason,
        entity=entity,
        subject=person,
        target="identity",
        details={
            "identifiers": {k: len(v) for k, v in ids.items() if v},
            "customers_erased": len(customers),
            "rows_deleted": {uri: n for uri, n in deleted.items() if n},
        },
    )
    return PersonErasure(person, identifiers, done, customers, deleted)
