"""Connecting to Redis: one URL form for a single server and for a Redis Cluster; writers and readers apart.

Writers (the store: bulk pushes, pruning) get generous timeouts and a PING on connect. Readers (the
serving client) connect lazily and send nothing but their reads: no PING, no `CLIENT SETINFO`, so a
read-only ACL user (`+get +mget +hget +exists`) can connect. redis-py sends `SELECT` for a non-zero
database, so such a user needs `+select` too, or database 0. Readers have short timeouts and at most one
immediate retry, on a refused or dropped connection only (never on a timeout, which would double the
deadline).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from feature_pipelines.online.errors import OnlineStoreError, RedisUnavailable

WRITER_CONNECT_TIMEOUT = 10.0
WRITER_TIMEOUT = 120.0
"""Seconds a bulk write may wait for Redis before the push fails (and Dagster retries it)."""


def _cluster(url: str) -> tuple[bool, str]:
    return "cluster=1" in url, url.replace("?cluster=1", "").replace("&cluster=1", "")


def address_of_url(url: str) -> str:
    """`host:port` of a Redis URL, never its password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def address(client: redis.Redis) -> str:
    """`host:port` of the server a client talks to (the first startup node of a cluster)."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node() or next(iter(client.get_nodes()), None)
        return f"{node.host}:{node.port}" if node else "a Redis Cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}"


def connect(url: str, timeout: float = WRITER_TIMEOUT) -> redis.Redis:
    """A writer's pooled client for `url` (`redis://...`; add `?cluster=1` for a Redis Cluster), checked with PING."""
    cluster, plain = _cluster(url)
    options = {"socket_connect_timeout": WRITER_CONNECT_TIMEOUT, "socket_timeout": timeout}
    try:
        client: redis.Redis = (
            RedisCluster.from_url(plain, **options) if cluster else redis.Redis.from_url(url, **options)
        )
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {address_of_url(plain)}: {exc}") from exc
    except redis.ResponseError as exc:
        raise OnlineStoreError(f"Redis at {address_of_url(plain)} refused the connection: {exc}") from exc
    return client


def serving_connection(url: str, connect_timeout: float, timeout: float) -> redis.Redis:
    """A reader's client: lazy (nothing is sent until the first read), short timeouts, no handshake extras."""
    cluster, plain = _cluster(url)
    options = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        "driver_info": None,  # no CLIENT SETINFO: a read-only ACL user may not run it
    }
    if cluster:
        try:  # a cluster client learns the slot map (CLUSTER SLOTS) when it is built
            return RedisCluster.from_url(plain, **options)
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
            raise RedisUnavailable(f"cannot reach Redis at {address_of_url(plain)}: {exc}") from exc
    return redis.Redis.from_url(url, **options)


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, RedisCluster)
