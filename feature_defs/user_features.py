"""Features of customers: purchase behaviour over trailing windows, and their context (country, locale)."""

from datetime import timedelta

import polars as pl

from feature_defs.entities import customer
from feature_defs.retail_rules import customer_product_lines, is_cancellation, is_purchase, window_suffix
from feature_defs.sources import online_retail
from feature_pipelines.spec import Feature, FeatureView, WindowContext

BEHAVIOR_WINDOWS = (timedelta(days=7), timedelta(days=30), timedelta(days=90))


def purchase_behavior(events: pl.LazyFrame, ctx: WindowContext) -> pl.LazyFrame:
    """One row per customer with at least one purchase in the longest window."""
    buy = is_purchase()
    spend = pl.col("quantity") * pl.col("unit_price")
    longest = max(ctx.windows)
    aggs: list[pl.Expr] = [
        (ctx.as_of - pl.col("invoice_date").filter(buy).max()).dt.total_days().alias("days_since_last_purchase")
    ]
    for w in ctx.windows:
        in_w = buy & (pl.col("invoice_date") >= ctx.since(w))
        sfx = window_suffix(w)
        aggs += [
            pl.col("invoice_no").filter(in_w).n_unique().cast(pl.Int64).alias(f"invoices_{sfx}"),
            pl.col("quantity").filter(in_w).sum().cast(pl.Int64).alias(f"units_{sfx}"),
            spend.filter(in_w).sum().round(2).alias(f"spend_{sfx}"),
        ]
    cancelled = pl.col("invoice_no").filter(is_cancellation()).n_unique()
    bought = pl.col("invoice_no").filter(buy).n_unique()
    aggs += [
        (cancelled / (cancelled + bought)).cast(pl.Float64).alias("cancellation_rate_90d"),
        pl.col("stock_code").filter(buy).n_unique().cast(pl.Int64).alias("distinct_items_90d"),
    ]
    return (
        events.group_by("customer_id")
        .agg(aggs)
        .filter(pl.col(f"invoices_{window_suffix(longest)}") > 0)
        .with_columns((pl.col("spend_90d") / pl.col("invoices_90d")).round(2).alias("avg_basket_value_90d"))
    ).select("customer_id", *[f.name for f in user_purchase_behavior.features])


def _counts(kind: str, unit: str) -> tuple[Feature, ...]:
    return tuple(
        Feature(
            name=f"{kind}_{window_suffix(w)}",
            dtype=pl.Int64,
            description=f"{unit} in the {w.days} days before the partition's end.",
            min=0,
        )
        for w in BEHAVIOR_WINDOWS
    )


user_purchase_behavior = FeatureView(
    name="user_purchase_behavior",
    entity=customer,
    source=online_retail,
    description="How recently, how often and how much a customer buys; customers with a purchase in 90 days.",
    windows=BEHAVIOR_WINDOWS,
    features=(
        Feature(
            name="days_since_last_purchase",
            dtype=pl.Int64,
            description="Whole days between the customer's latest purchase and the partition's end.",
            min=0,
            max=90,
        ),
        *_counts("invoices", "Distinct purchase invoices (cancellations excluded)"),
        *_counts("units", "Units bought on product lines with a positive price"),
        *(
            Feature(
                name=f"spend_{window_suffix(w)}",
                dtype=pl.Float64,
                description=f"GBP spent on products in the {w.days} days before the partition's end.",
                min=0,
            )
            for w in BEHAVIOR_WINDOWS
        ),
        Feature(
            name="avg_basket_value_90d",
            dtype=pl.Float64,
            description="spend_90d / invoices_90d, in GBP.",
            min=0,
        ),
        Feature(
            name="cancellation_rate_90d",
            dtype=pl.Float64,
            description="Cancelled invoices / (cancelled + purchase invoices) in 90 days.",
            min=0,
            max=1,
        ),
        Feature(
            name="distinct_items_90d",
            dtype=pl.Int64,
            description="Distinct products bought in 90 days.",
            min=1,
        ),
    ),
    prepare=customer_product_lines,
    transformation=purchase_behavior,
    owner="team:personalization",
    tags={"domain": "user", "model_family": "ranking"},
    sensitivity="internal",
    version=1,
    online=True,
    online_ttl=timedelta(days=3),
    offline_lookback=timedelta(days=2),
    purposes=("personalization", "analytics"),
)


