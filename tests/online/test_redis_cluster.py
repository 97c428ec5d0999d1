"""A push and a read through a real local 3-master Redis Cluster."""

from __future__ import annotations

import shutil
import subprocess
import time

import polars as pl
import pytest
import redis
from redis.cluster import RedisCluster

from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.local_server import RedisServer
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.publish import version_ids
from tests.conftest import push


@pytest.fixture(scope="module")
def cluster_url():
    if shutil.which("redis-cli") is None:
        pytest.fail("redis-cli is required for the cluster test (Debian package redis-tools)")
    nodes = [RedisServer("--cluster-enabled", "yes", "--cluster-node-timeout", "2000") for _ in range(3)]
    try:
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{n.port}" for n in nodes],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            states = [redis.Redis(port=n.port).cluster("info")["cluster_state"] for n in nodes]
            if all(s == "ok" for s in states):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the local cluster did not become ready: {states}")
        yield f"redis://127.0.0.1:{nodes[0].port}/0?cluster=1"
    finally:
        for node in nodes:
            node.stop()


SCHEMA = OnlineSchema(
    view="toy",
    namespace="fs",
    join_key="user_id",
    features=["score", "name"],
    dtypes=["Int64", "String"],
    ttl_seconds=600,
)


def test_push_and_read_through_a_cluster(cluster_url, tmp_path):
    from feature_pipelines.offline.delta import overwrite_partitions

    client = connect(cluster_url)
    assert isinstance(client, RedisCluster)
    store = OnlineStore(client, OnlineLayout([SCHEMA]), versions_kept=1)
    uri = str(tmp_path / "toy")
    versions = []
    for day, score in (("2011-01-01", 1), ("2011-01-02", 2)):
        frame = pl.DataFrame(
            {
                "user_id": range(3000),
                "score": [score] * 3000,
                "name": [f"u{score}"] * 3000,
                "partition_date": [day] * 3000,
            }
        )
        commit = overwrite_partitions(uri, frame, "partition_date", day, day)
        result = push(
            store, "toy", [frame.drop("partition_date")], partition=day, delta_table=uri, delta_version=commit.version
        )
        store.prune("toy", version_ids)
        assert result.promoted and result.rows == 3000
        versions.append(result.version)
    # The keys are spread over the three masters (hash tags by entity id).
    per_node = [n.redis_connection.dbsize() for n in client.get_primaries()]
    assert len(per_node) == 3 and all(count > 500 for count in per_node), per_node
    # One version kept (the first was pruned without SCAN) + control keys: current, versions, seq, history.
    assert sum(per_node) == 3000 + 4
    rows = OnlineClient(cluster_url).get_view("toy", [0, 1500, 2999, 5000])
    assert [r.to_dict() for r in rows] == [{"score": 2, "name": "u2"}] * 3 + [{"score": None, "name": None}]
    # Never back in time, on a cluster too.
    stale = push(store, "toy", [pl.DataFrame({"user_id": [0], "score": [0], "name": ["old"]})], partition="2010-12-31")
    assert not stale.promoted and store.serving_version("toy") == versions[-1]


def test_read_by_alias_through_a_cluster(cluster_url):
    """In a cluster the alias and the person's key live on different slots: the client reads them one after
    the other (the documented fallback), and gets the same features as by the person id."""
    schema = OnlineSchema("person_profile", "fs", "person_id", ["score"], ["Int64"], 600, "String")
    client = connect(cluster_url)
    store = OnlineStore(client, OnlineLayout([schema]))
    persons = [f"P{i}" for i in range(300)]
    frame = pl.DataFrame({"person_id": persons, "score": range(300)})
    aliases = pl.DataFrame(
        {"identifier_type": ["anonymous_id"] * 300, "identifier": [f"a-{i}" for i in range(300)], "person_id": persons}
    )
    written = store.write(
        "person_profile",
        [frame],
        partition="2011-01-01",
        delta_table="/nowhere",
        delta_version=None,
        run_id="t",
        definition_hash="h",
        aliases=[aliases],
        alias_source={"table": "/nowhere", "delta_version": 0},
    )
    assert store.promote(written).promoted
    reader = OnlineClient(cluster_url)
    for i in (0, 150, 299):
        got = reader.get_by_alias("person_profile", "anonymous_id", f"a-{i}")
        assert got.person_id == f"P{i}" and got.features == {"score": i}
        assert got.features == reader.get_view("person_profile", [f"P{i}"])[0]
    assert reader.get_by_alias("person_profile", "anonymous_id", "nobody").person_id is None
    # The function is loaded on every primary, but one call cannot reach keys of other slots.
    libraries = [n.redis_connection.function_list(library="fstore") for n in client.get_primaries()]
    assert all(len(lib) == 1 for lib in libraries)
