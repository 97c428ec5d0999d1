"""Bad source files on top of the real data: each is blocked with a message naming the file, the column, the rule
and a count, or accepted for a reason documented in docs/bad-files.md. In no case is a good day wiped or a
contract-violating value committed.

Each case re-delivers three real days (2011-01-04..06, 3,120 rows) over a raw table that already holds the
good delivery, through `ingest.ingest` (the function the Dagster asset and `fstore ingest` call). A handful
go end to end through the Dagster assets at the bottom.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from feature_pipelines.offline import delta, ingest, quarantine
from feature_pipelines.offline.contracts import gate_file
from feature_pipelines.offline.history import commit as read_commit
from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.factory import build_asset_defs
from feature_pipelines.spec import EVENT_DATE
from tests.conftest import RANGE, ROOT, chain, real_data, run, with_source_file

FIRST, LAST = date(2011, 1, 4), date(2011, 1, 6)
DOCS = ROOT / "docs" / "bad-files.md"


@pytest.fixture(scope="module")
def base() -> pl.DataFrame:
    return real_data(FIRST.isoformat(), LAST.isoformat())


@dataclass
class Lake:
    """A raw table holding the good delivery of the three days, and how to re-deliver over it."""

    root: Path
    catalog: object
    source: object

    @property
    def raw(self) -> str:
        return str(self.root / "raw")

    @property
    def quarantine(self) -> str:
        return str(self.root / "quarantine")

    def deliver(self, files, source=None, allow_shrink=False, first=FIRST, last=LAST) -> ingest.IngestResult:
        return ingest.ingest(
            source or self.source,
            self.catalog.entities,
            [str(f) for f in files],
            first,
            last,
            raw_uri=self.raw,
            quarantine_uri=self.quarantine,
            run_id="test",
            allow_shrink=allow_shrink,
        )

    def content(self) -> pl.DataFrame:
        return pl.read_delta(self.raw).sort(pl.all())


@pytest.fixture
def lake(tmp_path, catalog, base) -> Lake:
    good = tmp_path / "good.parquet"
    base.write_parquet(good)
    out = Lake(tmp_path / "lake", catalog, catalog.sources["online_retail"])
    assert out.deliver([good]).rows == base.height
    return out


# -- the kinds -------------------------------------------------------------------------------------------------
def rows(frame: pl.DataFrame, n: int, **values) -> pl.DataFrame:
    """`frame` with the first `n` rows' columns set to `values` (keeping each column's dtype unless given)."""
    first = pl.int_range(pl.len()) < n
    return frame.with_columns([pl.when(first).then(pl.lit(v)).otherwise(pl.col(c)).alias(c) for c, v in values.items()])


def parquet(frame: pl.DataFrame) -> Callable[[Path], list[Path]]:
    def make(folder: Path) -> list[Path]:
        path = folder / "delivery.parquet"
        frame.write_parquet(path)
        return [path]

    return make


def csv(text_frame: pl.DataFrame) -> Callable[[Path], list[Path]]:
    def make(folder: Path) -> list[Path]:
        path = folder / "delivery.csv"
        text_frame.write_csv(path)
        return [path]

    return make


def raw_bytes(data: bytes, name: str = "delivery.parquet") -> Callable[[Path], list[Path]]:
    def make(folder: Path) -> list[Path]:
        path = folder / name
        path.write_bytes(data)
        return [path]

    return make


@dataclass
class Kind:
    name: str
    build: Callable[[pl.DataFrame], Callable[[Path], list[Path]]]
    column: str | None = None  # blocked: the column the message must name (None: a file-level block)
    rule: str | None = None  # blocked: the rule the message must name
    accept: Callable[[pl.DataFrame, pl.DataFrame], None] | None = None  # accepted: what was committed
    fmt: str = "parquet"


def as_text(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("InvoiceDate").dt.strftime("%Y-%m-%d %H:%M:%S"))


def truncated(frame: pl.DataFrame) -> Callable[[Path], list[Path]]:
    def make(folder: Path) -> list[Path]:
        whole = folder / "whole.parquet"
        frame.write_parquet(whole)
        data = whole.read_bytes()
        whole.unlink()
        return raw_bytes(data[: len(data) // 2])(folder)

    return make


def two_files(frame: pl.DataFrame) -> Callable[[Path], list[Path]]:
    def make(folder: Path) -> list[Path]:
        frame.write_parquet(folder / "delivery.parquet")
        frame.filter(pl.col("InvoiceDate").dt.date() == FIRST).write_parquet(folder / "delivery_again.parquet")
        return [folder / "delivery.parquet", folder / "delivery_again.parquet"]

    return make


def same_as_base(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    assert committed.equals(before)


def shifted_utc(frame: pl.DataFrame, zone: str) -> pl.DataFrame:
    """The same instants written as timezone-aware times in `zone` (London is UTC in January)."""
    return frame.with_columns(pl.col("InvoiceDate").dt.replace_time_zone("UTC").dt.convert_time_zone(zone))


def upper_codes(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    assert committed.equals(before)  # " 85123a " and "85123a" are stored as the key "85123A"


def extra_rows_kept(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    assert committed.height == 2 * before.height  # exact duplicates are kept raw; every view's prepare drops them


def adjustment_kept(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    adjusted = committed.filter(pl.col("unit_price") < 0)
    assert adjusted.height == 1 and adjusted["invoice_no"].to_list() == ["A536370"]


def nulls_kept(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    assert committed["customer_id"].null_count() == before["customer_id"].null_count() + 3


def country_kept(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    assert committed.filter(pl.col("country") == "Atlantis").height == 5


def dropped_rows_reported(committed: pl.DataFrame, before: pl.DataFrame) -> None:
    assert committed.height == before.height - 4


KINDS = [
    Kind("empty_file", lambda b: raw_bytes(b""), rule="max_shrink"),
    Kind("zero_rows", lambda b: parquet(b.head(0)), rule="max_shrink"),
    Kind("header_only_csv", lambda b: csv(as_text(b.head(0))), rule="max_shrink", fmt="csv"),
    Kind("truncated_parquet", truncated, rule="readable"),
    Kind("not_parquet_bytes", lambda b: raw_bytes(b"InvoiceNo,StockCode\n536365,85123A\n"), rule="readable"),
    Kind("random_bytes", lambda b: raw_bytes(bytes(range(256)) * 40), rule="readable"),
    Kind("missing_column", lambda b: parquet(b.drop("UnitPrice")), column="UnitPrice", rule="required_columns"),
    Kind(
        "renamed_column", lambda b: parquet(b.rename({"Quantity": "Qty"})), column="Quantity", rule="required_columns"
    ),
    Kind("extra_column", lambda b: parquet(b.with_columns(pl.lit("web").alias("Channel"))), accept=same_as_base),
    Kind(
        "quantity_as_text",
        lambda b: parquet(rows(b.with_columns(pl.col("Quantity").cast(pl.String)), 3, Quantity="lots")),
        column="Quantity",
        rule="not_an_integer",
    ),
    Kind(
        "quantity_as_whole_floats",
        lambda b: parquet(b.with_columns(pl.col("Quantity").cast(pl.Float64))),
        accept=same_as_base,
    ),
    Kind(
        "fractional_quantity",
        lambda b: parquet(rows(b.with_columns(pl.col("Quantity").cast(pl.Float64)), 2, Quantity=1.5)),
        column="Quantity",
        rule="fractional",
    ),
    Kind("quantity_4e18", lambda b: parquet(rows(b, 1, Quantity=4 * 10**18)), column="Quantity", rule="max"),
    Kind("quantity_1e9", lambda b: parquet(rows(b, 1, Quantity=10**9)), column="Quantity", rule="max"),
    Kind(
        "quantity_float_above_int64",
        lambda b: parquet(rows(b.with_columns(pl.col("Quantity").cast(pl.Float64)), 1, Quantity=1e19)),
        column="Quantity",
        rule="out_of_range",
    ),
    Kind("null_quantity", lambda b: parquet(rows(b, 2, Quantity=None)), column="Quantity", rule="not_null"),
    Kind("inf_price", lambda b: parquet(rows(b, 1, UnitPrice=float("inf"))), column="UnitPrice", rule="finite"),
    Kind("nan_price", lambda b: parquet(rows(b, 2, UnitPrice=float("nan"))), column="UnitPrice", rule="finite"),
    Kind("negative_price", lambda b: parquet(rows(b, 1, UnitPrice=-2.5)), column="UnitPrice", rule="min"),
    Kind(
        "negative_price_on_adjustment",
        lambda b: parquet(rows(b, 1, InvoiceNo="A536370", UnitPrice=-11062.06)),
        accept=adjustment_kept,
    ),
    Kind(
        "price_as_text_numbers",
        lambda b: parquet(b.with_columns(pl.col("UnitPrice").cast(pl.String))),
        accept=same_as_base,
    ),
    Kind("null_customer", lambda b: parquet(rows(b, 3, CustomerID=None)), accept=nulls_kept),
    Kind("negative_customer_id", lambda b: parquet(rows(b, 2, CustomerID=-12346)), column="CustomerID", rule="key_min"),
    Kind("zero_customer_id", lambda b: parquet(rows(b, 1, CustomerID=0)), column="CustomerID", rule="key_min"),
    Kind(
        "fractional_customer_id",
        lambda b: parquet(rows(b.with_columns(pl.col("CustomerID").cast(pl.Float64)), 1, CustomerID=12346.5)),
        column="CustomerID",
        rule="fractional",
    ),
    Kind(
        "customer_id_as_floats_with_nulls",
        lambda b: parquet(b.with_columns(pl.col("CustomerID").cast(pl.Float64))),
        accept=same_as_base,
    ),
    Kind(
        "customer_id_as_decimal_text_csv",
        lambda b: csv(as_text(b).with_columns(pl.col("CustomerID").cast(pl.Float64).cast(pl.String))),
        accept=same_as_base,
        fmt="csv",
    ),
    Kind(
        "price_as_decimal_type",
        lambda b: parquet(b.with_columns(pl.col("UnitPrice").cast(pl.Decimal(12, 2)))),
        accept=same_as_base,
    ),
    Kind(
        "customer_id_above_int64",
        lambda b: parquet(
            b.with_columns(pl.col("CustomerID").cast(pl.UInt64)).with_columns(
                pl.when(pl.int_range(pl.len()) < 1).then(2**63 + 5).otherwise(pl.col("CustomerID")).alias("CustomerID")
            )
        ),
        column="CustomerID",
        rule="out_of_range",
    ),
    Kind(
        "fullwidth_stock_code",
        lambda b: parquet(rows(b, 2, StockCode="８５１２３A")),
        column="StockCode",
        rule="key_pattern",
    ),
    Kind(
        "malformed_stock_code", lambda b: parquet(rows(b, 1, StockCode="851")), column="StockCode", rule="key_pattern"
    ),
    Kind(
        "lowercase_and_padded_stock_codes",
        lambda b: parquet(b.with_columns((" " + pl.col("StockCode").str.to_lowercase() + " ").alias("StockCode"))),
        accept=upper_codes,
    ),
    Kind("null_stock_code", lambda b: parquet(rows(b, 1, StockCode=None)), column="StockCode", rule="not_null"),
    Kind("bad_invoice_no", lambda b: parquet(rows(b, 1, InvoiceNo="X-1")), column="InvoiceNo", rule="pattern"),
    Kind(
        "huge_string",
        lambda b: parquet(rows(b, 1, Description="X" * 1_000_000)),
        column="Description",
        rule="max_length",
    ),
    Kind(
        "invalid_utf8_binary",
        lambda b: parquet(
            b.with_columns(pl.col("Description").cast(pl.Binary)).with_columns(
                pl.when(pl.int_range(pl.len()) < 2)
                .then(pl.lit(b"\xff\xfe bad"))
                .otherwise(pl.col("Description"))
                .alias("Description")
            )
        ),
        column="Description",
        rule="invalid_utf8",
    ),
    Kind(
        "invalid_utf8_csv",
        lambda b: raw_bytes(
            b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            b"536365,85123A,\xff\xfe BAD,6,2011-01-04 08:26:00,2.55,17850,United Kingdom\n",
            "delivery.csv",
        ),
        rule="readable",
        fmt="csv",
    ),
    Kind("unknown_country", lambda b: parquet(rows(b, 5, Country="Atlantis")), accept=country_kept),
    Kind("null_country", lambda b: parquet(rows(b, 1, Country=None)), column="Country", rule="not_null"),
    Kind(
        "all_null_column",
        lambda b: parquet(b.with_columns(pl.lit(None).alias("Country"))),
        column="Country",
        rule="not_null",
    ),
    Kind("tz_aware_utc", lambda b: parquet(shifted_utc(b, "UTC")), accept=same_as_base),
    Kind("tz_aware_new_york", lambda b: parquet(shifted_utc(b, "America/New_York")), accept=same_as_base),
    Kind(
        "epoch_integer_timestamps",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").dt.epoch("s"))),
        column="InvoiceDate",
        rule="epoch_numbers",
    ),
    Kind(
        "epoch_millisecond_floats",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").dt.epoch("ms").cast(pl.Float64))),
        column="InvoiceDate",
        rule="epoch_numbers",
    ),
    Kind(
        "dates_without_time",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").dt.date())),
        column="InvoiceDate",
        rule="dtype",
    ),
    Kind(
        "unparseable_dates_csv",
        lambda b: csv(rows(as_text(b), 2, InvoiceDate="yesterday")),
        column="InvoiceDate",
        rule="unparseable_timestamp",
        fmt="csv",
    ),
    Kind(
        "iso_text_dates_in_parquet",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))),
        column="InvoiceDate",
        rule="unparseable_timestamp",
    ),
    Kind("null_event_time", lambda b: parquet(rows(b, 2, InvoiceDate=None)), column="InvoiceDate", rule="not_null"),
    Kind(
        "sub_microsecond_times",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").cast(pl.Datetime("ns")) + pl.duration(nanoseconds=7))),
        column="InvoiceDate",
        rule="sub_unit_precision",
    ),
    Kind(
        "dates_in_the_future",
        lambda b: parquet(rows(b, 3, InvoiceDate=datetime(2099, 1, 4, 10, 0))),
        column="InvoiceDate",
        rule="not_future",
    ),
    Kind(
        "dates_moved_out_of_range",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").dt.offset_by("1y"))),
        rule="max_shrink",
    ),
    Kind(
        "dates_before_start",
        lambda b: parquet(b.with_columns(pl.col("InvoiceDate").dt.offset_by("-2y"))),
        rule="max_shrink",
    ),
    Kind(
        "a_few_rows_before_start",
        lambda b: parquet(rows(b, 4, InvoiceDate=datetime(2009, 6, 1, 10, 0))),
        accept=dropped_rows_reported,
    ),
    Kind(
        "dst_gap_times",
        lambda b: parquet(rows(b, 5, InvoiceDate=datetime(2011, 3, 27, 1, 30))),
        column="InvoiceDate",
        rule="nonexistent_local_time",
    ),
    Kind("same_day_in_two_files", two_files, rule="one_file_per_day"),
    Kind("every_row_twice", lambda b: parquet(pl.concat([b, b])), accept=extra_rows_kept),
    Kind(
        "shrinking_redelivery",
        lambda b: parquet(b.filter(pl.col("InvoiceDate").dt.date() != FIRST).vstack(b.head(50))),
        rule="max_shrink",
    ),
]

COUNT = re.compile(r"\d[\d,]* of \d[\d,]* rows|\d[\d,]* -> \d[\d,]* rows|\d[\d,]* rows|[\d,]+ bytes")


def test_at_least_thirty_kinds_and_every_one_is_documented():
    assert len(KINDS) >= 30 and len({k.name for k in KINDS}) == len(KINDS)
    documented = set(re.findall(r"^\| `(\w+)` \|", DOCS.read_text(), flags=re.M))
    assert documented == {k.name for k in KINDS}, documented ^ {k.name for k in KINDS}


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_bad_file(kind: Kind, lake: Lake, base, tmp_path):
    folder = tmp_path / "landing"
    folder.mkdir()
    files = kind.build(base)(folder)
    source = dataclasses.replace(lake.source, format=kind.fmt)
    version, before = delta.table_version(lake.raw), lake.content()
    if kind.accept is None:
        with pytest.raises(ingest.SourceError) as caught:
            lake.deliver(files, source)
        message = str(caught.value)
        assert any(f.name in message for f in files), message  # the file
        if kind.column:
            assert f"'{kind.column}'" in message, message  # the column
        assert kind.rule in message, message  # the rule
        assert COUNT.search(message), message  # how many
        assert len(message) < 5000  # examples are cut: a 1 MB value does not become a 1 MB message
        assert delta.table_version(lake.raw) == version  # nothing committed: the good days stay
        assert lake.content().equals(before)
    else:
        result = lake.deliver(files, source)
        committed = lake.content()
        kind.accept(committed, before)
        assert_contract_holds(lake, committed, tmp_path)
        for day, n in result.previous_by_day.items():
            assert result.rows_by_day[day] >= n * (1 - lake.source.max_shrink)  # no good day wiped


def assert_contract_holds(lake: Lake, committed: pl.DataFrame, tmp_path: Path) -> None:
    """What was committed passes the same gate, written back as the source's own file."""
    source = lake.source
    back = committed.drop(EVENT_DATE).with_columns(
        pl.col(source.event_time_column).dt.convert_time_zone(source.timezone).dt.replace_time_zone(None)
    )
    back = back.rename({source.column(c): c for c in source.schema})
    path = tmp_path / "committed.parquet"
    back.write_parquet(path)
    gated = gate_file(source, lake.catalog.entities, str(path))
    assert gated.violations == () and gated.frame.height == committed.height
    assert committed[EVENT_DATE].is_between(FIRST.isoformat(), LAST.isoformat()).all()


