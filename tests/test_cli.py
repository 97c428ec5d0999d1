"""`fstore` as a user types it: get, versions, rollback, validate; and the rollback Dagster job."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from feature_pipelines.cli import app
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.orchestration.jobs import build_rollback_job
from feature_pipelines.orchestration.resources import FeatureStoreResource
from tests.conftest import ROOT, push, push_from_delta

runner = CliRunner()


@pytest.fixture
def served(redis_url, catalog, monkeypatch, tmp_path):
    """Two versions of user_context (from a Delta table) and one of item_popularity, in the test Redis."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("FS_REDIS_URL", raising=False)
    store = OnlineStore(connect(redis_url), OnlineLayout.from_catalog(catalog))
    items = store.layout["item_popularity"]
    for day, country in (("2011-12-08", "France"), ("2011-12-09", "Norway")):
        frame = pl.DataFrame({"customer_id": [12352], "country": [country], "locale": ["x"], "currency": ["NOK"]})
        push_from_delta(store, "user_context", frame, partition=day, uri=str(tmp_path / "user_context"))
    item = pl.DataFrame(
        {
            "stock_code": ["85123A"],
            **{f: [1] for f in items.features if "revenue" not in f and "rate" not in f},
            "revenue_7d": [2.5],
            "revenue_30d": [9.0],
            "return_rate_30d": [0.0],
        }
    )
    push(store, "item_popularity", [item.select("stock_code", *items.features)], partition="2011-12-09")
    return store


def test_get_a_view_as_json(served):
    result = runner.invoke(app, ["get", "user_context", "12352", "404", "--view"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"country": "Norway", "locale": "x", "currency": "NOK"},
        {"country": None, "locale": None, "currency": None},
    ]


def test_a_service_whose_view_was_never_pushed_is_a_clear_error(served):
    result = runner.invoke(app, ["get", "ranking_model_v1", "customer_id=12352,stock_code=85123A"])
    assert result.exit_code == 1
    assert "view 'user_purchase_behavior' has no serving version in Redis at 127.0.0.1:" in result.output


def test_get_a_service_with_two_entities(served, catalog):
    behavior = served.layout["user_purchase_behavior"]
    frame = pl.DataFrame(
        {
            "customer_id": [12352],
            **{f: [0.5 if "spend" in f or "rate" in f or "avg" in f else 3] for f in behavior.features},
        }
    )
    push(served, "user_purchase_behavior", [frame], partition="2011-12-09")
    result = runner.invoke(
        app, ["get", "ranking_model_v1", "customer_id=12352,stock_code=85123A", "customer_id=1,stock_code=85123A"]
    )
    assert result.exit_code == 0, result.output
    first, second = json.loads(result.stdout)
    assert first["country"] == "Norway" and first["currency"] == "NOK" and first["revenue_30d"] == 9.0
    assert first["spend_7d"] == 0.5 and first["invoices_7d"] == 3
    assert second["spend_7d"] is None and second["country"] is None and second["revenue_30d"] == 9.0


def test_get_a_service_needs_every_key(served):
    result = runner.invoke(app, ["get", "ranking_model_v1", "12352"])
    assert result.exit_code == 1 and "needs ids for ['customer_id', 'stock_code']" in result.output


def test_versions_and_rollback(served):
    listing = runner.invoke(app, ["versions", "user_context"])
    assert listing.exit_code == 0 and "2011-12-08" in listing.output and "2011-12-09" in listing.output
    result = runner.invoke(app, ["rollback", "user_context", "--reason", "bad country map"])
    assert result.exit_code == 0, result.output
    assert "serving version 1 (was 2); 1 keys refreshed; pinned to version 1" in result.output
    assert json.loads(runner.invoke(app, ["get", "user_context", "12352", "--view"]).stdout)[0]["country"] == "France"
    again = runner.invoke(app, ["rollback", "user_context"])
    assert again.exit_code == 1 and "no earlier promoted version" in again.output


def test_unreachable_redis_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://reader:s3cret@127.0.0.1:1/0")
    result = runner.invoke(app, ["get", "user_context", "1", "--view"])
    assert result.exit_code == 1 and "cannot reach Redis at 127.0.0.1:1" in result.output
    assert "s3cret" not in result.output


def test_validate():
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0 and "5 feature views" in result.output


