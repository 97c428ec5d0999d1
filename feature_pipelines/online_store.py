"""The Redis online store: complete versions written in bulk, promoted by one atomic pointer flip.

Layout (the full contract is docs/online-key-spec.md):

    <ns>:{<view>}:current        serving version number (string)
    <ns>:{<view>}:versions       hash: version number -> JSON metadata (schema, partition, Delta version...)
    <ns>:{<view>}:seq            counter that hands out version numbers
    <ns>:<view>:<version>:{<id>} msgpack array of the view's features, in schema order; expires after the
                                 view's online TTL (counted from the push that wrote it)

`<ns>` is `fs` for public and internal views and `fss` for confidential and restricted ones, so Redis
ACLs can separate them by key pattern. Control keys are hash-tagged by view, data keys by entity id, so in
a Redis Cluster the control keys of a view share a slot (the promote script needs that) and the data keys
of one entity share a slot across views. A subject's keys are computable from its id and the live version
numbers, so erasing one subject needs no SCAN; a whole version is removed by recomputing its keys from
the Delta partition it was written from.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl
import redis
from redis.cluster import RedisCluster

from feature_pipelines import codec

CHUNK = 1000
"""Keys per UNLINK when a version is removed."""
BATCH = 25_000
"""Rows encoded into one buffer of SET commands; one buffer is sent while the next one is encoded."""

# Flip the serving pointer, unless the candidate describes an older partition than the one serving
# (a backfill must never send serving back in time). KEYS: current, versions. ARGV: version, force.
_PROMOTE = """
local candidate = redis.call('HGET', KEYS[2], ARGV[1])
if not candidate then return {'missing', ''} end
if cjson.decode(candidate)['status'] ~= 'written' then return {'not_written', ''} end
local current = redis.call('GET', KEYS[1])
if current and ARGV[2] ~= '1' then
  local serving = redis.call('HGET', KEYS[2], current)
  if serving then
    local old = cjson.decode(serving)['partition']
    local new = cjson.decode(candidate)['partition']
    -- Same partition: the version started last wins, whichever push finishes last.
    if new < old or (new == old and tonumber(ARGV[1]) < tonumber(current)) then return {'stale', current} end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return {'promoted', current or ''}
"""


class OnlineStoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class OnlineSchema:
    """What a reader needs to decode a view's values, stored with every version."""

    view: str
    namespace: str
    join_key: str
    features: list[str]
    dtypes: list[str]
    ttl_seconds: int | None


@dataclass
class VersionMeta:
    version: int
    partition: str
    rows: int
    delta_table: str
    delta_version: int | None
    run_id: str
    definition_hash: str
    written_at: float
    schema: OnlineSchema
    status: str = "written"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> VersionMeta:
        data = json.loads(raw)
        data["schema"] = OnlineSchema(**data["schema"])
        return cls(**data)


@dataclass(frozen=True)
class PushResult:
    view: str
    version: int
    rows: int
    seconds: float
    promoted: bool
    serving_version: int | None
    reason: str
    removed_versions: list[int]


def namespace_for(sensitivity: str) -> str:
    return "fss" if sensitivity in ("confidential", "restricted") else "fs"


def control_key(ns: str, view: str, what: str) -> str:
    return f"{ns}:{{{view}}}:{what}"


def data_prefix(ns: str, view: str, version: int) -> str:
    return f"{ns}:{view}:{version}:{{"


def data_key(ns: str, view: str, version: int, entity_id: Any) -> str:
    return f"{ns}:{view}:{version}:{{{entity_id}}}"


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