# -- named behaviours of the gate and the guards ----------------------------------------------------------------
def test_the_shipped_data_passes_with_zero_false_blocks(catalog):
    source = catalog.sources["online_retail"]
    gated = gate_file(source, catalog.entities, source.resolve_location(catalog.base_dir))
    assert gated.rows == gated.frame.height == 311_761
    assert gated.violations == () and gated.bad_rows == 0
    # Every raw key is an item key or a declared service code; lowercase codes became their upper-case twins.
    codes = gated.frame["stock_code"].unique()
    assert codes.str.contains(r"^[0-9]{5}[A-Z]{0,3}$|^[A-Z][A-Z0-9_ ]*$").all()
    assert "47566B" in codes.to_list() and "47566b" not in codes.to_list()


def test_a_shrink_goes_through_with_the_override_and_is_recorded(lake, base, tmp_path):
    small = tmp_path / "small.parquet"
    base.head(10).write_parquet(small)
    result = lake.deliver([small], allow_shrink=True)
    assert result.shrunk == {"2011-01-04": (508, 10), "2011-01-05": (1334, 0), "2011-01-06": (1278, 0)}
    info = read_commit(lake.raw, result.commit.version).metadata
    assert info["allow_shrink"] == "true" and '"2011-01-05": {"before": 1334, "after": 0}' in info["shrunk_days"]
    assert info["partitions"] == "2011-01-04..2011-01-06"


