"""A consent change, end to end: the ledger event, then Redis in the same step, then the audit record.

A revocation reaches serving at once: the subject's deny entry is set first (every client checks it, and
every push sweeps by it), then its keys are unlinked in every version of every view serving the revoked
purpose. Setting the entry before unlinking closes the race with a push writing meanwhile: either the push
sweeps after the entry is set, or its keys exist before the unlink. A grant clears what it can: the entry
keeps any other purpose still denied; the subject's rows come back with the next push.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.consent import ConsentError, ConsentEvent, now, subject_text
from feature_pipelines.privacy.policy import PrivacyPolicy
from feature_pipelines.settings import Settings


@dataclass(frozen=True)
class ConsentChange:
    entity: str
    subject: str
    purpose: str
    granted: bool
    deny_entry: str | None
    keys_removed: int
    seconds: float
    """From the call to the subject's keys gone from Redis (ledger write included)."""


def personal_entity(catalog: Catalog, name: str | None) -> str:
    """The entity a subject id belongs to: `name`, or the catalog's only personal entity."""
    personal = sorted(e.name for e in catalog.entities.values() if e.personal)
    if name is None:
        if len(personal) != 1:
            raise ConsentError(f"say which entity the subject is (--entity): personal entities are {personal}")
        return personal[0]
    if name not in personal:
        raise ConsentError(f"entity {name!r} is not personal (personal: {personal}); consent applies to people")
    return name


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
    entity = personal_entity(catalog, entity)
    if purpose not in catalog.purposes:
        raise ConsentError(f"unknown purpose {purpose!r}; declared purposes: {sorted(catalog.purposes)}")
    policy = PrivacyPolicy(catalog, settings)
    key = subject_text(pl.Series([subject]).cast(catalog.entities[entity].polars_dtype))[0]
    if granted and policy.erased(entity, pl.Series([key]))[0]:
        raise ConsentError(f"{entity} {subject} was erased: consent cannot be granted to an erased subject")
    known = now()
    event = ConsentEvent(entity, key, purpose, granted, event_time or known, known, origin, by)
    policy.consent.record([event])
    policy = PrivacyPolicy(catalog, settings)  # sees the new event
    entry = policy.deny_entry(entity, key)
    store.set_deny(entity, key, entry)
    removed = 0 if granted else store.remove_subject(entity, key, {purpose})
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
    return ConsentChange(entity, key, purpose, granted, entry, removed, seconds)


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
    import json

    return json.loads(entry)
