"""The identity graph as Dagster assets on real Delta and a real instance: raw events -> edges, persons,
alias map; idempotent per partition; the guardrail check lists violations; the accuracy check blocks (and
writes nothing) when the stitching disagrees with the ground truth."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date

import dagster as dg
import polars as pl
import pytest

from feature_pipelines.identity.stitch import IDENTITY_SOURCE, IdentityStore
from feature_pipelines.offline import delta
from feature_pipelines.orchestration.asset_keys import identity_key, raw_key
from feature_pipelines.orchestration.factory import build_asset_defs
from feature_pipelines.orchestration.identity_assets import ACCURACY_CHECK, GUARDRAIL_CHECK
from feature_pipelines.synthetic import events as synthetic
from tests.conftest import run

FIRST, LAST = "2011-03-01", "2011-03-08"
IDENTITY_KEYS = [identity_key(n) for n in ("edges", "persons", "alias_map")]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generated")
    synthetic.write(folder, customers=3000, seed=7)
    return folder


@pytest.fixture
def world(tmp_path, generated, catalog, pg_instance, store_resource):
    """Synthetic events of 3000 customers, the identity source cut to 8 days, ingested into the raw table."""
    folder = tmp_path / "behaviour"
    folder.mkdir()
    for path in [*generated.glob("events-2011-03-0*.parquet"), generated / synthetic.TRUTH_FILE]:
        shutil.copy(path, folder / path.name)
    source = dataclasses.replace(
        catalog.sources[IDENTITY_SOURCE],
        location=str(folder / "events-*.parquet"),
        start=date.fromisoformat(FIRST),
        end=date.fromisoformat(LAST),
    )
    small = dataclasses.replace(catalog, sources={source.name: source}, views={}, services={}, training_sets={})
    ingested = run(small, pg_instance, store_resource, [raw_key(source)], first=FIRST, last=LAST)
    assert ingested.success
    return small, folder


def versions(store) -> dict[str, int | None]:
    identity = IdentityStore(store.settings.lake_dir)
    return {t: delta.table_version(identity.uri(t)) for t in ("edges", "persons", "alias_map", "days")}


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_days_fold_idempotently_with_checks(world, pg_instance, store_resource):
    small, _ = world
    defs = build_asset_defs(small)
    assert set(IDENTITY_KEYS) <= {k for a in defs.assets for k in a.keys}
    first = run(small, pg_instance, store_resource, IDENTITY_KEYS, first=FIRST, last="2011-03-06")
    assert first.success
    found = checks(first)
    assert found[ACCURACY_CHECK].passed, found[ACCURACY_CHECK].metadata
    assert found[ACCURACY_CHECK].metadata["precision"].value >= 0.99
    guard = found[GUARDRAIL_CHECK].metadata
    assert guard["violations"].value > 0 and "blocked_value" in guard["examples"].value  # placeholders refused
    identity = IdentityStore(store_resource.settings.lake_dir)
    assert identity.read("days")["day"].to_list() == [f"2011-03-0{d}" for d in range(1, 7)]
    persons_before = identity.read("persons")

    # The next day folds incrementally; re-running it changes no table (not even a new Delta version).
    day7 = run(small, pg_instance, store_resource, IDENTITY_KEYS, partition="2011-03-07")
    assert day7.success
    mat = day7.asset_materializations_for_node("identity_graph")[0].metadata
    assert mat["mode"].value == "incremental"
    after7 = versions(store_resource)
    tables7 = {t: identity.read(t) for t in ("edges", "persons", "alias_map")}
    again = run(small, pg_instance, store_resource, IDENTITY_KEYS, partition="2011-03-07")
    assert again.success
    assert again.asset_materializations_for_node("identity_graph")[0].metadata["mode"].value == "noop"
    assert versions(store_resource) == after7
    assert all(identity.read(t).equals(f) for t, f in tables7.items())
    assert identity.read("persons").height > persons_before.height

    # Incremental days give the persons a full recompute of the same days gives.
    full_store = IdentityStore(store_resource.settings.lake_dir / "full")
    raw = pl.scan_delta(store_resource.settings.raw_table(IDENTITY_SOURCE)).filter(pl.col("event_date") <= "2011-03-07")
    full_store.full(raw)
    assert full_store.read("persons").equals(identity.read("persons"))


def test_accuracy_check_blocks_and_writes_nothing(world, pg_instance, store_resource):
    small, folder = world
    # Truth that says every customer id is the same person: the stitching's recall collapses.
    truth = pl.read_parquet(folder / synthetic.TRUTH_FILE)
    truth.with_columns(
        pl.when(pl.col("identifier_type") == "customer_id").then(pl.lit("everyone")).otherwise("person").alias("person")
    ).write_parquet(folder / synthetic.TRUTH_FILE)
    result = run(small, pg_instance, store_resource, IDENTITY_KEYS, first=FIRST, last=LAST)
    assert not result.success
    failed = checks(result)[ACCURACY_CHECK]
    assert not failed.passed and failed.metadata["recall"].value < 0.95
    assert not result.asset_materializations_for_node("identity_graph")
    assert all(v is None for v in versions(store_resource).values())  # nothing committed
