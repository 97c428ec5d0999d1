"""The commit history of a Delta table, read from its log: the one module that reads `_delta_log`.

Training sets use it to know *when* each row became known, lineage and the catalog to say which run wrote
what. The log is kept whole on purpose (tables are written with log cleanup off): known-time history
needs every commit.

A writer may declare a commit part of the table's **initial historical load** (commit metadata
`fs.historical_load = "true"`, see `offline/delta.py`). Only the flagged commits before the first
unflagged commit that changes data form that load (`History.initial_load`): once a regular write has
happened, a later declaration is recorded but does not count. Deciding what a declared load means for
knowledge is the reader's business (`training.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
HISTORICAL_LOAD = "fs.historical_load"
"""Commit metadata key (value "true") of a commit declared part of the table's initial historical load."""

_STANDARD = {"timestamp", "operation", "operationParameters", "operationMetrics", "engineInfo", "clientVersion"}


class HistoryError(ValueError):
    """The log cannot answer: an entry is gone (log cleanup) or the table does not exist."""


@dataclass(frozen=True)
class Commit:
    """One commit: when, what operation, and the metadata our writers attach (run id, partitions...)."""

    version: int
    timestamp: datetime
    operation: str
    metadata: dict[str, Any] = field(default_factory=dict)
    changes_data: bool = False
    """It adds or removes data files (a write, a restore), as opposed to a table property change."""

    @property
    def declared_historical_load(self) -> bool:
        return str(self.metadata.get(HISTORICAL_LOAD, "")).lower() == "true"


@dataclass(frozen=True)
class FileLife:
    """One data file's life in the table: added by `added`, removed by `removed` (None: still live)."""

    path: str
    partition: str
    added: int
    removed: int | None
    added_at: datetime
    removed_at: datetime


@dataclass(frozen=True)
class History:
    """Every commit and every file life of a table, up to `version`."""

    uri: str
    version: int
    commits: dict[int, Commit]
    files: list[FileLife]

    def commit(self, version: int) -> Commit:
        return self.commits[version]

    def first_write(self) -> dict[str, int]:
        """Per partition, the version that first wrote it."""
        out: dict[str, int] = {}
        for f in self.files:
            out[f.partition] = min(f.added, out.get(f.partition, f.added))
        return out

    def initial_load(self) -> set[int]:
        """The versions of the table's declared initial historical load: every commit declared so, up to
        the first commit that changes data without the declaration (a regular write ends the load)."""
        out: set[int] = set()
        for version in sorted(self.commits):
            c = self.commits[version]
            if c.declared_historical_load:
                out.add(version)
            elif c.changes_data:
                break
        return out

    @property
    def initial_load_open(self) -> bool:
        """True while no regular write has happened: a declared historical load would still count."""
        return not any(c.changes_data and not c.declared_historical_load for c in self.commits.values())


def log_dir(uri: str) -> Path:
    return Path(uri) / "_delta_log"


def latest_version(uri: str) -> int | None:
    """The newest committed version, from the log file names (no Delta reader needed)."""
    versions = [int(p.stem) for p in log_dir(uri).glob("*.json") if p.stem.isdigit()]
    return max(versions) if versions else None


def read_history(uri: str, version: int | None = None, partition_column: str | None = None) -> History:
    """Parse the log entries 0..version (default: the newest). File lives are tracked per path: a path
    may be added, removed and added back (RESTORE), one life each time."""
    newest = latest_version(uri)
    if newest is None:
        raise HistoryError(f"{uri}: no Delta table here (no _delta_log)")
    version = newest if version is None else version
    commits: dict[int, Commit] = {}
    lives: dict[str, list[list]] = {}
    changed: set[int] = set()
    for v in range(version + 1):
        entry = log_dir(uri) / f"{v:020d}.json"
        if not entry.exists():
            raise HistoryError(
                f"{uri}: Delta log entry {v} is gone (log retention); this needs the whole log, "
                "e.g. use mode='latest' for training sets"
            )
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                commits[v] = _commit(v, action["commitInfo"])
            elif "add" in action:
                add = action["add"]
                values = add.get("partitionValues") or {}
                partition = values.get(partition_column, "") if partition_column else ""
                lives.setdefault(add["path"], []).append([v, None, partition])
                changed.add(v)
            elif "remove" in action:
                changed.add(v)
                if action["remove"]["path"] in lives:
                    lives[action["remove"]["path"]][-1][1] = v
    commits = {v: replace(c, changes_data=v in changed) for v, c in commits.items()}
    files = [
        FileLife(
            path=str(Path(uri) / unquote(path)),
            partition=partition,
            added=added,
            removed=removed,
            added_at=commits[added].timestamp,
            removed_at=commits[removed].timestamp if removed is not None else FAR_FUTURE,
        )
        for path, spans in lives.items()
        for added, removed, partition in spans
    ]
    return History(uri, version, commits, files)


def initial_load_open(uri: str) -> bool:
    """Would a write declared a historical load count as one? Yes on a new table or one written only so."""
    return latest_version(uri) is None or read_history(uri).initial_load_open


def commit(uri: str, version: int) -> Commit | None:
    """One commit of a table (None if the table or the entry does not exist)."""
    entry = log_dir(uri) / f"{version:020d}.json"
    if not entry.exists():
        return None
    actions = [json.loads(line) for line in entry.read_text().splitlines()]
    info = next((a["commitInfo"] for a in actions if "commitInfo" in a), None)
    if info is None:
        return None
    return replace(_commit(version, info), changes_data=any("add" in a or "remove" in a for a in actions))


def _commit(version: int, info: dict[str, Any]) -> Commit:
    return Commit(
        version=version,
        timestamp=datetime.fromtimestamp(info["timestamp"] / 1000, UTC),
        operation=info.get("operation", ""),
        metadata={k: v for k, v in info.items() if k not in _STANDARD},
    )


def covered_partitions(uri: str, partition_column: str) -> set[str]:
    """Daily partitions the table's writers declared they covered, rows or not, plus every partition with a file.

    A commit's `covered_days` metadata (a JSON list of "first..last" spans or days, set by ingest) says which
    days its delivery covered: a day covered with zero rows (a closed shop) is known although no file holds
    it. Commits without it fall back to `partitions` ("first..last", the days they replaced). Empty if no
    table."""
    try:
        history = read_history(uri, partition_column=partition_column)
    except HistoryError:
        return set()
    covered = {f.partition for f in history.files if f.removed is None and f.partition}
    for entry in history.commits.values():
        spans = entry.metadata.get("covered_days")
        if isinstance(spans, str):
            try:
                listed = json.loads(spans)
            except ValueError:
                listed = []
        else:
            listed = [entry.metadata.get("partitions")]
        for span in listed:
            covered.update(_days(span))
    return covered


def _days(span: object) -> list[str]:
    if not isinstance(span, str):
        return []
    first_text, _, last_text = span.partition("..")
    try:
        first, last = date.fromisoformat(first_text), date.fromisoformat(last_text or first_text)
    except ValueError:
        return []
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
