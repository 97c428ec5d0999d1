"""The serving client: a feature service's (or a view's) features for many entities in one round trip.

It needs only Redis: each version's metadata carries the schema, so the client decodes values without
the catalog, exactly as a reader in another language would (docs/online-key-spec.md). It caches the
serving version of each view and validates the cache in the same MGET that reads the data: the pointer
keys come first, and if one moved the read is repeated once with the new versions. Every row of a read
comes from one complete version of each view, and never from a version being deleted (a prune refuses
to delete the serving version, and the pointer is read with the data).

It runs as a read-only ACL user: it connects lazily and sends only GET, MGET, HGET and EXISTS. Reads
have short deadlines, and a circuit breaker fails fast while Redis is down, then recovers by itself.
Errors name the Redis address (host:port), never the password.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgpack
import redis

from feature_pipelines.catalog import Catalog
from feature_pipelines.contract import ContractError, mismatches
from feature_pipelines.entity_keys import EntityKeyError, normalize_ids
from feature_pipelines.online.breaker import CircuitBreaker
from feature_pipelines.online.codec import value_converter
from feature_pipelines.online.connection import address, is_cluster, serving_connection
from feature_pipelines.online.errors import EntityIdError, OnlineStoreError, RedisUnavailable
from feature_pipelines.online.layout import (
    ALIAS_FUNCTION,
    IDENTIFIER_TYPE,
    NAMESPACES,
    OnlineLayout,
    OnlineSchema,
    ViewKeys,
    deny_blocks,
    deny_key,
)
from feature_pipelines.online.store import VersionMeta


class FeatureRow(tuple):
    """One entity's features: an immutable mapping from feature name to typed value (None when missing).

    `row["spend_7d"]`, `row.get(...)`, `dict(row)`, `row.to_dict()` and `row == {...}` work as for a dict.
    It is a tuple underneath, so decoding 100 entities builds 100 small objects, not 100 dicts.
    """

    __slots__ = ()
    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def __iter__(self):  # iterate names, like a mapping
        return iter(self._names)

    def __contains__(self, key: object) -> bool:  # type: ignore[override]
        return key in self._index

    def keys(self) -> tuple[str, ...]:
        return self._names

    def values(self) -> tuple[Any, ...]:
        return tuple(tuple.__iter__(self))

    def items(self):
        return zip(self._names, tuple.__iter__(self), strict=True)

    def get(self, key: str, default: Any = None) -> Any:
        i = self._index.get(key)
        return default if i is None else tuple.__getitem__(self, i)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self.to_dict() == dict(other.items())
        return NotImplemented

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return repr(self.to_dict())


Mapping.register(FeatureRow)


@cache
def row_type(names: tuple[str, ...]) -> type[FeatureRow]:
    return type(
        "FeatureRow", (FeatureRow,), {"__slots__": (), "_names": names, "_index": {n: i for i, n in enumerate(names)}}
    )


_INTEGER_DTYPES = frozenset({"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64"})
_DECIMAL = re.compile(r"(0|-?[1-9][0-9]*)\Z")
"""An integer as it appears in keys: no sign but `-`, no leading zeros, no spaces or underscores."""

IdConverter = Callable[[Sequence[Any]], Sequence[Any]]


def _id_converter(view: str, key_dtype: str | None) -> IdConverter:
    """How the ids of `view` become the ids in its keys: the one place that decides it.

    Integral keys take ints, integral floats (12352.0 -> 12352) and canonical decimal strings; a
    non-integral float, a bool or any other string is an error naming the view, the id and the dtype.
    String keys take strings only (85123 is not "085123"). Metadata written before `key_dtype` was
    recorded takes ints and strings as they are. None stays None (no entity: its features read as null).
    """

    def wrong(i: Any, expected: str) -> EntityIdError:
        return EntityIdError(f"view {view!r}: id {i!r} ({type(i).__name__}) is not a valid key: expected {expected}")

    if key_dtype in _INTEGER_DTYPES:

        def integral(i: Any) -> Any:
            if i is None:
                return None
            if isinstance(i, bool) or type(i).__name__ == "bool_":
                raise wrong(i, key_dtype)
            whole = isinstance(i, numbers.Integral) or (isinstance(i, numbers.Real) and float(i).is_integer())
            if not (whole or (isinstance(i, str) and _DECIMAL.match(i))):
                raise wrong(i, key_dtype)
            value = int(i)
            if value < 0 and key_dtype.startswith("U"):
                raise wrong(i, key_dtype)
            return value

        def to_int(ids: Sequence[Any]) -> Sequence[Any]:
            if all(type(i) is int for i in ids) and not key_dtype.startswith("U"):
                return ids
            return [integral(i) for i in ids]

        return to_int

    if key_dtype == "String":

        def to_str(ids: Sequence[Any]) -> Sequence[Any]:
            if all(type(i) is str for i in ids):
                return ids
            for i in ids:
                if i is not None and not isinstance(i, str):
                    raise wrong(i, "String")
            return ids

        return to_str

    def legacy(ids: Sequence[Any]) -> Sequence[Any]:
        for i in ids:
            if i is not None and (isinstance(i, bool) or not isinstance(i, int | str)):
                raise wrong(i, f"an int or a str ({key_dtype or 'key dtype not recorded'})")
        return ids

    return legacy


@dataclass(frozen=True)
class _Served:
    version: int
    schema: OnlineSchema
    prefix: str
    converters: list[Any]
    pointer: str
    version_bytes: bytes
    row: type[FeatureRow]
    plain: bool  # no value needs converting after msgpack (no timestamps, dates or vectors)
    ids: IdConverter
    deny: str | None = None  # the entity's deny hash, for views of people (read with the data)


@dataclass(frozen=True)
class AliasRead:
    """What `get_by_alias` returns: the person's features, and the person each view resolved the alias to."""

    features: FeatureRow
    persons: dict[str, str | None]
    """Per view: the person id (None: the alias is unknown in that view's serving version). Each view
    resolves with the aliases of its own serving version, so after a merge pushed to one view and not yet
    to another they may differ for a while."""

    @property
    def person_id(self) -> str | None:
        """The person the identifier resolved to (the first view's that knows it), None if none does."""
        return next((p for p in self.persons.values() if p is not None), None)