def test_rollback_job(served, catalog, redis_url, pg_instance, tmp_path):
    job = build_rollback_job(catalog)
    result = job.execute_in_process(
        run_config={"ops": {"rollback_online_view": {"config": {"view": "user_context"}}}},
        instance=pg_instance,
        resources={"store": FeatureStoreResource(lake_dir=str(tmp_path), redis_url=redis_url)},
    )
    assert result.success
    assert served.serving_version("user_context") == 1


def test_a_service_read_is_one_round_trip(served, catalog, redis_url, r):
    """Three views, two entity kinds, 1,000 entity rows: one round trip once the versions are known: the
    MGET, and pipelined with it one HMGET of the customers' deny hash (consent is checked at serve)."""
    from feature_pipelines.online.client import OnlineClient

    behavior = served.layout["user_purchase_behavior"]
    frame = pl.DataFrame({"customer_id": range(1, 1001), **{f: [1] * 1000 for f in behavior.features}}).with_columns(
        [
            pl.col(f).cast(pl.Float64)
            for f in behavior.features
            if catalog.views["user_purchase_behavior"].feature(f).dtype == pl.Float64
        ]
    )
    push(served, "user_purchase_behavior", [frame], partition="2011-12-09")
    client = OnlineClient(redis_url, catalog)
    entities = {"customer_id": list(range(1, 1001)), "stock_code": ["85123A"] * 1000}
    client.get_service("ranking_model_v1", entities)  # learns the serving versions
    r.config_resetstat()
    rows = client.get_service("ranking_model_v1", entities)
    stats = r.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1
    others = {k: v["calls"] for k, v in stats.items() if k != "cmdstat_mget" and not k.startswith("cmdstat_config")}
    assert others == {"cmdstat_hmget": 1}, others  # nothing else was sent
    assert len(rows) == 1000 and rows[999]["invoices_7d"] == 1 and rows[999]["revenue_30d"] == 9.0


@pytest.mark.parametrize("raw", ["007", "1_000", "+5", " 5", "5.0", "abc", "--5"])
def test_ids_are_parsed_strictly_by_the_entity_dtype(served, raw):
    result = runner.invoke(app, ["get", "user_context", raw, "--view"])
    assert result.exit_code == 1, result.output
    assert f"id {raw!r} is not a valid customer_id (Int64)" in result.output


