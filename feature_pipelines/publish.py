"""Publishing a feature partition online: write a new version, verify it, then promote or reject it.

The store only moves versions; this module sequences a push and owns what joins the offline and the
online side: where a version's rows come from (its Delta partition), and the round-trip check that must
pass before a version serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from feature_pipelines.checks.roundtrip import RoundTrip, compare
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import NAMESPACES, OnlineSchema
from feature_pipelines.online.store import IdsOf, OnlineStore, Promotion, Pruned, VersionMeta, Written
from feature_pipelines.spec import PARTITION_DATE

ID_BATCH = 100_000


class SubjectGuard(Protocol):
    """Consent and erasure at the online door (`privacy.policy.OnlineGuard`): which ids a version may hold."""

    def keep(self, schema: OnlineSchema, ids: pl.Series) -> pl.Series: ...

    def sweep(self, schema: OnlineSchema, version: int) -> int: ...


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


def guarded_ids(guard: SubjectGuard | None) -> IdsOf:
    """`version_ids` without the subjects the guard withholds now: what a rollback must find in Redis
    (an erased or revoked subject's keys are gone on purpose)."""
    if guard is None:
        return version_ids

    def ids_of(meta: VersionMeta) -> Iterator[pl.Series]:
        for ids in version_ids(meta):
            yield ids.filter(guard.keep(meta.schema, ids))

    return ids_of


def _guarded(batches: Iterable[pl.DataFrame], schema: OnlineSchema, guard: SubjectGuard, withheld: list[int]):
    for batch in batches:
        keep = guard.keep(schema, batch[schema.join_key])
        withheld[0] += batch.height - int(keep.sum())
        yield batch.filter(keep)


def publish(
    store: OnlineStore,
    view: str,
    table: str,
    partition: str,
    *,
    run_id: str,
    definition_hash: str,
    sample: int,
    guard: SubjectGuard | None = None,
) -> Published:
    """Push the Delta partition `partition` of `table` as a new version of `view`, verified before it serves.

    With a `guard`, rows of subjects without consent for the view's purposes (or erased) are not written,
    and the round trip compares only the subjects it keeps."""
    schema = store.layout[view]
    version = delta.table_version(table)
    batches = delta.iter_partition(table, PARTITION_DATE, partition, [schema.join_key, *schema.features], version)
    withheld = [0]
    if guard is not None:
        batches = _guarded(batches, schema, guard, withheld)
    written = store.write(
        view,
        batches,
        partition=partition,
        delta_table=table,
        delta_version=version,
        run_id=run_id,
        definition_hash=definition_hash,
    )
    try:
        if guard is not None:
            guard.sweep(schema, written.version)
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
        pruned, warnings = store.prune(view, version_ids), ()
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
    return [ns for ns in NAMESPACES if ns != own and store.remove_namespace_copy(view, ns, version_ids)]