def test_rows_outside_the_run_are_reported_not_dropped_in_silence(lake, base, tmp_path):
    path = tmp_path / "wider.parquet"
    real_data("2011-01-04", "2011-01-07").write_parquet(path)
    result = lake.deliver([path], last=date(2011, 1, 6))
    (outside,) = result.outside
    assert outside.kind == "outside this run's days 2011-01-04..2011-01-06" and outside.count > 100
    assert outside.examples[0].startswith("2011-01-07")
    assert '"outside this run' in read_commit(lake.raw, result.commit.version).metadata["not_written"]


def test_quarantine_sets_bad_rows_aside_with_their_reasons(lake, base, tmp_path):
    source = dataclasses.replace(lake.source, on_bad_rows="quarantine", max_bad_fraction=0.01)
    path = tmp_path / "two_bad.parquet"
    rows(base, 2, UnitPrice=float("inf")).write_parquet(path)
    result = lake.deliver([path], source)
    assert result.quarantined == 2 and result.rows == base.height - 2
    assert pl.read_delta(lake.raw)["unit_price"].is_finite().all()
    kept = quarantine.read(lake.quarantine)
    assert kept.height == 2 and set(kept["file"]) == {str(path)}
    assert kept["rules"].to_list() == ["UnitPrice:finite"] * 2
    assert "column 'UnitPrice': finite (are inf or NaN)" in kept["reason"][0]
    assert '"UnitPrice":"inf"' in kept["record"][0] and '"InvoiceNo":"539993"' in kept["record"][0]
    lake.deliver([path], source)  # the same file again: its records are replaced, not duplicated
    assert quarantine.read(lake.quarantine).height == 2


