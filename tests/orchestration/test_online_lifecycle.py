"""The online push under Dagster: a pinned view holds pushes back, a failed prune is a warning, not a retry."""

from __future__ import annotations

import logging

import redis

from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.publish import version_ids
from tests.conftest import DAY, chain, run


def online_metadata(result, view: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["online", view]]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def warnings_of(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.level == logging.WARNING and e.user_message]


def test_pinned_push_and_failed_prune_are_warnings_not_failures(retail, pg_instance, store_resource, monkeypatch):
    keys = chain(retail, ["user_context"])
    assert run(retail, pg_instance, store_resource, keys, partition="2011-02-28").success
    assert run(retail, pg_instance, store_resource, keys, partition=DAY).success
    store = store_resource.online_store(OnlineLayout.from_catalog(retail))
    first, second = sorted(store.versions("user_context"))
    store.rollback("user_context", ids_of=version_ids, by="oncall", reason="test")
    assert store.serving_version("user_context") == first

    calls = {"prune": 0}

    def broken_prune(self, view, ids_of, aliases_of=None):
        calls["prune"] += 1
        raise redis.ConnectionError("Connection reset by peer (injected after the promotion)")

    monkeypatch.setattr(OnlineStore, "prune", broken_prune)
    result = run(retail, pg_instance, store_resource, keys, partition=DAY)
    assert result.success  # held back by the pin, and the prune failed: neither fails the push
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert calls["prune"] == 1  # no retry pushed again
    md = online_metadata(result, "user_context")
    assert md["outcome"] == "pinned" and md["pinned"] is True and md["serving_version"] == first
    assert md["removed_versions"] == "prune failed" and "Connection reset by peer" in md["warnings"]
    logged = warnings_of(pg_instance, result.run_id)
    assert any("pinned to version" in w and "oncall" in w for w in logged), logged
    assert any("pruning old versions of 'user_context' failed" in w for w in logged), logged
    assert store.serving_version("user_context") == first and second in store.versions("user_context")
