"""Who and what the features describe, and what their ids look like wherever they enter (ingest, training
frames, serving reads: `feature_pipelines.entity_keys`)."""

import polars as pl

from feature_pipelines.spec import Entity

customer = Entity(
    name="customer",
    join_key="customer_id",
    dtype=pl.Int64,
    description="A shop customer (UCI Online Retail CustomerID); lines without one are anonymous.",
    personal=True,  # a customer is a person: consent and erasure act on these ids
    min=1,  # positive ids: a negative or zero id is a broken export, not a new customer
)

item = Entity(
    name="item",
    join_key="stock_code",
    dtype=pl.String,
    description="A product, by the shop's stock code (five digits and an optional letter suffix).",
    # `85123a` and `85123A` are the same product in the data (same descriptions): codes are upper-cased.
    # Full-width digits (`８５１２３A`) fail the ASCII pattern: refused, never a new item.
    normalize=("strip", "upper"),
    pattern=r"^[0-9]{5}[A-Z]{0,3}$",
    # Service lines that are not products (POST, DOT, M, C2, BANK CHARGES, AMAZONFEE, DCGS..., GIFT_0001_...):
    # accepted at ingest, left out of every feature (retail_rules.product_lines), never an item key.
    non_key_pattern=r"^[A-Z][A-Z0-9_ ]*$",
)

person = Entity(
    name="person",
    join_key="person_id",
    dtype=pl.String,
    description="A person stitched from anonymous, device and customer ids by the identity graph "
    "(feature_pipelines/identity); the id is stable: the older id survives a merge, an un-merge restores it.",
    pattern=r"^p_[0-9a-f]{16}$",
    personal=True,  # consent and erasure act on persons, by their id or any alias
)
