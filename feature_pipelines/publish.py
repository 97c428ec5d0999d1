"""Publishing a feature partition online: write a new version, verify it, then promote or reject it.

The store only moves versions; this module sequences a push and owns what joins the offline and the
online side: where a version's rows come from (its Delta partition), and the round-trip check that must
pass before a version serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from feature_pipelines.checks.roundtrip import RoundTrip, compare
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import NAMESPACES, OnlineSchema
from feature_pipelines.online.store import (
    ALIAS_COLUMNS,
    IdsOf,
    OnlineStore,
    Promotion,
    Pruned,
    VersionMeta,
    Written,
)
from feature_pipelines.spec import PARTITION_DATE

ID_BATCH = 100_000


class SubjectGuard(Protocol):
    """Consent and erasure at the online door (`privacy.policy.OnlineGuard`): which ids a version may hold."""

    def keep(self, schema: OnlineSchema, ids: pl.Series) -> pl.Series: ...

    def sweep(self, schema: OnlineSchema, version: int, aliases: Iterable[pl.DataFrame] | None = None) -> int: ...


@dataclass(frozen=True)
class Published:
    """A push's typed outcome. A failed prune is a warning: the promotion stands, no retry pushes again."""

    written: Written
    roundtrip: RoundTrip
    promotion: Promotion
    pruned: Pruned | None
    warnings: tuple[str, ...] = ()
    retired_namespaces: list[str] = field(default_factory=list)
    withheld: int = 0
    """Rows of the partition not written: their subjects lack consent for the view's purposes, or are erased."""


def version_ids(meta: VersionMeta) -> Iterator[pl.Series]:
    """The entity ids a version was written for, read back from the Delta partition it came from."""
    key = meta.schema.join_key
    if delta.table_version(meta.delta_table) is None:
        return  # a removed table: the version's keys expire by their TTL instead
    for batch in delta.iter_partition(
        meta.delta_table, PARTITION_DATE, meta.partition, [key], meta.delta_version, batch_rows=ID_BATCH
    ):
        yield batch[key]


@dataclass(frozen=True)
class AliasSource:
    """Where a person-keyed view's aliases come from: the alias map's Delta table (columns
    `identifier_type`, `identifier`, `person_id`, `known_to`; null `known_to` = the current alias) at one
    Delta version, recorded with the online version so its alias keys can be recomputed."""

    table: str
    delta_version: int | None = None
    """None: the table's newest version, resolved (and recorded) when the push starts."""


def partition_aliases(
    alias_table: str, alias_version: int | None, persons: pl.Series, join_key: str = "person_id"
) -> pl.DataFrame:
    """The current aliases of the persons in `persons` (a version's ids), sorted: the alias keys a version
    gets. A person's every identifier, including a never-logged-in visitor's own anonymous id."""
    if delta.table_version(alias_table) is None:
        raise FileNotFoundError(f"alias map {alias_table!r} does not exist; build the identity graph first")
    # An id has one current fact per person it belonged to (its own person from its first time seen, the
    # merged person from when it joined): the latest valid one is where it belongs now.
    current = (
        delta.scan(alias_table, alias_version)
        .filter(pl.col("known_to").is_null())
        .select(
            pl.col("identifier_type").cast(pl.String),
            pl.col("identifier").cast(pl.String),
            pl.col("person_id").cast(pl.String),
            "valid_from",
            "known_from",
        )
        .sort("identifier_type", "identifier", "valid_from", "known_from")
        .group_by("identifier_type", "identifier", maintain_order=True)
        .agg(pl.col("person_id").last())
    )
    ids = pl.LazyFrame({"person_id": persons.cast(pl.String).unique()})
    return current.join(ids, on="person_id", how="semi").collect().sort("identifier_type", "identifier")


def version_aliases(meta: VersionMeta) -> Iterator[pl.DataFrame]:
    """The aliases a version was written with, recomputed from the alias map version it recorded."""
    if meta.aliases is None or delta.table_version(meta.aliases["table"]) is None:
        return  # no aliases, or a removed alias map: the alias keys expire by their TTL
    ids = list(version_ids(meta))
    persons = pl.concat(ids) if ids else pl.Series("person_id", [], pl.String)
    yield partition_aliases(meta.aliases["table"], meta.aliases["delta_version"], persons).select(ALIAS_COLUMNS)


def guarded_ids(guard: SubjectGuard | None) -> IdsOf:
    """`version_ids` without the subjects the guard withholds now: what a rollback must find in Redis
    (an erased or revoked subject's keys are gone on purpose)."""
    if guard is None:
        return version_ids

    def ids_of(meta: VersionMeta) -> Iterator[pl.Series]:
        for ids in version_ids(meta):
            yield ids.filter(guard.keep(meta.schema, ids))

    return ids_of


