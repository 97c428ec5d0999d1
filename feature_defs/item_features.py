"""Features of items: how well they sell and how often they come back."""

from datetime import timedelta

import polars as pl

from feature_defs.entities import item
from feature_defs.retail_rules import is_cancellation, is_purchase, product_lines, window_suffix
from feature_defs.sources import online_retail
from feature_pipelines.spec import Feature, FeatureView, WindowContext

POPULARITY_WINDOWS = (timedelta(days=7), timedelta(days=30))


def popularity(events: pl.LazyFrame, ctx: WindowContext) -> pl.LazyFrame:
    """One row per product sold at least once in the longest window (anonymous buyers included)."""
    buy = is_purchase()
    aggs: list[pl.Expr] = []
    for w in ctx.windows:
        in_w = buy & (pl.col("invoice_date") >= ctx.since(w))
        sfx = window_suffix(w)
        aggs += [
            pl.col("quantity").filter(in_w).sum().cast(pl.Int64).alias(f"units_sold_{sfx}"),
            pl.col("customer_id").filter(in_w).drop_nulls().n_unique().cast(pl.Int64).alias(f"buyers_{sfx}"),
            (pl.col("quantity") * pl.col("unit_price")).filter(in_w).sum().round(2).alias(f"revenue_{sfx}"),
        ]
    longest = window_suffix(max(ctx.windows))
    returned = (-pl.col("quantity")).filter(is_cancellation() & (pl.col("quantity") < 0)).sum()
    aggs.append(returned.cast(pl.Int64).alias("_returned"))
    return (
        events.group_by("stock_code")
        .agg(aggs)
        .filter(pl.col(f"units_sold_{longest}") > 0)
        .with_columns((pl.col("_returned") / pl.col(f"units_sold_{longest}")).round(4).alias("return_rate_30d"))
        .select("stock_code", *[f.name for f in item_popularity.features])
    )


item_popularity = FeatureView(
    name="item_popularity",
    entity=item,
    source=online_retail,
    description="Units, buyers and revenue of a product over 7 and 30 days, and its return rate.",
    windows=POPULARITY_WINDOWS,
    features=tuple(
        f
        for w in POPULARITY_WINDOWS
        for f in (
            Feature(
                name=f"units_sold_{window_suffix(w)}",
                dtype=pl.Int64,
                description=f"Units sold on purchase lines in {w.days} days (anonymous buyers included).",
                min=0,
            ),
            Feature(
                name=f"buyers_{window_suffix(w)}",
                dtype=pl.Int64,
                description=f"Distinct known customers who bought the item in {w.days} days.",
                min=0,
            ),
            Feature(
                name=f"revenue_{window_suffix(w)}",
                dtype=pl.Float64,
                description=f"GBP revenue of the item in {w.days} days.",
                min=0,
            ),
        )
    )
    + (
        Feature(
            name="return_rate_30d",
            dtype=pl.Float64,
            description="Units on cancellation lines / units sold, 30 days; above 1 when older sales come back.",
            min=0,
            # Zero for most items: any return is many robust deviations from a history of zeros.
            outlier_z=None,
        ),
    ),
    prepare=product_lines,
    transformation=popularity,
    owner="team:merchandising",
    tags={"domain": "item", "model_family": "ranking"},
    sensitivity="public",
    version=1,
    online=True,
    online_ttl=timedelta(days=3),
    offline_lookback=timedelta(days=2),
    # An item whose aggregates break a rule keeps yesterday's values; above 1% of items the view blocks.
    max_bad_fraction=0.01,
    on_bad_entities="keep_previous",
)
