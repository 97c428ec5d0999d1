"""Persons: connected components of the merged edges, with a stable canonical id.

Why the id is a function of the component's *oldest* id: `p_` + 16 hex digits of BLAKE2b over the
identifier (type and value) first seen earliest in the component. When two persons merge, the merged
component's oldest id is the older person's, so the older id survives; when an edge is retracted (or a
guardrail starts refusing it), each part's oldest id is again the one it had before the merge, so the
earlier ids come back. No minted-id state can drift, and an incremental run and a full recompute agree.

Components come from scipy's `connected_components` over integer-coded ids (linear time). A component
holding more than `max_persons` customer ids (possible through a chain of ids that each passed the
guardrails) has its device edges refused (`component_customer_limit`); what is left links anonymous ids
to at most one customer each, so every component then holds at most one customer.

`joined_at` is when an id became part of its person: the smallest over paths to the oldest id of the
latest edge on the path (a minimax path, by vectorised relaxation). Before it, the id was not known to
belong to this person: the alias map gives it its own id until then, so a later login does not leak.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from feature_pipelines.identity.edges import CUSTOMER, DEVICE, MERGED

TYPE_RANK = {"customer_id": 0, "device_id": 1, "anonymous_id": 2}
PERSON_SCHEMA = {
    "identifier_type": pl.String(),
    "identifier": pl.String(),
    "person_id": pl.String(),
    "own_id": pl.String(),
    "first_seen": pl.Datetime("us", "UTC"),
    "joined_at": pl.Datetime("us", "UTC"),
}


def person_id(identifier_type: str, identifier: str) -> str:
    return "p_" + hashlib.blake2b(f"{identifier_type}:{identifier}".encode(), digest_size=8).hexdigest()


def own_ids(frame: pl.DataFrame) -> pl.Series:
    return pl.Series(
        "own_id",
        [person_id(t, i) for t, i in zip(frame["identifier_type"], frame["identifier"], strict=True)],
        pl.String,
    )


def persons(nodes: pl.DataFrame, judged: pl.DataFrame, max_persons: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each id of `nodes` (identifier_type, identifier, first_seen) with its person; and `judged` with the
    status of device edges the component check refused updated."""
    nodes = nodes.sort("identifier_type", "identifier").with_row_index("_n")
    keyed = nodes.select("_n", "identifier_type", "identifier")
    edges = (
        judged.with_row_index("_e")
        .join(
            keyed.rename({"_n": "_a", "identifier": "anonymous_id"})
            .filter(pl.col("identifier_type") == "anonymous_id")
            .drop("identifier_type"),
            on="anonymous_id",
            how="inner",
        )
        .join(
            keyed.rename({"_n": "_b", "identifier_type": "other_type", "identifier": "other"}),
            on=["other_type", "other"],
            how="inner",
        )
        .sort("_e")
    )
    labels = _components(nodes.height, edges.filter(pl.col("status") == MERGED))
    customers = np.bincount(
        labels, weights=(nodes["identifier_type"] == CUSTOMER).to_numpy(), minlength=labels.max(initial=-1) + 1
    )
    crowded = customers > max_persons
    if crowded.any():
        a = edges["_a"].to_numpy()
        bad = (edges["status"] == MERGED).to_numpy() & (edges["other_type"] == DEVICE).to_numpy() & crowded[labels[a]]
        refused = edges.filter(pl.Series(bad)).select("_e")
        judged = (
            judged.with_row_index("_e")
            .with_columns(
                pl.when(pl.col("_e").is_in(refused["_e"].implode()))
                .then(pl.lit("component_customer_limit"))
                .otherwise("status")
                .alias("status")
            )
            .drop("_e")
        )
        edges = edges.with_columns(
            pl.when(pl.Series(bad)).then(pl.lit("component_customer_limit")).otherwise("status").alias("status")
        )
        labels = _components(nodes.height, edges.filter(pl.col("status") == MERGED))
    merged = edges.filter(pl.col("status") == MERGED)
    first = nodes["first_seen"].dt.epoch("us").to_numpy()
    rank = nodes["identifier_type"].replace_strict(TYPE_RANK, return_dtype=pl.Int64).to_numpy()
    order = np.lexsort((np.arange(nodes.height), rank, first, labels))  # ids are sorted: index breaks ties
    anchor_of = np.empty(labels.max(initial=-1) + 1, dtype=np.int64)
    is_first = np.ones(order.size, bool)
    is_first[1:] = labels[order][1:] != labels[order][:-1]
    anchor_of[labels[order][is_first]] = order[is_first]
    anchor = anchor_of[labels]
    joined = _joined_at(
        first, anchor, merged["_a"].to_numpy(), merged["_b"].to_numpy(), merged["first_seen"].dt.epoch("us").to_numpy()
    )
    own = own_ids(nodes)
    out = nodes.select("identifier_type", "identifier", "first_seen").with_columns(
        pl.Series("person_id", own.to_numpy()[anchor], pl.String),
        own,
        pl.Series("joined_at", joined).cast(pl.Datetime("us", "UTC")),
    )
    return out.select(PERSON_SCHEMA.keys()), judged


def _components(n: int, edges: pl.DataFrame) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a, b = edges["_a"].to_numpy(), edges["_b"].to_numpy()
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def _joined_at(first: np.ndarray, anchor: np.ndarray, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Minimax path time from each id to its component's anchor (the anchor: its own first time)."""
    big = np.iinfo(np.int64).max
    joined = np.full(first.size, big, dtype=np.int64)
    anchors = anchor == np.arange(first.size)
    joined[anchors] = first[anchors]
    while True:
        via_a = np.maximum(joined[a], t)
        via_b = np.maximum(joined[b], t)
        nxt = joined.copy()
        np.minimum.at(nxt, b, via_a)
        np.minimum.at(nxt, a, via_b)
        if np.array_equal(nxt, joined):
            return np.maximum(joined, first)
        joined = nxt
