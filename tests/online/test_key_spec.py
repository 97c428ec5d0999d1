"""The key spec is enough to read features from another language: Node.js decodes what Python decodes."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.store import OnlineStore
from tests.conftest import push

NODE_DIR = Path(__file__).parent / "node"
FRAME = pl.DataFrame(
    {
        "user_id": [1, 2, 3],
        "n_orders": [3, None, -70000],
        "spend": [12.5, 0.1, None],
        "vip": [True, False, None],
        "country": ["GB", None, "Côte d’Ivoire"],
        "last_seen": [datetime(2011, 12, 9, 12, 50, 0, 123456, tzinfo=UTC), None, datetime(1999, 1, 1, tzinfo=UTC)],
        "embedding": pl.Series([[0.5, -1.25, 3.0], None, []], dtype=pl.List(pl.Float32)),
        "tags": pl.Series([["gift", "wholesale"], [], None], dtype=pl.List(pl.String)),
    }
)


@pytest.fixture(scope="module")
def node_reader() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are required (apt-get install nodejs npm); .ci/run installs them")
    if not (NODE_DIR / "node_modules" / "redis").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True)
    return NODE_DIR / "read_features.mjs"


def _push(redis_url: str, namespace: str) -> None:
    schema = OnlineSchema(
        view="profile",
        namespace=namespace,
        join_key="user_id",
        features=FRAME.columns[1:],
        dtypes=[str(FRAME.schema[c]) for c in FRAME.columns[1:]],
        ttl_seconds=600,
    )
    push(OnlineStore(connect(redis_url), OnlineLayout([schema])), "profile", [FRAME], partition="2011-12-09")


def _python_rows(redis_url: str, ids: list[int]) -> list[dict]:
    rows = [row.to_dict() for row in OnlineClient(redis_url).get_view("profile", ids)]
    for row in rows:
        if row["last_seen"] is not None:
            row["last_seen"] = row["last_seen"].isoformat(timespec="microseconds").replace("+00:00", "Z")
    return rows


@pytest.mark.parametrize("namespace", ["fs", "fss"])
def test_node_reads_the_same_values_as_python(redis_url, node_reader, namespace):
    _push(redis_url, namespace)
    ids = [1, 2, 3, 404]
    out = subprocess.run(
        ["node", str(node_reader), redis_url, namespace, "profile", *map(str, ids)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    from_node = json.loads(out.stdout)
    from_python = _python_rows(redis_url, ids)
    assert from_node == from_python
    assert from_python[0] == {
        "n_orders": 3,
        "spend": 12.5,
        "vip": True,
        "country": "GB",
        "last_seen": "2011-12-09T12:50:00.123456Z",
        "embedding": [0.5, -1.25, 3.0],
        "tags": ["gift", "wholesale"],
    }
    assert from_python[3] == dict.fromkeys(FRAME.columns[1:])  # unknown id: explicit nulls


def test_node_reads_by_alias_in_one_function_call(redis_url, node_reader):
    """A person's features by anonymous id or device id, from Node.js, equal the Python client's."""
    schema = OnlineSchema(
        "person_profile", "fs", "person_id", ["events_7d", "vector"], ["Int64", "List(Float32)"], 600, "String"
    )
    store = OnlineStore(connect(redis_url), OnlineLayout([schema]))
    frame = pl.DataFrame(
        {"person_id": ["P1", "P2"], "events_7d": [4, None]},
    ).with_columns(pl.Series("vector", [[0.5, -2.0], None], dtype=pl.List(pl.Float32)))
    aliases = pl.DataFrame(
        {
            "identifier_type": ["anonymous_id", "device_id", "anonymous_id"],
            "identifier": ["a-1", "d-1", "a-2"],
            "person_id": ["P1", "P1", "P2"],
        }
    )
    written = store.write(
        "person_profile",
        [frame],
        partition="2011-12-09",
        delta_table="/nowhere",
        delta_version=None,
        run_id="t",
        definition_hash="h",
        aliases=[aliases],
        alias_source={"table": "/nowhere", "delta_version": 0},
    )
    assert store.promote(written).promoted
    python = OnlineClient(redis_url)
    reader = node_reader.parent / "read_by_alias.mjs"
    for kind, ident in [("anonymous_id", "a-1"), ("device_id", "d-1"), ("anonymous_id", "a-2"), ("device_id", "x")]:
        out = subprocess.run(
            ["node", str(reader), redis_url, "fs", "person_profile", kind, ident],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        from_node = json.loads(out.stdout)
        got = python.get_by_alias("person_profile", kind, ident)
        assert from_node == {"version": 1, "person_id": got.person_id, "features": got.features.to_dict()}
    assert from_node["person_id"] is None and from_node["features"] == {"events_7d": None, "vector": None}
    assert python.get_by_alias("person_profile", "device_id", "d-1").features == {
        "events_7d": 4,
        "vector": [0.5, -2.0],
    }
