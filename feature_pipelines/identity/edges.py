"""Deterministic identity edges from behaviour events, and the guardrails that refuse some of them.

An event that carries an anonymous id with a customer id (a logged-in event) links the two; one that carries
an anonymous id with a device id links those. `links()` aggregates the events into one row per distinct
pair (first and last time seen, number of events): the graph's input, much smaller than the events, and
what an incremental run merges a new day into.

Guardrails (`Guardrails`, every value a declared setting): a link is not an edge when
- either id is a blocked value ("", "unknown", "0", "null", "-1", all zeros and dashes, ...): placeholders
  sent by broken trackers identify no one;
- an anonymous id or a device id is linked to more than `max_persons` customers (a household tablet, a
  kiosk, a resold phone): it would merge distinct people;
- an id exceeds the limit of its type: a device with more than `max_anonymous_per_device` anonymous ids,
  an anonymous id on more than `max_devices_per_anonymous` devices, a customer on more than
  `max_anonymous_per_customer` anonymous ids (a shared account, a bot);
- an operator retracted it (`fstore identity split A B`).
Every refused link keeps its row with its status (the rule), and each offending id is a violation row.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

ANONYMOUS, DEVICE, CUSTOMER = "anonymous_id", "device_id", "customer_id"
IDENTIFIER_TYPES = (ANONYMOUS, DEVICE, CUSTOMER)
MERGED = "merged"
"""Status of a link that is an edge of the graph; any other status names the rule that refused it."""

LINK_SCHEMA = {
    "anonymous_id": pl.String(),
    "other_type": pl.String(),
    "other": pl.String(),
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
    "events": pl.Int64(),
}
IDENTIFIER_SCHEMA = {
    "identifier_type": pl.String(),
    "identifier": pl.String(),
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
}
VIOLATION_SCHEMA = {
    "identifier_type": pl.String(),
    "identifier": pl.String(),
    "rule": pl.String(),
    "detail": pl.String(),
}


@dataclass(frozen=True)
class Guardrails:
    blocked_values: tuple[str, ...] = ("", "unknown", "0", "null", "none", "undefined", "anonymous", "-1", "nan")
    blocked_pattern: str = r"^[0\-]*$"
    max_persons: int = 1
    max_anonymous_per_device: int = 20
    max_devices_per_anonymous: int = 3
    max_anonymous_per_customer: int = 100

    def blocked(self, column: str) -> pl.Expr:
        value = pl.col(column).str.strip_chars().str.to_lowercase()
        return value.is_in(list(self.blocked_values)) | value.str.contains(self.blocked_pattern)


def identifiers(events: pl.LazyFrame) -> pl.LazyFrame:
    """Every id the events carry, with its first and last time seen (blocked values included: refused later)."""
    parts = [
        events.filter(pl.col(kind).is_not_null()).select(
            pl.lit(kind).alias("identifier_type"), pl.col(kind).cast(pl.String).alias("identifier"), "event_time"
        )
        for kind in IDENTIFIER_TYPES
    ]
    return (
        pl.concat(parts)
        .group_by("identifier_type", "identifier")
        .agg(pl.col("event_time").min().alias("first_seen"), pl.col("event_time").max().alias("last_seen"))
    )


def links(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per distinct (anonymous id, customer or device id) pair seen together in an event."""
    parts = [
        events.filter(pl.col(kind).is_not_null()).select(
            "anonymous_id", pl.lit(kind).alias("other_type"), pl.col(kind).cast(pl.String).alias("other"), "event_time"
        )
        for kind in (CUSTOMER, DEVICE)
    ]
    return (
        pl.concat(parts)
        .group_by("anonymous_id", "other_type", "other")
        .agg(
            pl.col("event_time").min().alias("first_seen"),
            pl.col("event_time").max().alias("last_seen"),
            pl.len().cast(pl.Int64).alias("events"),
        )
    )


