"""Entity key rules, applied the same way wherever ids enter: ingest, training entity frames, serving reads.

A key is first converted to the entity's dtype without loss (`12345.0` becomes `12345`, `12345.5` is an
error, never `12345`), then normalized as the entity declares (e.g. strip and upper-case stock codes), then
checked against the entity's pattern or range. Look-alike Unicode (full-width digits `８５１２３`) fails an
ASCII pattern unless the entity declares "nfkc" normalization: it never becomes a new key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from feature_pipelines.rules import ColumnTypeError, Failure, lossless_cast, matches, normalize_text
from feature_pipelines.spec import Entity

EXAMPLES = 3


class EntityKeyError(ValueError):
    """Ids that break their entity's key rules; the message names where, the column, the rule, count, examples."""


@dataclass(frozen=True)
class KeyCheck:
    """Keys converted and normalized, the rows breaking a rule, and the rows holding declared non-keys."""

    values: pl.Series
    failures: tuple[Failure, ...]
    non_keys: pl.Series | None = None


def check_keys(entity: Entity, values: pl.Series, *, allow_non_keys: bool = False) -> KeyCheck:
    """`values` as the entity's keys. Nulls pass (the caller decides whether a key may be missing).

    `allow_non_keys`: values matching the entity's `non_key_pattern` pass (a source's key column may hold
    service codes); elsewhere they are not keys and fail."""
    target = entity.polars_dtype
    cast = lossless_cast(values, target)
    keys = cast.values
    failures = list(cast.failures)
    if target == pl.String and entity.normalize:
        keys = normalize_text(keys, entity.normalize)
    present = keys.is_not_null()
    non_keys = None
    if entity.non_key_pattern and target == pl.String:
        non_keys = (present & matches(keys, entity.non_key_pattern)).fill_null(False)
    if entity.pattern and target == pl.String:
        bad = present & ~matches(keys, entity.pattern).fill_null(False)
        if non_keys is not None and allow_non_keys:
            bad = bad & ~non_keys
        failures.append(
            Failure("key_pattern", bad, f"do not match the key pattern {entity.pattern!r} of entity {entity.name!r}")
        )
    elif non_keys is not None and not allow_non_keys:
        failures.append(
            Failure("non_key", non_keys, f"are declared non-keys of entity {entity.name!r}, not {entity.name} keys")
        )
    if target.is_integer() or target.is_float():
        if entity.min is not None:
            failures.append(
                Failure(
                    "key_min",
                    present & (keys < entity.min).fill_null(False),
                    f"are below the smallest {entity.name} key {entity.min}",
                )
            )
        if entity.max is not None:
            failures.append(
                Failure(
                    "key_max",
                    present & (keys > entity.max).fill_null(False),
                    f"are above the largest {entity.name} key {entity.max}",
                )
            )
    return KeyCheck(keys, tuple(f for f in failures if f.mask.any()), non_keys)


def describe(failures: Sequence[Failure], original: pl.Series, where: str, column: str) -> list[str]:
    """One line per broken rule: where, column, rule, count and a few original values."""
    lines = []
    for f in failures:
        examples = original.filter(f.mask).unique(maintain_order=True).head(EXAMPLES).to_list()
        lines.append(
            f"{where}: column {column!r}, rule {f.rule}: {int(f.mask.sum())} of {len(original)} values {f.meaning}; "
            f"e.g. {examples}"
        )
    return lines


def normalize_keys(entity: Entity, values: pl.Series, where: str) -> pl.Series:
    """The keys converted and normalized, or `EntityKeyError` naming every broken rule (training frames)."""
    try:
        checked = check_keys(entity, values)
    except ColumnTypeError as exc:
        raise EntityKeyError(
            f"{where}: column {values.name!r}, rule {exc.rule}: {len(values)} of {len(values)} values {exc.meaning} "
            f"(entity {entity.name!r} keys are {entity.polars_dtype})"
        ) from exc
    if checked.failures:
        raise EntityKeyError("\n".join(describe(checked.failures, values, where, values.name)))
    return checked.values


def normalize_ids(entity: Entity, ids: Sequence[Any], where: str = "ids") -> list[Any]:
    """Ids of a serving read as the entity's keys (same rules as ingest), or `EntityKeyError`.

    For the serving client: `client.get_view(view, normalize_ids(entity, ids))` reads the key that ingest
    stored (`" 85123a "` -> `"85123A"`), and a negative customer id or a full-width stock code is refused
    instead of read as an unknown key."""
    try:
        series = pl.Series(entity.join_key, list(ids), strict=True)
    except (TypeError, pl.exceptions.PolarsError):  # mixed python types: read them as text, exactly
        series = pl.Series(entity.join_key, [_text(i) for i in ids], dtype=pl.String)
    return normalize_keys(entity, series, where).to_list()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
