"""Batch sources: where events come from, what their rows must satisfy, and how they become raw Delta tables."""

from datetime import date

import polars as pl

from feature_pipelines.spec import BatchSource, ColumnContract

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
    # StockCode and CustomerID also obey the key rules of the item and customer entities (entities.py).
    contracts={
        "InvoiceNo": ColumnContract(
            not_null=True, pattern=r"^[CA]?\d{6}$", description="six digits; C: cancellation, A: bad-debt adjustment"
        ),
        "StockCode": ColumnContract(not_null=True),
        "Description": ColumnContract(max_length=200),
        # Cancellations are negative; the largest real order is 80,995 units. A 1e9-unit line is an error.
        "Quantity": ColumnContract(not_null=True, min=-1_000_000, max=1_000_000),
        "InvoiceDate": ColumnContract(not_null=True),
        # GBP; only bad-debt adjustments (invoice A...) carry a negative price.
        "UnitPrice": ColumnContract(not_null=True, min=0, max=1_000_000, unless="InvoiceNo LIKE 'A%'"),
        "Country": ColumnContract(not_null=True, max_length=64),
    },
    event_time="InvoiceDate",
    # The shop recorded UK wall-clock time (GMT in winter, BST in summer); raw tables hold UTC.
    timezone="Europe/London",
    column_names="snake_case",
    start=date(2010, 12, 1),
    end=date(2011, 12, 9),
    # Days the shop sold nothing: Saturdays, Christmas, and the 2011 UK bank holidays (Easter, the royal
    # wedding, May, spring and summer). Freshness and completeness checks stay quiet on them.
    closures=(
        "Saturday",
        (date(2010, 12, 24), date(2011, 1, 3)),
        (date(2011, 4, 22), date(2011, 4, 25)),
        (date(2011, 4, 29), date(2011, 5, 2)),
        date(2011, 5, 30),
        date(2011, 8, 29),
    ),
    owner="team:data-platform",
    description="UCI Online Retail invoice lines (customer buckets 0-5), Dec 2010 to Dec 2011, GBP prices.",
)