def merge_links(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """`old` with `new` folded in (unordered: the table writer sorts)."""
    return (
        pl.concat([old.select(LINK_SCHEMA.keys()), new.select(LINK_SCHEMA.keys())])
        .group_by("anonymous_id", "other_type", "other")
        .agg(pl.col("first_seen").min(), pl.col("last_seen").max(), pl.col("events").sum())
    )


def merge_identifiers(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    return (
        pl.concat([old.select(IDENTIFIER_SCHEMA.keys()), new.select(IDENTIFIER_SCHEMA.keys())])
        .group_by("identifier_type", "identifier")
        .agg(pl.col("first_seen").min(), pl.col("last_seen").max())
    )


def judge(
    links: pl.DataFrame, guardrails: Guardrails, retractions: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each link with its status (`MERGED` or the rule that refused it), and the violations (one row per
    offending id and rule). Counts run over the whole link table: vectorised, no event is re-read."""
    g = guardrails
    lk = links.with_columns(
        (g.blocked("anonymous_id") | g.blocked("other")).alias("_blocked"),
    )
    ok = lk.filter(~pl.col("_blocked"))
    logins = ok.filter(pl.col("other_type") == CUSTOMER).select("anonymous_id", pl.col("other").alias("customer"))
    devices = ok.filter(pl.col("other_type") == DEVICE).select("anonymous_id", pl.col("other").alias("device"))
    anon_customers = logins.group_by("anonymous_id").agg(pl.col("customer").n_unique().alias("n"))
    device_customers = (
        devices.join(logins, on="anonymous_id").group_by("device").agg(pl.col("customer").n_unique().alias("n"))
    )
    device_anons = devices.group_by("device").agg(pl.col("anonymous_id").n_unique().alias("n"))
    anon_devices = devices.group_by("anonymous_id").agg(pl.col("device").n_unique().alias("n"))
    customer_anons = logins.group_by("customer").agg(pl.col("anonymous_id").n_unique().alias("n"))

    def offenders(frame: pl.DataFrame, column: str, kind: str, limit: int, rule: str, what: str) -> pl.DataFrame:
        return frame.filter(pl.col("n") > limit).select(
            pl.lit(kind).alias("identifier_type"),
            pl.col(column).alias("identifier"),
            pl.lit(rule).alias("rule"),
            (pl.lit("linked to ") + pl.col("n").cast(pl.String) + f" {what} (limit {limit})").alias("detail"),
        )

    violations = pl.concat(
        [
            offenders(anon_customers, "anonymous_id", ANONYMOUS, g.max_persons, "max_persons", "customers"),
            offenders(device_customers, "device", DEVICE, g.max_persons, "max_persons", "customers"),
            offenders(device_anons, "device", DEVICE, g.max_anonymous_per_device, "limit_per_type", "anonymous ids"),
            offenders(
                anon_devices, "anonymous_id", ANONYMOUS, g.max_devices_per_anonymous, "limit_per_type", "devices"
            ),
            offenders(
                customer_anons, "customer", CUSTOMER, g.max_anonymous_per_customer, "limit_per_type", "anonymous ids"
            ),
        ]
    )
    blocked = pl.concat(
        [
            lk.filter(g.blocked("anonymous_id")).select(
                pl.lit(ANONYMOUS).alias("identifier_type"), pl.col("anonymous_id").alias("identifier")
            ),
            lk.filter(g.blocked("other")).select(
                pl.col("other_type").alias("identifier_type"), pl.col("other").alias("identifier")
            ),
        ]
    ).unique()
    violations = pl.concat(
        [
            violations,
            blocked.with_columns(
                pl.lit("blocked_value").alias("rule"), pl.lit("a placeholder, identifies no one").alias("detail")
            ),
        ]
    )
    first_rule = violations.group_by("identifier_type", "identifier").agg(pl.col("rule").sort().first())
    status = (
        lk.join(
            first_rule.filter(pl.col("identifier_type") == ANONYMOUS).select(
                pl.col("identifier").alias("anonymous_id"), pl.col("rule").alias("_a_rule")
            ),
            on="anonymous_id",
            how="left",
        )
        .join(
            first_rule.select(
                pl.col("identifier_type").alias("other_type"),
                pl.col("identifier").alias("other"),
                pl.col("rule").alias("_o_rule"),
            ),
            on=["other_type", "other"],
            how="left",
        )
        .with_columns(pl.coalesce("_a_rule", "_o_rule", pl.lit(MERGED)).alias("status"))
    )
    if retractions is not None and retractions.height:
        status = status.join(
            retractions.select("anonymous_id", "other_type", "other", pl.lit(True).alias("_retracted")),
            on=["anonymous_id", "other_type", "other"],
            how="left",
        ).with_columns(
            pl.when(pl.col("_retracted").fill_null(False)).then(pl.lit("retracted")).otherwise("status").alias("status")
        )
    judged = status.select(*LINK_SCHEMA.keys(), "status").sort("anonymous_id", "other_type", "other")
    return judged, violations.select(VIOLATION_SCHEMA.keys()).sort("identifier_type", "identifier", "rule")
