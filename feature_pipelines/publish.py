"""Publishing a feature partition online: write a new version, verify it, then promote or reject it.

The store only moves versions; this module sequences a push and owns what joins the offline and the
online side: where a version's rows come from (its Delta partition), and the round-trip check that must
pass before a version serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import polars as pl

from feature_pipelines.checks.roundtrip import RoundTrip, compare
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.layout import NAMESPACES, ViewKeys
from feature_pipelines.online.store import OnlineStore, Promotion, VersionMeta, Written
from feature_pipelines.spec import PARTITION_DATE

ID_BATCH = 100_000


@dataclass(frozen=True)
class Published:
    written: Written
    roundtrip: RoundTrip
    promotion: Promotion
    pruned: list[int]
    retired_namespaces: list[str] = field(default_factory=list)


def version_ids(meta: VersionMeta) -> Iterator[pl.Series]:
    """The entity ids a version was written for, read back from the Delta partition it came from."""
    key = meta.schema.join_key
    if delta.table_version(meta.delta_table) is None:
        return  # a removed table: the version's keys expire by their TTL instead
    for batch in delta.iter_partition(
        meta.delta_table, PARTITION_DATE, meta.partition, [key], meta.delta_version, batch_rows=ID_BATCH
    ):
        yield batch[key]


def publish(
    store: OnlineStore,
    view: str,
    table: str,
    partition: str,
    *,
    run_id: str,
    definition_hash: str,
    sample: int,
) -> Published:
    """Push the Delta partition `partition` of `table` as a new version of `view`, verified before it serves."""
    schema = store.layout[view]
    version = delta.table_version(table)
    batches = delta.iter_partition(table, PARTITION_DATE, partition, [schema.join_key, *schema.features], version)
    written = store.write(
        view,
        batches,
        partition=partition,
        delta_table=table,
        delta_version=version,
        run_id=run_id,
        definition_hash=definition_hash,
    )
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
    )
    promotion = store.promote(written) if check.passed else store.reject(written, check.describe())
    return Published(written, check, promotion, store.prune(view, version_ids), retire_old_namespaces(store, view))


def retire_old_namespaces(store: OnlineStore, view: str) -> list[str]:
    """Remove the view's copy from every namespace but its own (its sensitivity changed): pointer first, so
    it stops being readable at once, then every version's keys and the control keys. A killed removal is
    finished by the next push. Returns the namespaces cleaned."""
    own = store.layout[view].namespace
    cleaned = []
    for ns in NAMESPACES:
        keys = ViewKeys(ns, view)
        if ns == own or not (store.r.exists(keys.current) or store.r.exists(keys.versions) or store.r.exists(keys.seq)):
            continue
        store.r.delete(keys.current)
        for raw in store.r.hgetall(keys.versions).values():
            meta = VersionMeta.from_json(raw)
            store.delete_version(meta, version_ids(meta))
        store.r.delete(keys.versions)
        store.r.delete(keys.seq)
        cleaned.append(ns)
    return cleaned
