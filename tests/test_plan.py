"""Schema evolution end to end: `fstore plan`, additive merges, refused breaking changes, view versions side by
side, service contracts in serving and training, and a sensitivity change moving the online namespace."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import redis
from typer.testing import CliRunner

from feature_defs.item_features import popularity
from feature_pipelines import training
from feature_pipelines.catalog import Catalog, validate
from feature_pipelines.cli import app
from feature_pipelines.contract import ContractError
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.asset_keys import feature_key
from feature_pipelines.orchestration.factory import build_asset_defs
from feature_pipelines.plan import make_plan
from feature_pipelines.spec import Feature, FeatureService, FeatureView
from tests.conftest import DAY, chain, push, run

BEFORE = "2011-02-20"


def with_views(catalog: Catalog, *views: FeatureView, drop: tuple[str, ...] = ()) -> Catalog:
    found = {k: v for k, v in catalog.views.items() if k not in drop}
    found.update({v.deployed_name: v for v in views})
    return dataclasses.replace(catalog, views=found)


def with_service(catalog: Catalog, name: str, *refs: str) -> Catalog:
    service = FeatureService(name=name, features=refs, owner="team:test", description="A test model.")
    return dataclasses.replace(catalog, services={**catalog.services, name: service})


def plan_of(catalog: Catalog, store_resource, r: redis.Redis | None):
    return make_plan(catalog, store_resource.settings.feature_table, r)


def changes_of(result, view: str) -> list:
    return next(v for v in result.views if v.view == view).changes


def failure_text(result) -> str:
    return "\n".join(
        e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    )


def with_country_chars(view: FeatureView) -> FeatureView:
    """user_context plus a new feature (an additive change)."""
    base = view.transformation

    def transformation(events, ctx):
        return base(events, ctx).with_columns(pl.col("country").str.len_chars().cast(pl.Int64).alias("country_chars"))

    extra = Feature(name="country_chars", dtype=pl.Int64, description="Letters in the country's name.", min=0)
    return dataclasses.replace(view, features=(*view.features, extra), transformation=transformation)


def fractional_units(view: FeatureView) -> FeatureView:
    """item_popularity with units_sold_7d as Float64 (a breaking change if written in place)."""

    def transformation(events, ctx):
        return popularity(events, ctx).with_columns(pl.col("units_sold_7d").cast(pl.Float64) + 0.5)

    features = tuple(
        dataclasses.replace(f, dtype=pl.Float64) if f.name == "units_sold_7d" else f for f in view.features
    )
    return dataclasses.replace(view, features=features, transformation=transformation)


def test_an_added_feature_merges_into_delta_serves_online_and_reads_null_before(
    retail, pg_instance, store_resource, r, redis_url
):
    """Before: the new column jammed the pipeline (schema mismatch, retried forever)."""
    assert run(retail, pg_instance, store_resource, chain(retail, ["user_context"]), partition=BEFORE).success
    evolved = with_service(
        with_views(retail, with_country_chars(retail.views["user_context"])), "ctx", "user_context:*"
    )

    plan = plan_of(evolved, store_resource, r)
    assert not plan.breaking and not plan.nothing_deployed
    added = [c for c in changes_of(plan, "user_context") if c.kind == "additive"]
    assert added[0].what == "feature added: country_chars (Int64)"
    assert f"partitions {BEFORE}..{BEFORE} already written read null" in added[0].implies
    assert f"backfill features/user_context [{BEFORE}...{BEFORE}]" in added[0].implies
    assert "online: serving version 1 lacks country_chars" in [c.what for c in changes_of(plan, "user_context")]

    result = run(evolved, pg_instance, store_resource, chain(evolved, ["user_context"]), partition=DAY)
    assert result.success, failure_text(result)
    uri = store_resource.settings.feature_table("user_context")
    table = pl.read_delta(uri)
    assert table["country_chars"].dtype == pl.Int64
    assert (
        table.filter(pl.col("partition_date") == BEFORE)["country_chars"].null_count()
        == table.filter(pl.col("partition_date") == BEFORE).height
    )
    on_day = table.filter(pl.col("partition_date") == DAY)
    assert on_day["country_chars"].null_count() == 0
    assert on_day["country_chars"].to_list() == on_day["country"].str.len_chars().to_list()

    # The newest online version carries it.
    client = OnlineClient(redis_url, evolved)
    customer = on_day["customer_id"][0]
    (row,) = client.get_service("ctx", {"customer_id": [customer]})
    assert row["country_chars"] == len(on_day.filter(pl.col("customer_id") == customer)["country"][0])

    # Training reads null before the merge and the value after it, for the same customer.
    entities = pl.DataFrame(
        {
            "customer_id": [customer, customer],
            "event_timestamp": [datetime(2011, 2, 21, 12, tzinfo=UTC), datetime(2011, 3, 2, 12, tzinfo=UTC)],
        }
    )
    built = training.build(evolved, "ctx", entities, store_resource.settings.feature_table, mode="latest")
    assert built.frame["country_chars"].to_list() == [None, row["country_chars"]]
    assert built.frame["country"].null_count() == 0
    # Nothing left to do: the plan is clean.
    assert [c for c in changes_of(plan_of(evolved, store_resource, r), "user_context") if c.kind != "info"] == []


def test_a_dtype_change_is_refused_and_a_version_bump_is_written_and_served_side_by_side(
    retail, pg_instance, store_resource, r, redis_url
):
    """Before: Int64 -> Float64 wrote 1.5 as 1 into the Int64 column while online metadata said Float64."""
    v1 = retail.views["item_popularity"]
    assert run(retail, pg_instance, store_resource, chain(retail, ["item_popularity"]), partition=BEFORE).success
    uri = store_resource.settings.feature_table("item_popularity")
    before = delta.table_version(uri)

    # Without a locked consumer (the catalog refuses a locked one: tests/test_catalog.py), the asset refuses.
    in_place = dataclasses.replace(with_views(retail, fractional_units(v1)), services={}, training_sets={})
    refused = run(in_place, pg_instance, store_resource, [feature_key(v1)], partition=DAY)
    assert not refused.success
    message = failure_text(refused)
    assert "view 'item_popularity': breaking schema change, nothing was written" in message
    assert "feature 'units_sold_7d': dtype Int64 -> Float64" in message
    assert "FeatureView(name='item_popularity', version=2" in message and "'item_popularity@2'" in message
    assert not [e for e in refused.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # not transient
    assert delta.table_version(uri) == before
    assert pl.read_delta(uri).schema["units_sold_7d"] == pl.Int64

    plan = plan_of(in_place, store_resource, r)
    assert plan.breaking
    (change,) = [c for c in changes_of(plan, "item_popularity") if c.kind == "breaking"]
    assert change.what == "dtype changed: units_sold_7d Int64 -> Float64"
    assert "a new view version `item_popularity@2` will be written side by side" in change.implies

    # Bumping the version keeps version 1 and adds version 2 beside it.
    v2 = dataclasses.replace(fractional_units(v1), version=2)
    bumped = with_views(retail, v2)
    assert set(bumped.views) == {"user_purchase_behavior", "user_context", "item_popularity", "item_popularity@2"}
    plan = plan_of(bumped, store_resource, r)
    assert not plan.breaking
    new = changes_of(plan, "item_popularity@2")
    assert (
        new[0].kind == "versioned" and new[0].what == "new view version item_popularity@2 (deployed: item_popularity)"
    )
    assert "vs item_popularity: dtype Int64 -> Float64 of units_sold_7d" in [c.what for c in new]

    keys = chain(bumped, ["item_popularity", "item_popularity@2"])
    assert [k.to_user_string() for k in keys] == [
        "features/item_popularity",
        "online/item_popularity",
        "features/item_popularity__v2",
        "online/item_popularity__v2",
    ]
    result = run(bumped, pg_instance, store_resource, keys, partition=DAY)
    assert result.success, failure_text(result)
    v2_uri = store_resource.settings.feature_table("item_popularity@2")
    assert v2_uri.endswith("/features/item_popularity@2")
    old, new_table = pl.read_delta(uri), pl.read_delta(v2_uri)
    assert old.schema["units_sold_7d"] == pl.Int64 and new_table.schema["units_sold_7d"] == pl.Float64
    assert (new_table["units_sold_7d"] % 1 == 0.5).all()

    store = store_resource.online_store(OnlineLayout.from_catalog(bumped))
    served_v1, served_v2 = store.serving_meta("item_popularity"), store.serving_meta("item_popularity@2")
    assert served_v1.partition == served_v2.partition == DAY
    assert dict(zip(served_v1.schema.features, served_v1.schema.dtypes, strict=True))["units_sold_7d"] == "Int64"
    assert dict(zip(served_v2.schema.features, served_v2.schema.dtypes, strict=True))["units_sold_7d"] == "Float64"
    item = new_table.filter(pl.col("partition_date") == DAY)["stock_code"][0]
    assert r.exists(f"fs:item_popularity@2:{served_v2.version}:{{{item}}}")
    client = OnlineClient(redis_url, bumped)
    (a,) = client.get_view("item_popularity", [item])
    (b,) = client.get_view("item_popularity@2", [item])
    assert isinstance(a["units_sold_7d"], int) and b["units_sold_7d"] == a["units_sold_7d"] + 0.5


def test_serving_and_training_refuse_a_service_whose_contract_does_not_match(
    retail, pg_instance, store_resource, r, redis_url, monkeypatch
):
    assert run(retail, pg_instance, store_resource, chain(retail, ["item_popularity"]), partition=DAY).success
    deployed = with_service(retail, "svc", "item_popularity:units_sold_7d", "item_popularity:buyers_7d")
    changed = with_service(
        with_views(retail, fractional_units(retail.views["item_popularity"])),
        "svc",
        "item_popularity:units_sold_7d",
        "item_popularity:buyers_7d",
    )
    item = pl.read_delta(store_resource.settings.feature_table("item_popularity"))["stock_code"][0]
    entities = pl.DataFrame({"stock_code": [item], "event_timestamp": [datetime(2011, 3, 2, tzinfo=UTC)]})

    # The catalog says Float64, Redis and Delta hold Int64: refused, with both dtypes named.
    with pytest.raises(ContractError) as err:
        OnlineClient(redis_url, changed).get_service("svc", {"stock_code": [item]})
    assert "feature service 'svc' consumes item_popularity:units_sold_7d as Float64" in str(err.value)
    assert "serving version 1 in Redis" in str(err.value) and "has Int64" in str(err.value)
    with pytest.raises(training.TrainingSetError, match="consumes item_popularity:units_sold_7d as Float64"):
        training.build(changed, "svc", entities, store_resource.settings.feature_table, mode="latest")
    assert training.build(deployed, "svc", entities, store_resource.settings.feature_table, mode="latest").frame.height

    # Matching: served, and the contract is computed once, then checked once per serving version.
    calls = []
    original = Catalog.contract
    monkeypatch.setattr(Catalog, "contract", lambda self, name: calls.append(name) or original(self, name))
    client = OnlineClient(redis_url, deployed)
    for _ in range(3):
        (row,) = client.get_service("svc", {"stock_code": [item]})
    assert isinstance(row["units_sold_7d"], int) and calls == ["svc"]
    # A newer serving version with another dtype is checked again, on the same client.
    floats = OnlineLayout.from_catalog(changed)
    frame = pl.DataFrame({"stock_code": [item]}).with_columns(
        [
            pl.lit(1.5 if f.name == "units_sold_7d" else 1, dtype=f.polars_dtype).alias(f.name)
            for f in changed.views["item_popularity"].features
        ]
    )
    assert push(store_resource.online_store(floats), "item_popularity", [frame], partition="2011-03-02").promoted
    with pytest.raises(ContractError, match="as Int64 .* has Float64"):
        client.get_service("svc", {"stock_code": [item]})


def test_a_sensitivity_change_removes_the_old_namespace_copy_at_the_next_push(
    retail, pg_instance, store_resource, r, redis_url
):
    """Before: the `fs` copy of a view made confidential stayed readable by every `fs` reader."""
    public = retail.views["item_popularity"]
    assert public.sensitivity == "public"
    assert run(retail, pg_instance, store_resource, chain(retail, ["item_popularity"]), partition=BEFORE).success
    assert list(r.scan_iter("fs:*item_popularity*", count=10_000))
    confidential = with_views(retail, dataclasses.replace(public, sensitivity="confidential"))

    plan = plan_of(confidential, store_resource, r)
    (moved,) = [c for c in changes_of(plan, "item_popularity") if "namespace" in c.what]
    assert moved.what == "sensitivity confidential: namespace fs -> fss"
    assert "removes the old namespace's copy (fs: pointer, versions, keys)" in moved.implies

    result = run(confidential, pg_instance, store_resource, chain(confidential, ["item_popularity"]), partition=DAY)
    assert result.success, failure_text(result)
    assert list(r.scan_iter("fs:*", count=10_000)) == []  # pointer, versions, seq and every data key
    assert list(r.scan_iter("fss:item_popularity:*", count=10_000))
    item = pl.read_delta(store_resource.settings.feature_table("item_popularity")).filter(
        pl.col("partition_date") == DAY
    )["stock_code"][0]
    # A reader that knows only the key spec finds the view in fss, and nothing in fs.
    reader = OnlineClient(redis_url)
    assert reader.keys("item_popularity").namespace == "fss"
    assert reader.get_view("item_popularity", [item])[0]["units_sold_7d"] is not None
    assert [
        c for c in changes_of(plan_of(confidential, store_resource, r), "item_popularity") if "namespace" in c.what
    ] == []


def test_plan_names_transformation_ttl_lookback_deprecation_and_retired_views(retail, pg_instance, store_resource, r):
    assert run(retail, pg_instance, store_resource, chain(retail, ["user_context"]), partition=BEFORE).success
    assert changes_of(plan_of(retail, store_resource, r), "user_context") == []  # deployed as declared
    view = retail.views["user_context"]
    base = view.transformation

    def transformation(events, ctx):  # another body: same output schema
        return base(events.filter(pl.col("quantity") > 0), ctx)

    features = tuple(
        dataclasses.replace(f, deprecated="2011-06-01: use locale") if f.name == "country" else f for f in view.features
    )
    changed = with_views(
        retail,
        dataclasses.replace(
            view,
            transformation=transformation,
            online_ttl=timedelta(days=3),
            offline_lookback=timedelta(days=3),
            features=features,
        ),
    )
    assert validate(changed) == []
    old_view = delta.table_schema(store_resource.settings.feature_table("user_context"))
    frame = pl.DataFrame(schema=old_view).with_columns(pl.col("partition_date").cast(pl.String))
    delta.overwrite_partitions(store_resource.settings.feature_table("old_view"), frame, "partition_date", DAY, DAY)

    plan = plan_of(changed, store_resource, r)
    what = {c.what: c for c in changes_of(plan, "user_context")}
    code = next(c for w, c in what.items() if w.startswith("transformation changed (code hash"))
    assert f"partitions {BEFORE}..{BEFORE} were computed by the old code" in code.implies
    assert what["online TTL 7d -> 3d"].kind == "info"
    assert what["offline lookback 7d -> 3d"].kind == "info"
    deprecated = what["deprecated: country (2011-06-01: use locale)"]
    assert "still consumed by ranking_model_v1 (warning)" in deprecated.implies
    assert [v.changes[0].kind for v in plan.views if v.view == "old_view"] == ["retired"]
    assert any("still consumes deprecated feature user_context:country" in c.what for c in plan.services)
    assert not plan.breaking


def test_fstore_plan_with_nothing_deployed_and_without_redis(tmp_path, monkeypatch):
    monkeypatch.setenv("FS_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("FS_REDIS_URL", "redis://127.0.0.1:1/0")
    out = CliRunner().invoke(app, ["plan"])
    assert out.exit_code == 0, out.output
    assert "Redis at redis://127.0.0.1:1/0 not checked" in out.output
    assert "nothing deployed yet: everything is new" in out.output
    assert "+ new view (13 features)" in out.output


def test_fstore_plan_exits_non_zero_on_a_breaking_change(retail, pg_instance, store_resource, r, monkeypatch):
    assert run(retail, pg_instance, store_resource, chain(retail, ["item_popularity"]), partition=BEFORE).success
    monkeypatch.setenv("FS_LAKE_DIR", store_resource.lake_dir)
    monkeypatch.setenv("FS_REDIS_URL", store_resource.redis_url)
    clean = CliRunner().invoke(app, ["plan"])
    assert clean.exit_code == 0, clean.output
    assert "item_popularity  (Delta v0, partitions 2011-02-20..2011-02-20; online fs v1 (2011-02-20))" in clean.output
    in_place = dataclasses.replace(
        with_views(retail, fractional_units(retail.views["item_popularity"])), services={}, training_sets={}
    )
    monkeypatch.setattr("feature_pipelines.catalog.load_catalog", lambda **_: in_place)
    broken = CliRunner().invoke(app, ["plan"])
    assert broken.exit_code == 1
    assert "! dtype changed: units_sold_7d Int64 -> Float64" in broken.output
    assert "breaking changes in item_popularity" in broken.output


def test_the_factory_builds_both_versions_of_a_view(catalog):
    v2 = dataclasses.replace(fractional_units(catalog.views["item_popularity"]), version=2)
    defs = build_asset_defs(with_views(catalog, v2))
    keys = {k.to_user_string() for a in defs.assets for k in a.keys}
    assert {"features/item_popularity", "features/item_popularity__v2", "online/item_popularity__v2"} <= keys


def test_delta_writes_merge_added_columns_and_refuse_changed_or_dropped_ones(tmp_path):
    uri = str(tmp_path / "t")

    def frame(day: str, **cols) -> pl.DataFrame:
        return pl.DataFrame({"id": [1, 2], **cols, "p": [day, day]})

    u = pl.Series([1, 2], dtype=pl.UInt32)
    delta.overwrite_partitions(uri, frame("a", x=[1, 2], u=u), "p", "a", "a")
    # Same schema as Delta stores it (UInt32 reads back as Int32): not a change.
    delta.overwrite_partitions(uri, frame("a", x=[3, 4], u=u), "p", "a", "a")
    added = delta.overwrite_partitions(uri, frame("b", x=[5, 6], u=u, y=[0.5, 1.5]), "p", "b", "b")
    table = pl.read_delta(uri).sort("p", "id")
    assert table["y"].to_list() == [None, None, 0.5, 1.5]  # older partitions read null
    assert [b["y"].to_list() for b in delta.iter_partition(uri, "p", "a", ["id", "y"])] == [[None, None]]
    for bad, what in (
        (frame("b", x=[1.5, 2.5], u=u, y=[0.5, 1.5]), "x: Int64 -> Float64"),
        (frame("b", x=[1, 2], u=[1, 2], y=[0.5, 1.5]), "u: Int32 -> Int64"),
        (frame("b", x=[1, 2], y=[0.5, 1.5]), "u (Int32) removed"),
    ):
        with pytest.raises(delta.SchemaChangeError, match=what.replace("(", r"\(").replace(")", r"\)")):
            delta.overwrite_partitions(uri, bad, "p", "b", "b")
    assert delta.table_version(uri) == added.version  # nothing written
    assert pl.read_delta(uri).schema["x"] == pl.Int64