def test_negative_ids_need_no_double_dash(served, tmp_path):
    # "-5" reaches the key rules as an id (not an unknown option); customer ids are positive, so it is refused.
    result = runner.invoke(app, ["get", "user_context", "-5", "12352", "--view"])
    assert result.exit_code == 1, result.output
    assert "No such option" not in result.output and "rule key_min" in result.output
    ok = runner.invoke(app, ["get", "user_context", "12352", "--view"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)[0]["country"] == "Norway"
    # String keys are not parsed as numbers: they meet the item's rules (upper-cased, five digits).
    item = runner.invoke(app, ["get", "item_popularity", "085123A", "--view"])
    assert item.exit_code == 1 and "rule key_pattern" in item.output


def test_status_pin_unpin_promote_and_gc(served, tmp_path, r):
    uri = str(tmp_path / "user_context")
    assert runner.invoke(app, ["rollback", "user_context", "--reason", "bad map"]).exit_code == 0
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0, status.output
    line = next(ln for ln in status.output.splitlines() if ln.strip().startswith("user_context"))
    assert "pinned to version 1" in line and "bad map" in line and "2011-12-08" in line
    frame = pl.DataFrame({"customer_id": [12352], "country": ["Spain"], "locale": ["es"], "currency": ["EUR"]})
    held = push_from_delta(served, "user_context", frame, partition="2011-12-10", uri=uri)
    assert not held.promoted and "held back" in held.reason
    listing = runner.invoke(app, ["versions", "user_context"])
    assert listing.exit_code == 0, listing.output
    for text in ("rollback", "pin", "held", "never", "bad map"):
        assert text in listing.output, text

    refused = runner.invoke(app, ["promote", "user_context", str(held.version)])
    assert refused.exit_code == 1 and "pass unpin (--unpin)" in refused.output
    done = runner.invoke(app, ["promote", "user_context", str(held.version), "--unpin", "--reason", "fixed"])
    assert done.exit_code == 0 and f"serving version {held.version} (was 1)" in done.output
    assert json.loads(runner.invoke(app, ["get", "user_context", "12352", "--view"]).stdout)[0]["country"] == "Spain"
    assert "was not pinned" in runner.invoke(app, ["unpin", "user_context"]).output

    def broken():  # a push that dies after its first keys: dead, its keys orphaned
        yield frame.with_columns(pl.lit("Dead").alias("country"))
        raise RuntimeError("killed")

    from feature_pipelines.offline.delta import overwrite_partitions

    commit = overwrite_partitions(
        uri,
        frame.with_columns(pl.lit("2011-12-11").alias("partition_date")),
        "partition_date",
        "2011-12-11",
        "2011-12-11",
    )
    with pytest.raises(RuntimeError):
        push(served, "user_context", broken(), partition="2011-12-11", delta_table=uri, delta_version=commit.version)
    dead = max(served.versions("user_context"))
    status = runner.invoke(app, ["status", "user_context"]).output
    line = next(ln for ln in status.splitlines() if ln.strip().startswith("user_context"))
    assert line.split()[-2:] == [str(dead), "-"], status  # dead, nothing deleting
    gc = runner.invoke(app, ["gc", "user_context"])
    assert gc.exit_code == 0 and f"{dead} (1 keys)" in gc.output, gc.output
    assert r.exists(served.keys("user_context").data_key(dead, 12352)) == 0


# -- fstore ingest, and commands run before anything was materialized -------------------------------------------
@pytest.fixture
def empty_lake(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("FS_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("FS_REDIS_URL", raising=False)
    return tmp_path / "lake"


def test_ingest_a_file_without_editing_code(empty_lake, tmp_path):
    from feature_pipelines.offline.history import commit
    from tests.conftest import real_data

    good = tmp_path / "delivery.parquet"
    real_data("2011-01-04", "2011-01-05").write_parquet(good)
    result = runner.invoke(app, ["ingest", str(good), "--source", "online_retail"])
    assert result.exit_code == 0, result.output
    assert "1,842 rows for 2011-01-04..2011-01-05 from 1 file(s), Delta v0" in result.output
    raw = str(empty_lake / "raw" / "online_retail")
    assert commit(raw, 0).metadata["ingested_by"] == "fstore ingest"

    bad = tmp_path / "bad.parquet"
    real_data("2011-01-04", "2011-01-05").with_columns(pl.lit(-7).alias("CustomerID")).write_parquet(bad)
    refused = runner.invoke(app, ["ingest", str(bad), "--source", "online_retail"])
    assert refused.exit_code == 1
    assert "bad.parquet: column 'CustomerID', rule key_min: 1842 of 1842 rows" in refused.output

    small = tmp_path / "small.parquet"
    real_data("2011-01-04", "2011-01-04").head(5).write_parquet(small)
    shrink = runner.invoke(app, ["ingest", str(small), "--source", "online_retail"])
    assert shrink.exit_code == 1 and "2011-01-04: 508 -> 5 rows" in shrink.output and "--allow-shrink" in shrink.output
    forced = runner.invoke(app, ["ingest", str(small), "--source", "online_retail", "--allow-shrink"])
    assert forced.exit_code == 0 and "shrunk with --allow-shrink: 2011-01-04 508 -> 5 rows" in forced.output
    assert commit(raw, 1).metadata["allow_shrink"] == "true"


@pytest.mark.parametrize(
    "command",
    [
        ["lineage", "user_context"],
        ["lineage", "user_context:country"],
        ["versions", "user_context"],
        ["get", "user_context", "12346", "--view"],
        ["get", "ranking_model_v1", "customer_id=12346,stock_code=85123A"],
        ["rollback", "user_context"],
        ["training-set", "ranking_model_v1", str(ROOT / "feature_defs" / "data" / "repurchase_labels.parquet")],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_commands_before_the_first_run_say_what_to_run(empty_lake, command, tmp_path):
    result = runner.invoke(
        app, command + (["-o", str(tmp_path / "ts.parquet")] if command[0] == "training-set" else [])
    )
    assert result.exit_code == 1, result.output
    assert "run `fstore demo`" in result.output and "Traceback" not in result.output, result.output
    assert "Os {" not in result.output


def test_the_catalog_before_the_first_run_says_what_to_run(empty_lake):
    result = runner.invoke(app, ["catalog"])
    assert result.exit_code == 0 and "run `fstore demo`" in result.output
