"""Connecting to Redis: one URL form for a single server and for a Redis Cluster."""

from __future__ import annotations

import redis
from redis.cluster import RedisCluster

from feature_pipelines.online.errors import OnlineStoreError


def connect(url: str) -> redis.Redis:
    """A pooled client for `url` (`redis://...`; add `?cluster=1` for a Redis Cluster), checked with PING."""
    try:
        if "cluster=1" in url:
            client: redis.Redis = RedisCluster.from_url(url.replace("?cluster=1", "").replace("&cluster=1", ""))
        else:
            client = redis.Redis.from_url(url)
        client.ping()
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
        raise OnlineStoreError(f"cannot reach Redis at {url}: {exc}") from exc
    return client


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, RedisCluster)