def guarded_aliases(guard: SubjectGuard | None) -> Callable[[VersionMeta], Iterator[pl.DataFrame]]:
    """`version_aliases` without the persons the guard withholds now (their alias keys are gone on purpose)."""
    if guard is None:
        return version_aliases

    def aliases_of(meta: VersionMeta) -> Iterator[pl.DataFrame]:
        for frame in version_aliases(meta):
            yield frame.filter(guard.keep(meta.schema, frame["person_id"]))

    return aliases_of


def _guarded(batches: Iterable[pl.DataFrame], schema: OnlineSchema, guard: SubjectGuard, withheld: list[int]):
    for batch in batches:
        keep = guard.keep(schema, batch[schema.join_key])
        withheld[0] += batch.height - int(keep.sum())
        yield batch.filter(keep)


def _kept_aliases(
    frame: pl.DataFrame, schema: OnlineSchema, guard: SubjectGuard | None, handed: list[pl.DataFrame]
) -> Iterator[pl.DataFrame]:
    """The version's aliases, asked of the guard only when the store reaches them, after the data keys: a
    person denied while its rows were being written lost them, so its aliases must not be written either.
    `handed` records what the store was given: the alias keys the sweep must check."""
    if guard is not None:
        frame = frame.filter(guard.keep(schema, frame["person_id"]))
    handed.append(frame)
    yield frame


def publish(
    store: OnlineStore,
    view: str,
    table: str,
    partition: str,
    *,
    run_id: str,
    definition_hash: str,
    sample: int,
    aliases: AliasSource | None = None,
    guard: SubjectGuard | None = None,
) -> Published:
    """Push the Delta partition `partition` of `table` as a new version of `view`, verified before it serves.

    A person-keyed view given `aliases` also gets the alias keys of its persons, written after their
    features and promoted with them, so a reader holding any of a person's ids reads that version.
    With a `guard`, rows of subjects without consent for the view's purposes (or erased) are not written,
    nor their aliases, and the round trip compares only the subjects it keeps. A subject denied while the
    version is written is swept from it, alias keys included, before it can serve: no alias of the version
    names a person whose features are not in it."""
    schema = store.layout[view]
    version = delta.table_version(table)
    batches = delta.iter_partition(table, PARTITION_DATE, partition, [schema.join_key, *schema.features], version)
    withheld = [0]
    if guard is not None:
        batches = _guarded(batches, schema, guard, withheld)
    alias_frames: Iterable[pl.DataFrame] | None = None
    alias_source = None
    handed: list[pl.DataFrame] = []
    if aliases is not None:
        alias_version = aliases.delta_version
        if alias_version is None:
            alias_version = delta.table_version(aliases.table)
        id_batches = list(
            delta.iter_partition(table, PARTITION_DATE, partition, [schema.join_key], version, batch_rows=ID_BATCH)
        )
        persons = pl.concat([b[schema.join_key] for b in id_batches]) if id_batches else pl.Series([], dtype=pl.String)
        current = partition_aliases(aliases.table, alias_version, persons).select(ALIAS_COLUMNS)
        alias_frames = _kept_aliases(current, schema, guard, handed)
        alias_source = {"table": aliases.table, "delta_version": alias_version}
    written = store.write(
        view,
        batches,
        partition=partition,
        delta_table=table,
        delta_version=version,
        run_id=run_id,
        definition_hash=definition_hash,
        aliases=alias_frames,
        alias_source=alias_source,
    )
    try:
        if guard is not None:  # a subject denied during the write: its data and alias keys in this version go
            guard.sweep(schema, written.version, handed if aliases is not None else None)
        check = compare(
            OnlineClient(store.r, layout=store.layout),
            view,
            written.version,
            schema.join_key,
            schema.features,
            table,
            version,
            partition,
            sample,
            keep=(lambda ids: guard.keep(schema, ids)) if guard is not None else None,
        )
        promotion = store.promote(written) if check.passed else store.reject(written, check.describe())
    finally:
        written.release()  # a failed check run leaves a dead version, removed by the next prune
    try:
        pruned, warnings = store.prune(view, version_ids, version_aliases), ()
    except Exception as exc:  # noqa: BLE001 - the version is decided; a prune failure must not fail the push
        pruned = None
        warnings = (
            f"pruning old versions of {view!r} failed ({type(exc).__name__}: {exc}); they stay until the "
            "next push or `fstore gc`",
        )
    retired = retire_old_namespaces(store, view)
    return Published(written, check, promotion, pruned, warnings, retired, withheld[0])


def retire_old_namespaces(store: OnlineStore, view: str) -> list[str]:
    """Remove the view's copy from every namespace but its own: its sensitivity moved it (fs <-> fss), and
    the old copy must not stay readable by that namespace's readers. Runs after every push, whatever its
    outcome; a killed removal is finished by the next push. Not a warning when it fails: it raises."""
    own = store.layout[view].namespace
    return [
        ns for ns in NAMESPACES if ns != own and store.remove_namespace_copy(view, ns, version_ids, version_aliases)
    ]