def test_quarantine_past_its_threshold_rejects_the_whole_file(lake, base, tmp_path):
    source = dataclasses.replace(lake.source, on_bad_rows="quarantine", max_bad_fraction=0.01)
    path = tmp_path / "many_bad.parquet"
    rows(base, 100, CustomerID=-1).write_parquet(path)
    version = delta.table_version(lake.raw)
    with pytest.raises(ingest.SourceError, match=r"3\.21% of the rows are bad, above the source's max_bad_fraction"):
        lake.deliver([path], source)
    assert delta.table_version(lake.raw) == version and quarantine.read(lake.quarantine).height == 0


def test_an_ambiguous_local_time_is_read_as_its_first_occurrence(tmp_path, catalog, base):
    """2011-10-30 01:30 happened twice in London (BST, then GMT): the earlier instant, 00:30 UTC."""
    path = tmp_path / "autumn.parquet"
    rows(base.head(3), 3, InvoiceDate=datetime(2011, 10, 30, 1, 30)).write_parquet(path)
    gated = gate_file(catalog.sources["online_retail"], catalog.entities, str(path))
    assert gated.frame["invoice_date"].dt.strftime("%Y-%m-%d %H:%M %Z").unique().to_list() == ["2011-10-30 00:30 UTC"]


def test_days_a_delivery_spans_are_ingested_rows_or_not_and_missing_files_are_not(tmp_path, catalog):
    """A file spanning Friday..Monday covers the Saturday (no sales) too; a day of the run that no file spans
    (its file has not arrived) is not counted as ingested, so no feature window is complete over it."""
    from feature_pipelines.offline.history import covered_partitions

    lake = Lake(tmp_path / "lake", catalog, catalog.sources["online_retail"])
    path = tmp_path / "fri_to_mon.parquet"
    real_data("2011-01-07", "2011-01-10").write_parquet(path)
    result = lake.deliver([path], first=date(2011, 1, 7), last=date(2011, 1, 12))
    assert result.rows_by_day["2011-01-08"] == 0 and result.covered[:4] == [f"2011-01-{d:02d}" for d in (7, 8, 9, 10)]
    assert "not counted as ingested (no delivered file spans them): 2011-01-11..2011-01-12" in result.summary()
    covered = covered_partitions(lake.raw, EVENT_DATE)
    assert {"2011-01-08", "2011-01-09", "2011-01-10"} <= covered and "2011-01-11" not in covered
    empty = tmp_path / "empty.parquet"
    real_data("2011-01-04", "2011-01-04").head(0).write_parquet(empty)
    assert lake.deliver([empty], first=date(2011, 1, 11), last=date(2011, 1, 11)).covered == []
    assert "2011-01-11" not in covered_partitions(lake.raw, EVENT_DATE)


