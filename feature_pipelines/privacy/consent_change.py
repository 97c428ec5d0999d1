"""A consent change, end to end: the ledger event, then Redis in the same step, then the audit record.

A revocation reaches serving at once: the subject's deny entry is set first (every client checks it, and
every push sweeps by it), then its keys are unlinked in every version of every view serving the revoked
purpose. Setting the entry before unlinking closes the race with a push writing meanwhile: either the push
sweeps after the entry is set, or its keys exist before the unlink. A grant clears what it can: the entry
keeps any other purpose still denied; the subject's rows come back with the next push.

People have several ids. A revocation of a person (`--entity person`, by its person id or any alias, as
in erasure) removes its data keys and the alias keys of every id it had, in every version of every person
view serving the purpose. A customer's (or a cookie's) choice applies to the person the id stitches to
now (`PrivacyPolicy`): revoking customer 12346 also withholds that person, keys and alias keys, at once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.entity_keys import EntityKeyError, normalize_ids
from feature_pipelines.online.layout import ERASED
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import ConsentError, ConsentEvent, now, subject_text
from feature_pipelines.privacy.policy import PrivacyPolicy
from feature_pipelines.settings import Settings
from feature_pipelines.spec import Entity


@dataclass(frozen=True)
class ConsentChange:
    entity: str
    subject: str
    purpose: str
    granted: bool
    deny_entry: str | None
    keys_removed: int
    seconds: float
    """The whole change: Redis, the ledger commit and the audit record."""
    online_seconds: float
    """From the call until Redis reflects it (for a revocation: the subject's keys are gone)."""


def personal_entity(catalog: Catalog, name: str | None, subject: str | None = None) -> str:
    """The entity a subject id belongs to: `name`; else the only personal entity whose key rules accept
    `subject` (`p_...` is a person's id, `12352` a customer's); else the only personal entity besides
    persons (an alias of a person is named with `--entity person`)."""
    from feature_pipelines.identity.alias_map import PERSON_COLUMN

    personal = sorted(e.name for e in catalog.entities.values() if e.personal)
    if name is None:
        if subject is not None:
            accepting = [e for e in personal if _accepts(catalog.entities[e], subject)]
            if len(accepting) == 1:
                return accepting[0]
        plain = [n for n in personal if catalog.entities[n].join_key != PERSON_COLUMN]
        if len(plain) != 1:
            raise ConsentError(
                f"say which entity the subject {subject!r} is (--entity): personal entities are {personal}"
            )
        return plain[0]
    if name not in personal:
        raise ConsentError(f"entity {name!r} is not personal (personal: {personal}); consent applies to people")
    return name


def _accepts(entity: Entity, subject: str) -> bool:
    try:
        normalize_ids(entity, [subject])
    except EntityKeyError:
        return False
    return True


def change_consent(
    catalog: Catalog,
    settings: Settings,
    store: OnlineStore,
    subject: str,
    purpose: str,
    *,
    granted: bool,
    entity: str | None = None,
    event_time: datetime | None = None,
    by: str = "",
    reason: str = "",
    origin: str = "cli",
) -> ConsentChange:
    """Record a grant or revocation and apply it to Redis at once. `event_time` (default now) may be
    earlier than now: a revocation received late is recorded as known now, effective then."""
    started = time.perf_counter()
    entity = personal_entity(catalog, entity, subject)
    if purpose not in catalog.purposes:
        raise ConsentError(f"unknown purpose {purpose!r}; declared purposes: {sorted(catalog.purposes)}")
    policy = PrivacyPolicy(catalog, settings)
    if policy.is_person(entity):
        key = person_of(settings, subject)
    else:
        key = subject_text(pl.Series([subject]).cast(catalog.entities[entity].polars_dtype))[0]
    # The person this id stitches to (a customer's), besides the subject itself: the choice applies to both.
    person = policy.person_entity()
    also = [(person, p) for p in policy.persons_of(entity, [key])] if person else []
    known = now()
    event = ConsentEvent(entity, key, purpose, granted, event_time or known, known, origin, by)
    if granted:
        if policy.erased(entity, pl.Series([key]))[0]:
            raise ConsentError(f"{entity} {subject} was erased: consent cannot be granted to an erased subject")
        policy.consent.record([event])
        after = PrivacyPolicy(catalog, settings)  # sees the new event
        for ent, sub in [(entity, key), *also]:
            store.set_deny(ent, sub, after.deny_entry(ent, sub))
        entry = store.deny_entries(entity, [key])[0]
        removed = 0
        online_seconds = time.perf_counter() - started
    else:
        # Redis first: serving stops before the (slower) ledger commit. If that commit then fails the
        # subject stays denied without a record (the safe side), and the error says so.
        removed = 0
        for ent, sub in [(entity, key), *also]:
            store.set_deny(ent, sub, with_denied(store.deny_entries(ent, [sub])[0], purpose))
            ids = policy.identifiers_of(sub) if policy.is_person(ent) else ()
            removed += store.remove_subject(ent, sub, {purpose}, identifiers=ids)
        entry = store.deny_entries(entity, [key])[0]
        online_seconds = time.perf_counter() - started
        try:
            policy.consent.record([event])
        except Exception as exc:
            raise ConsentError(
                f"{entity} {subject}: denied online for {purpose}, but recording the revocation in the consent "
                f"ledger failed ({type(exc).__name__}: {exc}); run the revocation again"
            ) from exc
    seconds = time.perf_counter() - started
    AuditLog(settings.privacy_table("audit")).append(
        "consent_grant" if granted else "consent_revoke",
        by=by,
        reason=reason,
        entity=entity,
        subject=key,
        target=purpose,
        details={
            "keys_removed": removed,
            "event_time": event.event_time.isoformat(),
            "origin": origin,
            "persons": len(also),
        },
    )
    return ConsentChange(entity, key, purpose, granted, entry, removed, seconds, online_seconds)


def with_denied(entry: str | None, purpose: str) -> str:
    """A deny entry with `purpose` added (an erased subject's "*" already denies everything)."""
    if entry == ERASED:
        return entry
    return json.dumps(sorted(set(json.loads(entry) if entry else []) | {purpose}))


def person_of(settings: Settings, ref: str) -> str:
    """The person `ref` names (a person id or any alias, as erasure resolves it)."""
    from feature_pipelines.identity.stitch import IdentityStore
    from feature_pipelines.privacy.erasure import ErasureError
    from feature_pipelines.privacy.person_erasure import resolve_person

    try:
        return resolve_person(IdentityStore(settings.lake_dir), ref)
    except ErasureError as exc:
        raise ConsentError(str(exc)) from exc


def refresh_online(
    catalog: Catalog, settings: Settings, store: OnlineStore, changed: dict[str, set[str]]
) -> dict[str, int]:
    """Bring the deny hashes of subjects whose consent changed (ledger entity -> subjects, e.g. after a
    batch of source events) in line with the ledger, and unlink the keys (and a person's alias keys) of
    each it now denies. Ids the identity graph links (customers, cookies) refresh the person they stitch
    to. Returns subjects denied per entity."""
    policy = PrivacyPolicy(catalog, settings)
    person = policy.person_entity()
    targets: dict[str, set[str]] = {}
    for entity, subjects in changed.items():
        if entity in catalog.entities and catalog.entities[entity].personal:
            targets.setdefault(entity, set()).update(subjects)
        if person is not None:
            targets.setdefault(person, set()).update(policy.persons_of(entity, sorted(subjects)))
    counts: dict[str, int] = {}
    for entity, subjects in targets.items():
        ordered = sorted(subjects)
        n = 0
        for subject, entry in zip(ordered, policy.deny_entries(entity, ordered), strict=True):
            store.set_deny(entity, subject, entry)
            if entry is not None:
                n += 1
                ids = policy.identifiers_of(subject) if policy.is_person(entity) else ()
                purposes = None if entry == ERASED else set(_purposes(entry))
                store.remove_subject(entity, subject, purposes, identifiers=ids)
        counts[entity] = n
    return counts


def sync_deny(catalog: Catalog, settings: Settings, store: OnlineStore) -> dict[str, int]:
    """Rebuild every personal entity's deny hash from the ledgers (after a Redis loss, say), and unlink the
    keys of every subject it denies. Returns entries per entity."""
    policy = PrivacyPolicy(catalog, settings)
    changed: dict[str, set[str]] = {}
    for entity in (e.name for e in catalog.entities.values() if e.personal):
        subjects = set(policy.subject_events(entity)["subject"].to_list())
        changed[entity] = subjects | set(policy.tombstones.subjects(entity).to_list())
    counts = refresh_online(catalog, settings, store, changed)
    return {entity: counts.get(entity, 0) for entity in changed}


def _purposes(entry: str) -> list[str]:
    return json.loads(entry)