# Country -> (locale, local currency). Derived, not in the data: the shop prices everything in GBP; the
# currency is the customer's local one, for display. "Unspecified" gets the undetermined locale and GBP.
COUNTRY_INFO: dict[str, tuple[str, str]] = {
    "United Kingdom": ("en_GB", "GBP"),
    "EIRE": ("en_IE", "EUR"),
    "Channel Islands": ("en_GB", "GBP"),
    "France": ("fr_FR", "EUR"),
    "Germany": ("de_DE", "EUR"),
    "Spain": ("es_ES", "EUR"),
    "Portugal": ("pt_PT", "EUR"),
    "Italy": ("it_IT", "EUR"),
    "Belgium": ("nl_BE", "EUR"),
    "Netherlands": ("nl_NL", "EUR"),
    "Austria": ("de_AT", "EUR"),
    "Finland": ("fi_FI", "EUR"),
    "Cyprus": ("el_CY", "EUR"),
    "Malta": ("mt_MT", "EUR"),
    "Lithuania": ("lt_LT", "EUR"),
    "Greece": ("el_GR", "EUR"),
    "Switzerland": ("de_CH", "CHF"),
    "Norway": ("nb_NO", "NOK"),
    "Sweden": ("sv_SE", "SEK"),
    "Denmark": ("da_DK", "DKK"),
    "Iceland": ("is_IS", "ISK"),
    "Poland": ("pl_PL", "PLN"),
    "Czech Republic": ("cs_CZ", "CZK"),
    "Israel": ("he_IL", "ILS"),
    "Lebanon": ("ar_LB", "LBP"),
    "Saudi Arabia": ("ar_SA", "SAR"),
    "Bahrain": ("ar_BH", "BHD"),
    "United Arab Emirates": ("ar_AE", "AED"),
    "USA": ("en_US", "USD"),
    "Canada": ("en_CA", "CAD"),
    "Brazil": ("pt_BR", "BRL"),
    "Japan": ("ja_JP", "JPY"),
    "Hong Kong": ("zh_HK", "HKD"),
    "Singapore": ("en_SG", "SGD"),
    "Australia": ("en_AU", "AUD"),
    "RSA": ("en_ZA", "ZAR"),
    "European Community": ("en_IE", "EUR"),
    "Unspecified": ("und", "GBP"),
}


def customer_context(events: pl.LazyFrame, ctx: WindowContext) -> pl.LazyFrame:
    """The country on the customer's latest line in the window (events arrive sorted by time)."""
    latest = events.group_by("customer_id").agg(pl.col("country").last())
    return latest.with_columns(
        pl.col("country").replace_strict({k: v[0] for k, v in COUNTRY_INFO.items()}, default=None).alias("locale"),
        pl.col("country").replace_strict({k: v[1] for k, v in COUNTRY_INFO.items()}, default=None).alias("currency"),
    ).select("customer_id", "country", "locale", "currency")


user_context = FeatureView(
    name="user_context",
    entity=customer,
    source=online_retail,
    description="Where a customer lives and the locale and currency that implies; customers seen in a year.",
    windows=(timedelta(days=365),),
    features=(
        Feature(
            name="country",
            dtype=pl.String,
            description="Country on the customer's most recent invoice line.",
            inputs=("country", "invoice_date"),
            allowed=tuple(COUNTRY_INFO),
            sensitivity="confidential",
        ),
        Feature(
            name="locale",
            dtype=pl.String,
            description="Derived from country: the main locale there ('und' when unspecified).",
            inputs=("country", "invoice_date"),
            allowed=tuple(sorted({v[0] for v in COUNTRY_INFO.values()})),
        ),
        Feature(
            name="currency",
            dtype=pl.String,
            description="Derived from country: its ISO 4217 currency, for display (all prices are GBP).",
            inputs=("country", "invoice_date"),
            allowed=tuple(sorted({v[1] for v in COUNTRY_INFO.values()})),
        ),
    ),
    prepare=lambda events: events.filter(pl.col("customer_id").is_not_null()),
    transformation=customer_context,
    owner="team:personalization",
    tags={"domain": "user"},
    sensitivity="confidential",
    version=1,
    online=True,
    online_ttl=timedelta(days=7),
    offline_lookback=timedelta(days=7),
    purposes=("personalization",),
)
