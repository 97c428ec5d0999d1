"""The Redis online store: complete versions written in bulk, promoted by one atomic pointer flip.

A push is three steps the caller sequences: `write` a complete new version, verify it (the caller's
checks read it back), then `promote` it, or `reject` it. Each step returns a typed result; nothing here
calls back into the checks, and nothing here reads Delta: removing a version's keys, or refreshing them
on a rollback, takes the entity ids from the caller (`ids_of`), which knows where the version came from.

The lifecycle, every step of which is one Lua script on the view's control keys (one hash slot):
- a push holds a lease on its version while it writes and is verified; a `writing` version whose lease is
  gone is dead (its push was killed) and is removed by the next prune, whatever its age;
- every flip of the pointer (promotion, rollback, manual promotion) is recorded in the view's history in
  the same script, and is refused unless the target is `written`;
- a rollback pins the view: a push's promotion is then held back (outcome PINNED), even one that was in
  flight, until `unpin` or a manual promotion with `unpin=True`;
- pruning keeps the last N versions that served (from the history), the serving one and the pinned one;
  it marks a version `deleting` (refused if it serves, is pinned or is leased) before unlinking any key.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import polars as pl
import redis

from feature_pipelines.online.connection import is_cluster
from feature_pipelines.online.errors import OnlineStoreError
from feature_pipelines.online.layout import (
    FUNCTION_LIBRARY,
    IDENTIFIER_TYPE,
    NAMESPACES,
    OnlineLayout,
    OnlineSchema,
    ViewKeys,
    deny_key,
)
from feature_pipelines.online.writer import writer_for

CHUNK = 1000
"""Keys per UNLINK (or PEXPIRE pipeline) when a version is removed (or its keys refreshed)."""
BATCH = 25_000
"""Rows encoded into one buffer of SET commands; one buffer is sent while the next one is encoded."""
HISTORY_LIMIT = 1000
"""Entries kept in a view's history (newest first)."""
LEASE_SECONDS = 30.0
"""A push's lease on its version; a heartbeat renews it every third of that while the push runs."""

# A push's version and its lease appear together. KEYS: lease, versions. ARGV: version, token, ms, metadata.
_BEGIN = """
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return 1
"""

# Renew a lease, never resurrect one that ran out. KEYS: lease. ARGV: token, ms.
_HEARTBEAT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# `writing` -> `written`, only while the push still holds its lease (else a prune may be removing it).
# KEYS: lease, versions. ARGV: version, token, expected metadata, new metadata.
_MARK_WRITTEN = """
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 'lease_lost' end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then return 'changed' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return 'ok'
"""

# Compare-and-set of one version's metadata. KEYS: versions. ARGV: version, expected, new.
_SET_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# Flip the serving pointer and record it in the history, in one step. Refused unless the target is
# `written`. mode `push`: held back while the view is pinned, and never back in time (an older partition,
# or an older push of the same partition, never replaces the serving one). mode `manual`: the same, but
# it may end the pin (ARGV[6] = '1'). mode `rollback`: any partition (the caller checked the target
# served before), and it pins the view.
# KEYS: current, versions, history, pin.
# ARGV: version, mode, run_id, reason, by, unpin, expected current ('*': any, '': none), history limit.
_FLIP = """
local v, mode = ARGV[1], ARGV[2]
local raw = redis.call('HGET', KEYS[2], v)
if not raw then return {'missing', '', ''} end
local meta = cjson.decode(raw)
if meta['status'] ~= 'written' then return {'not_written', meta['status'], ''} end
local current = redis.call('GET', KEYS[1])
if ARGV[7] ~= '*' and (current or '') ~= ARGV[7] then return {'moved', current or '', ''} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function num(x)
  if x and x ~= '' then return tonumber(x) end
  return cjson.null
end
if current and redis.call('LLEN', KEYS[3]) == 0 then
  -- A view served before histories were recorded: its serving version counts as promoted, so it stays
  -- a rollback target and keeps its slot.
  local serving = redis.call('HGET', KEYS[2], current)
  redis.call('LPUSH', KEYS[3], cjson.encode({action = 'promote', version = tonumber(current),
    partition = serving and cjson.decode(serving)['partition'] or '', previous = cjson.null, at = now,
    run_id = '', reason = 'served before the history was recorded', by = ''}))
end
local function record(action, version, partition, previous)
  redis.call('LPUSH', KEYS[3], cjson.encode({action = action, version = tonumber(version), partition = partition,
    previous = num(previous), at = now, run_id = ARGV[3], reason = ARGV[4], by = ARGV[5]}))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
end
local pin = redis.call('GET', KEYS[4])
if pin and mode == 'push' then
  record('held', v, meta['partition'], current)
  return {'pinned', current or '', pin}
end
if pin and mode == 'manual' and ARGV[6] ~= '1' then return {'pinned', current or '', pin} end
if current == v then return {'serving', current, ''} end
if current and mode ~= 'rollback' then
  local serving = redis.call('HGET', KEYS[2], current)
  if serving then
    local old = cjson.decode(serving)['partition']
    local new = meta['partition']
    -- Same partition: the version started last wins, whichever push finishes last.
    if new < old or (new == old and tonumber(v) < tonumber(current)) then return {'stale', current, ''} end
  end
end
redis.call('SET', KEYS[1], v)
if mode == 'rollback' then
  record('rollback', v, meta['partition'], current)
  redis.call('SET', KEYS[4], cjson.encode({version = tonumber(v), partition = meta['partition'],
    previous = num(current), at = now, run_id = ARGV[3], reason = ARGV[4], by = ARGV[5]}))
  record('pin', v, meta['partition'], current)
else
  if pin then
    local p = cjson.decode(pin)
    redis.call('DEL', KEYS[4])
    record('unpin', p['version'], p['partition'], current)
  end
  record('promote', v, meta['partition'], current)
end
return {'promoted', current or '', pin or ''}
"""

