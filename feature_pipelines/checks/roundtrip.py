"""Round trip: what the serving client returns for a new version equals the Delta rows it was written from.

Run on every push after the new version is written and before it is promoted, so a version whose bytes
do not decode back to the offline rows never serves. (Whether serving and training agree for the same
entity and instant is a different question: see `consistency`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from feature_pipelines.checks.equality import same_value
from feature_pipelines.offline.delta import scan
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.spec import PARTITION_DATE


@dataclass(frozen=True)
class RoundTrip:
    compared: int
    differing: dict[str, list] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.differing

    def describe(self) -> str:
        return "served values differ from Delta for " + ", ".join(
            f"{f} ({len(ids)} of {self.compared} entities, e.g. {ids[:3]})" for f, ids in self.differing.items()
        )


def compare(
    client: OnlineClient,
    view: str,
    version: int,
    join_key: str,
    features: list[str],
    delta_table: str,
    delta_version: int | None,
    partition: str,
    sample: int,
    keep: Callable[[pl.Series], pl.Series] | None = None,
) -> RoundTrip:
    """Compare `sample` entities (a deterministic sample) of `version` with their Delta rows; with `keep`,
    only the entities it keeps (the push withheld the others: no consent, or erased)."""
    rows = scan(delta_table, delta_version).filter(pl.col(PARTITION_DATE) == partition)
    keys = rows.select(join_key).collect()[join_key]  # only the key column of the whole partition
    if keep is not None:
        keys = keys.filter(keep(keys))
    if keys.len() > sample:
        keys = keys.sample(n=sample, seed=version)
    frame = rows.filter(pl.col(join_key).is_in(keys.implode())).select(join_key, *features).collect()
    ids = frame[join_key].to_list()
    served = client.get_version(view, version, ids)
    differing: dict[str, list] = {}
    for feature in features:
        offline = frame[feature].to_list()
        online = [row[feature] for row in served]
        for entity, a, b in zip(ids, offline, online, strict=True):
            if not same_value(a, b):
                differing.setdefault(feature, []).append(entity)
    return RoundTrip(len(ids), differing)
