"""Who and what the features describe."""

import polars as pl

from feature_pipelines.spec import Entity

customer = Entity(
    name="customer",
    join_key="customer_id",
    dtype=pl.Int64,
    description="A shop customer (UCI Online Retail CustomerID); lines without one are anonymous.",
)

item = Entity(
    name="item",
    join_key="stock_code",
    dtype=pl.String,
    description="A product, by the shop's stock code (five digits and an optional letter suffix).",
)