# KEYS: pin, history. ARGV: run_id, reason, by, history limit.
_UNPIN = """
local pin = redis.call('GET', KEYS[1])
if not pin then return false end
local p = cjson.decode(pin)
local t = redis.call('TIME')
redis.call('DEL', KEYS[1])
redis.call('LPUSH', KEYS[2], cjson.encode({action = 'unpin', version = p['version'], partition = p['partition'],
  previous = cjson.null, at = tonumber(t[1]) + tonumber(t[2]) / 1000000, run_id = ARGV[1], reason = ARGV[2],
  by = ARGV[3]}))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return pin
"""

# A version about to lose its keys is marked `deleting` first, unless it serves, is pinned, or a live
# push holds its lease. KEYS: current, versions, pin, lease. ARGV: version, expected metadata, new metadata.
_MARK_DELETING = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return 'serving' end
local pin = redis.call('GET', KEYS[3])
if pin and tostring(cjson.decode(pin)['version']) == ARGV[1] then return 'pinned' end
if redis.call('EXISTS', KEYS[4]) == 1 then return 'leased' end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 'missing' end
if raw ~= ARGV[2] then return 'changed' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 'ok'
"""

# KEYS: versions. ARGV: version.
_FORGET = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw)['status'] == 'deleting' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""

IdsOf = Callable[["VersionMeta"], Iterable[pl.Series]]
"""The entity ids a version was written for, in batches (from the Delta partition it was written from)."""
AliasesOf = Callable[["VersionMeta"], Iterable[pl.DataFrame]]
"""The aliases a version was written with (`identifier_type`, `identifier` columns), in batches: from the
alias map version recorded in its metadata (`VersionMeta.aliases`)."""
ALIAS_COLUMNS = ("identifier_type", "identifier", "person_id")


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
    aliases: dict[str, Any] | None = None
    """Person-keyed views: where the version's alias keys came from (the caller's `alias_source`, e.g. the
    alias map's Delta table and version) and how many were written (`rows`). None: no alias keys."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> VersionMeta:
        data = json.loads(raw)
        data["schema"] = OnlineSchema.from_dict(data["schema"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class Action(StrEnum):
    PROMOTE = "promote"  # a push (or `fstore promote`) made the version serve
    ROLLBACK = "rollback"  # an older version serves again
    PIN = "pin"  # follows every rollback: pushes are held back
    UNPIN = "unpin"
    HELD = "held"  # a push's promotion held back by the pin


SERVED = (Action.PROMOTE, Action.ROLLBACK)


def _served_fields(data: dict) -> dict:
    """The fields a history entry and a pin share, from their JSON (older entries lack the optional ones)."""
    return {
        "version": int(data["version"]),
        "partition": str(data.get("partition") or ""),
        "previous": int(data["previous"]) if data.get("previous") is not None else None,
        "at": float(data["at"]),
        "run_id": str(data.get("run_id") or ""),
        "reason": str(data.get("reason") or ""),
        "by": str(data.get("by") or ""),
    }


@dataclass(frozen=True)
class HistoryEntry:
    action: Action
    version: int
    partition: str
    previous: int | None
    at: float
    run_id: str = ""
    reason: str = ""
    by: str = ""

    @classmethod
    def from_json(cls, raw: str | bytes) -> HistoryEntry:
        data = json.loads(raw)
        return cls(action=Action(data["action"]), **_served_fields(data))


@dataclass(frozen=True)
class Pin:
    """Who pinned a view to which version (by rolling back), when and why."""

    version: int
    partition: str
    previous: int | None
    at: float
    run_id: str = ""
    reason: str = ""
    by: str = ""

    @classmethod
    def from_json(cls, raw: str | bytes) -> Pin:
        return cls(**_served_fields(json.loads(raw)))

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.at))
        who = f" by {self.by}" if self.by else ""
        why = f": {self.reason}" if self.reason else ""
        return f"pinned to version {self.version} (partition {self.partition}) since {when}{who}{why}"


