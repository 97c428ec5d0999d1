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
