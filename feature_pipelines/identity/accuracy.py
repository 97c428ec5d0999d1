"""Pairwise precision and recall of the stitching against ground truth.

Truth: identifier_type, identifier, person (who was behind each id). An id listed under more than one
person (a household tablet, a kiosk) has no single owner: it is left out of the pairs, as are placeholder
ids (no truth row). Over the remaining ids, a pair is two ids of the same person; precision is the share
of predicted pairs that are true, recall the share of true pairs that are predicted. An id in the truth
that the graph never saw counts as a person of its own. Counted from cluster sizes (sum of n*(n-1)/2 over
the contingency table), so 1M persons take a group-by, not a loop over pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

MIN_PRECISION = 0.99
"""A wrong merge shows one person's profile to another: precision is held higher than recall."""
MIN_RECALL = 0.95


@dataclass(frozen=True)
class Accuracy:
    precision: float
    recall: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    ids: int
    ambiguous_ids: int

    def passes(self, min_precision: float, min_recall: float) -> bool:
        return self.precision >= min_precision and self.recall >= min_recall


def _pairs(sizes: pl.Expr) -> pl.Expr:
    return (sizes * (sizes - 1) // 2).sum()


def pairwise(persons: pl.DataFrame, truth: pl.DataFrame) -> Accuracy:
    """`persons`: identifier_type, identifier, person_id (the stitching); `truth`: identifier_type, identifier,
    person."""
    missing = {"identifier_type", "identifier", "person"} - set(truth.columns)
    if missing:
        raise ValueError(f"ground truth lacks column(s) {sorted(missing)}; it has {truth.columns}")
    key = ["identifier_type", "identifier"]
    owners = truth.select(*key, pl.col("person").cast(pl.String)).drop_nulls().unique()
    counts = owners.group_by(key).agg(pl.col("person").first(), pl.len().alias("n"))
    single = counts.filter(pl.col("n") == 1).drop("n")
    joined = single.join(persons.select(*key, "person_id"), on=key, how="left").with_columns(
        pl.coalesce("person_id", pl.lit("unseen:") + pl.col("identifier_type") + ":" + pl.col("identifier"))
    )
    true_pairs = joined.group_by("person").len().select(_pairs(pl.col("len"))).item()
    predicted = joined.group_by("person_id").len().select(_pairs(pl.col("len"))).item()
    correct = joined.group_by("person", "person_id").len().select(_pairs(pl.col("len"))).item()
    return Accuracy(
        precision=correct / predicted if predicted else 1.0,
        recall=correct / true_pairs if true_pairs else 1.0,
        true_pairs=int(true_pairs),
        predicted_pairs=int(predicted),
        correct_pairs=int(correct),
        ids=joined.height,
        ambiguous_ids=counts.height - single.height,
    )