class OnlineStore:
    """Writes, promotes, rolls back and prunes versions of online views."""

    def __init__(self, client: redis.Redis, versions_kept: int = 3) -> None:
        if versions_kept < 1:
            raise ValueError("versions_kept must be at least 1")
        self.r = client
        self.versions_kept = versions_kept
        self.cluster = isinstance(client, RedisCluster)
        self._promote = client.register_script(_PROMOTE)

    # -- reading metadata ---------------------------------------------------------------------------
    def serving_version(self, ns: str, view: str) -> int | None:
        raw = self.r.get(control_key(ns, view, "current"))
        return int(raw) if raw is not None else None

    def versions(self, ns: str, view: str) -> dict[int, VersionMeta]:
        raw = self.r.hgetall(control_key(ns, view, "versions"))
        return {int(k): VersionMeta.from_json(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def serving_meta(self, ns: str, view: str) -> VersionMeta | None:
        version = self.serving_version(ns, view)
        if version is None:
            return None
        raw = self.r.hget(control_key(ns, view, "versions"), str(version))
        return VersionMeta.from_json(raw) if raw else None

    # -- writing ------------------------------------------------------------------------------------
    def push(
        self,
        schema: OnlineSchema,
        batches: Iterable[pl.DataFrame],
        *,
        partition: str,
        delta_table: str,
        delta_version: int | None,
        run_id: str,
        definition_hash: str,
        verify: Callable[[int], str | None] | None = None,
    ) -> PushResult:
        """Write every batch as a new version, then promote it unless a fresher partition is serving.

        `verify(version)` runs after the version is complete and before the promotion; a message back
        rejects the version (it is kept for inspection, never served, pruned like any other)."""
        started = time.perf_counter()
        ns, view = schema.namespace, schema.view
        version = int(self.r.incr(control_key(ns, view, "seq")))
        meta = VersionMeta(
            version=version,
            partition=partition,
            rows=0,
            delta_table=delta_table,
            delta_version=delta_version,
            run_id=run_id,
            definition_hash=definition_hash,
            written_at=time.time(),
            schema=schema,
            status="writing",
            extra={"started_at": time.time()},
        )
        versions_key = control_key(ns, view, "versions")
        # Recorded before the first key so that a crashed push can still be found and removed.
        self.r.hset(versions_key, str(version), meta.to_json())
        ttl_ms = (schema.ttl_seconds or 0) * 1000
        meta.rows = self._write_batches(ns, view, version, schema, batches, ttl_ms)
        meta.status = "written"
        meta.written_at = time.time()
        self.r.hset(versions_key, str(version), meta.to_json())
        rejection = "the partition has no rows; the serving version stays" if meta.rows == 0 else None
        rejection = rejection or (verify(version) if verify else None)
        if rejection:
            meta.status = "rejected"
            meta.extra["rejected"] = rejection
            self.r.hset(versions_key, str(version), meta.to_json())
            return PushResult(
                view,
                version,
                meta.rows,
                time.perf_counter() - started,
                False,
                self.serving_version(ns, view),
                f"rejected: {rejection}",
                self.prune(ns, view),
            )
        outcome, previous = self._promote_script(ns, view, version, force=False)
        removed = self.prune(ns, view)
        serving = self.serving_version(ns, view)
        return PushResult(
            view=view,
            version=version,
            rows=meta.rows,
            seconds=time.perf_counter() - started,
            promoted=outcome == "promoted",
            serving_version=serving,
            reason=outcome
            if outcome != "stale"
            else f"partition {partition} is older than the serving one (or a newer push of it serves)",
            removed_versions=removed,
        )

    def _write_batches(
        self, ns: str, view: str, version: int, schema: OnlineSchema, batches: Iterable[pl.DataFrame], ttl_ms: int
    ) -> int:
        prefix = data_prefix(ns, view, version)
        writer = _ClusterWriter(self.r) if self.cluster else _StreamWriter(self.r)
        rows = 0
        try:
            for batch in batches:
                for start in range(0, batch.height, BATCH):
                    part = batch.slice(start, BATCH)
                    nulls = part[schema.join_key].null_count()
                    if nulls:
                        raise OnlineStoreError(f"view {view!r}: {nulls} rows have a null {schema.join_key!r}")
                    keys = prefix + part[schema.join_key].cast(pl.String) + "}"
                    writer.write(keys, part, schema.features, ttl_ms)
                    rows += part.height
        finally:
            writer.close()
        return rows

    # -- promotion, rollback, pruning ----------------------------------------------------------------
    def _promote_script(self, ns: str, view: str, version: int, force: bool) -> tuple[str, str]:
        keys = [control_key(ns, view, "current"), control_key(ns, view, "versions")]
        outcome, previous = self._promote(keys=keys, args=[str(version), "1" if force else "0"])
        return outcome.decode(), previous.decode()

    def rollback(self, ns: str, view: str, to_version: int | None = None) -> tuple[int | None, int]:
        """Serve an older, still complete version (the previous one by default). Returns (from, to)."""
        current = self.serving_version(ns, view)
        versions = {v: m for v, m in self.versions(ns, view).items() if m.status == "written"}
        if to_version is None:
            older = [v for v in versions if current is None or v < current]
            if not older:
                raise OnlineStoreError(f"view {view!r}: no older version to roll back to (serving {current})")
            to_version = max(older)
        meta = versions.get(to_version)
        if meta is None:
            raise OnlineStoreError(f"view {view!r}: version {to_version} is not a complete, kept version")
        ttl = meta.schema.ttl_seconds
        first_key_at = meta.extra.get("started_at", meta.written_at)  # its first keys expire first
        if ttl and time.time() - first_key_at > ttl:
            raise OnlineStoreError(
                f"view {view!r}: version {to_version} was written {time.time() - first_key_at:.0f}s ago, "
                f"beyond its online TTL of {ttl}s; its keys have expired"
            )
        outcome, _ = self._promote_script(ns, view, to_version, force=True)
        if outcome != "promoted":
            raise OnlineStoreError(f"view {view!r}: rollback to {to_version} failed: {outcome}")
        return current, to_version

    def prune(self, ns: str, view: str) -> list[int]:
        """Delete versions beyond the newest `versions_kept` (never the serving one), without SCAN."""
        current = self.serving_version(ns, view)
        versions = self.versions(ns, view)
        keep = set(sorted(versions)[-self.versions_kept :]) | ({current} if current is not None else set())
        removed = []
        for version, meta in versions.items():
            if version in keep or (meta.status == "writing" and time.time() - meta.written_at < 3600):
                continue
            self.delete_version(meta)
            removed.append(version)
        return removed

    def delete_version(self, meta: VersionMeta) -> int:
        """Unlink a version's keys, recomputed from the Delta partition it was written from."""
        ns, view = meta.schema.namespace, meta.schema.view
        deleted = 0
        for ids in _entity_ids(meta):
            keys = (data_prefix(ns, view, meta.version) + ids.cast(pl.String) + "}").to_list()
            for start in range(0, len(keys), CHUNK):
                if self.cluster:
                    pipe = self.r.pipeline(transaction=False)
                    for k in keys[start : start + CHUNK]:
                        pipe.unlink(k)
                    deleted += sum(pipe.execute())
                else:
                    deleted += self.r.unlink(*keys[start : start + CHUNK])
        self.r.hdel(control_key(ns, view, "versions"), str(meta.version))
        return deleted

    def erase_subject(self, ns: str, view: str, entity_id: Any) -> int:
        """Delete one subject's keys in every kept version of a view: keys are computed, not scanned."""
        keys = [data_key(ns, view, v, entity_id) for v in self.versions(ns, view)]
        return self.r.unlink(*keys) if keys else 0  # one command: the keys share the entity's hash slot


def _entity_ids(meta: VersionMeta) -> Iterator[pl.Series]:
    from feature_pipelines.offline_store import scan
    from feature_pipelines.spec import PARTITION_DATE

    key = meta.schema.join_key
    try:
        frame = (
            scan(meta.delta_table, meta.delta_version)
            .filter(pl.col(PARTITION_DATE) == meta.partition)
            .select(key)
            .collect()
        )
    except Exception:  # noqa: BLE001 - a vacuumed or moved table: the keys expire by their TTL instead
        return
    for start in range(0, frame.height, 100_000):
        yield frame[key].slice(start, 100_000)


class _StreamWriter:
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
        payload = codec.encode_set_commands(keys, frame, columns, ttl_ms)
        while self.error is None:
            try:
                self.to_send.put((payload, frame.height), timeout=0.5)
                return
            except queue.Full:
                continue
        raise OnlineStoreError(f"writing to Redis failed: {self.error}") from self.error

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
                    raise OnlineStoreError("Redis closed the connection during a push")
                got += chunk
            if got != expected:
                first_error = next((ln for ln in bytes(got).split(b"\r\n") if ln.startswith(b"-")), b"?")
                raise OnlineStoreError(f"Redis rejected a write: {first_error.decode(errors='replace')}")

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
            raise OnlineStoreError(f"writing to Redis failed: {self.error}") from self.error
        self.pool.release(self.conn)


class _ClusterWriter:
    """Redis Cluster: one SET per key, pipelined per node by redis-py (keys live on many slots)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def write(self, keys: pl.Series, frame: pl.DataFrame, columns: list[str], ttl_ms: int) -> None:
        buf, offsets = codec.encode_rows(frame, columns)
        pipe = self.r.pipeline(transaction=False)
        for key, value in zip(keys.to_list(), codec.split(buf, offsets), strict=True):
            pipe.set(key, value, px=ttl_ms or None)
        pipe.execute()

    def close(self) -> None:
        pass