# -- end to end through the Dagster assets ------------------------------------------------------------------------
def _failure_text(result) -> str:
    (event,) = result.get_step_failure_events()
    data = event.step_failure_data
    return (data.user_failure_data.description if data.user_failure_data else "") + data.error.message


def test_assets_refuse_corrupt_and_shrinking_deliveries_without_retries(
    tmp_path, catalog, base, pg_instance, store_resource
):
    good = tmp_path / "good.parquet"
    base.write_parquet(good)
    cat = with_source_file(catalog, good)
    key = raw_key(cat.sources["online_retail"])
    assert run(cat, pg_instance, store_resource, [key], first="2011-01-04", last="2011-01-06").success
    uri = store_resource.settings.raw_table("online_retail")
    version, before = delta.table_version(uri), pl.read_delta(uri).sort(pl.all())

    for name, data in (("corrupt.parquet", good.read_bytes()[:-100]), ("empty.parquet", b"")):
        bad = tmp_path / name
        bad.write_bytes(data)
        bad_cat = with_source_file(catalog, bad)
        result = run(bad_cat, pg_instance, store_resource, [key], first="2011-01-04", last="2011-01-06")
        assert not result.success
        assert name in _failure_text(result)
        assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # fails at once
        assert delta.table_version(uri) == version and pl.read_delta(uri).sort(pl.all()).equals(before)

    # The operator's override, as a run tag: the empty re-delivery goes through, and the commit says so.
    assets = [a for a in build_asset_defs(bad_cat).assets if key in a.keys]
    tags = {RANGE[0]: "2011-01-05", RANGE[1]: "2011-01-05", "allow_shrink": "true"}
    forced = dg.materialize(assets, instance=pg_instance, tags=tags, resources={"store": store_resource})
    assert forced.success
    info = read_commit(uri, delta.table_version(uri)).metadata
    assert info["allow_shrink"] == "true" and "2011-01-05" in info["shrunk_days"]


