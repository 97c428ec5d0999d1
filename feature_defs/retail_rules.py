"""How the retail data's real quirks are treated, in one place, so every view treats them alike.

- Exact-duplicate lines (3,173 in the data) are dropped before any aggregation: an identical invoice,
  item, quantity, price and minute is a double-recorded line, not a second purchase.
- Cancellations (invoice `C…`, negative quantity) never count as purchases. User views report them as a
  cancellation rate; the item view reports them as returned units.
- Bad-debt adjustments (invoice `A…`) are ignored.
- Zero-price lines (free samples, adjustments) are not purchases: no units, no spend, no buyers.
- Non-product stock codes (POST, DOT, M, C2, BANK CHARGES, gift vouchers, DCGS…) are not items: they are
  left out of every feature. Spend therefore excludes postage and fees.
- Lines without a customer cannot be attributed to a user; they still count for item popularity (units,
  revenue), but not as buyers.
"""

import polars as pl

PRODUCT_CODE = r"^\d{5}[A-Za-z]{0,3}$"


def product_lines(events: pl.LazyFrame) -> pl.LazyFrame:
    """Product lines only, exact duplicates dropped."""
    return events.unique().filter(pl.col("stock_code").str.contains(PRODUCT_CODE))


def customer_product_lines(events: pl.LazyFrame) -> pl.LazyFrame:
    return product_lines(events).filter(pl.col("customer_id").is_not_null())


def is_cancellation() -> pl.Expr:
    return pl.col("invoice_no").str.starts_with("C")


def is_purchase() -> pl.Expr:
    return pl.col("invoice_no").str.contains(r"^\d") & (pl.col("quantity") > 0) & (pl.col("unit_price") > 0)


def window_suffix(window) -> str:
    return f"{window.days}d"