class OnlineClient:
    """Reads features from Redis, keyed by view name.

    `catalog` gives the layout (each view's namespace) and resolves feature services by name; without it
    the client finds a view's namespace in Redis, as a reader that only knows the key spec would.

    Given a URL, it connects lazily with the serving deadlines (`FS_SERVING_CONNECT_TIMEOUT`,
    `FS_SERVING_TIMEOUT`, seconds) unless `connect_timeout` / `timeout` are given; given a client, it uses
    that client's. The circuit breaker (`FS_SERVING_BREAKER_FAILURES`, `FS_SERVING_BREAKER_COOLDOWN`)
    guards every Redis call either way."""

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        catalog: Catalog | None = None,
        layout: OnlineLayout | None = None,
        *,
        connect_timeout: float | None = None,
        timeout: float | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        settings = None
        if breaker is None or (isinstance(url_or_client, str) and (connect_timeout is None or timeout is None)):
            from feature_pipelines.settings import Settings

            settings = Settings()
        if isinstance(url_or_client, str):
            self.r = serving_connection(
                url_or_client,
                connect_timeout if connect_timeout is not None else settings.serving_connect_timeout,
                timeout if timeout is not None else settings.serving_timeout,
            )
        else:
            self.r = url_or_client
        self.address = address(self.r)
        self.breaker = breaker or CircuitBreaker(settings.serving_breaker_failures, settings.serving_breaker_cooldown)
        self.catalog = catalog
        self.layout = layout or (OnlineLayout.from_catalog(catalog) if catalog is not None else None)
        self._served: dict[str, _Served] = {}
        self._keys: dict[str, ViewKeys] = {}
        self._contracts: dict[str, dict[str, dict[str, str]]] = {}
        self._honoured: set[tuple[str, str, int]] = set()  # (service, view, serving version) checked
        self._cluster = is_cluster(self.r)

    # -- public API ---------------------------------------------------------------------------------
    def get_view(self, view: str, ids: Sequence[Any]) -> list[FeatureRow]:
        """One row per id (in order), features by name; all None for unknown or expired ids."""
        ids = self._entity_ids(view, ids)
        served = self._served.get(view)
        if served is not None and served.plain and not self._cluster:
            # Fast path: one MGET with the version pointer first; valid unless the pointer moved. A view of
            # people also reads its subjects' deny entries, in the same round trip.
            prefix = served.prefix
            key_ids = served.ids(ids)
            if None not in key_ids:
                self.breaker.before(self.address)
                try:
                    mget = ("MGET", served.pointer, *[f"{prefix}{i}}}" for i in key_ids])
                    if served.deny is None:
                        values, denied = self.r.execute_command(*mget), None
                    else:
                        pipe = self.r.pipeline(transaction=False)
                        pipe.execute_command(*mget)
                        pipe.execute_command("HMGET", served.deny, *key_ids)
                        values, denied = pipe.execute()
                except _UNREACHABLE as exc:
                    raise self._unreachable(exc) from exc
                except redis.ResponseError as exc:
                    raise self._refused(exc) from exc
                self.breaker.success()
                if values[0] == served.version_bytes:
                    data = values[1:]
                    if denied is not None and any(denied):
                        data = _withhold(data, denied, served.schema.purposes)
                    return _decode_plain(served, data)
        return self._read([(view, list(ids), None)], len(ids))

    def get_by_alias(self, view_or_service: str, identifier_type: str, identifier: str | int) -> AliasRead:
        """A person-keyed view's (or feature service's) features for whoever `identifier` belongs to, e.g.
        `get_by_alias("person_profile", "anonymous_id", "a-7f3c")`: one round trip, in which Redis resolves
        the alias in the serving version and reads that person's features (`FCALL_RO fs_get_by_alias`).
        An unknown alias reads as all None, with person None. In a Redis Cluster the alias and the person's
        key live on different slots: the client reads them one after the other (docs/online-key-spec.md)."""
        if not isinstance(identifier_type, str) or not IDENTIFIER_TYPE.match(identifier_type):
            raise EntityIdError(f"identifier type {identifier_type!r} is not valid (e.g. 'anonymous_id', 'device_id')")
        if isinstance(identifier, bool) or not isinstance(identifier, str | numbers.Integral):
            raise EntityIdError(
                f"identifier {identifier!r} ({type(identifier).__name__}) is not valid: expected a str (or an int)"
            )
        ident = str(int(identifier)) if isinstance(identifier, numbers.Integral) else identifier
        service = None
        if self.catalog is not None and view_or_service in self.catalog.services:
            service = view_or_service
            reads = self._service_alias_reads(service)
        else:
            reads = [(view_or_service, None)]
        keys = [self.keys(view) for view, _ in reads]
        if self._cluster:
            replies = self._alias_steps(reads, keys, identifier_type, ident)
        else:
            args = [ALIAS_FUNCTION, len(keys), *[k.current for k in keys], identifier_type, ident]
            for k in keys:
                args += [k.namespace, k.view]
            replies = self._call_function(*args)
        served, values, persons = [], [], {}
        for (view, _), (version, person, value) in zip(reads, replies, strict=True):
            if version is None:
                raise OnlineStoreError(f"view {view!r} has no serving version in Redis at {self.address}")
            served.append(self._served_at(view, int(version)))
            values.append(value)
            persons[view] = person.decode() if person is not None else None
        row = self._decode([(view, [None], wanted) for view, wanted in reads], served, values, 1)[0]
        if service is not None:
            self._check_contract(service)
        return AliasRead(row, persons)

    def _service_alias_reads(self, service: str) -> list[tuple[str, list[str] | None]]:
        """The views of `service` and the features wanted from each; all must be keyed by one entity."""
        wanted: dict[str, list[str]] = {}
        for ref in self.catalog.resolve_service(service):  # type: ignore[union-attr]
            wanted.setdefault(ref.view.deployed_name, []).append(ref.feature)
        keys = {v: self.catalog.entity_of(self.catalog.views[v]).join_key for v in wanted}  # type: ignore[union-attr]
        if len(set(keys.values())) > 1:
            raise ValueError(
                f"feature service {service!r} reads views keyed by different entities ({keys}); only one "
                "person-keyed entity is served by alias"
            )
        return list(wanted.items())

    def _call_function(self, *args: Any) -> list[list[Any]]:
        try:
            return self._call(self.r.execute_command, "FCALL_RO", *args)
        except OnlineStoreError as exc:
            if "function not found" in str(exc.__cause__).lower():
                raise OnlineStoreError(
                    f"Redis at {self.address} has no function {ALIAS_FUNCTION!r}: no push has written alias keys "
                    "there yet (the store loads the library with the first person-keyed push)"
                ) from exc
            raise

    def _alias_steps(
        self, reads: list[tuple[str, list[str] | None]], keys: list[ViewKeys], identifier_type: str, ident: str
    ) -> list[list[Any]]:
        """Redis Cluster: the alias, then the person's key, then the pointer again (a version still serving
        after the read was not being deleted during it). Two to three round trips per view."""
        out = []
        for (view, _), k in zip(reads, keys, strict=True):
            for _attempt in range(3):
                served = self._served.get(view) or self._refresh(view)
                person = self._call(self.r.get, k.alias_key(served.version, identifier_type, ident))
                value = None
                if person is not None:
                    value = self._call(self.r.get, k.data_key(served.version, person.decode()))
                if self._call(self.r.get, k.current) == served.version_bytes:
                    out.append([served.version_bytes, person, value])
                    break
                self._served.pop(view, None)
            else:
                raise OnlineStoreError(f"view {view!r}: the serving version kept changing during the read; retry")
        return out

    def _served_at(self, view: str, version: int) -> _Served:
        """The decoding of `version` of `view`, which served at the read: cached, else its metadata."""
        served = self._served.get(view)
        if served is not None and served.version == version:
            return served
        keys = self.keys(view)
        raw = self._call(self.r.hget, keys.versions, str(version))
        if raw is None:
            raise OnlineStoreError(f"view {view!r}: serving version {version} has no metadata")
        served = self._served[view] = self._served_from(VersionMeta.from_json(raw), keys)
        return served

    def get_version(self, view: str, version: int, ids: Sequence[Any]) -> list[FeatureRow]:
        """A given version of a view, served or not (for checks and audits, not for serving)."""
        keys = self.keys(view)
        raw = self._call(self.r.hget, keys.versions, str(version))
        if raw is None:
            raise OnlineStoreError(f"view {view!r} has no version {version} in Redis at {self.address}")
        served = self._served_from(VersionMeta.from_json(raw), keys)
        values = self._mget(_data_keys(served, ids))
        # Deleting is final: unless the version is being deleted now, its keys were all there for the MGET.
        after = self._call(self.r.hget, keys.versions, str(version))
        if after is None or VersionMeta.from_json(after).status == "deleting":
            raise OnlineStoreError(f"view {view!r}: version {version} is being deleted (Redis at {self.address})")
        return self._decode([(view, list(ids), None)], [served], values, len(ids))

    def get_service(self, service: str, entities: dict[str, Sequence[Any]]) -> list[FeatureRow]:
        """Features of a feature service for aligned entity rows, e.g. `{"customer_id": [...]}`."""
        if self.catalog is None:
            raise ValueError("resolving a feature service needs the catalog: OnlineClient(url, catalog)")
        refs = self.catalog.resolve_service(service)
        lengths = {len(v) for v in entities.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"entity columns must have the same length, got { {k: len(v) for k, v in entities.items()} }"
            )
        n = lengths.pop()
        wanted: dict[str, list[str]] = {}
        for ref in refs:
            wanted.setdefault(ref.view.deployed_name, []).append(ref.feature)
        reads = []
        for view_name, feats in wanted.items():
            key = self.catalog.entity_of(self.catalog.views[view_name]).join_key
            if key not in entities:
                raise ValueError(f"feature service {service!r} needs {key!r} ids (for view {view_name!r})")
            reads.append((view_name, list(self._entity_ids(view_name, entities[key])), feats))
        rows = self._read(reads, n)
        self._check_contract(service)
        return rows

    def _entity_ids(self, view: str, ids: Sequence[Any]) -> Sequence[Any]:
        """With a catalog, ids follow their entity's key rules as at ingest (`" 85123a "` reads `85123A`;
        a negative customer id or a full-width stock code is an error, never another key)."""
        if self.catalog is None or view not in self.catalog.views:
            return ids
        entity = self.catalog.entity_of(self.catalog.views[view])
        if not (entity.normalize or entity.pattern or entity.min is not None or entity.max is not None):
            return ids
        typed = _id_converter(view, str(entity.polars_dtype))(ids)  # a wrong type is named as such first
        try:
            return normalize_ids(entity, typed, f"view {view!r}: ids")
        except EntityKeyError as exc:
            raise EntityIdError(str(exc)) from exc

    def _check_contract(self, service: str) -> None:
        """Refuse a serving version whose dtypes differ from the service's contract; checked once per
        serving version, so the serving path pays a set lookup per view."""
        contract = self._contracts.get(service)
        if contract is None:
            contract = self._contracts[service] = self.catalog.contract(service)  # type: ignore[union-attr]
        for view, expected in contract.items():
            served = self._served.get(view) or self._refresh(view)
            if (service, view, served.version) in self._honoured:
                continue
            deployed = dict(zip(served.schema.features, served.schema.dtypes, strict=True))
            problems = mismatches(
                service, view, expected, deployed, f"serving version {served.version} in Redis at {self.address}"
            )
            if problems:
                raise ContractError("; ".join(problems))
            self._honoured.add((service, view, served.version))

    def keys(self, view: str) -> ViewKeys:
        """The keys of `view`: from the layout, else found in Redis (the namespace holding its pointer)."""
        if view in self._keys:
            return self._keys[view]
        if self.layout is not None and view in self.layout:
            keys = self.layout.keys_of(view)
        else:
            keys, denied = None, []
            for ns in NAMESPACES:
                candidate = ViewKeys(ns, view)
                try:
                    if self._call(self.r.exists, candidate.current):
                        keys = candidate
                        break
                except OnlineStoreError as exc:
                    cause = exc.__cause__
                    if not (isinstance(cause, redis.exceptions.NoPermissionError) and "key" in str(cause).lower()):
                        raise
                    denied.append(ns)  # this user may not read that namespace: the view is not its to read
            if keys is None:
                note = f" (no permission on namespace {', '.join(denied)})" if denied else ""
                raise OnlineStoreError(f"view {view!r} has no serving version in Redis at {self.address}{note}")
        self._keys[view] = keys
        return keys

    # -- internals ----------------------------------------------------------------------------------
    def _unreachable(self, exc: Exception) -> RedisUnavailable:
        self.breaker.failure(exc)
        return RedisUnavailable(f"cannot reach Redis at {self.address}: {exc}")

    def _refused(self, exc: Exception) -> OnlineStoreError:
        self.breaker.success()  # Redis answered
        return OnlineStoreError(f"Redis at {self.address} refused the read: {exc}")

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """One Redis call behind the circuit breaker, its errors naming the address."""
        self.breaker.before(self.address)
        try:
            result = method(*args)
        except _UNREACHABLE as exc:
            raise self._unreachable(exc) from exc
        except redis.ResponseError as exc:
            raise self._refused(exc) from exc
        self.breaker.success()
        return result

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        if self._cluster:
            return self._call(self.r.mget_nonatomic, keys)
        return self._call(self.r.execute_command, "MGET", *keys) if keys else []

    def _refresh(self, view: str) -> _Served:
        keys = self.keys(view)
        current = self._call(self.r.get, keys.current)
        if current is None:
            raise OnlineStoreError(f"view {view!r} has no serving version in Redis at {self.address}")
        raw = self._call(self.r.hget, keys.versions, current)
        if raw is None:
            raise OnlineStoreError(f"view {view!r}: serving version {current.decode()} has no metadata")
        served = self._served_from(VersionMeta.from_json(raw), keys)
        self._served[view] = served
        return served

    def _served_from(self, meta: VersionMeta, keys: ViewKeys) -> _Served:
        fallback = self.layout[meta.schema.view].key_dtype if self.layout and meta.schema.view in self.layout else None
        return _served_from(meta, keys, fallback)

    def _read(self, reads: list[tuple[str, list[Any], list[str] | None]], n: int) -> list[FeatureRow]:
        for _attempt in range(3):
            served = [self._served.get(v) or self._refresh(v) for v, _, _ in reads]
            pointers = [s.pointer for s in served]
            keys = [k for s, (_, ids, _) in zip(served, reads, strict=True) for k in _data_keys(s, ids)]
            queries = _deny_queries(reads, served)
            if self._cluster:
                # Pointers after the data: if a pointer still names the version, it was not being deleted
                # while its keys were read (a version being deleted never serves again).
                values = self._mget(keys)
                current = self._mget(pointers)
                entries = [self._call(self.r.hmget, key, list(ids)) for key, ids in queries]
            else:  # one round trip: the MGET and each personal entity's deny entries, pipelined
                both, *entries = self._pipeline([("MGET", *pointers, *keys)] + [("HMGET", k, *i) for k, i in queries])
                current, values = both[: len(pointers)], both[len(pointers) :]
            values = _withhold_denied(reads, served, values, dict(zip(queries, entries, strict=True)))
            stale = [
                v for (v, _, _), s, p in zip(reads, served, current, strict=True) if p is None or int(p) != s.version
            ]
            if not stale:
                return self._decode(reads, served, _with_absent(reads, served, values), n)
            for view in stale:
                self._served.pop(view, None)
        raise OnlineStoreError("serving versions kept changing during the read; retry")

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands in one round trip, behind the circuit breaker."""
        if len(commands) == 1:
            return [self._call(self.r.execute_command, *commands[0])]

        def run() -> list[Any]:
            pipe = self.r.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return pipe.execute()

        return self._call(run)

    @staticmethod
    def _decode(reads, served: list[_Served], values: list[bytes | None], n: int) -> list[FeatureRow]:
        unpack = msgpack.unpackb
        if len(reads) == 1 and reads[0][2] is None and served[0].plain:
            return _decode_plain(served[0], values)
        columns: list[list[Any]] = [[] for _ in range(n)]
        out_names: list[str] = []
        pos = 0
        for (_view, _ids, wanted), s in zip(reads, served, strict=True):
            names = s.schema.features
            convs = s.converters
            # A feature the serving version does not have yet (added since its push) reads as None.
            pick = list(range(len(names))) if wanted is None else [names.index(f) if f in names else -1 for f in wanted]
            out_names += list(names) if wanted is None else list(wanted)
            needs_conv = any(j >= 0 and convs[j] is not None for j in pick)
            nulls = [None] * len(pick)
            for i in range(n):
                blob = values[pos + i]
                if blob is None:
                    columns[i] += nulls
                    continue
                vals = unpack(blob)
                picked = [vals[j] if j >= 0 else None for j in pick]
                if needs_conv:
                    picked = [
                        convs[j](v) if j >= 0 and convs[j] is not None else v for j, v in zip(pick, picked, strict=True)
                    ]
                columns[i] += picked
            pos += n
        row = row_type(tuple(out_names))
        return [row(values_) for values_ in columns]


_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException, OSError)


def _data_keys(served: _Served, ids: Sequence[Any]) -> list[str]:
    """The keys of `ids` in `served` (None ids, no entity, have no key)."""
    prefix = served.prefix
    return [f"{prefix}{i}}}" for i in served.ids(ids) if i is not None]


def _with_absent(reads, served: list[_Served], values: list[bytes | None]) -> list[bytes | None]:
    """Values aligned with every id of every read again: None where an id was None (and had no key)."""
    if not any(None in ids for _, ids, _ in reads):
        return values
    out: list[bytes | None] = []
    it = iter(values)
    for (_, ids, _), _s in zip(reads, served, strict=True):
        out += [None if i is None else next(it) for i in ids]
    return out


def _served_from(meta: VersionMeta, keys: ViewKeys, fallback_key_dtype: str | None = None) -> _Served:
    converters = [value_converter(d) for d in meta.schema.dtypes]
    return _Served(
        version=meta.version,
        schema=meta.schema,
        prefix=keys.data_prefix(meta.version),
        converters=converters,
        pointer=keys.current,
        version_bytes=str(meta.version).encode(),
        row=row_type(tuple(meta.schema.features)),
        plain=not any(converters),
        ids=_id_converter(meta.schema.view, meta.schema.key_dtype or fallback_key_dtype),
        deny=deny_key(meta.schema.entity) if meta.schema.purposes is not None and meta.schema.entity else None,
    )


def _deny_queries(reads, served: list[_Served]) -> list[tuple[str, tuple[Any, ...]]]:
    """The distinct (deny hash, ids) reads a multi-view read needs: one per personal entity and id list."""
    queries: dict[tuple[str, tuple[Any, ...]], None] = {}
    for s, (_, ids, _) in zip(served, reads, strict=True):
        if s.deny is not None:
            key_ids = tuple(i for i in s.ids(ids) if i is not None)
            if key_ids:
                queries.setdefault((s.deny, key_ids), None)
    return list(queries)


def _withhold_denied(reads, served: list[_Served], values: list[bytes | None], entries) -> list[bytes | None]:
    """Blank the values of subjects the deny hash blocks for a view's purposes (revoked or erased): a
    push that raced a revocation, or a stale copy, is never served."""
    if not entries:
        return values
    values = list(values)
    pos = 0
    for s, (_, ids, _) in zip(served, reads, strict=True):
        key_ids = tuple(i for i in s.ids(ids) if i is not None)
        n = len(key_ids)
        if s.deny is not None and n:
            values[pos : pos + n] = _withhold(values[pos : pos + n], entries[(s.deny, key_ids)], s.schema.purposes)
        pos += n
    return values


def _withhold(values: list[bytes | None], entries: list[bytes | None], purposes) -> list[bytes | None]:
    return [None if deny_blocks(e, purposes) else v for v, e in zip(values, entries, strict=True)]


def _decode_plain(served: _Served, values: list[bytes | None]) -> list[FeatureRow]:
    """One view, values that need no conversion: unpack all blobs in one C call when none is missing."""
    row = served.row
    if None in values:
        empty = row((None,) * len(served.schema.features))
        return [row(msgpack.unpackb(b)) if b is not None else empty for b in values]
    if len(values) == 1:
        return [row(msgpack.unpackb(values[0]))]
    return list(map(row, msgpack.unpackb(b"\xdd" + len(values).to_bytes(4, "big") + b"".join(values))))
