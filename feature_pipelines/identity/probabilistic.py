"""Scored (probabilistic) edges: anonymous ids that share a network fingerprint, merged only above a
threshold, written to a review table in a band below it, never merged on weak evidence.

Why: a browser whose cookie was reset and that never logs in again links to nothing deterministic (a
desktop browser has no device id), so it stays a person of its own and recall suffers. An optional
`network_id` column (an IP-like signal: a hashed home network) in the events is the evidence: the
fingerprint is `network_id|device_type|locale` (the columns present). On a network behind which at most
`max_block` anonymous ids were seen (more, over any device type or locale: a public or carrier network, no
evidence at all), an id that never logged in (no merged customer edge) is scored against each other id of
its fingerprint:

    score = 0.6 + 0.25 * (their activity windows do not overlap: one cookie ends, the next begins)
                + 0.15 / (ids behind the fingerprint - 1)

so two ids alone behind a home network, one after the other, score 1.0; three score 0.925. Each such id
keeps its best candidate only (ties: the smaller id), so a chain cannot grow through scored edges, and a
never-logged id brings no customer into a person. `score >= merge_threshold` is an edge of the graph
(other_type "anonymous_id", status merged); `review_from <= score < merge_threshold` goes to the review
table `identity/review` for a human, not merged; lower is dropped. Without a `network_id` column there are
no scored edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from feature_pipelines.identity.edges import ANONYMOUS, CUSTOMER, LINK_SCHEMA, MERGED, Guardrails

SIGNAL_COLUMN = "network_id"
FINGERPRINT_PARTS = (SIGNAL_COLUMN, "device_type", "locale")
REVIEW = "review"
SIGNAL_SCHEMA = {
    "anonymous_id": pl.String(),
    "fingerprint": pl.String(),
    "first_seen": pl.Datetime("us", "UTC"),
    "last_seen": pl.Datetime("us", "UTC"),
}
REVIEW_SCHEMA = {
    "anonymous_id": pl.String(),
    "other": pl.String(),
    "fingerprint": pl.String(),
    "score": pl.Float64(),
    "first_seen": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class Scoring:
    merge_threshold: float = 0.9
    review_from: float = 0.7
    max_block: int = 6


def signals(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (anonymous id, fingerprint) with its first and last time seen; empty without a
    `network_id` column."""
    columns = events.collect_schema().names()
    if SIGNAL_COLUMN not in columns:
        return pl.DataFrame(schema=SIGNAL_SCHEMA).lazy()
    parts = [pl.col(c).cast(pl.String).fill_null("") for c in FINGERPRINT_PARTS if c in columns]
    return (
        events.filter(pl.col(SIGNAL_COLUMN).is_not_null() & (pl.col(SIGNAL_COLUMN) != ""))
        .select("anonymous_id", pl.concat_str(parts, separator="|").alias("fingerprint"), "event_time")
        .group_by("anonymous_id", "fingerprint")
        .agg(pl.col("event_time").min().alias("first_seen"), pl.col("event_time").max().alias("last_seen"))
    )


def merge_signals(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    return (
        pl.concat([old.select(SIGNAL_SCHEMA.keys()), new.select(SIGNAL_SCHEMA.keys())])
        .group_by("anonymous_id", "fingerprint")
        .agg(pl.col("first_seen").min(), pl.col("last_seen").max())
        .sort("anonymous_id", "fingerprint")
    )


def score(
    sig: pl.DataFrame, judged: pl.DataFrame, scoring: Scoring, guardrails: Guardrails
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(merged scored edges as judged links: LINK_SCHEMA + status, the review band: REVIEW_SCHEMA)."""
    empty = pl.DataFrame(schema={**LINK_SCHEMA, "status": pl.String()}), pl.DataFrame(schema=REVIEW_SCHEMA)
    if sig.height == 0:
        return empty
    sig = sig.filter(~guardrails.blocked("anonymous_id"))
    logged_in = judged.filter((pl.col("other_type") == CUSTOMER) & (pl.col("status") == MERGED)).select("anonymous_id")
    # A network behind which more than `max_block` ids were seen (any device type or locale) is public: no
    # evidence, however few of its ids share one fingerprint.
    network = pl.col("fingerprint").str.split("|").list.first().alias("_network")
    crowded = (
        sig.group_by(network)
        .agg(pl.col("anonymous_id").n_unique().alias("_ids"))
        .filter(pl.col("_ids") > scoring.max_block)
    )
    sig = sig.with_columns(network).join(crowded, on="_network", how="anti").drop("_network")
    block = sig.group_by("fingerprint").agg(pl.col("anonymous_id").n_unique().alias("n"))
    sig = sig.join(block.filter(pl.col("n").is_between(2, scoring.max_block)), on="fingerprint")
    lone = sig.join(logged_in, on="anonymous_id", how="anti")
    pairs = (
        lone.join(sig, on="fingerprint", suffix="_y")
        .filter(pl.col("anonymous_id") != pl.col("anonymous_id_y"))
        .with_columns(
            (
                0.6
                + 0.25
                * (
                    (pl.col("first_seen") > pl.col("last_seen_y")) | (pl.col("first_seen_y") > pl.col("last_seen"))
                ).cast(pl.Float64)
                + 0.15 / (pl.col("n") - 1)
            ).alias("score"),
            pl.max_horizontal("first_seen", "first_seen_y").alias("_first"),
            pl.max_horizontal("last_seen", "last_seen_y").alias("_last"),
        )
        .sort(["anonymous_id", "score", "anonymous_id_y"], descending=[False, True, False])
        .unique("anonymous_id", keep="first", maintain_order=True)
        .filter(pl.col("score") >= scoring.review_from)
    )
    merged = pairs.filter(pl.col("score") >= scoring.merge_threshold).select(
        "anonymous_id",
        pl.lit(ANONYMOUS).alias("other_type"),
        pl.col("anonymous_id_y").alias("other"),
        pl.col("_first").alias("first_seen"),
        pl.col("_last").alias("last_seen"),
        pl.lit(0, pl.Int64).alias("events"),
        pl.lit(MERGED).alias("status"),
    )
    review = pairs.filter(pl.col("score") < scoring.merge_threshold).select(
        "anonymous_id",
        pl.col("anonymous_id_y").alias("other"),
        "fingerprint",
        "score",
        pl.col("_first").alias("first_seen"),
    )
    return merged.sort("anonymous_id", "other"), review.sort("anonymous_id", "other")
