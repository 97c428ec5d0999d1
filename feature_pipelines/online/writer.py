"""Bulk writers: stream a version's `SET key value PX ttl` commands to Redis and check every reply.

The store decides what to write; these only move bytes fast. One Redis: pre-encoded RESP on the raw
socket, encoding, sending and reading replies overlapped. A Redis Cluster: redis-py pipelines per node.
"""

from __future__ import annotations

import queue
import threading

import polars as pl
import redis
from redis.cluster import RedisCluster

from feature_pipelines.online import codec
from feature_pipelines.online.errors import OnlineStoreError


class WriteError(OnlineStoreError):
    """Redis refused or dropped a write; the message is Redis's own."""


def writer_for(client: redis.Redis) -> StreamWriter | ClusterWriter:
    return ClusterWriter(client) if isinstance(client, RedisCluster) else StreamWriter(client)


class StreamWriter:
    """Streams pre-built `SET key value PX ttl` commands to one Redis and checks every reply.

    Three things overlap on two cores: the caller encodes batch i+2, a sender thread writes batch i+1 to
    the socket, and a receiver thread reads batch i's replies, so Redis never waits for Python. Replies
    are read as raw bytes: each must be `+OK\\r\\n`; anything else fails the push with Redis's message.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        self.conn.connect()
        self.sock = self.conn._sock  # raw socket: commands are already RESP; redis-py did AUTH/SELECT
        self.to_send: queue.Queue = queue.Queue(maxsize=2)
        self.to_check: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.threads = [
            threading.Thread(target=self._guard, args=(self._send,), name="online-store-sender", daemon=True),
            threading.Thread(target=self._guard, args=(self._receive,), name="online-store-receiver", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def write(self, keys: pl.Series, frame: pl.DataFrame, columns: list[str], ttl_ms: int) -> None:
        self._enqueue(codec.encode_set_commands(keys, frame, columns, ttl_ms), frame.height)

    def write_text(self, keys: pl.Series, values: pl.Series, ttl_ms: int) -> None:
        """`SET key value PX ttl` with plain text values (alias keys: the person id)."""
        self._enqueue(codec.encode_text_set_commands(keys, values, ttl_ms), len(keys))

    def _enqueue(self, payload: bytes, n: int) -> None:
        while self.error is None:
            try:
                self.to_send.put((payload, n), timeout=0.5)
                return
            except queue.Full:
                continue
        raise WriteError(f"writing to Redis failed: {self.error}") from self.error

    def _guard(self, loop) -> None:
        try:
            loop()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.error = exc
            self.to_check.put(None)

    def _send(self) -> None:
        while True:
            item = self.to_send.get()
            if item is None or self.error is not None:
                self.to_check.put(None)
                return
            payload, n = item
            self.to_check.put(n)
            self.sock.sendall(payload)

    def _receive(self) -> None:
        while True:
            n = self.to_check.get()
            if n is None or self.error is not None:
                return
            expected = b"+OK\r\n" * n
            got = bytearray()
            while len(got) < len(expected):
                chunk = self.sock.recv(min(1 << 20, len(expected) - len(got)))
                if not chunk:
                    raise WriteError("Redis closed the connection during a push")
                got += chunk
            if got != expected:
                first_error = next((ln for ln in bytes(got).split(b"\r\n") if ln.startswith(b"-")), b"?")
                raise WriteError(f"Redis rejected a write: {first_error.decode(errors='replace')}")

    def close(self) -> None:
        while True:
            try:
                self.to_send.put(None, timeout=0.5)
                break
            except queue.Full:
                if self.error is not None:
                    break
        if self.error is not None:
            self.conn.disconnect()  # unblocks a thread stuck in sendall or recv
        for t in self.threads:
            t.join()
        if self.error is not None:
            # Unread replies may still sit in the socket: never hand this connection back as it is.
            self.conn.disconnect()
            self.pool.release(self.conn)
            raise WriteError(f"writing to Redis failed: {self.error}") from self.error
        self.pool.release(self.conn)


class ClusterWriter:
    """Redis Cluster: one SET per key, pipelined per node by redis-py (keys live on many slots)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def write(self, keys: pl.Series, frame: pl.DataFrame, columns: list[str], ttl_ms: int) -> None:
        buf, offsets = codec.encode_rows(frame, columns)
        pipe = self.r.pipeline(transaction=False)
        for key, value in zip(keys.to_list(), codec.split(buf, offsets), strict=True):
            pipe.set(key, value, px=ttl_ms or None)
        pipe.execute()

    def write_text(self, keys: pl.Series, values: pl.Series, ttl_ms: int) -> None:
        pipe = self.r.pipeline(transaction=False)
        for key, value in zip(keys.to_list(), values.to_list(), strict=True):
            pipe.set(key, value, px=ttl_ms or None)
        pipe.execute()

    def close(self) -> None:
        pass
