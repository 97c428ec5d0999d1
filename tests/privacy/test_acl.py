"""Sensitivity decides the namespace, and generated Redis ACL users read exactly their services' views: on a
redis-server of our own (ACLs are server-wide), through the Python client and a Node.js reader."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
import redis
from typer.testing import CliRunner

from feature_pipelines import catalog_listing
from feature_pipelines.catalog import validate
from feature_pipelines.cli import app
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.errors import OnlineStoreError
from feature_pipelines.online.layout import OnlineLayout, online_schema
from feature_pipelines.online.local_server import RedisServer
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.acl import apply, password_variable, users
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.settings import Settings
from feature_pipelines.spec import FeatureService
from tests.conftest import push, push_from_delta
from tests.online.test_key_spec import NODE_DIR

SECRETS = {
    "team:ranking": "ranking-secret-1",
    "team:merch": "merch-secret-1",
    "team:personalization": "personalization-secret-1",
}

item_stats = FeatureService(
    name="item_stats",
    features=("item_popularity:*",),
    owner="team:merchandising",
    description="Item dashboards: how items sell.",
    consumers=("team:merch",),
)


def two_services(catalog):
    return dataclasses.replace(catalog, services={**catalog.services, "item_stats": item_stats})


@pytest.fixture(scope="module")
def server():
    s = RedisServer()
    yield s
    s.stop()


@pytest.fixture
def admin(server):
    r = connect(server.url)
    r.flushall()
    for name in r.execute_command("ACL", "USERS"):
        if name.decode() != "default":
            r.execute_command("ACL", "DELUSER", name)
    yield r
    r.close()


@pytest.fixture
def secrets(monkeypatch):
    for consumer, secret in SECRETS.items():
        monkeypatch.setenv(password_variable(consumer), secret)


def as_user(server, consumer: str) -> str:
    name = "fs-" + consumer.replace(":", "-")
    return f"redis://{name}:{SECRETS[consumer]}@127.0.0.1:{server.port}/0"


def serve(admin, catalog, tmp_path) -> OnlineStore:
    """One customer in user_context (fss) and user_purchase_behavior (fs), one item in item_popularity (fs)."""
    store = OnlineStore(admin, OnlineLayout.from_catalog(catalog))
    context = pl.DataFrame({"customer_id": [12352], "country": ["Norway"], "locale": ["nb_NO"], "currency": ["NOK"]})
    push_from_delta(store, "user_context", context, partition="2011-12-09", uri=str(tmp_path / "user_context"))
    for view, key, value in (
        ("item_popularity", "stock_code", "85123A"),
        ("user_purchase_behavior", "customer_id", 12352),
    ):
        schema = store.layout[view]
        dtypes = dict(zip(schema.features, schema.dtypes, strict=True))
        row = {key: [value], **{f: [1.5 if dtypes[f] == "Float64" else 1] for f in schema.features}}
        push(store, view, [pl.DataFrame(row).select(key, *schema.features)], partition="2011-12-09")
    return store


def test_a_view_lives_in_the_namespace_of_its_most_sensitive_feature(catalog):
    view = catalog.views["user_purchase_behavior"]
    assert view.sensitivity == "internal" and online_schema(view, catalog).namespace == "fs"
    first = view.features[0]
    leaked = dataclasses.replace(
        view, features=(dataclasses.replace(first, sensitivity="restricted"), *view.features[1:])
    )
    assert leaked.namespace_sensitivity == "restricted"
    moved = dataclasses.replace(catalog, views={**catalog.views, view.deployed_name: leaked})
    assert online_schema(leaked, moved).namespace == "fss"
    row = next(r for r in catalog_listing.rows(moved) if r["view"] == "user_purchase_behavior")
    assert row["namespace"] == "fss"
    # A feature less sensitive than its view changes nothing: the view's own sensitivity still holds.
    context = catalog.views["user_context"]
    relaxed = dataclasses.replace(context, features=(dataclasses.replace(context.features[0], sensitivity="public"),))
    assert relaxed.namespace_sensitivity == "confidential"
    # And the ACL of a consumer follows it: its keys move to fss with the view.
    ranking = {u.name: u for u in users(moved)}["fs-team-ranking"]
    assert "fss:user_purchase_behavior:*" in ranking.keys and "fs:user_purchase_behavior:*" not in ranking.keys


def test_generated_users_are_least_privilege(catalog):
    by_name = {u.name: u for u in users(two_services(catalog))}
    ranking, merch = by_name["fs-team-ranking"], by_name["fs-team-merch"]
    assert ranking.views == ("item_popularity", "user_context", "user_purchase_behavior")
    assert set(ranking.keys) == {
        "fs:{item_popularity}:current",
        "fs:{item_popularity}:versions",
        "fs:item_popularity:*",
        "fss:{user_context}:current",
        "fss:{user_context}:versions",
        "fss:user_context:*",
        "fs:{user_purchase_behavior}:current",
        "fs:{user_purchase_behavior}:versions",
        "fs:user_purchase_behavior:*",
        "fsp:deny:{customer}",
    }
    assert merch.keys == ("fs:{item_popularity}:current", "fs:{item_popularity}:versions", "fs:item_popularity:*")
    assert merch.commands == ("get", "mget", "hget", "hmget", "exists")  # no FCALL_RO: no person view
    rules = merch.rules()
    assert rules[:5] == ["reset", "on", "#<password>", "resetchannels", "-@all"]
    assert all(r.startswith("%R~") for r in rules if "~" in r)  # every key read-only
    # A consumer of a person-keyed view reads it by alias: it also gets FCALL_RO.
    person_view = dataclasses.replace(catalog.views["item_popularity"], name="person_things", entity="person")
    cat = dataclasses.replace(
        catalog,
        views={**catalog.views, "person_things": person_view},
        services={"p": dataclasses.replace(item_stats, name="p", features=("person_things:*",))},
    )
    assert users(cat)[0].commands[-1] == "fcall_ro"


def test_the_catalog_checks_consumers(catalog):
    bad = dataclasses.replace(item_stats, consumers=("Team Merch",))
    problems = validate(dataclasses.replace(catalog, services={**catalog.services, "item_stats": bad}))
    assert any("consumer 'Team Merch' must be 'kind:name'" in p and "item_stats" in p for p in problems)
    string = dataclasses.replace(item_stats, consumers="team:merch")
    problems = validate(dataclasses.replace(catalog, services={**catalog.services, "item_stats": string}))
    assert any("consumers must be a tuple" in p for p in problems)


def test_consumers_read_their_services_and_nothing_else(server, admin, catalog, secrets, tmp_path):
    cat = two_services(catalog)
    serve(admin, cat, tmp_path)
    settings = Settings(lake_dir=tmp_path / "lake", redis_url=server.url)
    done = {a.user: a.change for a in apply(admin, cat, settings, by="test")}
    assert done == {"fs-team-merch": "created", "fs-team-ranking": "created", "fs-team-personalization": "created"}

    ranking = OnlineClient(as_user(server, "team:ranking"), cat)
    rows = ranking.get_service("ranking_model_v1", {"customer_id": [12352], "stock_code": ["85123A"]})
    assert rows[0]["country"] == "Norway" and rows[0]["units_sold_7d"] == 1

    merch = OnlineClient(as_user(server, "team:merch"), cat)
    assert merch.get_view("item_popularity", ["85123A"])[0]["units_sold_30d"] == 1
    with pytest.raises(OnlineStoreError, match="(?i)noperm|permission"):
        merch.get_view("user_purchase_behavior", [12352])  # another service's view, same namespace
    with pytest.raises(OnlineStoreError, match="(?i)noperm|permission"):
        merch.get_view("user_context", [12352])  # fss

    raw = redis.Redis.from_url(as_user(server, "team:merch"))
    for key in ("fss:user_context:1:{12352}", "fss:{user_context}:current", "fs:{user_purchase_behavior}:current"):
        with pytest.raises(redis.exceptions.NoPermissionError):
            raw.get(key)
    raw_ranking = redis.Redis.from_url(as_user(server, "team:ranking"))
    assert raw_ranking.get("fss:{user_context}:current") is not None
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw_ranking.get("fss:{other_view}:current")  # not the whole fss namespace: only its views
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw_ranking.get("fs:{user_purchase_behavior}:history")  # writers' control keys
    for client in (raw, raw_ranking):  # no writes, no admin, no function calls, no other entity's deny list
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("fs:item_popularity:1:{85123A}", b"x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hset("fsp:deny:{customer}", "12352", "[]")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("FLUSHALL")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command("FCALL_RO", "fs_get_by_alias", 0, "anonymous_id", "a")
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw_ranking.hget("fsp:deny:{person}", "p_1")
    assert admin.get("fs:item_popularity:1:{85123A}") != b"x"

    # Applying again changes nothing; a consumer no service declares any more loses its user.
    assert {a.change for a in apply(admin, cat, settings, by="test")} == {"unchanged"}
    again = {a.user: a for a in apply(admin, catalog, settings, by="test", reason="item_stats retired")}
    assert again["fs-team-merch"].change == "removed" and again["fs-team-ranking"].change == "unchanged"
    assert again["fs-team-personalization"].change == "unchanged"
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(as_user(server, "team:merch")).get("fs:{item_popularity}:current")
    log = AuditLog(settings.privacy_table("audit")).read(action="acl_apply")
    assert log.height == 3 and json.loads(log["details"][2]) == {
        "fs-team-merch": {"added": [], "change": "removed", "removed": []}
    }
    assert not any(s in text for s in SECRETS.values() for text in log["details"].to_list())


def test_fstore_acl_applies_and_never_prints_passwords(server, admin, catalog, secrets, tmp_path, monkeypatch):
    monkeypatch.setenv("FS_LAKE_DIR", str(tmp_path / "lake"))
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    shown = runner.invoke(app, ["acl"])
    assert (
        shown.exit_code == 0
        and "%R~fss:user_context:*" in shown.output
        and "FS_ACL_PASSWORD_TEAM_RANKING" in shown.output
    )
    setuser = {t.split()[0]: t.split("\nfs-")[0] for t in shown.output.split("ACL SETUSER ")[1:]}  # user: its rules
    personalization = setuser["fs-team-personalization"]  # reads person profiles by alias: FCALL_RO
    assert "+fcall_ro" in personalization and "%R~fs:person_profile:*" in personalization
    assert "fss:" not in personalization and "user_purchase_behavior" not in personalization
    assert "+fcall_ro" not in setuser["fs-team-ranking"]
    applied = runner.invoke(app, ["acl", "--apply", "--url", server.url])
    assert applied.exit_code == 0, applied.output
    assert "fs-team-ranking: created" in applied.output and "%R~fs:item_popularity:*" in applied.output
    monkeypatch.setenv("FS_ACL_PASSWORD_TEAM_RANKING", "rotated-secret-2")
    rotated = runner.invoke(app, ["acl", "--apply", "--url", server.url])
    assert "fs-team-ranking: changed" in rotated.output and "password" in rotated.output
    for out in (shown.output, applied.output, rotated.output):
        assert "ranking-secret-1" not in out and "rotated-secret-2" not in out
    monkeypatch.delenv("FS_ACL_PASSWORD_TEAM_RANKING")
    missing = runner.invoke(app, ["acl", "--apply", "--url", server.url])
    assert missing.exit_code == 2 and "set FS_ACL_PASSWORD_TEAM_RANKING" in missing.output


def test_the_personalization_consumer_reads_its_service_by_alias_and_nothing_else(
    server, admin, catalog, secrets, tmp_path
):
    from feature_pipelines.identity.graph import person_id
    from tests.profile_rows import view_rows

    store = serve(admin, catalog, tmp_path)
    person = person_id("customer_id", "12352")
    ids = pl.DataFrame(
        [("anonymous_id", "a-1", person), ("customer_id", "12352", person)],
        schema=["identifier_type", "identifier", "person_id"],
        orient="row",
    )
    for view in ("person_profile", "person_location"):
        written = store.write(
            view,
            [view_rows(catalog.views[view], "person_id", {person: 3})],
            partition="2011-12-09",
            delta_table="/nowhere",
            delta_version=None,
            run_id="test",
            definition_hash="h",
            aliases=[ids],
            alias_source={"table": "/nowhere", "delta_version": 0},
        )
        assert store.promote(written).promoted
    apply(admin, catalog, Settings(lake_dir=tmp_path / "lake", redis_url=server.url), by="test")

    client = OnlineClient(as_user(server, "team:personalization"), catalog)
    got = client.get_by_alias("personalization_profile_v1", "anonymous_id", "a-1")
    assert got.persons == {"person_profile": person} and got.features["events_30d"] == 3
    assert got.features["profile_vector"] == [3 / 64] * 32
    with pytest.raises(OnlineStoreError, match="(?i)noperm|permission"):
        client.get_by_alias("person_location", "customer_id", 12352)  # sensitive: not its service's
    with pytest.raises(OnlineStoreError, match="(?i)noperm|permission"):
        client.get_view("user_purchase_behavior", [12352])  # ranking's view
    raw = redis.Redis.from_url(as_user(server, "team:personalization"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw.set(store.keys("person_profile").alias_key(1, "anonymous_id", "a-1"), "p_0000000000000000")
    with pytest.raises(redis.exceptions.NoPermissionError):
        raw.execute_command("FCALL", "fs_get_by_alias", 0, "anonymous_id", "a-1")  # only the read-only form


def test_a_node_reader_under_the_acl_user(server, admin, catalog, secrets, tmp_path):
    node_reader = ensure_node_reader()
    serve(admin, catalog, tmp_path)
    apply(admin, catalog, Settings(lake_dir=tmp_path / "lake", redis_url=server.url), by="test")
    url = as_user(server, "team:ranking")
    out = subprocess.run(
        ["node", str(node_reader), url, "fss", "user_context", "12352"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"country": "Norway", "locale": "nb_NO", "currency": "NOK"}]
    denied = subprocess.run(
        ["node", str(node_reader), url, "fss", "other_view", "12352"], capture_output=True, text=True, timeout=60
    )
    assert denied.returncode != 0 and "NOPERM" in denied.stderr


def ensure_node_reader() -> Path:
    import shutil

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are required (apt-get install nodejs npm); .ci/run installs them")
    if not (NODE_DIR / "node_modules" / "redis").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True)
    return NODE_DIR / "read_features.mjs"
