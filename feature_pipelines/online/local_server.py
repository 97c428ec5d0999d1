"""A private `redis-server` for the demo and tests, when none answers at the configured URL."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis


def free_port(below: int = 65536) -> int:
    """A free loopback port under `below` (a cluster node also needs port + 10000 for its bus)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < below:
            return port


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


class RedisServer:
    """A `redis-server` on a free loopback port, stopped by its own PID (never by name)."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "No Redis answers and redis-server is not installed. Install it (Debian/Ubuntu: "
                "`sudo apt-get install redis-server`; macOS: `brew install redis`) or set REDIS_URL."
            )
        cluster = "--cluster-enabled" in extra_args
        self.port = port or free_port(below=55535 if cluster else 65536)
        self.dir = tempfile.mkdtemp(prefix="fs-redis-")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        deadline = time.time() + 10
        while not answers(self.url):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_for(url: str) -> Iterator[str]:
    """`url` if a Redis answers there, else the URL of a private server that lives for the block."""
    if answers(url):
        yield url
        return
    server = RedisServer()
    try:
        yield server.url
    finally:
        server.stop()
