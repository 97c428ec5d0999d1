"""Ingest: a source's files through the raw gate and the volume and coverage guards into its raw Delta table.

The Dagster raw asset and `fstore ingest` both call `ingest()`: the same gate, the same guards and the same
commit metadata. Nothing is committed unless every file passed and every guard held; then the run's days
are replaced in one Delta commit whose metadata lists the days it replaced (`partitions`) and the days the
delivery covers (`covered_days`): the days between the first and the last event of each file. A day
covered with zero rows (a Saturday inside a file) counts as ingested (`history.covered_partitions`); a day
of the run that no file spans (its file has not arrived) does not, so no feature window counts it as
complete.

Guards (invariant 2: a good day is never wiped by a bad re-delivery):
- A re-delivery may not shrink a day that had rows by more than the source's `max_shrink`, nor to zero,
  unless the operator says so (`allow_shrink`, recorded in the commit metadata with the days it shrank).
- Two files delivering the same day are refused: one of them is a stale or duplicate delivery.
- Rows outside the run's days, before the source's start or after its end are reported (counts and
  examples, in the log and the commit metadata), never dropped in silence. Future times are contract
  violations (see `contracts.py`).
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from feature_pipelines.offline import delta, quarantine
from feature_pipelines.offline.contracts import CorruptFileError, GatedFile, SourceError, gate_file
from feature_pipelines.settings import Settings
from feature_pipelines.spec import EVENT_DATE, BatchSource, Entity

__all__ = ["CorruptFileError", "IngestResult", "ShrinkError", "SourceError", "ingest", "read_file", "read_source"]

EXAMPLES = 3


class ShrinkError(SourceError):
    """A re-delivery would shrink days that had rows by more than the source allows."""


def source_location(source: BatchSource, base_dir: Path, location: str | None = None) -> str:
    """Where the source's files are: `location`, else `FS_SOURCE_<NAME>_LOCATION`, else the declared one. A
    folder means every file of the source's format in it."""
    where = location or Settings().source_location(source.name) or source.location
    path = Path(where) if Path(where).is_absolute() else base_dir / where
    return str(path / f"*.{source.format}") if path.is_dir() else str(path)


def source_files(source: BatchSource, base_dir: Path, location: str | None = None) -> list[str]:
    pattern = source_location(source, base_dir, location)
    files = sorted(glob.glob(pattern))
    if not files:
        raise SourceError(f"source {source.name!r}: no file matches {pattern}")
    return files


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_file(source: BatchSource, path: str, entities: Mapping[str, Entity]) -> pl.DataFrame:
    """One file through the raw gate: its good rows, normalized (declared dtypes, entity keys, UTC, event_date)."""
    return gate_file(source, entities, path).frame


def read_source(source: BatchSource, base_dir: Path, entities: Mapping[str, Entity]) -> pl.DataFrame:
    """Every file of the source through the raw gate."""
    return pl.concat([read_file(source, f, entities) for f in source_files(source, base_dir)], how="vertical")


def in_range(frame: pl.DataFrame, first: date | str, last: date | str) -> pl.DataFrame:
    return frame.filter(pl.col(EVENT_DATE).is_between(pl.lit(str(first)), pl.lit(str(last))))


@dataclass(frozen=True)
class Outside:
    """Rows a run does not write, by why: reported, never dropped in silence."""

    kind: str
    count: int
    examples: list[str]

    def __str__(self) -> str:
        return f"{self.count:,} rows {self.kind}; e.g. {self.examples}"


@dataclass
class IngestResult:
    source: str
    first: date
    last: date
    commit: delta.Commit
    rows_by_day: dict[str, int]
    previous_by_day: dict[str, int]
    files: dict[str, str]
    quarantined: int
    outside: list[Outside]
    shrunk: dict[str, tuple[int, int]]
    covered: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.commit.rows

    def summary(self) -> str:
        lines = [
            f"{self.source}: {self.rows:,} rows for {self.first}..{self.last} from {len(self.files)} file(s), "
            f"Delta v{self.commit.version}"
        ]
        lines += [f"  not written: {o}" for o in self.outside]
        uncovered = [d for d in self.rows_by_day if d not in set(self.covered)]
        if uncovered:
            lines.append(
                f"  not counted as ingested (no delivered file spans them): {_spans(uncovered)}; feature windows "
                "over them stay incomplete until their files arrive (or declare them closures)"
            )
        if self.quarantined:
            lines.append(f"  quarantined: {self.quarantined} bad rows (lake/quarantine/{self.source})")
        lines += [f"  shrunk with --allow-shrink: {d} {a} -> {b} rows" for d, (a, b) in self.shrunk.items()]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _kept_records(
    source: BatchSource,
    entities: Mapping[str, Entity],
    records: pl.DataFrame,
    exclude: Callable[[pl.DataFrame], pl.DataFrame],
) -> pl.DataFrame:
    """Quarantined rows `exclude` would keep: their entity keys read back from the JSON record (the file's own
    column names, values as text) and cast to the key's dtype (a key too broken to cast is no one's: kept)."""
    keys = {}
    for column in source.schema:
        entity = next((e for e in entities.values() if e.join_key == source.column(column)), None)
        if entity is not None:
            text = pl.col("record").str.json_path_match(f"$['{column}']")
            keys[entity.join_key] = text.cast(entity.polars_dtype, strict=False)
    if not keys or records.height == 0:
        return records
    indexed = records.with_row_index("_record").with_columns(**keys)
    kept = exclude(indexed.select("_record", *keys))["_record"]
    return indexed.filter(pl.col("_record").is_in(kept.implode())).drop("_record", *keys)


