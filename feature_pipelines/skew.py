"""Training/serving skew: what the serving client returns for a version equals the Delta rows it came from.

Run on every push after the new version is written and before it is promoted, so a version that would
serve something other than the offline truth never serves.
"""

from __future__ import annotations

import polars as pl

from feature_pipelines.offline_store import scan
from feature_pipelines.serving import OnlineClient
from feature_pipelines.spec import PARTITION_DATE


def compare(
    client: OnlineClient,
    view: str,
    namespace: str,
    version: int,
    join_key: str,
    features: list[str],
    delta_table: str,
    delta_version: int | None,
    partition: str,
    sample: int,
) -> tuple[int, dict[str, list]]:
    """Compare `sample` entities (a deterministic sample). Returns (compared, {feature: [differing ids]})."""
    rows = scan(delta_table, delta_version).filter(pl.col(PARTITION_DATE) == partition)
    keys = rows.select(join_key).collect()[join_key]  # only the key column of the whole partition
    if keys.len() > sample:
        keys = keys.sample(n=sample, seed=version)
    frame = rows.filter(pl.col(join_key).is_in(keys.implode())).select(join_key, *features).collect()
    ids = frame[join_key].to_list()
    served = client.get_version(view, version, ids, namespace=namespace)
    differing: dict[str, list] = {}
    for feature in features:
        offline = frame[feature].to_list()
        online = [row[feature] for row in served]
        for entity, a, b in zip(ids, offline, online, strict=True):
            if a != b:
                differing.setdefault(feature, []).append(entity)
    return len(ids), differing
