"""Batch sources: where events come from and how they are normalized into raw Delta tables."""

from datetime import date

import polars as pl

from feature_pipelines.spec import BatchSource

online_retail = BatchSource(
    name="online_retail",
    location="data/online_retail.parquet",
    format="parquet",
    schema={
        "InvoiceNo": pl.String,
        "StockCode": pl.String,
        "Description": pl.String,
        "Quantity": pl.Int64,
        "InvoiceDate": pl.Datetime("us"),
        "UnitPrice": pl.Float64,
        "CustomerID": pl.Int64,
        "Country": pl.String,
    },
    event_time="InvoiceDate",
    # The shop recorded UK wall-clock time (GMT in winter, BST in summer); raw tables hold UTC.
    timezone="Europe/London",
    column_names="snake_case",
    start=date(2010, 12, 1),
    end=date(2011, 12, 9),
    owner="team:data-platform",
    description="UCI Online Retail invoice lines (customer buckets 0-5), Dec 2010 to Dec 2011, GBP prices.",
)