def ingest(
    source: BatchSource,
    entities: Mapping[str, Entity],
    files: list[str],
    first: date | None,
    last: date | None,
    *,
    raw_uri: str,
    quarantine_uri: str,
    run_id: str,
    allow_shrink: bool = False,
    commit_metadata: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    now: datetime | None = None,
    exclude: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> IngestResult:
    """Gate `files`, check the guards, and replace the raw days `first..last` in one commit (without a range:
    the days the files hold inside the source's window).

    `exclude` drops rows that may never be stored again (erased subjects: `PrivacyPolicy.without_erased`);
    how many is recorded in the commit metadata (`erased_rows`).

    Raises `SourceError` (nothing committed) when a file is refused or a guard does not hold."""
    gated = [gate_file(source, entities, f, now=now) for f in files]
    _refuse_shared_days(gated)
    frame = pl.concat([g.frame for g in gated], how="vertical")
    if first is None or last is None:
        span = covered_range(source, frame)
        if span is None:
            raise SourceError(
                f"source {source.name!r}: {[Path(f).name for f in files]} hold no row inside the source's window "
                f"{source.start}..{source.end or 'today'}; give the days to replace (--first/--last) to ingest an "
                "empty delivery. Nothing was committed."
            )
        first, last = first or span[0], last or span[1]
    outside = _outside(source, frame, first, last)
    rows = in_range(frame, first, last)
    erased_rows = 0
    if exclude is not None:
        kept = exclude(rows)
        erased_rows, rows = rows.height - kept.height, kept
    days = [d.isoformat() for d in pl.date_range(first, last, eager=True).to_list()]
    counts = dict(rows.group_by(EVENT_DATE).len().iter_rows())
    rows_by_day = {d: int(counts.get(d, 0)) for d in days}
    previous = delta.partition_row_counts(raw_uri, EVENT_DATE, first, last)
    shrunk = _shrunk(source, previous, rows_by_day)
    if shrunk and not allow_shrink:
        listing = ", ".join(f"{d}: {a:,} -> {b:,} rows" for d, (a, b) in list(shrunk.items())[:10])
        more = f" (and {len(shrunk) - 10} more days)" if len(shrunk) > 10 else ""
        reported = "".join(f"; {o}" for o in outside)
        raise ShrinkError(
            f"source {source.name!r}: files {[Path(f).name for f in files]} would shrink {len(shrunk)} day(s) that "
            f"already had rows by more than max_shrink={source.max_shrink:.0%} or to zero (rule max_shrink): "
            f"{listing}{more}"
            f"{reported}. Nothing was committed. If the smaller delivery is right, re-run with --allow-shrink "
            "(fstore ingest) or the run tag allow_shrink=true (Dagster)."
        )
    spans = [(g.frame[EVENT_DATE].min(), g.frame[EVENT_DATE].max()) for g in gated if g.frame.height]
    covered = [d for d in days if any(lo <= d <= hi for lo, hi in spans)]
    hashes = {g.path: file_sha256(g.path) for g in gated}
    notes = [f"{Path(g.path).name}: {n}" for g in gated for n in g.notes]
    quarantined = sum(g.bad_rows for g in gated)
    metadata = {
        **(commit_metadata or {}),
        "source": source.name,
        "partitions": f"{first}..{last}",
        "covered_days": json.dumps(_span_list(covered)),
        "source_files": json.dumps(hashes),
        "rows_by_file": json.dumps({g.path: g.frame.height for g in gated}),
        "quarantined_rows": str(quarantined),
        "not_written": json.dumps({o.kind: o.count for o in outside}),
        "erased_rows": str(erased_rows),
    }
    if allow_shrink:
        metadata["allow_shrink"] = "true"
        metadata["shrunk_days"] = json.dumps({d: {"before": a, "after": b} for d, (a, b) in shrunk.items()})
    if notes:
        metadata["notes"] = json.dumps(notes)
    # Ids of people stay out of the log's statistics (the log outlives every erasure's DELETE).
    identifiers = {e.join_key for e in entities.values() if e.personal}
    stats = [c for c in rows.columns if c not in identifiers]
    commit = delta.overwrite_partitions(
        raw_uri, rows, EVENT_DATE, first, last, commit_metadata=metadata, stats_columns=stats
    )
    erased_quarantined = 0
    for g in gated:
        if g.quarantined is not None:
            kept = g.quarantined if exclude is None else _kept_records(source, entities, g.quarantined, exclude)
            erased_quarantined += g.quarantined.height - kept.height
            quarantine.write(quarantine_uri, kept, sha256=hashes[g.path], run_id=run_id)
    if erased_quarantined and log is not None:
        log(f"left out {erased_quarantined} quarantined rows of erased subjects")
    result = IngestResult(
        source.name,
        first,
        last,
        commit,
        rows_by_day,
        previous,
        hashes,
        quarantined,
        outside,
        shrunk,
        covered,
        notes,
        metadata,
    )
    if log:
        for line in result.summary().splitlines()[1:]:
            log(line.strip())
        for g in gated:
            for v in g.violations:
                log(f"quarantined: {v}")
    return result


def _refuse_shared_days(gated: list[GatedFile]) -> None:
    """Two files holding the same day: one is a stale or duplicate delivery, and both would be counted."""
    owners: dict[str, list[str]] = {}
    for g in gated:
        for day in g.frame[EVENT_DATE].unique().to_list():
            owners.setdefault(day, []).append(g.path)
    shared = {d: paths for d, paths in owners.items() if len(paths) > 1}
    if shared:
        day = min(shared)
        rows = [
            f"{g.path}: {g.frame.filter(pl.col(EVENT_DATE) == day).height} rows" for g in gated if g.path in shared[day]
        ]
        raise SourceError(
            f"{len(shared)} day(s) are delivered by more than one file (rule one_file_per_day), e.g. {day} by "
            f"{'; '.join(rows)}. A re-delivery must replace the earlier file, not sit beside it (its rows would "
            "count twice). Nothing was committed."
        )


def _outside(source: BatchSource, frame: pl.DataFrame, first: date, last: date) -> list[Outside]:
    ts = source.event_time_column
    day = pl.col(EVENT_DATE)
    kinds = [("before the source's start " + str(source.start), day < str(source.start))]
    if source.end is not None:
        kinds.append((f"after the source's end {source.end}", day > str(source.end)))
    upper = day <= str(source.end) if source.end is not None else pl.lit(True)
    kinds.append(
        (
            f"outside this run's days {first}..{last}",
            (day >= str(source.start)) & upper & ~day.is_between(pl.lit(str(first)), pl.lit(str(last))),
        )
    )
    out = []
    for kind, condition in kinds:
        rows = frame.filter(condition)
        if rows.height:
            examples = rows[ts].head(EXAMPLES).dt.strftime("%Y-%m-%d %H:%M UTC").to_list()
            out.append(Outside(kind, rows.height, examples))
    return out


def _shrunk(source: BatchSource, previous: dict[str, int], new: dict[str, int]) -> dict[str, tuple[int, int]]:
    out = {}
    for day, before in sorted(previous.items()):
        after = new.get(day, 0)
        if before > 0 and (after == 0 or after < before * (1 - source.max_shrink)):
            out[day] = (before, after)
    return out


def covered_range(source: BatchSource, frame: pl.DataFrame) -> tuple[date, date] | None:
    """The first and last day of a delivery inside the source's window (`fstore ingest` without a range)."""
    days = frame[EVENT_DATE]
    hi = str(source.end) if source.end else "9999-12-31"
    inside = days.filter(days.is_between(pl.lit(str(source.start)), pl.lit(hi)))
    if inside.is_empty():
        return None
    return date.fromisoformat(inside.min()), date.fromisoformat(inside.max())  # type: ignore[arg-type]


def _span_list(days: list[str]) -> list[str]:
    """Sorted ISO days as contiguous spans: `["2011-01-04..2011-01-06", "2011-01-09"]`."""
    spans: list[list[str]] = []
    for day in sorted(days):
        if spans and date.fromisoformat(day) - date.fromisoformat(spans[-1][1]) == timedelta(days=1):
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return [a if a == b else f"{a}..{b}" for a, b in spans]


def _spans(days: list[str]) -> str:
    return ", ".join(_span_list(days))
