"""The audit log: who changed consent, erased a subject, applied ACLs, rolled a view back, and why.

An append-only Delta table (`lake/privacy/audit`). Subjects appear hashed (`subject_digest`), never as raw
ids: the log outlives erasures, and a steward checks an id by hashing it the same way.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import polars as pl

from feature_pipelines.offline import delta

US = pl.Datetime("us", "UTC")
SCHEMA: dict[str, pl.DataType] = {
    "at": US,
    "by": pl.String(),
    "action": pl.String(),
    "entity": pl.String(),
    "subject_digest": pl.String(),
    "target": pl.String(),
    "reason": pl.String(),
    "details": pl.String(),
}
ACTIONS = (
    "consent_grant",
    "consent_revoke",
    "consent_source",
    "erase",
    "purge",
    "retention",
    "acl_apply",
    "rollback",
    "backfill",
)
CONFIGURATION = {**delta.LEDGER_CONFIGURATION, "delta.dataSkippingStatsColumns": "at,action"}


def subject_digest(entity: str, subject: str) -> str:
    """A stable, non-reversible stand-in for a subject id wherever ids must not be written (logs, metadata)."""
    return hashlib.sha256(f"{entity}:{subject}".encode()).hexdigest()[:16]


class AuditLog:
    def __init__(self, uri: str) -> None:
        self.uri = uri

    def append(
        self,
        action: str,
        *,
        by: str,
        reason: str = "",
        entity: str = "",
        subject: str | None = None,
        target: str = "",
        details: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}; known: {ACTIONS}")
        row = {
            "at": at or datetime.now(UTC),
            "by": by,
            "action": action,
            "entity": entity,
            "subject_digest": subject_digest(entity, subject) if subject is not None else "",
            "target": target,
            "reason": reason,
            "details": json.dumps(details or {}, sort_keys=True, default=str),
        }
        delta.append(self.uri, pl.DataFrame([row], schema=SCHEMA), CONFIGURATION)

    def read(
        self,
        *,
        action: str | None = None,
        since: datetime | None = None,
        subject: tuple[str, str] | None = None,
    ) -> pl.DataFrame:
        """Records, oldest first, optionally of one action, since a time, or about one (entity, subject)."""
        if delta.table_version(self.uri) is None:
            return pl.DataFrame(schema=SCHEMA)
        frame = delta.scan(self.uri)
        if action is not None:
            frame = frame.filter(pl.col("action") == action)
        if since is not None:
            frame = frame.filter(pl.col("at") >= since)
        if subject is not None:
            frame = frame.filter(pl.col("subject_digest") == subject_digest(*subject))
        return frame.collect().sort("at")
