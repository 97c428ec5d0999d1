"""A consent change, end to end: the ledger event, then Redis in the same step, then the audit record.

A revocation reaches serving at once: the subject's deny entry is set first (every client checks it, and
every push sweeps by it), then its keys are unlinked in every version of every view serving the revoked
purpose. Setting the entry before unlinking closes the race with a push writing meanwhile: either the push
sweeps after the entry is set, or its keys exist before the unlink. A grant clears what it can: the entry
keeps any other purpose still denied; the subject's rows come back with the next push.
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
    """The entity a subject id belongs to: `name`, the catalog's only personal entity, or the only personal
    entity whose key rules accept `subject` (a customer id `12352` is no person id `p_...`)."""
    personal = sorted(e.name for e in catalog.entities.values() if e.personal)
    if name is None:
        if len(personal) > 1 and subject is not None:
            accepting = [e for e in personal if _accepts(catalog.entities[e], subject)]
            if len(accepting) == 1:
                return accepting[0]
        if len(personal) != 1:
            raise ConsentError(
                f"say which entity the subject {subject!r} is (--entity): personal entities are {personal}"
            )
        return personal[0]
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
    key = subject_text(pl.Series([subject]).cast(catalog.entities[entity].polars_dtype))[0]
    known = now()
    event = ConsentEvent(entity, key, purpose, granted, event_time or known, known, origin, by)
    if granted:
        if policy.erased(entity, pl.Series([key]))[0]:
            raise ConsentError(f"{entity} {subject} was erased: consent cannot be granted to an erased subject")
        policy.consent.record([event])
        entry = PrivacyPolicy(catalog, settings).deny_entry(entity, key)  # sees the new event
        store.set_deny(entity, key, entry)
        removed = 0
        online_seconds = time.perf_counter() - started
    else:
        # Redis first: serving stops before the (slower) ledger commit. If that commit then fails the
        # subject stays denied without a record (the safe side), and the error says so.
        entry = with_denied(store.deny_entries(entity, [key])[0], purpose)
        store.set_deny(entity, key, entry)
        removed = store.remove_subject(entity, key, {purpose})
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
        details={"keys_removed": removed, "event_time": event.event_time.isoformat(), "origin": origin},
    )
    return ConsentChange(entity, key, purpose, granted, entry, removed, seconds, online_seconds)


def with_denied(entry: str | None, purpose: str) -> str:
    """A deny entry with `purpose` added (an erased subject's "*" already denies everything)."""
    if entry == ERASED:
        return entry
    return json.dumps(sorted(set(json.loads(entry) if entry else []) | {purpose}))


def sync_deny(catalog: Catalog, settings: Settings, store: OnlineStore) -> dict[str, int]:
    """Rebuild every personal entity's deny hash from the ledgers (after a Redis loss, say), and unlink the
    keys of every subject it denies. Returns entries per entity."""
    policy = PrivacyPolicy(catalog, settings)
    counts: dict[str, int] = {}
    for entity in (e.name for e in catalog.entities.values() if e.personal):
        subjects = set(policy.consent.events(entity)["subject"].to_list())
        subjects |= set(policy.tombstones.subjects(entity).to_list())
        n = 0
        for subject in sorted(subjects):
            entry = policy.deny_entry(entity, subject)
            store.set_deny(entity, subject, entry)
            if entry is not None:
                n += 1
                store.remove_subject(entity, subject, None if entry == "*" else set(_purposes(entry)))
        counts[entity] = n
    return counts


def _purposes(entry: str) -> list[str]:
    return json.loads(entry)
