"""`fstore lineage` walks from an online key back to the source files and the definition."""

from __future__ import annotations

from typer.testing import CliRunner

from feature_pipelines import lineage
from feature_pipelines.cli import app
from feature_pipelines.offline.ingest import file_sha256
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from tests.conftest import DAY, chain, run


def test_lineage_chain_from_a_redis_key(retail, pg_instance, store_resource, monkeypatch):
    result = run(retail, pg_instance, store_resource, chain(retail, ["user_purchase_behavior"]), partition=DAY)
    assert result.success
    store = OnlineStore(connect(store_resource.redis_url), OnlineLayout.from_catalog(retail))
    meta = store.serving_meta("user_purchase_behavior")
    key = f"fs:user_purchase_behavior:{meta.version}:{{12431}}"
    links = {link.what: link.facts for link in lineage.chain(retail, store, key, pg_instance)}
    assert links["online (Redis)"]["version"] == meta.version and links["online (Redis)"]["partition"] == DAY
    assert links["online (Redis)"]["key"] == key
    delta = links["feature table (Delta)"]
    assert delta["table"] == store_resource.settings.feature_table("user_purchase_behavior")
    assert delta["version"] == meta.delta_version and delta["materialize_run_id"] == result.run_id
    assert links["Dagster runs"]["online push"] == f"{result.run_id} (SUCCESS)"
    source = links["source table (Delta)"]
    assert source["table"] == store_resource.settings.raw_table("online_retail") and source["version"] == 0
    ((path, digest),) = source["source_files"].items()
    assert path.endswith("retail.parquet") and digest == file_sha256(path)
    definition = links["definition"]
    assert definition["defined_at"].endswith("feature_defs/user_features.py:" + definition["defined_at"].split(":")[-1])
    assert definition["definition_hash_now"] == definition["definition_hash_then"]

    monkeypatch.setenv("REDIS_URL", store_resource.redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    out = CliRunner().invoke(app, ["lineage", "user_purchase_behavior:spend_7d"])
    assert out.exit_code == 0, out.output
    for text in (
        "online (Redis)",
        f"partition: {DAY}",
        "feature table (Delta)",
        "source table (Delta)",
        "feature_defined_at:",
        "source_columns:",
    ):
        assert text in out.output
    missing = CliRunner().invoke(app, ["lineage", "no_such_view:x"])
    assert missing.exit_code == 1 and "unknown feature view 'no_such_view'" in missing.output
