"""Build repurchase_labels.parquet from the shipped UCI data (deterministic; run from the repo root).

One row per sampled purchase (customer, item, invoice time in UTC), labelled 1 when the same customer
bought the same item again on a later invoice within 30 days. 20,000 rows sampled with seed 7 from
purchases between 2011-03-01 and 2011-11-09 (so that every row has 30 days of future to look at).
"""

from pathlib import Path

import polars as pl

HERE = Path(__file__).parent
raw = pl.read_parquet(HERE / "online_retail.parquet")
buys = (
    raw.filter(
        pl.col("CustomerID").is_not_null()
        & pl.col("InvoiceNo").str.contains(r"^\d")
        & (pl.col("Quantity") > 0)
        & (pl.col("UnitPrice") > 0)
        & pl.col("StockCode").str.contains(r"^\d{5}[A-Za-z]{0,3}$")
    )
    .select(
        pl.col("CustomerID").alias("customer_id"),
        pl.col("StockCode").alias("stock_code"),
        pl.col("InvoiceNo").alias("invoice_no"),
        pl.col("InvoiceDate")
        .dt.replace_time_zone("Europe/London")
        .dt.convert_time_zone("UTC")
        .alias("event_timestamp"),
    )
    .unique(["customer_id", "stock_code", "invoice_no"])
)
later = buys.select("customer_id", "stock_code", pl.col("event_timestamp").alias("next_time"))
window = buys.join(later, on=["customer_id", "stock_code"]).filter(
    (pl.col("next_time") > pl.col("event_timestamp"))
    & (pl.col("next_time") <= pl.col("event_timestamp") + pl.duration(days=30))
)
positive = window.select("customer_id", "stock_code", "invoice_no").unique().with_columns(pl.lit(1).alias("label"))
labels = (
    buys.filter(pl.col("event_timestamp").dt.date().is_between(pl.date(2011, 3, 1), pl.date(2011, 11, 9)))
    .join(positive, on=["customer_id", "stock_code", "invoice_no"], how="left")
    .with_columns(pl.col("label").fill_null(0).cast(pl.Int8))
    .sort("event_timestamp", "customer_id", "stock_code", "invoice_no")
    .sample(n=20_000, seed=7)
    .sort("event_timestamp", "customer_id", "stock_code")
    .select("customer_id", "stock_code", "event_timestamp", "label")
)
labels.write_parquet(HERE / "repurchase_labels.parquet")
print(labels.height, "rows,", labels["label"].mean(), "positive")
