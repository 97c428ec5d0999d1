"""Where online views live in Redis: namespaces and every key name. The only module that spells a key.

    <ns>:{<view>}:current        serving version number (string)
    <ns>:{<view>}:versions       hash: version number -> JSON metadata (schema, partition, Delta version...)
    <ns>:{<view>}:seq            counter that hands out version numbers
    <ns>:{<view>}:history        list, newest first: JSON entries of promotions, rollbacks, pins, unpins
    <ns>:{<view>}:pin            JSON of the rollback that pinned the view (absent when not pinned)
    <ns>:{<view>}:lease:<v>      a push's lease on version v while it writes and is verified (PX)
    <ns>:<view>:<version>:{<id>} msgpack array of the view's features, in schema order
    <ns>:<view>:<version>:alias:<type>:{<identifier>}
                                 the person id an identifier (anonymous_id, device_id...) resolved to when
                                 version <version> of a person-keyed view was written (plain text)

Readers resolve an alias and read the person's features in one server-side step with the Redis Function
`fs_get_by_alias` of library `fstore` (its source is `FUNCTION_LIBRARY` below; the store loads it).
    fsp:deny:{<entity>}          hash: subject id -> JSON list of the purposes it may not be served for,
                                 or "*" (erased: nothing, ever); read by every client, written by privacy

`<ns>` is `fs` for public and internal views and `fss` for confidential and restricted ones (a view's
sensitivity is its most sensitive feature's, `FeatureView.namespace_sensitivity`), so Redis ACLs separate
them by key pattern (`feature_pipelines.privacy.acl`). Control keys are hash-tagged by view (a Redis Cluster keeps them in one slot,
which the promote script needs), data keys by entity id (one entity's keys share a slot across views). The
full contract is docs/online-key-spec.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from feature_pipelines.catalog import Catalog
    from feature_pipelines.spec import FeatureView

NAMESPACES = ("fs", "fss")
IDENTIFIER_TYPE = re.compile(r"[a-z][a-z0-9_]*\Z")
"""An identifier type as it appears in alias keys (`anonymous_id`, `device_id`, `customer_id`)."""
SENSITIVE = ("confidential", "restricted")
PRIVACY_NAMESPACE = "fsp"
"""Privacy state every reader must see (the deny lists), apart from the features so ACLs can grant it alone."""
ERASED = "*"
"""The deny entry of an erased subject: denied for every purpose, whatever the ledger says later."""


def deny_key(entity: str) -> str:
    """The deny hash of an entity's subjects (one slot per entity: hash-tagged by its name)."""
    return f"{PRIVACY_NAMESPACE}:deny:{{{entity}}}"


def deny_blocks(entry: str | bytes | None, purposes: Iterable[str] | None) -> bool:
    """Whether a deny-hash entry stops a view serving `purposes` from serving the subject (None purposes:
    not a view of people, never blocked)."""
    import json

    if entry is None or purposes is None:
        return False
    text = entry.decode() if isinstance(entry, bytes) else entry
    return text == ERASED or bool(set(json.loads(text)) & set(purposes))


def deny_pattern() -> str:
    """Every deny hash, as an ACL key pattern."""
    return f"{PRIVACY_NAMESPACE}:deny:*"


def namespace_for(sensitivity: str) -> str:
    return "fss" if sensitivity in SENSITIVE else "fs"


@dataclass(frozen=True)
class ViewKeys:
    """The key names of one online view."""

    namespace: str
    view: str

    def control(self, what: str) -> str:
        return f"{self.namespace}:{{{self.view}}}:{what}"

    @property
    def current(self) -> str:
        return self.control("current")

    @property
    def versions(self) -> str:
        return self.control("versions")

    @property
    def seq(self) -> str:
        return self.control("seq")

    @property
    def history(self) -> str:
        return self.control("history")

    @property
    def pin(self) -> str:
        return self.control("pin")

    def lease(self, version: int) -> str:
        """Held by the push writing `version`; a `writing` version without it is dead (its push was killed)."""
        return self.control(f"lease:{version}")

    def data_prefix(self, version: int) -> str:
        """Everything before the entity id; a data key is this, the id, and `}`."""
        return f"{self.namespace}:{self.view}:{version}:{{"

    def data_key(self, version: int, entity_id: Any) -> str:
        return f"{self.data_prefix(version)}{entity_id}}}"

    def data_keys(self, version: int, ids: pl.Series) -> pl.Series:
        """Data keys of many ids at once (ids already in their key form, see `key_text`)."""
        return self.data_prefix(version) + key_text(ids) + "}"

    def alias_key(self, version: int, identifier_type: str, identifier: str) -> str:
        """The person an identifier resolved to in `version` (a person-keyed view)."""
        return f"{self.namespace}:{self.view}:{version}:alias:{identifier_type}:{{{identifier}}}"

    def alias_keys(self, version: int, identifier_types: pl.Series, identifiers: pl.Series) -> pl.Series:
        """`alias_key` of many (type, identifier) pairs at once."""
        head = f"{self.namespace}:{self.view}:{version}:alias:"
        return head + identifier_types.cast(pl.String) + ":{" + identifiers.cast(pl.String) + "}"


