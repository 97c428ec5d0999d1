"""Consistency: the serving version answers what the training path returns for the same entity and instant.

Invariant 7 (one semantics for training and serving), checked on samples right after a promotion. Serving
answers from the snapshot of one partition P, which describes the instant `I = end of P`. For every
sampled entity the check compares the served row with the training path's value (`training.view_values`,
known-time mode) for that entity at instant `I`, with knowledge as of the check, reading the Delta version
the serving version was written from.

Why that instant: it is the time the served values describe, so the check means the same for a timely
daily push (promoted minutes after `I`, when no newer partition is known: training "now" asks the same
question) and for history pushed today (a 2011 partition promoted in 2026: a training row "now" is far past
the view's lookback and null, which would compare nothing). Knowledge as of the check (just after the
promotion) counts the partition itself even when its commit was late, as serving does from then on.

Why that sample: entities of P (a wrong or missing row), and entities present in the partitions before P
within the lookback but absent from P: exactly where a per-entity fallback to an older partition would
answer differently from serving (absence means "no value" on both sides). The sample is deterministic
(seeded by the version), so a failure is reproducible.

Subjects the privacy policy stops serving now (revoked or erased after their partition was computed) are
left out of the sample (`keep`) and counted as `withheld`: serving rightly answers nothing for them while
the Delta version the check reads still holds their row, which is no inconsistency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from feature_pipelines.checks.equality import same_value
from feature_pipelines.offline.delta import scan, table_version
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.store import VersionMeta
from feature_pipelines.spec import PARTITION_DATE, FeatureView
from feature_pipelines.training import partition_end_of, view_values


@dataclass(frozen=True)
class Consistency:
    view: str
    version: int
    partition: str
    instant: datetime
    compared: int
    absent_compared: int
    """How many of the compared entities are absent from the served partition (both sides must say null)."""
    differing: dict[str, list[Any]] = field(default_factory=dict)
    """Feature -> entity ids whose served value differs from the training path's."""
    examples: list[dict[str, Any]] = field(default_factory=list)
    withheld: int = 0
    """Sampled entities left out because the privacy policy stops serving them now."""

    @property
    def passed(self) -> bool:
        return not self.differing

    def describe(self) -> str:
        if self.passed:
            return (
                f"{self.view} v{self.version} ({self.partition}): {self.compared} entities "
                f"({self.absent_compared} absent from the partition) agree with training at {self.instant}"
            )
        parts = ", ".join(
            f"{f} ({len(ids)} of {self.compared} entities, e.g. {ids[:3]})" for f, ids in self.differing.items()
        )
        return f"{self.view} v{self.version} ({self.partition}): served values differ from training for {parts}"


def check(
    client: OnlineClient,
    view: FeatureView,
    meta: VersionMeta,
    sample: int,
    known_at: datetime | None = None,
    keep: Callable[[pl.Series], pl.Series] | None = None,
) -> Consistency:
    """Compare version `meta` of `view` (read through `client`) with training at the partition's instant.
    `keep(ids)`: which sampled ids may be served now (e.g. `OnlineGuard.keep`); the others are not compared."""
    key, features = meta.schema.join_key, list(meta.schema.features)
    version = meta.delta_version if meta.delta_version is not None else table_version(meta.delta_table)
    if version is None:
        raise ValueError(f"{view.deployed_name} v{meta.version}: its Delta table {meta.delta_table} does not exist")
    instant = partition_end_of(meta.partition)
    ids = sample_entities(meta.delta_table, version, key, meta.partition, view.offline_lookback, sample, meta.version)
    present, absent = ids
    withheld = 0
    if keep is not None:
        before = present.len() + absent.len()
        present, absent = present.filter(keep(present)), absent.filter(keep(absent))
        withheld = before - present.len() - absent.len()
    entities = pl.concat([present, absent])
    rows = pl.DataFrame(
        {key: entities, "__ts": [instant] * entities.len()}, schema_overrides={"__ts": pl.Datetime("us", "UTC")}
    )
    trained = view_values(
        view, key, features, rows, meta.delta_table, version, mode="known", known_at=known_at or datetime.now(UTC)
    )
    served = client.get_version(view.deployed_name, meta.version, entities.to_list())
    differing: dict[str, list[Any]] = {}
    examples: list[dict[str, Any]] = []
    for feature in features:
        for entity, offline, online in zip(
            entities.to_list(), trained[feature].to_list(), (r[feature] for r in served), strict=True
        ):
            if not same_value(offline, online):
                differing.setdefault(feature, []).append(entity)
                if len(examples) < 10:
                    examples.append({key: entity, "feature": feature, "served": online, "training": offline})
    return Consistency(
        view.deployed_name,
        meta.version,
        meta.partition,
        instant,
        entities.len(),
        absent.len(),
        differing,
        examples,
        withheld,
    )


def sample_entities(
    table: str, version: int, key: str, partition: str, lookback: timedelta, sample: int, seed: int
) -> tuple[pl.Series, pl.Series]:
    """Up to `sample` entities of `partition`, and up to `sample // 4` (at least 10) of the entities in the
    partitions within `lookback` before it that are absent from it; a deterministic sample."""
    first = (datetime.fromisoformat(partition) - lookback).date().isoformat()
    keys = (
        scan(table, version)
        .filter(pl.col(PARTITION_DATE).is_between(pl.lit(first), pl.lit(partition)))
        .select(key, PARTITION_DATE)
        .collect()
    )
    present = keys.filter(pl.col(PARTITION_DATE) == partition)[key].unique().sort()
    absent = keys.filter(pl.col(PARTITION_DATE) < partition)[key].unique().sort()
    absent = absent.filter(~absent.is_in(present.implode()))
    n_absent = max(sample // 4, 10)
    if present.len() > sample:
        present = present.sample(n=sample, seed=seed)
    if absent.len() > n_absent:
        absent = absent.sample(n=n_absent, seed=seed)
    return present, absent
