"""The synthetic behaviour events: deterministic by seed, on the identity input contract, anchored on the real
data, with the shared devices, kiosks, never-login visitors, bots and placeholder ids stitching must face."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from feature_pipelines.offline.contracts import gate_file
from feature_pipelines.synthetic import events
from tests.conftest import REAL_DATA


@pytest.fixture(scope="module")
def small() -> events.Generated:
    return events.generate(customers=300, seed=5)


def test_same_seed_same_bytes_other_seed_other_events(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    events.write(a, customers=120, seed=3)
    events.write(b, customers=120, seed=3)
    events.write(c, customers=120, seed=4)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and events.TRUTH_FILE in names and len(names) > 100
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert not events.read_events(a).equals(events.read_events(c))
    assert events.generate(customers=120, seed=3).events.equals(events.read_events(a))


def test_files_pass_the_declared_source_contract(tmp_path, catalog):
    events.write(tmp_path, customers=200, seed=1)
    source = catalog.sources["behaviour_events"]
    files = sorted(tmp_path.glob("events-*.parquet"))
    for path in files[::30]:
        gated = gate_file(source, catalog.entities, str(path))
        assert gated.frame.height == pl.read_parquet(path).height > 0
        days = gated.frame["event_date"].unique().to_list()
        assert days == [path.stem.removeprefix("events-")]  # one UTC day per file


def test_identity_input_contract(small):
    e = small.events
    assert e.schema["event_id"] == pl.String and e["event_id"].is_unique().all()
    assert e.schema["event_time"] == pl.Datetime("us", "UTC")
    assert e.schema["customer_id"] == pl.Int64 and e["anonymous_id"].null_count() == 0
    assert e.select(pl.col("event_time").is_sorted()).item()
    assert set(e["event_type"].unique()) == set(events.EVENT_TYPES)
    # customer_id is set only from the session's login on
    first_logged = e.filter(pl.col("customer_id").is_not_null()).sort("event_time", "event_id")
    first_by_session = first_logged.group_by("session_id").agg(pl.col("event_type").first())
    assert set(first_by_session["event_type"]) == {"login"}


def test_anchored_on_real_customers_items_and_invoice_times(small):
    real = pl.read_parquet(REAL_DATA)
    purchases = small.events.filter(pl.col("event_type") == "purchase")
    invoices = real.select(
        pl.col("InvoiceNo").alias("invoice_no"),
        pl.col("CustomerID").alias("customer_id"),
        pl.col("InvoiceDate")
        .dt.replace_time_zone("Europe/London", ambiguous="earliest")
        .dt.convert_time_zone("UTC")
        .alias("t"),
        pl.col("StockCode").str.to_uppercase().alias("stock_code"),
    )
    joined = purchases.join(invoices, on=["invoice_no", "customer_id", "stock_code"], how="left")
    assert joined.group_by("event_id").agg((pl.col("t").min() == pl.col("event_time").first()).alias("ok"))["ok"].all()
    assert set(small.events["stock_code"].drop_nulls()) <= set(invoices["stock_code"])


def test_world_has_shared_devices_kiosks_visitors_bots_and_placeholders(small):
    truth, e = small.truth, small.events
    people = truth.group_by("identifier_type", "identifier").agg(pl.col("person").n_unique().alias("n"))
    shared = people.filter((pl.col("identifier_type") == "device_id") & (pl.col("n") > 1))
    assert shared.height >= 2  # household tablets and kiosks
    assert shared.filter(pl.col("n") > 2).height >= 1  # a kiosk, used by many
    persons = truth["person"].unique()
    assert persons.str.starts_with("v-").sum() >= 100  # never-login visitors
    assert persons.str.starts_with("b-").sum() >= 1  # bots
    assert persons.str.starts_with("c-").sum() == e["customer_id"].n_unique() - 1 == 300
    visitors = truth.filter(pl.col("person").str.starts_with("v-") & (pl.col("identifier_type") == "anonymous_id"))
    assert e.filter(pl.col("anonymous_id").is_in(visitors["identifier"].implode()))["customer_id"].null_count() > 0
    assert e.filter(pl.col("anonymous_id").is_in(visitors["identifier"].implode()))["customer_id"].is_null().all()
    placeholders = set(events.PLACEHOLDER_DEVICE_IDS) | set(events.PLACEHOLDER_ANONYMOUS_IDS)
    assert set(e["device_id"].drop_nulls()) & set(events.PLACEHOLDER_DEVICE_IDS)
    assert not set(truth["identifier"]) & placeholders  # placeholders identify no one
    assert e.filter(pl.col("device_type") == "desktop")["device_id"].null_count() > 0  # browsers without an id


def test_scale_flag_clones_beyond_the_real_customers():
    g = events.generate(customers=3000, seed=2)
    customers = g.events["customer_id"].drop_nulls().unique()
    assert customers.len() == 3000 and (customers >= 10_000_000).sum() == 3000 - 2609
    assert g.persons > 4000


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="--customers must be at least 1"):
        events.generate(customers=0)


def test_networks_home_office_public(small):
    ev = small.events
    assert ev["network_id"].null_count() == 0
    kinds = ev.select(pl.col("network_id").str.slice(0, 5).value_counts()).unnest("network_id")
    counts = dict(zip(kinds["network_id"], kinds["count"], strict=True))
    assert {"net-h", "net-o", "net-p"} <= set(counts)
    ids_per_network = ev.group_by("network_id").agg(pl.col("anonymous_id").n_unique().alias("n"))
    home = ids_per_network.filter(pl.col("network_id").str.starts_with("net-h"))["n"]
    public = ids_per_network.filter(pl.col("network_id").str.starts_with("net-p"))["n"]
    assert home.median() <= 4 < public.median()  # a home: a few ids; a public network: many


def test_session_knobs_scale_events_per_person():
    lean = dataclasses.replace(events.World(), visitors=1.0, browse_sessions=0.3, visitor_sessions=0.3)
    base, thin = events.generate(customers=400, seed=2), events.generate(customers=400, seed=2, world=lean)
    assert thin.persons > base.persons  # one visitor per customer
    assert thin.events.height / thin.persons < 0.75 * base.events.height / base.persons
