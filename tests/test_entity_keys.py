"""Entity key rules, the same wherever ids enter: ingest (see tests/offline), training frames, serving reads."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from feature_pipelines.catalog import Catalog
from feature_pipelines.entity_keys import EntityKeyError, check_keys, normalize_ids, normalize_keys
from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.rules import ascii_pattern, lossless_cast
from feature_pipelines.spec import BatchSource, Entity, Feature, FeatureService, FeatureView
from feature_pipelines.training import TrainingSetError, build


def test_customer_ids_convert_without_loss_and_must_be_positive(catalog):
    customer = catalog.entities["customer"]
    assert normalize_ids(customer, [12346, "12347", 12348.0, None]) == [12346, 12347, 12348, None]
    for ids, rule in (([12346, -5], "key_min"), ([0], "key_min"), ([12346.5], "fractional"), (["12x"], "not_an")):
        with pytest.raises(EntityKeyError, match=rf"column 'customer_id', rule {rule}"):
            normalize_ids(customer, ids)
    with pytest.raises(EntityKeyError, match=r"rule out_of_range: 1 of 1 values"):
        normalize_ids(customer, [2**63 + 1])


def test_stock_codes_are_normalized_and_look_alikes_refused(catalog):
    item = catalog.entities["item"]
    assert normalize_ids(item, [" 85123a ", "85123A", 22423]) == ["85123A", "85123A", "22423"]
    with pytest.raises(EntityKeyError) as caught:
        normalize_ids(item, ["８５１２３A", "85123A", "POST"])
    message = str(caught.value)
    assert "rule key_pattern: 2 of 3 values do not match the key pattern" in message and "'８５１２３A'" in message
    # At ingest the declared service codes pass (they are never keys); elsewhere they are not items.
    checked = check_keys(item, pl.Series("stock_code", ["POST", "gift_0001_10", "85123A"]), allow_non_keys=True)
    assert checked.failures == () and checked.values.to_list() == ["POST", "GIFT_0001_10", "85123A"]
    assert checked.non_keys.to_list() == [True, True, False]


def test_nfkc_is_an_explicit_choice():
    nfkc = Entity(name="sku", join_key="sku", dtype=pl.String, normalize=("nfkc", "upper"), pattern=r"^\d{5}[A-Z]?$")
    assert normalize_ids(nfkc, ["８５１２３ａ"]) == ["85123A"]


def test_patterns_use_ascii_classes():
    assert ascii_pattern(r"^\d{2}\w[\d\s]$") == r"^[0-9]{2}[0-9A-Za-z_][[0-9][\t\n\x0B\f\r ]]$"
    assert pl.Series(["١٢", "12"]).str.contains(ascii_pattern(r"^\d+$")).to_list() == [False, True]


def test_lossless_casts_name_what_they_refuse():
    cast = lossless_cast(pl.Series("q", [1.0, 2.5, float("inf"), 1e19, None]), pl.Int64())
    assert {f.rule: f.mask.to_list() for f in cast.failures} == {
        "not_finite": [False, False, True, False, False],
        "fractional": [False, True, False, False, False],
        "out_of_range": [False, False, False, True, False],
    }
    big = lossless_cast(pl.Series("x", [2**53 + 1, 7]), pl.Float64())
    assert [f.rule for f in big.failures] == ["not_exact_as_float"]
    aware = pl.Series("t", [datetime(2011, 6, 1, 12)]).dt.replace_time_zone("Europe/Paris")
    kept = lossless_cast(aware, pl.Datetime("us"))
    assert kept.values.dt.convert_time_zone("UTC").to_list() == [datetime(2011, 6, 1, 10, tzinfo=UTC)]


# -- training entity frames ----------------------------------------------------------------------------------------
item = Entity(name="item", join_key="sku", dtype=pl.String, normalize=("strip", "upper"), pattern=r"^\d{3}[A-Z]?$")
user = Entity(name="user", join_key="user_id", dtype=pl.Int64, min=1)
source = BatchSource(
    name="src",
    location="x",
    format="parquet",
    schema={"ts": pl.Datetime("us")},
    event_time="ts",
    start=date(2024, 1, 1),
)


def _view(name: str, entity: Entity) -> FeatureView:
    return FeatureView(
        name=name,
        entity=entity,
        source=source,
        owner="team:t",
        description="d",
        features=(Feature(name=f"{name}_n", dtype=pl.Int64, description="d"),),
        transformation=lambda e, c: e,
    )


CATALOG = Catalog(
    entities={"item": item, "user": user},
    sources={"src": source},
    views={"items": _view("items", item), "users": _view("users", user)},
    services={"model": FeatureService(name="model", features=("items:*", "users:*"), owner="team:t", description="d")},
)


@pytest.fixture
def tables(tmp_path):
    end = datetime(2024, 1, 2, tzinfo=UTC)
    for name, key, ids in (("items", "sku", ["101A", "102"]), ("users", "user_id", [1, 2])):
        frame = pl.DataFrame(
            {key: ids, f"{name}_n": [10, 20], "event_timestamp": [end] * 2, "partition_date": ["2024-01-01"] * 2},
            schema_overrides={"event_timestamp": pl.Datetime("us", "UTC")},
        )
        overwrite_partitions(
            str(tmp_path / name), frame, "partition_date", "2024-01-01", "2024-01-01", historical_load=True
        )
    return lambda view: str(tmp_path / view)


def test_training_frames_use_the_same_key_rules(tables):
    ts = [datetime(2024, 1, 2, 12, tzinfo=UTC)] * 2
    frame = pl.DataFrame({"sku": [" 101a", "102"], "user_id": [1.0, 2.0], "event_timestamp": ts})
    result = build(CATALOG, "model", frame, tables)
    assert result.frame["items_n"].to_list() == [10, 20] and result.frame["users_n"].to_list() == [10, 20]
    assert result.frame["sku"].to_list() == [" 101a", "102"]  # the caller's columns come back as given
    for bad, match in (
        ({"user_id": [1.5, 2.0]}, r"entity frame: column 'user_id', rule fractional: 1 of 2 values"),
        ({"user_id": [-1, 2]}, r"entity frame: column 'user_id', rule key_min: 1 of 2 values .* e\.g\. \[-1\]"),
        ({"sku": ["１０１A", "102"]}, r"entity frame: column 'sku', rule key_pattern: 1 of 2 values"),
    ):
        with pytest.raises(TrainingSetError, match=match):
            build(CATALOG, "model", frame.with_columns(**{k: pl.Series(v) for k, v in bad.items()}), tables)


def test_normalize_keys_names_the_caller(catalog):
    with pytest.raises(EntityKeyError, match=r"^labels\.parquet: column 'customer_id', rule dtype"):
        normalize_keys(catalog.entities["customer"], pl.Series("customer_id", [True]), "labels.parquet")