class Lease:
    """A push's claim on the version it writes, renewed by a heartbeat thread until the push decides.

    The heartbeat sends one tiny script every few seconds on its own pooled connection: the bulk writer
    never waits for it. If the lease runs out (the process was killed, or Redis stalled longer than the
    lease), `lost` is set and the version can no longer be marked `written`: a prune may be removing it.
    """

    def __init__(self, store: OnlineStore, keys: ViewKeys, version: int, seconds: float) -> None:
        self.key = keys.lease(version)
        self.token = uuid.uuid4().hex
        self.ms = max(int(seconds * 1000), 100)
        self.lost = False
        self._store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease {self.key}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ms / 3000):
            try:
                if not self._store._heartbeat(keys=[self.key], args=[self.token, self.ms]):
                    self.lost = True
                    return
            except redis.RedisError:
                continue  # Redis away: try again; if it stays away, the lease runs out and `lost` follows

    def release(self) -> None:
        """End the lease (idempotent): the push has decided, or failed."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(redis.RedisError):  # else it runs out by itself
            self._store._release(keys=[self.key], args=[self.token])


@dataclass(frozen=True)
class Written:
    """A complete version, not yet served; its push holds the lease until `promote` or `reject`."""

    view: str
    version: int
    rows: int
    seconds: float
    lease: Lease | None = field(default=None, compare=False, repr=False)

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()


class Outcome(StrEnum):
    PROMOTED = "promoted"
    STALE = "stale"  # an as new or newer partition serves: a backfill never goes back in time
    PINNED = "pinned"  # a rollback pinned the view: the push is held back until unpinned
    REJECTED = "rejected"  # a check refused it, or it has no rows
    NOT_WRITTEN = "not_written"  # writing, deleting or rejected: only a `written` version can serve
    MISSING = "missing"
    SERVING = "serving"  # it serves already
    MOVED = "moved"  # the serving version changed under a rollback; it is retried


@dataclass(frozen=True)
class Promotion:
    view: str
    version: int
    outcome: Outcome
    serving_version: int | None
    previous: int | None
    reason: str
    pin: Pin | None = None
    keys_refreshed: int = 0

    @property
    def promoted(self) -> bool:
        return self.outcome is Outcome.PROMOTED


@dataclass(frozen=True)
class Pruned:
    """What a prune did: versions removed (with their keys unlinked), kept (and why), left for later."""

    view: str
    removed: dict[int, int] = field(default_factory=dict)
    kept: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def keys_deleted(self) -> int:
        return sum(self.removed.values())


@dataclass(frozen=True)
class VersionState:
    meta: VersionMeta
    state: str  # written, writing, dead, deleting, rejected
    serving: bool
    pinned: bool
    served_before: bool


@dataclass(frozen=True)
class ViewStatus:
    view: str
    serving: VersionMeta | None
    pin: Pin | None
    versions: list[VersionState]
    history: list[HistoryEntry]

    def in_state(self, *states: str) -> list[int]:
        return [s.meta.version for s in self.versions if s.state in states]


class OnlineStore:
    """Writes, promotes, rolls back and prunes versions of the online views of `layout`."""

    def __init__(
        self, client: redis.Redis, layout: OnlineLayout, versions_kept: int = 3, lease_seconds: float = LEASE_SECONDS
    ) -> None:
        if versions_kept < 1:
            raise ValueError("versions_kept must be at least 1")
        self.r = client
        self.layout = layout
        self.versions_kept = versions_kept
        self.lease_seconds = lease_seconds
        self.cluster = is_cluster(client)
        self._begin = client.register_script(_BEGIN)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._release = client.register_script(_RELEASE)
        self._mark_written = client.register_script(_MARK_WRITTEN)
        self._set_if = client.register_script(_SET_IF)
        self._flip_script = client.register_script(_FLIP)
        self._unpin = client.register_script(_UNPIN)
        self._mark_deleting = client.register_script(_MARK_DELETING)
        self._forget = client.register_script(_FORGET)
        self._functions_loaded = False

    def load_functions(self) -> None:
        """Register the read-only Redis Function library (`FCALL_RO fs_get_by_alias`) readers resolve
        aliases with. Functions are server-wide (not per database) and survive restarts with the data;
        REPLACE makes this idempotent. In a Redis Cluster it is loaded on every primary."""
        if self._functions_loaded:
            return
        self.r.function_load(FUNCTION_LIBRARY, replace=True)  # redis-py sends it to every primary of a cluster
        self._functions_loaded = True

    def keys(self, view: str) -> ViewKeys:
        return self.layout.keys_of(view)

    # -- reading metadata ---------------------------------------------------------------------------
    def serving_version(self, view: str) -> int | None:
        raw = self.r.get(self.keys(view).current)
        return int(raw) if raw is not None else None

    def versions(self, view: str) -> dict[int, VersionMeta]:
        return {v: VersionMeta.from_json(raw) for v, raw in self._raw_versions(view).items()}

    def _raw_versions(self, view: str) -> dict[int, bytes]:
        raw = self.r.hgetall(self.keys(view).versions)
        return {int(k): v for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def meta(self, view: str, version: int) -> VersionMeta | None:
        raw = self.r.hget(self.keys(view).versions, str(version))
        return VersionMeta.from_json(raw) if raw else None

    def serving_meta(self, view: str) -> VersionMeta | None:
        version = self.serving_version(view)
        return None if version is None else self.meta(view, version)

    def history(self, view: str, limit: int = HISTORY_LIMIT) -> list[HistoryEntry]:
        """Promotions, rollbacks, pins, unpins and held-back pushes of a view, newest first."""
        return [HistoryEntry.from_json(e) for e in self.r.lrange(self.keys(view).history, 0, limit - 1)]

    def pin(self, view: str) -> Pin | None:
        raw = self.r.get(self.keys(view).pin)
        return Pin.from_json(raw) if raw else None

    def leased(self, view: str, versions: Iterable[int]) -> set[int]:
        """The versions among `versions` whose push is alive (holds its lease)."""
        keys = self.keys(view)
        versions = list(versions)
        if not versions:
            return set()
        pipe = self.r.pipeline(transaction=False)
        for v in versions:
            pipe.exists(keys.lease(v))
        return {v for v, alive in zip(versions, pipe.execute(), strict=True) if alive}

    def status(self, view: str) -> ViewStatus:
        """Everything an on-call engineer asks about a view: serving, pin, kept versions, dead pushes, history."""
        metas = self.versions(view)
        current = self.serving_version(view)
        pin = self.pin(view)
        history = self.history(view)
        served = set(served_versions(history))
        alive = self.leased(view, [v for v, m in metas.items() if m.status == "writing"])
        states = [
            VersionState(
                meta=m,
                state=("writing" if v in alive else "dead") if m.status == "writing" else m.status,
                serving=v == current,
                pinned=pin is not None and pin.version == v,
                served_before=v in served,
            )
            for v, m in metas.items()
        ]
        return ViewStatus(view, metas.get(current) if current is not None else None, pin, states, history)

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
        aliases: Iterable[pl.DataFrame] | None = None,
        alias_source: dict[str, Any] | None = None,
    ) -> Written:
        """Write every batch as a new, complete version (status `written`); it does not serve yet.

        The version is recorded, with its lease, before the first key, so a killed push is found (its
        lease runs out) and its keys removed from its Delta partition by the next prune.

        A person-keyed view also gets `aliases` (frames of `identifier_type`, `identifier`, `person_id`),
        written after every data key: an alias of a version only ever names a person written in it, and
        none is readable before the version is promoted. `alias_source` is recorded in the metadata so a
        prune or rollback can recompute the alias keys (`AliasesOf`)."""
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
            aliases=None if aliases is None else {**(alias_source or {}), "rows": 0},
        )
        if aliases is not None:
            self.load_functions()
        lease = Lease(self, keys, version, self.lease_seconds)
        begun = meta.to_json()
        self._begin(keys=[lease.key, keys.versions], args=[version, lease.token, lease.ms, begun])
        lease.start()
        try:
            written_ids: list[pl.Series] | None = [] if aliases is not None else None
            meta.rows = self._write_batches(schema, version, batches, lease, written_ids)
            if aliases is not None and meta.aliases is not None:
                meta.aliases["rows"] = self._write_aliases(schema, version, aliases, lease, written_ids or [])
            meta.status = "written"
            meta.written_at = time.time()
            done = self._mark_written(
                keys=[lease.key, keys.versions], args=[version, lease.token, begun, meta.to_json()]
            )
            if done != b"ok":
                raise OnlineStoreError(
                    f"view {view!r}: version {version} lost its lease while being written ({done.decode()}); "
                    "it never serves and the next prune removes it"
                )
        except BaseException:
            lease.release()  # the version is dead now: the next prune removes its keys
            raise
        return Written(view, version, meta.rows, time.perf_counter() - started, lease)

    def promote(self, written: Written) -> Promotion:
        """Serve `written` unless it is empty, the view is pinned, or an as new or newer partition serves."""
        try:
            if written.rows == 0:
                return self.reject(written, "the partition has no rows; the serving version stays")
            meta = self.meta(written.view, written.version)
            return self._flip(written.view, written.version, "push", run_id=meta.run_id if meta else "", reason="push")
        finally:
            written.release()

    def reject(self, written: Written, reason: str) -> Promotion:
        """Mark a written version as never to be served (the newest rejected one is kept for inspection)."""
        try:
            keys = self.keys(written.view)
            raw = self.r.hget(keys.versions, str(written.version))
            if raw is not None:
                meta = VersionMeta.from_json(raw)
                if meta.status == "written":
                    meta.status = "rejected"
                    meta.extra["rejected"] = reason
                    self._set_if(keys=[keys.versions], args=[written.version, raw, meta.to_json()])
        finally:
            written.release()
        serving = self.serving_version(written.view)
        return Promotion(written.view, written.version, Outcome.REJECTED, serving, serving, f"rejected: {reason}")

    def _write_batches(
        self,
        schema: OnlineSchema,
        version: int,
        batches: Iterable[pl.DataFrame],
        lease: Lease,
        written_ids: list[pl.Series] | None = None,
    ) -> int:
        ttl_ms = (schema.ttl_seconds or 0) * 1000
        keys = schema.keys
        writer = writer_for(self.r)
        rows = 0
        try:
            for batch in batches:
                for start in range(0, batch.height, BATCH):
                    if lease.lost:
                        raise OnlineStoreError(
                            f"view {schema.view!r}: version {version} lost its lease after {rows} keys; stopped"
                        )
                    part = batch.slice(start, BATCH)
                    nulls = part[schema.join_key].null_count()
                    if nulls:
                        raise OnlineStoreError(f"view {schema.view!r}: {nulls} rows have a null {schema.join_key!r}")
                    writer.write(keys.data_keys(version, part[schema.join_key]), part, schema.features, ttl_ms)
                    if written_ids is not None:
                        written_ids.append(part[schema.join_key].cast(pl.String))
                    rows += part.height
        finally:
            writer.close()
        return rows

    def _write_aliases(
        self,
        schema: OnlineSchema,
        version: int,
        aliases: Iterable[pl.DataFrame],
        lease: Lease,
        written_ids: list[pl.Series],
    ) -> int:
        """Write the alias keys of `version`, refusing any alias whose person has no data key in it."""
        ttl_ms = (schema.ttl_seconds or 0) * 1000
        persons = pl.concat(written_ids) if written_ids else pl.Series(schema.join_key, [], pl.String)
        writer = writer_for(self.r)
        rows = 0
        try:
            for frame in aliases:
                check_aliases(schema.view, frame, persons)
                for start in range(0, frame.height, BATCH):
                    if lease.lost:
                        raise OnlineStoreError(
                            f"view {schema.view!r}: version {version} lost its lease after {rows} alias keys; stopped"
                        )
                    part = frame.slice(start, BATCH)
                    keys = schema.keys.alias_keys(version, part["identifier_type"], part["identifier"])
                    writer.write_text(keys, part["person_id"].cast(pl.String), ttl_ms)
                    rows += part.height
        finally:
            writer.close()
        return rows

    # -- pointer flips: promotion, rollback, manual promotion, unpin -----------------------------------
    def _flip(
        self,
        view: str,
        version: int,
        mode: str,
        *,
        run_id: str = "",
        reason: str = "",
        by: str = "",
        unpin: bool = False,
        expected: str = "*",
    ) -> Promotion:
        keys = self.keys(view)
        args = [str(version), mode, run_id, reason, by, "1" if unpin else "0", expected, HISTORY_LIMIT]
        reply = self._flip_script(keys=[keys.current, keys.versions, keys.history, keys.pin], args=args)
        outcome, detail, pin_raw = Outcome(reply[0].decode()), reply[1].decode(), reply[2]
        pin = Pin.from_json(pin_raw) if pin_raw else None
        if outcome is Outcome.PROMOTED:
            previous = int(detail) if detail else None
            ended = pin is not None and mode != "rollback"
            text = "promoted" + (f"; the pin on version {pin.version} ended" if ended else "")
            return Promotion(view, version, outcome, version, previous, text, pin)
        if outcome is Outcome.NOT_WRITTEN:
            current = self.serving_version(view)
            return Promotion(view, version, outcome, current, current, f"version {version} is {detail}, not written")
        current = int(detail) if detail else None
        if outcome is Outcome.STALE:
            meta = self.meta(view, version)
            partition = meta.partition if meta else "?"
            text = f"partition {partition} is older than the serving one (or a newer push of it serves)"
        elif outcome is Outcome.PINNED:
            text = (
                f"view {view!r} is {pin.describe() if pin else 'pinned'}; version {version} was held back "
                f"(`fstore unpin {view}`, or `fstore promote {view} {version} --unpin` to serve it)"
            )
        elif outcome is Outcome.MISSING:
            text = f"view {view!r} has no version {version} (never written, or pruned)"
        elif outcome is Outcome.SERVING:
            text = f"version {version} serves already"
        else:
            text = f"the serving version moved to {current} meanwhile"
        return Promotion(view, version, outcome, current, current, text, pin)

    def rollback(
        self,
        view: str,
        to_version: int | None = None,
        *,
        ids_of: IdsOf,
        aliases_of: AliasesOf | None = None,
        by: str = "",
        reason: str = "",
        run_id: str = "",
    ) -> Promotion:
        """Serve again the version that served before the current one (or `to_version`), and pin the view.

        Only a version that served before (per the history) and is still `written` qualifies. Its keys'
        TTLs are refreshed first (ids from `ids_of`); if any key is gone, the rollback is refused."""
        for _attempt in range(3):
            current = self.serving_version(view)
            history = self.history(view)
            target = to_version if to_version is not None else self._previous_served(view, current, history)
            meta = self._check_target(view, target, current, history)
            refreshed = self._refresh_keys(meta, ids_of, aliases_of)
            expected = "" if current is None else str(current)
            promotion = self._flip(view, target, "rollback", run_id=run_id, reason=reason, by=by, expected=expected)
            if promotion.outcome is Outcome.MOVED:
                continue
            if not promotion.promoted:
                raise OnlineStoreError(f"view {view!r}: rollback to version {target} refused: {promotion.reason}")
            return Promotion(
                view, target, promotion.outcome, target, current, promotion.reason, self.pin(view), refreshed
            )
        raise OnlineStoreError(f"view {view!r}: the serving version kept moving during the rollback; try again")

    def promote_version(
        self,
        view: str,
        version: int,
        *,
        ids_of: IdsOf,
        aliases_of: AliasesOf | None = None,
        unpin: bool = False,
        by: str = "",
        reason: str = "",
        run_id: str = "",
    ) -> Promotion:
        """Serve a written version on purpose (e.g. one held back by a pin), never an older partition.

        With `unpin`, it also ends the pin, in the same step. Its keys' TTLs are refreshed first."""
        meta = self.meta(view, version)
        if meta is None or meta.status != "written":
            state = "missing" if meta is None else meta.status
            raise OnlineStoreError(f"view {view!r}: version {version} is {state}; only a written version can serve")
        pin = self.pin(view)
        if pin is not None and not unpin:
            raise OnlineStoreError(f"view {view!r} is {pin.describe()}; pass unpin (--unpin) to end the pin")
        refreshed = self._refresh_keys(meta, ids_of, aliases_of)
        promotion = self._flip(
            view, version, "manual", run_id=run_id, reason=reason or "promoted on purpose", by=by, unpin=unpin
        )
        return Promotion(
            view,
            version,
            promotion.outcome,
            promotion.serving_version,
            promotion.previous,
            promotion.reason,
            promotion.pin,
            refreshed,
        )

    def unpin(self, view: str, *, by: str = "", reason: str = "", run_id: str = "") -> Pin | None:
        """End the pin (recorded in the history); the pinned version serves until the next promotion."""
        keys = self.keys(view)
        raw = self._unpin(keys=[keys.pin, keys.history], args=[run_id, reason, by, HISTORY_LIMIT])
        return Pin.from_json(raw) if raw else None

    def _previous_served(self, view: str, current: int | None, history: list[HistoryEntry]) -> int:
        """The version that served before the current one came to serve (rollbacks pop, promotions push)."""
        stack: list[int] = []
        for entry in reversed(history):
            if entry.action is Action.PROMOTE:
                stack.append(entry.version)
            elif entry.action is Action.ROLLBACK:
                if entry.version in stack:
                    del stack[len(stack) - stack[::-1].index(entry.version) :]
                else:
                    stack.append(entry.version)
        earlier = [v for v in reversed(stack) if v != current]
        if not earlier:
            raise OnlineStoreError(
                f"view {view!r}: no earlier promoted version to roll back to (serving {current}; "
                f"history: {len(history)} entries)"
            )
        return earlier[0]

    def _check_target(self, view: str, target: int, current: int | None, history: list[HistoryEntry]) -> VersionMeta:
        if target == current:
            raise OnlineStoreError(f"view {view!r}: version {target} serves already")
        meta = self.meta(view, target)
        if target not in served_versions(history):
            what = f"it is {meta.status}, partition {meta.partition}" if meta else "no such version"
            raise OnlineStoreError(
                f"view {view!r}: version {target} never served ({what}); a rollback only goes back to a version "
                f"that served: {[v for v in served_versions(history) if v != current]}"
            )
        if meta is None:
            raise OnlineStoreError(f"view {view!r}: version {target} is no longer kept (it was pruned)")
        if meta.status != "written":
            raise OnlineStoreError(
                f"view {view!r}: version {target} is {meta.status}; only a written version can serve"
            )
        return meta

    def _refresh_keys(self, meta: VersionMeta, ids_of: IdsOf, aliases_of: AliasesOf | None = None) -> int:
        """Restart the TTL of every key of `meta` (PEXPIRE per key), or refuse naming what is missing.
        A person-keyed version's alias keys too: it cannot serve again with aliases gone."""
        alive = self._refresh_data_keys(meta, ids_of)
        if meta.aliases is not None:
            self._refresh_alias_keys(meta, aliases_of)
        return alive

    def _refresh_alias_keys(self, meta: VersionMeta, aliases_of: AliasesOf | None) -> None:
        view, version = meta.schema.view, meta.version
        if aliases_of is None:
            raise OnlineStoreError(
                f"view {view!r}: version {version} serves by alias; its alias keys cannot be checked without "
                "the alias map it was written from (pass aliases_of)"
            )
        ttl_ms = (meta.schema.ttl_seconds or 0) * 1000
        total = alive = 0
        for frame in aliases_of(meta):
            keys = meta.schema.keys.alias_keys(version, frame["identifier_type"], frame["identifier"]).to_list()
            for start in range(0, len(keys), CHUNK):
                found = self._touch(keys[start : start + CHUNK], ttl_ms)
                alive += sum(found)
                total += len(found)
        expected = int(meta.aliases.get("rows", 0)) if meta.aliases else 0
        if alive < total or total != expected:
            raise OnlineStoreError(
                f"view {view!r}: version {version} cannot serve again: {total - alive} of {total} alias keys are "
                f"gone (it was written with {expected})"
            )

    def _touch(self, keys: list[str], ttl_ms: int) -> list[int]:
        """Per key, 1 if it exists; with a TTL, its expiry restarts (one pipelined round trip)."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            if ttl_ms:
                pipe.pexpire(key, ttl_ms)
            else:
                pipe.exists(key)
        return [int(x) for x in pipe.execute()]

    def _refresh_data_keys(self, meta: VersionMeta, ids_of: IdsOf) -> int:
        view, version = meta.schema.view, meta.version
        ttl_ms = (meta.schema.ttl_seconds or 0) * 1000
        keys_of = meta.schema.keys
        total = alive = 0
        missing: list[Any] = []
        for batch in ids_of(meta):
            keys = keys_of.data_keys(version, batch).to_list()
            ids = batch.to_list()
            for start in range(0, len(keys), CHUNK):
                found = self._touch(keys[start : start + CHUNK], ttl_ms)
                alive += sum(found)
                total += len(found)
                if len(missing) < 5:
                    missing += [i for i, ok in zip(ids[start : start + CHUNK], found, strict=True) if not ok][:5]
        if total == 0 and meta.rows:
            raise OnlineStoreError(
                f"view {view!r}: version {version} cannot serve again: the Delta partition it was written from "
                f"({meta.delta_table} v{meta.delta_version}, {meta.partition}) is gone, so its keys cannot be checked"
            )
        # Views of people: a subject revoked or erased since the push is left out by `ids_of` (its keys
        # are gone on purpose), so fewer ids than were written is expected; more never is.
        shrunk = total < meta.rows and meta.schema.purposes is None
        if alive < total or total > meta.rows or shrunk:
            ttl = meta.schema.ttl_seconds
            raise OnlineStoreError(
                f"view {view!r}: version {version} cannot serve again: {total - alive} of {total} keys are gone "
                f"(expired after the online TTL of {ttl}s, or deleted), e.g. ids {missing[:5]}"
                + (f"; it was written with {meta.rows} keys" if total != meta.rows else "")
            )
        return alive

    # -- pruning --------------------------------------------------------------------------------------
    def retention(self, view: str) -> dict[int, str]:
        """The versions a prune keeps now, and why."""
        return self._retention(self.versions(view), self.serving_version(view), self.pin(view), self.history(view))

    def _retention(
        self, metas: dict[int, VersionMeta], current: int | None, pin: Pin | None, history: list[HistoryEntry]
    ) -> dict[int, str]:
        keep: dict[int, str] = {}
        for v in served_versions(history)[: self.versions_kept]:
            keep[v] = "served recently"
        if current is not None:
            keep[current] = "serving"
        if pin is not None:
            keep[pin.version] = "pinned"
            held = next((e.version for e in history if e.action is Action.HELD), None)
            if held is not None and held in metas and metas[held].status == "written":
                keep.setdefault(held, "newest push held back by the pin")
        rejected = [v for v, m in metas.items() if m.status == "rejected"]
        if rejected:
            keep.setdefault(max(rejected), "newest rejected, for inspection")
        return keep

    def prune(self, view: str, ids_of: IdsOf, aliases_of: AliasesOf | None = None) -> Pruned:
        """Remove every version the retention does not keep: older served ones beyond `versions_kept`,
        never-served ones (backfills, rejected but the newest), dead pushes, half-deleted versions.

        Never SCAN: keys are recomputed from `ids_of`. Each version is marked `deleting` first (refused if
        it serves, is pinned or its push is alive), then its keys are unlinked, then it is forgotten."""
        keys = self.keys(view)
        raws = self._raw_versions(view)
        metas = {v: VersionMeta.from_json(raw) for v, raw in raws.items()}
        keep = self._retention(metas, self.serving_version(view), self.pin(view), self.history(view))
        removed: dict[int, int] = {}
        skipped: dict[int, str] = {}
        for version, meta in metas.items():
            if version in keep:
                continue
            if meta.status != "deleting":
                meta.status = "deleting"
                meta.extra["deleting_since"] = time.time()
                marked = self._mark_deleting(
                    keys=[keys.current, keys.versions, keys.pin, keys.lease(version)],
                    args=[version, raws[version], meta.to_json()],
                ).decode()
                if marked != "ok":
                    skipped[version] = {"leased": "its push is alive"}.get(marked, marked)
                    continue
            removed[version] = self._remove(meta, ids_of, aliases_of)
        return Pruned(view, removed, {v: why for v, why in keep.items() if v in metas}, skipped)

    def _remove(self, meta: VersionMeta, ids_of: IdsOf, aliases_of: AliasesOf | None = None) -> int:
        """Unlink the keys of a version marked `deleting` (its alias keys first: an alias must never name a
        person whose key is gone while the version exists), then forget it. Without `aliases_of`, alias
        keys expire by their TTL."""
        keys = meta.schema.keys
        if self.r.get(keys.current) == str(meta.version).encode():  # cannot happen: a deleting version never serves
            raise OnlineStoreError(f"view {meta.schema.view!r}: version {meta.version} serves; not deleting it")
        if meta.aliases is not None and aliases_of is not None:
            self._unlink_aliases(meta, aliases_of(meta))
        deleted = self._unlink(meta, ids_of(meta))
        self._forget(keys=[keys.versions], args=[meta.version])
        return deleted

    def _unlink(self, meta: VersionMeta, ids: Iterable[pl.Series]) -> int:
        keys_of = meta.schema.keys
        return self._unlink_keys(keys_of.data_keys(meta.version, batch).to_list() for batch in ids)

    def _unlink_aliases(self, meta: VersionMeta, aliases: Iterable[pl.DataFrame]) -> int:
        keys_of = meta.schema.keys
        return self._unlink_keys(
            keys_of.alias_keys(meta.version, f["identifier_type"], f["identifier"]).to_list() for f in aliases
        )

    def _unlink_keys(self, batches: Iterable[list[str]]) -> int:
        deleted = 0
        for keys in batches:
            for start in range(0, len(keys), CHUNK):
                if self.cluster:
                    pipe = self.r.pipeline(transaction=False)
                    for k in keys[start : start + CHUNK]:
                        pipe.unlink(k)
                    deleted += sum(pipe.execute())
                else:
                    deleted += self.r.unlink(*keys[start : start + CHUNK])
        return deleted

    def remove_namespace_copy(
        self, view: str, namespace: str, ids_of: IdsOf, aliases_of: AliasesOf | None = None
    ) -> bool:
        """Remove everything of `view` in `namespace`, which is no longer its own (its sensitivity moved it):
        the pointer first, so it stops being readable there at once, then each version's keys (from
        `ids_of`), then the control keys. Re-entrant: a killed removal is finished by the next call.
        Returns whether there was anything to remove."""
        keys = ViewKeys(namespace, view)
        control = [keys.current, keys.versions, keys.seq, keys.history, keys.pin]
        if not any(self.r.exists(k) for k in control):
            return False
        self.r.delete(keys.current)
        for version, raw in self._raw_versions_of(keys).items():
            meta = VersionMeta.from_json(raw)
            if meta.aliases is not None and aliases_of is not None:
                self._unlink_aliases(meta, aliases_of(meta))
            self._unlink(meta, ids_of(meta))
            self.r.delete(keys.lease(version))
            self.r.hdel(keys.versions, str(version))
        for key in control:  # one by one: same slot, but no multi-key command needed
            self.r.delete(key)
        return True

    def _raw_versions_of(self, keys: ViewKeys) -> dict[int, bytes]:
        return {int(k): v for k, v in self.r.hgetall(keys.versions).items()}

    # -- privacy: deny hashes and subject removal ------------------------------------------------------
    def set_deny(self, entity: str, subject: str, entry: str | None) -> None:
        """Set (or clear, with None) a subject's entry in its entity's deny hash (`layout.deny_key`)."""
        key = deny_key(entity)
        if entry is None:
            self.r.hdel(key, subject)
        else:
            self.r.hset(key, subject, entry)

    def deny_entries(self, entity: str, subjects: list[str]) -> list[str | None]:
        """Each subject's deny entry (None: not denied), read in chunks."""
        out: list[str | None] = []
        key = deny_key(entity)
        for start in range(0, len(subjects), CHUNK * 10):
            chunk = subjects[start : start + CHUNK * 10]
            out += [v.decode() if v is not None else None for v in self.r.hmget(key, chunk)]
        return out

    def remove_subject(
        self,
        entity: str,
        subject: Any,
        purposes: set[str] | None = None,
        identifiers: Iterable[tuple[str, str]] = (),
    ) -> int:
        """Unlink a subject's keys in every version (served, kept, being written) of every view of
        `entity` in every namespace, limited to views serving one of `purposes` (None: all of them).
        A person's `identifiers` ((type, identifier) pairs from the alias map) lose their alias keys too.
        Keys are computed from each view's versions hash, never scanned; data keys share the subject's slot."""
        views = [
            s
            for s in self.layout.values()
            if s.entity == entity and (purposes is None or set(s.purposes or ()) & purposes)
        ]
        targets = [ViewKeys(ns, s.view) for s in views for ns in NAMESPACES]
        pipe = self.r.pipeline(transaction=False)
        for keys in targets:
            pipe.hkeys(keys.versions)
        listed = list(zip(targets, pipe.execute(), strict=True))
        keys_to_unlink = [keys.data_key(int(v), subject) for keys, versions in listed for v in versions]
        aliases = [
            keys.alias_key(int(v), kind, identifier)
            for kind, identifier in identifiers
            for keys, versions in listed
            for v in versions
        ]
        if not keys_to_unlink and not aliases:
            return 0
        if self.cluster or aliases:  # alias keys are tagged by identifier, not by the subject; they go first,
            # so no reader resolves an alias to a person whose features are already gone
            return sum(self.r.unlink(k) for k in aliases + keys_to_unlink)
        return self.r.unlink(*keys_to_unlink)  # one command: the keys share the subject's hash slot

    def erase_subject(self, view: str, entity_id: Any, identifiers: Iterable[tuple[str, str]] = ()) -> int:
        """Delete one subject's keys in every kept version of a view: keys are computed, not scanned.
        A person's `identifiers` ((type, identifier) pairs from the alias map) lose their alias keys too."""
        keys_of = self.keys(view)
        versions = list(self.versions(view))
        deleted = 0
        for kind, identifier in identifiers:  # alias keys first (tagged by identifier: one command each), so
            aliases = [keys_of.alias_key(v, kind, identifier) for v in versions]  # none outlives the features
            deleted += self.r.unlink(*aliases) if aliases else 0
        keys = [keys_of.data_key(v, entity_id) for v in versions]
        return deleted + (self.r.unlink(*keys) if keys else 0)  # one command: the keys share the entity's slot


