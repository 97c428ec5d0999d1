"""Rules of the person-keyed profile: product categories, interest scores, intents and the profile vector.

Deterministic by construction: categories come from keyword rules on the retail descriptions (first rule
that matches wins, in the order below), the vector from a fixed seeded projection of the interest scores.
The profile is computed from behaviour events that already carry `person_id` (each event's anonymous id
resolved through the alias map as known at the partition's end) and `category` (its stock code's).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from feature_defs.retail_rules import PRODUCT_CODE
from feature_pipelines.spec import WindowContext

CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("christmas", ("CHRISTMAS", "XMAS", "ADVENT", "SANTA", "REINDEER", "SNOWFLAKE")),
    ("lighting", ("LIGHT", "LANTERN", "CANDLE", "LAMP", "T-LIGHT", "BULB")),
    ("bags", ("BAG", "PURSE", "TOTE", "SHOPPER")),
    ("kitchen", ("MUG", "CUP", "PLATE", "BOWL", "TIN", "JAR", "SPOON", "BAKING", "CAKE", "LUNCH", "TEA", "BOTTLE")),
    ("stationery", ("CARD", "WRAP", "PAPER", "PENCIL", "PEN", "NOTEBOOK", "STICKER", "TAPE", "CALENDAR")),
    ("jewellery", ("NECKLACE", "EARRING", "BRACELET", "RING", "BEAD", "DIAMANTE", "CRYSTAL")),
    ("toys", ("TOY", "GAME", "DOLL", "PUZZLE", "SPACEBOY", "DOLLY", "CHILDREN", "KIDS")),
    ("garden", ("GARDEN", "PLANT", "FLOWER POT", "BIRD", "WATERING")),
    ("decor", ("HEART", "SIGN", "FRAME", "MIRROR", "CLOCK", "CUSHION", "DECORATION", "HANGING", "GARLAND")),
)
OTHER = "other"
CATEGORIES: tuple[str, ...] = (*[c for c, _ in CATEGORY_KEYWORDS], OTHER)
"""Every category, in feature order: one interest feature per category (`interest_<category>`)."""

INTERACTION_WEIGHTS = {"product_view": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
"""How much an interaction with a product says about interest in its category."""

VECTOR_SIZE = 32
VECTOR_SEED = 20111209
COUNT_WINDOWS = (timedelta(days=1), timedelta(days=7), timedelta(days=30))


def categorize(description: pl.Expr) -> pl.Expr:
    """The category of a product description (upper-cased): the first rule whose keyword it contains."""
    text = description.fill_null("").str.to_uppercase()
    expr = pl.lit(OTHER)
    for category, words in reversed(CATEGORY_KEYWORDS):
        expr = pl.when(text.str.contains_any(list(words))).then(pl.lit(category)).otherwise(expr)
    return expr


def item_categories(retail: pl.LazyFrame) -> pl.LazyFrame:
    """stock code -> category, valid from the product's first sale: the category of the description on its
    first purchase line (ties at one instant: the smallest text). A first sale never changes as data grows,
    so a partition sees the same category whenever it is computed, and none before the product existed."""
    sold = retail.filter(
        pl.col("description").is_not_null() & (pl.col("quantity") > 0) & (pl.col("unit_price") > 0)
    ).filter(pl.col("stock_code").str.contains(PRODUCT_CODE))
    first = sold.sort("stock_code", "invoice_date", "description").group_by("stock_code", maintain_order=True).first()
    return first.select(
        "stock_code", categorize(pl.col("description")).alias("category"), pl.col("invoice_date").alias("valid_from")
    ).sort("stock_code")


def projection() -> np.ndarray:
    """The fixed (categories x 32) projection of interest scores to the profile vector, unit columns."""
    rng = np.random.default_rng(VECTOR_SEED)
    matrix = rng.standard_normal((len(CATEGORIES), VECTOR_SIZE)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=0, keepdims=True)


def profile_vector(interests: pl.DataFrame) -> pl.Series:
    """32 float32 per person: the interest scores projected, then L2-normalized (zero stays zero)."""
    scores = interests.select([f"interest_{c}" for c in CATEGORIES]).fill_null(0.0).to_numpy().astype(np.float32)
    vectors = scores @ projection()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return pl.Series("profile_vector", vectors.tolist(), dtype=pl.List(pl.Float32))


def window_name(window: timedelta) -> str:
    return f"{window.days}d"


def person_profile(events: pl.LazyFrame, ctx: WindowContext) -> pl.LazyFrame:
    """One row per person seen in the last 30 days: activity, context, interests, intents and vector.

    `events` has `person_id`, `event_time`, `event_id`, `event_type`, `session_id`, `stock_code`,
    `category`, `device_type`, `locale`, inside `[ctx.as_of - 30 days, ctx.as_of)`."""
    kind = pl.col("event_type")
    aggs: list[pl.Expr] = []
    for w in COUNT_WINDOWS:
        recent = pl.col("event_time") >= ctx.since(w)
        aggs += [
            pl.col("session_id").filter(recent).n_unique().cast(pl.Int64).alias(f"sessions_{window_name(w)}"),
            recent.sum().cast(pl.Int64).alias(f"events_{window_name(w)}"),
        ]
    aggs += [
        (kind == "product_view").sum().cast(pl.Int64).alias("product_views_30d"),
        (kind == "add_to_cart").sum().cast(pl.Int64).alias("add_to_carts_30d"),
        (kind == "purchase").sum().cast(pl.Int64).alias("purchases_30d"),
        pl.col("event_time").max().alias("last_seen_at"),
        pl.col("device_type").sort_by("event_time", "event_id").last().alias("last_device_type"),
        pl.col("locale").sort_by("event_time", "event_id").last().alias("last_locale"),
    ]
    per_person = events.group_by("person_id").agg(aggs)
    sessions = (
        events.group_by("person_id", "session_id")
        .agg(((pl.col("event_time").max() - pl.col("event_time").min()).dt.total_seconds() / 60.0).alias("m"))
        .group_by("person_id")
        .agg(pl.col("m").mean().alias("avg_session_minutes_30d"))
    )
    weight = kind.replace_strict(INTERACTION_WEIGHTS, default=0.0, return_dtype=pl.Float64)
    interest = (
        events.filter(weight > 0)
        .group_by("person_id", "category")
        .agg(weight.sum().alias("w"))
        .with_columns((pl.col("w") / pl.col("w").sum().over("person_id")).alias("share"))
        .collect()
        .pivot(on="category", index="person_id", values="share")
    )
    interest = interest.with_columns(
        [pl.lit(None, dtype=pl.Float64).alias(c) for c in CATEGORIES if c not in interest.columns]
    ).select("person_id", *[pl.col(c).fill_null(0.0).alias(f"interest_{c}") for c in CATEGORIES])
    week = events.filter(pl.col("event_time") >= ctx.since(timedelta(days=7)))
    per_session = week.group_by("person_id", "session_id").agg(
        (kind == "add_to_cart").any().alias("carted"),
        (kind == "purchase").any().alias("bought"),
        pl.col("stock_code").filter(kind == "product_view").n_unique().alias("viewed"),
    )
    intents = per_session.group_by("person_id").agg(
        (pl.col("carted") & ~pl.col("bought")).any().alias("intent_ready_to_buy"),
        (pl.col("viewed") >= 3).any().alias("intent_comparing"),
    )
    out = (
        per_person.join(sessions, on="person_id", how="left")
        .join(intents, on="person_id", how="left")
        .collect()
        .join(interest, on="person_id", how="left")
        .with_columns(
            pl.when(pl.col("product_views_30d") > 0)
            .then(pl.col("purchases_30d") / pl.col("product_views_30d"))
            .otherwise(None)
            .alias("view_to_purchase_rate_30d"),
            pl.col("intent_ready_to_buy").fill_null(False),
            pl.col("intent_comparing").fill_null(False),
            *[pl.col(f"interest_{c}").fill_null(0.0) for c in CATEGORIES],
        )
        .with_columns(
            (~pl.col("intent_ready_to_buy") & ~pl.col("intent_comparing") & (pl.col("events_7d") > 0)).alias(
                "intent_browsing"
            )
        )
        .sort("person_id")
    )
    return out.with_columns(profile_vector(out)).lazy()  # a Transformation returns a LazyFrame


def person_location(events: pl.LazyFrame, ctx: WindowContext) -> pl.LazyFrame:
    """Sensitive: the country a person's locales point to most in 30 days (ties: the latest locale's)."""
    country = pl.col("locale").str.split("-").list.last()
    counted = (
        events.with_columns(country.alias("country"))
        .group_by("person_id", "country")
        .agg(pl.len().alias("n"), pl.col("event_time").max().alias("latest"))
        .sort("person_id", "n", "latest", "country", descending=[False, True, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
    )
    return counted.select("person_id", pl.col("country").alias("inferred_country")).sort("person_id")