FUNCTION_LIBRARY_NAME = "fstore"
ALIAS_FUNCTION = "fs_get_by_alias"
FUNCTION_LIBRARY = f"""#!lua name={FUNCTION_LIBRARY_NAME}
-- Serve by any alias in one server-side step (docs/online-key-spec.md, "Reading by alias").
-- FCALL_RO {ALIAS_FUNCTION} <n> <pointer key of view 1> ... <pointer key of view n>
--         <identifier type> <identifier> <ns 1> <view 1> ... <ns n> <view n>
-- Reply: one [version, person id, value] per view; nil where the view is not served, the alias is
-- unknown in the serving version, or the person has no features in it. Keys are spelled as in
-- `ViewKeys.data_key` and `ViewKeys.alias_key`.
local function get_by_alias(keys, args)
  local itype, ident = args[1], args[2]
  local out = {{}}
  for i = 1, #keys do
    local ns, view = args[1 + 2 * i], args[2 + 2 * i]
    local v = redis.call('GET', keys[i])
    local person, value = false, false
    if v then
      local base = ns .. ':' .. view .. ':' .. v .. ':'
      person = redis.call('GET', base .. 'alias:' .. itype .. ':{{' .. ident .. '}}')
      if person then value = redis.call('GET', base .. '{{' .. person .. '}}') end
    end
    out[i] = {{v, person, value}}
  end
  return out
end
redis.register_function{{function_name = '{ALIAS_FUNCTION}', callback = get_by_alias, flags = {{'no-writes'}}}}
"""
"""The Redis Function library the store loads (`FUNCTION LOAD REPLACE`): read-only, so ACL users granted
`+fcall_ro` (and the GETs it makes, on the view's key patterns) call it with `FCALL_RO`."""


def key_text(ids: pl.Series) -> pl.Series:
    """Entity ids as they appear in keys: integers in decimal, strings verbatim."""
    return ids.cast(pl.String)


@dataclass(frozen=True)
class OnlineSchema:
    """What a reader needs to decode a view's values, stored with every version."""

    view: str
    namespace: str
    join_key: str
    features: list[str]
    dtypes: list[str]
    ttl_seconds: int | None
    key_dtype: str | None = None
    """The join key's dtype (`Int64`, `String`...): how ids become key text. None in metadata written before it."""
    entity: str | None = None
    """The entity the view describes (None in metadata written before it was recorded)."""
    purposes: list[str] | None = None
    """Set for views of a personal entity: the purposes they serve. Readers check the entity's deny hash
    (`deny_key`): a subject denied any of these purposes, or erased, is not served. None: nothing to check."""

    @property
    def keys(self) -> ViewKeys:
        return ViewKeys(self.namespace, self.view)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnlineSchema:
        """From stored metadata: fields added later get their defaults, fields unknown here are ignored."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def online_schema(view: FeatureView, catalog: Catalog) -> OnlineSchema:
    ttl = int(view.online_ttl.total_seconds()) if view.online_ttl else None
    return OnlineSchema(
        view=view.deployed_name,
        namespace=namespace_for(view.namespace_sensitivity),
        join_key=catalog.entity_of(view).join_key,
        features=view.feature_names,
        dtypes=[str(f.polars_dtype) for f in view.features],
        ttl_seconds=ttl,
        key_dtype=str(catalog.entity_of(view).polars_dtype),
        entity=view.entity_name,
        purposes=list(view.purposes) if catalog.entity_of(view).personal else None,
    )


class OnlineLayout(Mapping[str, OnlineSchema]):
    """Every online view by name, with its schema and keys: what the store and the client are keyed by."""

    def __init__(self, schemas: Iterable[OnlineSchema]) -> None:
        self._schemas = {s.view: s for s in schemas}

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> OnlineLayout:
        return cls(online_schema(v, catalog) for v in catalog.online_views)

    def __getitem__(self, view: str) -> OnlineSchema:
        try:
            return self._schemas[view]
        except KeyError:
            raise KeyError(f"unknown online view {view!r}; known: {sorted(self._schemas)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._schemas)

    def __len__(self) -> int:
        return len(self._schemas)

    def keys_of(self, view: str) -> ViewKeys:
        return self[view].keys
