"""The consent ledger: every grant and revocation of a subject's consent to a purpose, bitemporal.

An append-only Delta table (`lake/privacy/consent`). Each event says what became true (`granted` for
`purpose`, from `event_time`) and when the store learned it (`known_time`). The state of a subject at T
as known at K is its latest event (by event time) with `event_time <= T` and `known_time <= K`; at equal
event times a revocation wins. Without an event, the purpose's default applies (`Purpose.opt_in`: no
consent; otherwise consent until revoked). Events are never updated or deleted, except by an erasure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from feature_pipelines.offline import delta

US = pl.Datetime("us", "UTC")
SCHEMA: dict[str, pl.DataType] = {
    "entity": pl.String(),
    "subject": pl.String(),
    "purpose": pl.String(),
    "granted": pl.Boolean(),
    "event_time": US,
    "known_time": US,
    "origin": pl.String(),
    "by": pl.String(),
}
# Subject ids stay out of the log's file statistics (they would outlive an erasure there). Not append-only:
# an erasure deletes the subject's events (its tombstone supersedes them).
CONFIGURATION = {
    "delta.enableExpiredLogCleanup": "false",
    "delta.dataSkippingStatsColumns": "entity,purpose,event_time,known_time",
}


class ConsentError(ValueError):
    pass


@dataclass(frozen=True)
class ConsentEvent:
    entity: str
    subject: str
    purpose: str
    granted: bool
    event_time: datetime
    known_time: datetime
    origin: str = "cli"
    by: str = ""


def subject_text(ids: pl.Series) -> pl.Series:
    """Ids as the ledgers store them: their key text (integers in decimal, strings verbatim)."""
    return ids.cast(pl.String)


class ConsentLedger:
    """The consent events of every subject, in one Delta table."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def record(self, events: Sequence[ConsentEvent] | pl.DataFrame) -> int:
        """Append events (one commit); returns the Delta version. Times must be timezone-aware."""
        frame = events if isinstance(events, pl.DataFrame) else pl.DataFrame([e.__dict__ for e in events])
        missing = [c for c in SCHEMA if c not in frame.columns]
        if missing:
            raise ConsentError(f"consent events lack columns {missing} (have {frame.columns})")
        for column in ("event_time", "known_time"):
            dtype = frame.schema[column]
            if not isinstance(dtype, pl.Datetime) or dtype.time_zone is None:
                raise ConsentError(f"consent events: {column} must be a timezone-aware Datetime, got {dtype}")
        nulls = {c: n for c in ("entity", "subject", "purpose", "granted") if (n := frame[c].null_count())}
        if nulls:
            raise ConsentError(f"consent events: null values in {nulls}")
        frame = frame.select([pl.col(c).cast(t) for c, t in SCHEMA.items()])
        return delta.append(self.uri, frame, CONFIGURATION).version

    def events(self, entity: str | None = None) -> pl.DataFrame:
        if delta.table_version(self.uri) is None:
            return pl.DataFrame(schema=SCHEMA)
        scan = delta.scan(self.uri)
        if entity is not None:
            scan = scan.filter(pl.col("entity") == entity)
        return scan.collect().select([pl.col(c).cast(t) for c, t in SCHEMA.items()])

    def state(self, entity: str, *, as_of: datetime | None = None, known_at: datetime | None = None) -> pl.DataFrame:
        """Each (subject, purpose) with an event: whether consent holds at `as_of` as known at `known_at`
        (default: now, as known now). Columns subject, purpose, granted, event_time."""
        events = self.events(entity)
        if as_of is not None:
            events = events.filter(pl.col("event_time") <= as_of)
        if known_at is not None:
            events = events.filter(pl.col("known_time") <= known_at)
        return (
            events.sort("subject", "purpose", "event_time", "known_time", pl.col("granted").not_())
            .group_by("subject", "purpose", maintain_order=True)
            .agg(pl.col("granted").last(), pl.col("event_time").last())
            .sort("subject", "purpose")
        )


def consent_at(
    events: pl.DataFrame,
    rows: pl.DataFrame,
    purposes: dict[str, bool],
    *,
    known: datetime | None | str = "row",
) -> pl.Series:
    """Whether each of `rows` (columns `subject` (key text) and `at` (UTC)) has consent for every purpose
    in `purposes` (name -> opt_in) at its `at`, as known at its `at` (`known="row"`), at a fixed instant,
    or as known now (`known=None`). Same length and order as `rows`.

    `events` may carry a `via` column: the id that made the choice, when several ids speak for one subject
    (a person's customer id and cookies, `PrivacyPolicy`). Each id's latest choice counts; the subject has
    consent when every id with a choice granted it (a revocation by any of them wins), else by default."""
    if rows.height == 0 or not purposes:
        return pl.Series("consented", [True] * rows.height, dtype=pl.Boolean)
    left = rows.select("subject", pl.col("at").cast(US)).with_row_index("__row")
    if "via" not in events.columns:
        events = events.with_columns(pl.col("subject").alias("via"))
    relevant = events.filter(pl.col("purpose").is_in(list(purposes))).select(
        "subject", "via", "purpose", "granted", "event_time", "known_time"
    )
    matched = left.join(relevant, on="subject", how="inner").filter(pl.col("event_time") <= pl.col("at"))
    if known == "row":
        matched = matched.filter(pl.col("known_time") <= pl.col("at"))
    elif isinstance(known, datetime):
        matched = matched.filter(pl.col("known_time") <= known)
    latest = (
        matched.sort("__row", "purpose", "via", "event_time", "known_time", pl.col("granted").not_())
        .group_by("__row", "purpose", "via", maintain_order=True)
        .agg(pl.col("granted").last())
        .group_by("__row", "purpose")
        .agg(pl.col("granted").all())
    )
    defaults = pl.DataFrame({"purpose": list(purposes), "default": [not opt_in for opt_in in purposes.values()]})
    grid = left.select("__row").join(defaults, how="cross")
    decided = (
        grid.join(latest, on=["__row", "purpose"], how="left")
        .with_columns(pl.coalesce("granted", "default").alias("ok"))
        .group_by("__row")
        .agg(pl.col("ok").all())
    )
    return (
        left.select("__row")
        .join(decided, on="__row", how="left", maintain_order="left")["ok"]
        .fill_null(True)
        .alias("consented")
    )


def now() -> datetime:
    return datetime.now(UTC)
