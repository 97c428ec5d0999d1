"""The demo's Redis: the configured one when it answers, else a private redis-server, else a clear error."""

from __future__ import annotations

import pytest
import redis

from feature_pipelines.online import local_server as local_redis
from feature_pipelines.online.local_server import free_port, redis_for


def test_uses_the_configured_redis_when_it_answers(redis_url):
    with redis_for(redis_url) as url:
        assert url == redis_url


def test_starts_and_stops_a_private_redis_when_none_answers():
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with redis_for(nobody) as url:
        assert url != nobody
        assert redis.Redis.from_url(url).ping()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()  # stopped afterwards


def test_says_how_to_install_redis_when_there_is_none(monkeypatch):
    monkeypatch.setattr(local_redis.shutil, "which", lambda name: None)
    with (
        pytest.raises(RuntimeError, match=r"redis-server is not installed.*apt-get install redis-server"),
        redis_for(f"redis://127.0.0.1:{free_port()}/0"),
    ):
        pass
