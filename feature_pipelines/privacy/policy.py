"""Who may be processed for what: the one place that combines the consent ledger, the purposes declared in
the spec and the tombstones into answers the pipeline asks (compute, push, train).

A subject (an id of a `personal` entity) may appear in a view when it is not erased and has consent for
every purpose the view declares; in a training set when it is not erased, had consent for the service's
purpose at the row's time as known then, and has not revoked it since (a rebuild after a revocation leaves
it out). Ids of entities that are not personal always pass.

A person (the identity graph's entity, keyed by `person_id`) speaks through all its ids: a choice recorded
for the person, for one of its customer ids (entity `customer`) or for one of its cookies (ledger entity
`alias:anonymous_id`, from the consent source) applies to the person the id stitches to now (the alias
map's current facts). A revocation by any of them withholds the person; a grant by one of them counts for
an opt-in purpose unless another id revoked it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

import polars as pl

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.alias_map import PERSON_COLUMN
from feature_pipelines.identity.edges import IDENTIFIER_TYPES
from feature_pipelines.online.layout import ERASED, OnlineSchema, deny_blocks, deny_key
from feature_pipelines.online.store import ALIAS_COLUMNS, OnlineStore
from feature_pipelines.privacy import consent_source
from feature_pipelines.privacy.consent import ConsentLedger, consent_at, now, subject_text
from feature_pipelines.privacy.tombstones import ALIAS_PREFIX, Tombstones
from feature_pipelines.settings import Settings
from feature_pipelines.spec import EVENT_TIMESTAMP, PARTITION_DATE, FeatureView


@dataclass(frozen=True)
class Filtered:
    """A frame with the rows of subjects that may not be processed left out, and how many there were."""

    frame: pl.DataFrame
    dropped: int
    subjects: int
    withheld: pl.DataFrame | None = None
    """(join key, partition_date) of the rows left out: not "missing" for completeness checks."""


class PrivacyPolicy:
    """Answers read the ledgers once per instance: make a new one per run or push to see new events."""

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self.catalog = catalog
        self.lake_dir = settings.lake_dir
        self.consent = ConsentLedger(settings.privacy_table("consent"))
        self.tombstones = Tombstones(settings.privacy_table("tombstones"))

    @cached_property
    def _events(self) -> pl.DataFrame:
        return self.consent.events()

    @cached_property
    def _by_entity(self) -> dict[str, pl.DataFrame]:
        return {}

    @cached_property
    def _erased(self) -> pl.DataFrame:
        return self.tombstones.all()

    @cached_property
    def aliases(self) -> pl.DataFrame:
        """The identity graph's alias map (every fact; empty without a graph)."""
        from feature_pipelines.identity.stitch import IdentityStore

        return IdentityStore(self.lake_dir).read("alias_map")

    @cached_property
    def current_aliases(self) -> pl.DataFrame:
        """identifier_type, identifier, person_id: whom each id stitches to now."""
        from feature_pipelines.identity.alias_map import AliasMap

        return AliasMap(self.aliases).current()

    def is_person(self, entity: str) -> bool:
        return self.catalog.entities[entity].join_key == PERSON_COLUMN

    def identifier_type(self, ledger_entity: str) -> str | None:
        """The identity graph's id type a ledger entity's subjects are (`customer` -> customer_id,
        `alias:anonymous_id` -> anonymous_id); None for a person or an entity the graph does not link."""
        if ledger_entity.startswith(ALIAS_PREFIX):
            return ledger_entity.removeprefix(ALIAS_PREFIX)
        entity = self.catalog.entities.get(ledger_entity)
        if entity is not None and entity.join_key in IDENTIFIER_TYPES:
            return entity.join_key
        return None

    def subject_events(self, entity: str) -> pl.DataFrame:
        """The consent events that speak for `entity`'s subjects, with `via` (who chose): the entity's own
        events and, for a person, those of the ids that stitch to it now (see the module doc)."""
        if entity not in self._by_entity:
            self._by_entity[entity] = self._subject_events(entity)
        return self._by_entity[entity]

    def _subject_events(self, entity: str) -> pl.DataFrame:
        events = self._events
        own = events.filter(pl.col("entity") == entity).with_columns(pl.col("subject").alias("via"))
        if not self.is_person(entity):
            return own
        kinds = {e: k for e in events["entity"].unique().to_list() if (k := self.identifier_type(e)) is not None}
        if not kinds:
            return own
        of_ids = (
            events.filter(pl.col("entity").is_in(list(kinds)))
            .with_columns(pl.col("entity").replace_strict(kinds, return_dtype=pl.String).alias("identifier_type"))
            .join(
                self.current_aliases,
                left_on=["identifier_type", "subject"],
                right_on=["identifier_type", "identifier"],
                how="inner",
            )
            .with_columns(
                (pl.col("identifier_type") + ":" + pl.col("subject")).alias("via"),
                pl.col(PERSON_COLUMN).alias("subject"),
            )
        )
        return pl.concat([own, of_ids.select(own.columns)])

    def persons_of(self, ledger_entity: str, subjects: list[str]) -> list[str]:
        """The persons the ids `subjects` (of a ledger entity the graph links) stitch to now."""
        kind = self.identifier_type(ledger_entity)
        if kind is None or not subjects:
            return []
        hits = self.current_aliases.filter((pl.col("identifier_type") == kind) & pl.col("identifier").is_in(subjects))
        return sorted(set(hits[PERSON_COLUMN].to_list()))

    def identifiers_of(self, person: str) -> list[tuple[str, str]]:
        """Every (type, identifier) the alias map ever tied to `person`: the alias keys it may have."""
        rows = self.aliases.filter(pl.col(PERSON_COLUMN) == person).select("identifier_type", "identifier").unique()
        return sorted(rows.iter_rows())

    def personal(self, entity: str) -> bool:
        return self.catalog.entities[entity].personal

    def purposes(self, names: tuple[str, ...] | list[str]) -> dict[str, bool]:
        """Purpose name -> opt_in, from the spec."""
        return {n: self.catalog.purposes[n].opt_in for n in names}

    def erased(self, entity: str, ids: pl.Series) -> pl.Series:
        """Whether each id is tombstoned."""
        gone = self._erased.filter(pl.col("entity") == entity)["subject"]
        return subject_text(ids).is_in(gone.implode()).fill_null(False)

    def permitted(
        self,
        entity: str,
        ids: pl.Series,
        purposes: tuple[str, ...] | list[str],
        at: pl.Series | datetime | None = None,
        known: datetime | None | str = None,
    ) -> pl.Series:
        """Whether each id may be processed for all `purposes` at `at` (default now), as known at `known`
        ("row": at each row's own `at`; None: now). Always True for ids of entities that are not personal."""
        if not self.personal(entity):
            return pl.Series("permitted", [True] * ids.len(), dtype=pl.Boolean)
        when = at if isinstance(at, pl.Series) else pl.Series([at or now()] * ids.len())
        rows = pl.DataFrame({"subject": subject_text(ids), "at": when})
        ok = consent_at(self.subject_events(entity), rows, self.purposes(purposes), known=known)
        return (ok & ~self.erased(entity, ids)).alias("permitted")

    def filter_view_rows(self, view: FeatureView, frame: pl.DataFrame) -> Filtered:
        """A view's computed rows without those of subjects lacking consent at each partition's instant (as
        known now) or erased. Compute calls it before the gate and the Delta write."""
        entity = self.catalog.entity_of(view)
        if not entity.personal or frame.height == 0:
            return Filtered(frame, 0, 0)
        ok = self.permitted(entity.name, frame[entity.join_key], view.purposes, frame[EVENT_TIMESTAMP], None)
        dropped = frame.filter(~ok)
        withheld = dropped.select(entity.join_key, PARTITION_DATE) if PARTITION_DATE in frame.columns else None
        return Filtered(frame.filter(ok), dropped.height, dropped[entity.join_key].n_unique(), withheld)

    def without_erased(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` without rows holding an erased subject in any entity's key column (ingest's anti-join:
        a re-delivered file never brings an erased subject back into the raw table)."""
        for entity in self.catalog.entities.values():
            if entity.join_key in frame.columns and frame.height:
                frame = frame.filter(~self.erased(entity.name, frame[entity.join_key]))
        return consent_source.without_erased(frame, self.catalog, self._erased)

    def online_purposes(self, entity: str) -> list[str]:
        """Every purpose an online view of `entity` serves: what the deny hash tracks per subject."""
        names = {p for v in self.catalog.online_views if v.entity_name == entity for p in v.purposes}
        return sorted(names)

    def deny_entry(self, entity: str, subject: str) -> str | None:
        """The subject's entry in its entity's deny hash: "*" if erased, else the JSON list of online
        purposes it may not be served for now (None: nothing denied)."""
        return self.deny_entries(entity, [subject])[0]

    def deny_entries(self, entity: str, subjects: list[str]) -> list[str | None]:
        """`deny_entry` of many subjects at once (one consent evaluation per purpose)."""
        import json

        ids = pl.Series(subjects, dtype=pl.String)
        erased = self.erased(entity, ids).to_list()
        denied = {p: (~self.permitted(entity, ids, [p])).to_list() for p in self.online_purposes(entity)}
        out: list[str | None] = []
        for i in range(len(subjects)):
            names = [p for p, no in denied.items() if no[i]]
            out.append(ERASED if erased[i] else json.dumps(names) if names else None)
        return out

    def person_entity(self) -> str | None:
        """The catalog's person entity (keyed by the identity graph's person id), if any."""
        return next((e.name for e in self.catalog.entities.values() if e.join_key == PERSON_COLUMN), None)


class OnlineGuard:
    """What a push may write and a rollback must find: the policy now, plus the Redis deny hash, which
    also catches a revocation that lands while the push runs (`sweep` after the write closes that gap)."""

    def __init__(self, policy: PrivacyPolicy, store: OnlineStore) -> None:
        self.policy = policy
        self.store = store

    def keep(self, schema: OnlineSchema, ids: pl.Series) -> pl.Series:
        if schema.purposes is None or schema.entity is None:
            return pl.Series("keep", [True] * ids.len(), dtype=pl.Boolean)
        ok = self.policy.permitted(schema.entity, ids, schema.purposes)
        entries = self.store.deny_entries(schema.entity, subject_text(ids).to_list())
        denied = pl.Series([deny_blocks(e, schema.purposes) for e in entries], dtype=pl.Boolean)
        return (ok & ~denied).alias("keep")

    def sweep(self, schema: OnlineSchema, version: int, aliases: Iterable[pl.DataFrame] | None = None) -> int:
        """Unlink, in a version just written, the keys of every subject the deny hash now blocks: a
        revocation adds to the hash before it deletes keys, so one that raced the write is caught here.

        A denied person also loses its alias keys in the version, first (a reader resolving one must not
        land on a person whose features are gone): those of `aliases`, the frames (`identifier_type`,
        `identifier`, `person_id`) the version's alias keys were written from; without them, of every
        identifier the alias map ever tied to the person."""
        if schema.purposes is None or schema.entity is None:
            return 0
        raw = self.store.r.hgetall(deny_key(schema.entity))
        subjects = [k.decode() for k, v in raw.items() if deny_blocks(v.decode(), schema.purposes)]
        if not subjects:
            return 0
        pipe = self.store.r.pipeline(transaction=False)  # in order: the alias keys, then the data keys
        for key in self._alias_keys(schema, version, subjects, aliases):  # tagged by identifier: one each
            pipe.unlink(key)
        for s in subjects:  # one slot per subject: one key per command
            pipe.unlink(schema.keys.data_key(version, s))
        return sum(pipe.execute())

    def _alias_keys(
        self, schema: OnlineSchema, version: int, persons: list[str], aliases: Iterable[pl.DataFrame] | None
    ) -> list[str]:
        """The alias keys of `version` that name one of `persons` (none for a view not keyed by person)."""
        if not self.policy.is_person(schema.entity):
            return []
        if aliases is None:
            frames = [self.policy.aliases.select(ALIAS_COLUMNS)] if self.policy.aliases.height else []
        else:
            frames = [f.select(ALIAS_COLUMNS) for f in aliases]
        if not frames:
            return []
        hits = pl.concat(frames).filter(pl.col(PERSON_COLUMN).cast(pl.String).is_in(persons)).unique()
        return schema.keys.alias_keys(version, hits["identifier_type"], hits["identifier"]).to_list()