def served_versions(history: list[HistoryEntry]) -> list[int]:
    """Distinct versions that served, most recently served first."""
    seen: dict[int, None] = {}
    for entry in history:
        if entry.action in SERVED:
            seen.setdefault(entry.version, None)
    return list(seen)


def check_aliases(view: str, frame: pl.DataFrame, persons: pl.Series) -> None:
    """An alias batch must name each (type, identifier) once, with no nulls, a key-safe type, and only
    persons written in the version: a reader never resolves an alias to a person with no features."""
    missing = [c for c in ALIAS_COLUMNS if c not in frame.columns]
    if missing:
        raise OnlineStoreError(f"view {view!r}: the alias frame lacks columns {missing} (has {frame.columns})")
    for column in ALIAS_COLUMNS:
        nulls = frame[column].null_count()
        if nulls:
            raise OnlineStoreError(f"view {view!r}: {nulls} aliases have a null {column!r}")
    bad_types = [t for t in frame["identifier_type"].unique().sort().to_list() if not IDENTIFIER_TYPE.match(str(t))]
    if bad_types:
        raise OnlineStoreError(
            f"view {view!r}: identifier types {bad_types[:5]} are not valid in keys (lower case, digits, `_`)"
        )
    dup = frame.filter(pl.struct("identifier_type", "identifier").is_duplicated())
    if dup.height:
        examples = dup.sort("identifier_type", "identifier").head(5).rows()
        raise OnlineStoreError(
            f"view {view!r}: {dup.height} alias rows name an identifier more than once (one person each), "
            f"e.g. {examples}"
        )
    orphans = frame.filter(~pl.col("person_id").cast(pl.String).is_in(persons.implode()))
    if orphans.height:
        examples = orphans.sort("identifier_type", "identifier").head(5).rows()
        raise OnlineStoreError(
            f"view {view!r}: {orphans.height} aliases name a person with no row in this version, e.g. {examples}"
        )