def test_a_bad_redelivery_never_reaches_serving(tmp_path, catalog, base, pg_instance, store_resource):
    """Good days served; then an `inf` price and a negative customer id arrive: ingest fails, the features
    and the push do not run, Delta and Redis keep serving the good version."""
    from feature_pipelines.online.layout import OnlineLayout

    good = tmp_path / "good.parquet"
    base.write_parquet(good)
    source = dataclasses.replace(catalog.sources["online_retail"], location=str(good), start=FIRST)
    cat = dataclasses.replace(
        catalog,
        sources={source.name: source},
        views={"user_context": catalog.views["user_context"]},
        services={},
        training_sets={},
    )
    keys = [raw_key(source), *chain(cat)]
    assert run(cat, pg_instance, store_resource, keys, first="2011-01-04", last="2011-01-06").success
    store = store_resource.online_store(OnlineLayout.from_catalog(cat))
    serving = store.serving_version("user_context")
    feature_version = delta.table_version(store_resource.settings.feature_table("user_context"))

    bad = tmp_path / "bad.parquet"
    rows(base, 1, UnitPrice=float("inf"), CustomerID=-5).write_parquet(bad)
    bad_cat = dataclasses.replace(cat, sources={source.name: dataclasses.replace(source, location=str(bad))})
    result = run(bad_cat, pg_instance, store_resource, keys, first="2011-01-04", last="2011-01-06")
    assert not result.success
    text = _failure_text(result)
    assert "bad.parquet: column 'UnitPrice', rule finite: 1 of 3120 rows are inf or NaN" in text
    assert "column 'CustomerID', rule key_min: 1 of 3120 rows are below the smallest customer key 1" in text
    assert not result.get_asset_materialization_events()
    assert store.serving_version("user_context") == serving
    assert delta.table_version(store_resource.settings.feature_table("user_context")) == feature_version
