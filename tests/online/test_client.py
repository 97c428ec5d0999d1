"""The serving client: ids converted by the key dtype, a read-only ACL user, deadlines and a circuit breaker."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import polars as pl
import pytest
import redis

from feature_pipelines.online.breaker import CircuitBreaker
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.errors import EntityIdError, OnlineStoreError, RedisUnavailable
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema
from feature_pipelines.online.local_server import RedisServer
from feature_pipelines.online.store import OnlineStore
from tests.conftest import push

USERS = pl.DataFrame(
    {"customer_id": [12352, -5], "country": ["Norway", "Iceland"], "locale": ["no", "is"], "currency": ["NOK", "ISK"]}
)


@pytest.fixture
def pushed(redis_url, catalog):
    store = OnlineStore(connect(redis_url), OnlineLayout.from_catalog(catalog))
    push(store, "user_context", [USERS], partition="2011-12-09")
    items = store.layout["item_popularity"]
    item = pl.DataFrame({"stock_code": ["85123A"], **{f: [1] for f in items.features}}).with_columns(
        [pl.col(f).cast(pl.Float64) for f in ("revenue_7d", "revenue_30d", "return_rate_30d")]
    )
    push(store, "item_popularity", [item], partition="2011-12-09")
    return store


def test_the_key_dtype_is_recorded_with_every_version(pushed, r):
    meta = json.loads(r.hget(pushed.keys("user_context").versions, "1"))
    assert meta["schema"]["key_dtype"] == "Int64"
    assert pushed.serving_meta("item_popularity").schema.key_dtype == "String"


@pytest.mark.parametrize("cached", [False, True])
def test_ids_are_converted_by_the_key_dtype(pushed, redis_url, cached):
    client = OnlineClient(redis_url)  # no catalog: the key dtype comes from the version's metadata
    if cached:
        client.get_view("user_context", [1])  # the next reads take the fast path
    for same in (12352, 12352.0, np.int64(12352), np.float64(12352.0), "12352"):
        assert client.get_view("user_context", [same])[0]["country"] == "Norway", same
    assert client.get_view("user_context", [-5.0])[0]["country"] == "Iceland"
    for bad in (12352.5, True, np.True_, "abc", "007", " 5", "1_000", "+5", float("nan"), b"12352"):
        with pytest.raises(EntityIdError, match=r"view 'user_context': id .* is not a valid key: expected Int64"):
            client.get_view("user_context", [1, bad])
    assert client.get_view("item_popularity", ["85123A"])[0]["units_sold_7d"] == 1
    with pytest.raises(EntityIdError, match=r"view 'item_popularity': id 85123 \(int\) .* expected String"):
        client.get_view("item_popularity", [85123])


def test_a_service_converts_each_view_by_its_own_entity(pushed, redis_url, catalog):
    view = catalog.views["user_purchase_behavior"]
    behavior = pl.DataFrame({"customer_id": [12352], **{f.name: [1] for f in view.features}}).with_columns(
        [pl.col(f.name).cast(f.polars_dtype) for f in view.features]
    )
    push(pushed, "user_purchase_behavior", [behavior], partition="2011-12-09")
    client = OnlineClient(redis_url, catalog)
    rows = client.get_service("ranking_model_v1", {"customer_id": [12352.0, None], "stock_code": ["85123A", "85123A"]})
    assert rows[0]["country"] == "Norway" and rows[0]["units_sold_30d"] == 1
    assert rows[1]["country"] is None and rows[1]["units_sold_30d"] == 1  # no customer: its features are null
    with pytest.raises(EntityIdError, match="expected String"):
        client.get_service("ranking_model_v1", {"customer_id": [12352], "stock_code": [85123.0]})


def test_a_catalog_client_applies_the_entity_key_rules_of_ingest(pushed, redis_url, catalog):
    client = OnlineClient(redis_url, catalog)
    assert client.get_view("item_popularity", [" 85123a "])[0]["units_sold_7d"] == 1  # strip + upper, as ingest
    with pytest.raises(EntityIdError, match=r"view 'item_popularity': ids: column 'stock_code', rule key_pattern"):
        client.get_view("item_popularity", ["８５１２３A"])  # full-width digits: refused, not another key
    with pytest.raises(EntityIdError, match=r"column 'customer_id', rule key_min: 1 of 2 values"):
        client.get_view("user_context", [12352, -5])  # -5 was pushed here, but it is no customer id
    assert client.get_view("user_context", [12352.0])[0]["country"] == "Norway"  # converted, then ruled


def test_metadata_written_before_the_key_dtype_still_reads(pushed, redis_url, r):
    keys = pushed.keys("user_context")
    old = json.loads(r.hget(keys.versions, "1"))
    del old["schema"]["key_dtype"]
    r.hset(keys.versions, "1", json.dumps(old))
    client = OnlineClient(redis_url)
    assert client.get_view("user_context", [12352])[0]["country"] == "Norway"
    with pytest.raises(EntityIdError, match="expected an int or a str"):
        client.get_view("user_context", [12352.0])


SCHEMA = OnlineSchema("toy", "fs", "user_id", ["score"], ["Int64"], 600, "Int64")
SECRET = OnlineSchema("secret", "fss", "user_id", ["score"], ["Int64"], 600, "Int64")
TOY = pl.DataFrame({"user_id": [1, 2], "score": [10, 20]})


def _push_both(url: str) -> None:
    store = OnlineStore(connect(url), OnlineLayout([SCHEMA, SECRET]))
    push(store, "toy", [TOY], partition="2011-12-09")
    push(store, "secret", [TOY], partition="2011-12-09")


def test_a_read_only_acl_user_reads_and_can_do_nothing_else():
    server = RedisServer()
    try:
        admin = redis.Redis.from_url(server.url)
        read_only = ["resetchannels", "-@all", "+get", "+mget", "+hget", "+exists"]
        admin.execute_command("ACL", "SETUSER", "ranking", "on", ">pw1", "~fs:*", *read_only)
        admin.execute_command("ACL", "SETUSER", "profile", "on", ">pw2", "~fs:*", "~fss:*", *read_only)
        _push_both(server.url)
        admin.execute_command("ACL", "LOG", "RESET")
        base = f"127.0.0.1:{server.port}"

        ranking = OnlineClient(f"redis://ranking:pw1@{base}/0")
        assert [r["score"] for r in ranking.get_view("toy", [1, 2, 3])] == [10, 20, None]
        assert ranking.get_view("toy", [2])[0]["score"] == 20  # the cached fast path too
        assert ranking.get_version("toy", 1, [1])[0]["score"] == 10
        # Nothing was refused so far: no PING, no CLIENT SETINFO, no SELECT on connect.
        assert admin.execute_command("ACL", "LOG") == []
        with pytest.raises(OnlineStoreError, match="no permission on namespace fss"):
            ranking.get_view("secret", [1])
        with pytest.raises(redis.exceptions.NoPermissionError):
            ranking.r.set("fs:toy:x", b"1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            ranking.r.ping()

        profile = OnlineClient(f"redis://profile:pw2@{base}/0")
        assert profile.get_view("secret", [1])[0]["score"] == 10 and profile.get_view("toy", [2])[0]["score"] == 20
        with pytest.raises(redis.exceptions.NoPermissionError):
            profile.r.unlink("fss:secret:1:{1}")

        # A database other than 0 needs +select: redis-py selects it on connect.
        _push_both(server.url.replace("/0", "/1"))
        with pytest.raises(OnlineStoreError, match=rf"Redis at {base} refused the read: .*select"):
            OnlineClient(f"redis://ranking:pw1@{base}/1").get_view("toy", [1])
        admin.execute_command("ACL", "SETUSER", "ranking", "+select")
        assert OnlineClient(f"redis://ranking:pw1@{base}/1").get_view("toy", [1])[0]["score"] == 10
    finally:
        server.stop()


def test_serving_deadlines_come_from_the_settings_and_writers_keep_their_own(redis_url, monkeypatch):
    monkeypatch.setenv("FS_SERVING_CONNECT_TIMEOUT", "0.2")
    monkeypatch.setenv("FS_SERVING_TIMEOUT", "0.3")
    monkeypatch.setenv("FS_SERVING_BREAKER_FAILURES", "5")
    client = OnlineClient(redis_url)
    kwargs = client.r.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"], client.breaker.failures) == (0.2, 0.3, 5)
    writer = connect(redis_url).connection_pool.connection_kwargs
    assert writer["socket_connect_timeout"] >= 10 and writer["socket_timeout"] >= 60


def test_a_stalled_redis_fails_within_the_deadline_then_fast_then_recovers_by_itself():
    server = RedisServer()
    try:
        store = OnlineStore(connect(server.url), OnlineLayout([SCHEMA]))
        push(store, "toy", [TOY], partition="2011-12-09")
        breaker = CircuitBreaker(failures=3, cooldown=1.0)
        client = OnlineClient(server.url, connect_timeout=0.3, timeout=0.3, breaker=breaker)
        assert client.get_view("toy", [1])[0]["score"] == 10
        where = f"127.0.0.1:{server.port}"
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis stalls: connections are accepted, nothing answers
        try:
            for _ in range(3):
                started = time.perf_counter()
                with pytest.raises(RedisUnavailable, match=f"cannot reach Redis at {where}"):
                    client.get_view("toy", [1])
                assert time.perf_counter() - started < 1.0  # the 0.3 s deadline, not redis-py's retries
            assert breaker.is_open
            for view in ("toy", "other"):  # cached or not: no network call at all
                started = time.perf_counter()
                with pytest.raises(RedisUnavailable, match=f"Redis at {where} is unavailable .* failing fast"):
                    client.get_view(view, [1])
                assert time.perf_counter() - started < 0.05
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        with pytest.raises(RedisUnavailable, match="failing fast"):  # still cooling down
            client.get_view("toy", [1])
        time.sleep(1.1)
        assert client.get_view("toy", [2])[0]["score"] == 20  # one probe goes through and closes it
        assert not breaker.is_open
        assert [r["score"] for r in client.get_view("toy", [1, 2])] == [10, 20]
    finally:
        server.stop()


def test_a_probe_that_fails_opens_the_breaker_again():
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown=5.0, clock=lambda: now[0])
    for _ in range(2):
        breaker.before("x:1")
        breaker.failure(TimeoutError("t"))
    with pytest.raises(RedisUnavailable):
        breaker.before("x:1")
    now[0] = 5.1
    breaker.before("x:1")  # the probe
    with pytest.raises(RedisUnavailable):  # while the probe is out, the others still fail fast
        breaker.before("x:1")
    breaker.failure(TimeoutError("still down"))
    now[0] = 6.0
    with pytest.raises(RedisUnavailable, match="still down"):
        breaker.before("x:1")
    now[0] = 10.2
    breaker.before("x:1")
    breaker.success()
    assert not breaker.is_open
    breaker.before("x:1")
