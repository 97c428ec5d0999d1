"""The Redis online store: complete versions written in bulk, promoted by one atomic pointer flip.

A push is three steps the caller sequences: `write` a complete new version, verify it (the caller's
checks read it back), then `promote` it, or `reject` it. Each step returns a typed result; nothing here
calls back into the checks, and nothing here reads Delta: removing a version's keys takes the entity ids
from the caller (`prune(view, ids_of)`), which knows where the version was written from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import polars as pl
import redis

from feature_pipelines.online.connection import is_cluster
from feature_pipelines.online.errors import OnlineStoreError
from feature_pipelines.online.layout import OnlineLayout, OnlineSchema, ViewKeys
from feature_pipelines.online.writer import writer_for

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

IdsOf = Callable[["VersionMeta"], Iterable[pl.Series]]
"""The entity ids a version was written for, in batches (from the Delta partition it was written from)."""


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
class Written:
    """A complete version, not yet served."""

    view: str
    version: int
    rows: int
    seconds: float


class Outcome(StrEnum):
    PROMOTED = "promoted"
    STALE = "stale"  # an as new or newer partition serves: a backfill never goes back in time
    REJECTED = "rejected"  # a check refused it, or it has no rows
    NOT_WRITTEN = "not_written"
    MISSING = "missing"


@dataclass(frozen=True)
class Promotion:
    view: str
    version: int
    outcome: Outcome
    serving_version: int | None
    previous: int | None
    reason: str

    @property
    def promoted(self) -> bool:
        return self.outcome is Outcome.PROMOTED


class OnlineStore:
    """Writes, promotes, rolls back and prunes versions of the online views of `layout`."""

    def __init__(self, client: redis.Redis, layout: OnlineLayout, versions_kept: int = 3) -> None:
        if versions_kept < 1:
            raise ValueError("versions_kept must be at least 1")
        self.r = client
        self.layout = layout
        self.versions_kept = versions_kept
        self.cluster = is_cluster(client)
        self._promote = client.register_script(_PROMOTE)

    def keys(self, view: str) -> ViewKeys:
        return self.layout.keys_of(view)

    # -- reading metadata ---------------------------------------------------------------------------
    def serving_version(self, view: str) -> int | None:
        raw = self.r.get(self.keys(view).current)
        return int(raw) if raw is not None else None

    def versions(self, view: str) -> dict[int, VersionMeta]:
        raw = self.r.hgetall(self.keys(view).versions)
        return {int(k): VersionMeta.from_json(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def meta(self, view: str, version: int) -> VersionMeta | None:
        raw = self.r.hget(self.keys(view).versions, str(version))
        return VersionMeta.from_json(raw) if raw else None

    def serving_meta(self, view: str) -> VersionMeta | None:
        version = self.serving_version(view)
        return None if version is None else self.meta(view, version)

    # -- write, then promote or reject ----------------------------------------------------------------
    def write(
        self,
        view: str,
        batches: Iterable[pl.DataFrame],
        *,
        partition: str,
        delta_table: str,
        delta_version: int | None,
        run_id: str,
        definition_hash: str,
    ) -> Written:
        """Write every batch as a new, complete version (status `written`); it does not serve yet."""
        started = time.perf_counter()
        schema = self.layout[view]
        keys = schema.keys
        version = int(self.r.incr(keys.seq))
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
        # Recorded before the first key so that a crashed push can still be found and removed.
        self._save(meta)
        meta.rows = self._write_batches(schema, version, batches)
        meta.status = "written"
        meta.written_at = time.time()
        self._save(meta)
        return Written(view, version, meta.rows, time.perf_counter() - started)

    def promote(self, written: Written) -> Promotion:
        """Serve `written` unless it is empty or an as new or newer partition serves."""
        if written.rows == 0:
            return self.reject(written, "the partition has no rows; the serving version stays")
        outcome, previous = self._promote_script(written.view, written.version, force=False)
        serving = self.serving_version(written.view)
        reason = outcome.value
        if outcome is Outcome.STALE:
            meta = self.meta(written.view, written.version)
            partition = meta.partition if meta else "?"
            reason = f"partition {partition} is older than the serving one (or a newer push of it serves)"
        return Promotion(written.view, written.version, outcome, serving, previous, reason)

    def reject(self, written: Written, reason: str) -> Promotion:
        """Mark a written version as never to be served (kept for inspection, pruned like any other)."""
        meta = self.meta(written.view, written.version)
        if meta is not None:
            meta.status = "rejected"
            meta.extra["rejected"] = reason
            self._save(meta)
        serving = self.serving_version(written.view)
        return Promotion(written.view, written.version, Outcome.REJECTED, serving, serving, f"rejected: {reason}")

    def _save(self, meta: VersionMeta) -> None:
        self.r.hset(meta.schema.keys.versions, str(meta.version), meta.to_json())

    def _write_batches(self, schema: OnlineSchema, version: int, batches: Iterable[pl.DataFrame]) -> int:
        ttl_ms = (schema.ttl_seconds or 0) * 1000
        keys = schema.keys
        writer = writer_for(self.r)
        rows = 0
        try:
            for batch in batches:
                for start in range(0, batch.height, BATCH):
                    part = batch.slice(start, BATCH)
                    nulls = part[schema.join_key].null_count()
                    if nulls:
                        raise OnlineStoreError(f"view {schema.view!r}: {nulls} rows have a null {schema.join_key!r}")
                    writer.write(keys.data_keys(version, part[schema.join_key]), part, schema.features, ttl_ms)
                    rows += part.height
        finally:
            writer.close()
        return rows

    # -- promotion, rollback, pruning ----------------------------------------------------------------
    def _promote_script(self, view: str, version: int, force: bool) -> tuple[Outcome, int | None]:
        keys = self.keys(view)
        outcome, previous = self._promote(
            keys=[keys.current, keys.versions], args=[str(version), "1" if force else "0"]
        )
        return Outcome(outcome.decode()), int(previous) if previous else None

    def rollback(self, view: str, to_version: int | None = None) -> tuple[int | None, int]:
        """Serve an older, still complete version (the previous one by default). Returns (from, to)."""
        current = self.serving_version(view)
        versions = {v: m for v, m in self.versions(view).items() if m.status == "written"}
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
        outcome, _ = self._promote_script(view, to_version, force=True)
        if outcome is not Outcome.PROMOTED:
            raise OnlineStoreError(f"view {view!r}: rollback to {to_version} failed: {outcome.value}")
        return current, to_version

    def prune(self, view: str, ids_of: IdsOf) -> list[int]:
        """Delete versions beyond the newest `versions_kept` (never the serving one), without SCAN."""
        current = self.serving_version(view)
        versions = self.versions(view)
        keep = set(sorted(versions)[-self.versions_kept :]) | ({current} if current is not None else set())
        removed = []
        for version, meta in versions.items():
            if version in keep or (meta.status == "writing" and time.time() - meta.written_at < 3600):
                continue
            self.delete_version(meta, ids_of(meta))
            removed.append(version)
        return removed

    def delete_version(self, meta: VersionMeta, ids: Iterable[pl.Series]) -> int:
        """Unlink a version's keys (those of `ids`), then forget the version."""
        keys_of = meta.schema.keys
        deleted = 0
        for batch in ids:
            keys = keys_of.data_keys(meta.version, batch).to_list()
            for start in range(0, len(keys), CHUNK):
                if self.cluster:
                    pipe = self.r.pipeline(transaction=False)
                    for k in keys[start : start + CHUNK]:
                        pipe.unlink(k)
                    deleted += sum(pipe.execute())
                else:
                    deleted += self.r.unlink(*keys[start : start + CHUNK])
        self.r.hdel(keys_of.versions, str(meta.version))
        return deleted

    def erase_subject(self, view: str, entity_id: Any) -> int:
        """Delete one subject's keys in every kept version of a view: keys are computed, not scanned."""
        keys_of = self.keys(view)
        keys = [keys_of.data_key(v, entity_id) for v in self.versions(view)]
        return self.r.unlink(*keys) if keys else 0  # one command: the keys share the entity's hash slot
