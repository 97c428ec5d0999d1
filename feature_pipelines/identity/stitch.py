"""A stitching run: events in, the identity tables (Delta, under `<lake>/identity/`) updated.

Tables: `identifiers` and `links` (the events aggregated: the graph's input), `edges` (every link with
its status: merged or the rule that refused it), `violations`, `retractions` (operator splits), `persons`
(each id's person now) and `alias_map` (bitemporal, see `alias_map.py`).

Incremental (`update`): a new day's events are aggregated and merged into `identifiers` and `links`; the
guardrails are re-judged over the link table (vectorised, no event re-read); components are recomputed only
for the persons the day touched (ids in the day's events, and ids whose edges changed status), and only
their alias facts are diffed. `full` recomputes everything from the given events; both give the same
persons and current alias facts (tests/identity/test_stitching.py).

Writes are incremental too, so a daily run costs what the day changed, not the size of the graph:
- `identifiers`, `links`, `signals`, `edges`, `persons` are change logs (`LOGGED`): a run appends the rows
  it changed, whole, with the run's sequence number `seq`; a read keeps each key's row of the highest
  `seq`. A full recompute, or a log grown past `COMPACT_RATIO` times its live rows, rewrites the table
  whole at `seq` 0 (a compaction; older versions stay in the Delta log).
- `alias_map` is partitioned by `known_day` (the UTC day of `known_from`): a run's new facts land in the
  day it commits, and closing a fact (`known_to`) rewrites only the partitions holding closed facts.
- the small tables (`review`, `violations`, `retractions`, `days`) are rewritten whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from feature_pipelines.identity import alias_map, edges, graph, probabilistic
from feature_pipelines.offline import delta
from feature_pipelines.privacy.tombstones import without_erased_identifiers

IDENTITY_SOURCE = "behaviour_events"
"""The catalog source on the identity input contract (docs/identity.md) that the Dagster assets stitch."""
TABLES = (
    "identifiers",
    "links",
    "signals",
    "edges",
    "review",
    "violations",
    "retractions",
    "persons",
    "alias_map",
    "days",
)
RETRACTION_SCHEMA = {
    "anonymous_id": pl.String(),
    "other_type": pl.String(),
    "other": pl.String(),
    "retracted_at": pl.Datetime("us", "UTC"),
}
DAY_SCHEMA = {
    "day": pl.String(),
    "events": pl.Int64(),
    "digest": pl.String(),
    "status": pl.String(),
    "folded_at": pl.Datetime("us", "UTC"),
}
"""The day ledger of `fold`: which days of events the graph holds, with a digest of their identity columns.
`status` is "pending" while a run writes the tables, "folded" once it is done: a pending day forces the next
run to recompute from all folded days (a crash mid-commit never leaves a day counted twice)."""
PENDING, FOLDED = "pending", "folded"
SCHEMAS = {
    "identifiers": edges.IDENTIFIER_SCHEMA,
    "links": edges.LINK_SCHEMA,
    "signals": probabilistic.SIGNAL_SCHEMA,
    "review": probabilistic.REVIEW_SCHEMA,
    "edges": {**edges.LINK_SCHEMA, "status": pl.String()},
    "violations": edges.VIOLATION_SCHEMA,
    "retractions": RETRACTION_SCHEMA,
    "persons": graph.PERSON_SCHEMA,
    "alias_map": alias_map.ALIAS_SCHEMA,
    "days": DAY_SCHEMA,
}
DIGEST_COLUMNS = (
    "event_id",
    "event_time",
    "anonymous_id",
    "device_id",
    "customer_id",
    "network_id",
    "device_type",
    "locale",
)


LOGGED = {
    "identifiers": ["identifier_type", "identifier"],
    "links": ["anonymous_id", "other_type", "other"],
    "signals": ["anonymous_id", "fingerprint"],
    "edges": ["anonymous_id", "other_type", "other"],
    "persons": ["identifier_type", "identifier"],
}
"""Change-log tables and their keys (see the module doc)."""
SEQ = "seq"
COMPACT_RATIO = 2.0
"""A change log holding more than this many stored rows per live row is compacted by the next run."""
ALIAS_PARTITION = "known_day"


@dataclass(frozen=True)
class Log:
    """What a change-log table holds: its stored rows (every version), its highest sequence number, and
    whether it is stored as a change log at all (False: no table, or one written before change logs)."""

    stored: int = 0
    seq: int = -1
    logged: bool = False


class IdentityError(ValueError):
    """A stitching request that cannot be carried out (unknown id, no such edge)."""


@dataclass
class RunSummary:
    known_at: datetime
    events: int
    identifiers: int
    persons: int
    recomputed: int
    merged_edges: int
    refused_edges: dict[str, int] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)
    alias_facts_opened: int = 0
    alias_facts_closed: int = 0
    mode: str = "full"
    days: list[str] = field(default_factory=list)


@dataclass
class Run:
    """A planned stitching run: the tables it will write, not written yet (so a check can veto it)."""

    summary: RunSummary
    tables: dict[str, pl.DataFrame]
    meta: dict[str, str]
    base: dict[str, pl.DataFrame] = field(default_factory=dict)
    """The tables as the run read them (incremental runs): the commit writes only what differs."""
    logs: dict[str, Log] = field(default_factory=dict)

    @property
    def noop(self) -> bool:
        return not self.tables

    def table(self, name: str) -> pl.DataFrame:
        return self.tables[name]


class IdentityStore:
    """The identity tables of one lake."""

    def __init__(
        self,
        lake_dir: Path | str,
        guardrails: edges.Guardrails | None = None,
        scoring: probabilistic.Scoring | None = None,
    ) -> None:
        self.root = Path(lake_dir) / "identity"
        self.guardrails = guardrails or edges.Guardrails()
        self.scoring = scoring or probabilistic.Scoring()

    def uri(self, table: str) -> str:
        return str((self.root / table).resolve())

    def read(self, table: str) -> pl.DataFrame:
        """The table's live rows (a change log: each key's latest row, sorted by key)."""
        return self._load(table)[0]

    def _load(self, table: str) -> tuple[pl.DataFrame, Log]:
        uri = self.uri(table)
        if delta.table_version(uri) is None:
            return pl.DataFrame(schema=SCHEMAS[table]), Log()
        stored = delta.scan(uri).collect()
        columns = list(SCHEMAS[table])
        if table not in LOGGED or SEQ not in stored.columns:
            return stored.select(columns), Log(stored.height)
        top = int(stored[SEQ].max()) if stored.height else -1  # type: ignore[arg-type]
        log = Log(stored.height, top, True)
        if stored.height and stored[SEQ].min() != top:
            key = LOGGED[table]
            stored = stored.filter(pl.col(SEQ) == pl.col(SEQ).max().over(key)).sort(key)
        return stored.select(columns), log

    def _typed(self, table: str, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select([pl.col(c).cast(t) for c, t in SCHEMAS[table].items()])

    def write(self, table: str, frame: pl.DataFrame, metadata: dict[str, str]) -> None:
        """Rewrite the table whole (a change log at seq 0, the alias map partitioned by known day)."""
        frame = self._typed(table, frame)
        if table in LOGGED:
            frame = frame.sort(LOGGED[table]).with_columns(pl.lit(0, pl.Int64).alias(SEQ))
            delta.overwrite_table(self.uri(table), frame, metadata)
        elif table == "alias_map":
            frame = _known_day(frame.sort(*alias_map.KEY, "known_from"))
            delta.overwrite_table(self.uri(table), frame, metadata, partition_by=[ALIAS_PARTITION])
        else:
            delta.overwrite_table(self.uri(table), frame, metadata)

    def _store(self, table: str, run: Run) -> None:
        """Write one table of a run: its changes where the run read a base to diff against, else whole."""
        frame, base, meta = self._typed(table, run.table(table)), run.base.get(table), run.meta
        uri = self.uri(table)
        if base is None:
            self.write(table, frame, meta)
        elif table in LOGGED:
            log = run.logs.get(table, Log())
            changed = _changed(frame, self._typed(table, base))
            if not log.logged or log.stored + changed.height > COMPACT_RATIO * max(frame.height, 1):
                self.write(table, frame, meta)
            elif changed.height:
                delta.append(uri, changed.with_columns(pl.lit(log.seq + 1, pl.Int64).alias(SEQ)), commit_metadata=meta)
        elif table == "alias_map":
            if delta.partition_columns(uri) != [ALIAS_PARTITION]:
                self.write(table, frame, meta)
                return
            dated = _known_day(frame)
            days = _known_day(_changed(frame, self._typed(table, base)))[ALIAS_PARTITION].unique().sort().to_list()
            if days:
                rows = dated.filter(pl.col(ALIAS_PARTITION).is_in(days)).sort(*alias_map.KEY, "known_from")
                delta.replace_partition_values(uri, rows, ALIAS_PARTITION, days, meta)
        else:
            self.write(table, frame, meta)

    def alias_map(self) -> alias_map.AliasMap:
        return alias_map.AliasMap(self.read("alias_map"))

    # -- runs -------------------------------------------------------------------------------------------
    def full(self, events: pl.LazyFrame | pl.DataFrame, now: datetime | None = None) -> RunSummary:
        """Recompute every person from `events` (the whole history); the alias map keeps its past facts."""
        return self.commit(self.plan_full(events, now))

    def plan_full(
        self, events: pl.LazyFrame | pl.DataFrame, now: datetime | None = None, *, historical: bool = False
    ) -> Run:
        ev = without_erased_identifiers(events.lazy(), self.root.parent, edges.IDENTIFIER_TYPES)  # erased: never again
        ids = edges.identifiers(ev).collect().sort("identifier_type", "identifier")
        lk = edges.links(ev).collect().sort("anonymous_id", "other_type", "other")
        sig = probabilistic.signals(ev).collect().sort("anonymous_id", "fingerprint")
        return self._plan(ids, lk, sig, None, _count(ev), now, historical)

    def update(self, events: pl.LazyFrame | pl.DataFrame, now: datetime | None = None) -> RunSummary:
        """Fold new events (a day) into the graph, recomputing only the persons they touch."""
        return self.commit(self.plan_update(events, now))

    def plan_update(
        self, events: pl.LazyFrame | pl.DataFrame, now: datetime | None = None, *, historical: bool = False
    ) -> Run:
        ev = without_erased_identifiers(events.lazy(), self.root.parent, edges.IDENTIFIER_TYPES)  # erased: never again
        day_ids = edges.identifiers(ev).collect()
        day_links = edges.links(ev).collect()
        loaded = {name: self._load(name) for name in ("identifiers", "links", "signals")}
        base = {name: frame for name, (frame, _) in loaded.items()}
        ids = edges.merge_identifiers(base["identifiers"], day_ids)
        lk = edges.merge_links(base["links"], day_links)
        sig = probabilistic.merge_signals(base["signals"], probabilistic.signals(ev).collect())
        touched = day_ids.select("identifier_type", "identifier")
        return self._plan(
            ids, lk, sig, touched, _count(ev), now, historical, base, {n: log for n, (_, log) in loaded.items()}
        )

    def split(self, a: str, b: str, now: datetime | None = None) -> RunSummary:
        """Retract the edge between ids `a` and `b` (`type:value` or a value): un-merge their person."""
        links = self.read("edges")
        ia, ib = self.find(a), self.find(b)
        pair = [(x, y) for x, y in ((ia, ib), (ib, ia)) if x[0] == edges.ANONYMOUS]
        hit = pl.DataFrame()
        for (_, anon), (other_type, other) in pair:
            hit = links.filter(
                (pl.col("anonymous_id") == anon) & (pl.col("other_type") == other_type) & (pl.col("other") == other)
            )
            if hit.height:
                break
        if not hit.height:
            raise IdentityError(
                f"no edge between {ia[0]} {ia[1]!r} and {ib[0]} {ib[1]!r}: an edge links an anonymous_id to a "
                "customer_id or a device_id; `fstore identity resolve ID` lists a person's edges"
            )
        when = now or datetime.now(UTC)
        retractions = (
            pl.concat(
                [
                    self.read("retractions"),
                    hit.select("anonymous_id", "other_type", "other").with_columns(
                        pl.lit(when).cast(pl.Datetime("us", "UTC")).alias("retracted_at")
                    ),
                ]
            )
            .unique(["anonymous_id", "other_type", "other"], keep="first")
            .sort("anonymous_id", "other_type", "other")
        )
        self.write("retractions", retractions, {"identity_run": "split"})
        touched = pl.DataFrame({"identifier_type": [ia[0], ib[0]], "identifier": [ia[1], ib[1]]})
        loaded = {name: self._load(name) for name in ("identifiers", "links", "signals")}
        base = {name: frame for name, (frame, _) in loaded.items()}
        plan = self._plan(
            base["identifiers"],
            base["links"],
            base["signals"],
            touched,
            0,
            when,
            False,
            base,
            {n: log for n, (_, log) in loaded.items()},
        )
        return self.commit(plan)

    def find(self, ref: str) -> tuple[str, str]:
        """(identifier_type, identifier) of `type:value` or of a bare value known to the graph."""
        ids = self.read("identifiers")
        kind, _, value = ref.partition(":")
        if value and kind in edges.IDENTIFIER_TYPES:
            hits = ids.filter((pl.col("identifier_type") == kind) & (pl.col("identifier") == value))
        else:
            hits = ids.filter(pl.col("identifier") == ref)
        if hits.height != 1:
            what = (
                "is unknown to the identity graph"
                if not hits.height
                else f"is ambiguous ({hits['identifier_type'].to_list()}): write type:value"
            )
            raise IdentityError(f"id {ref!r} {what}")
        return hits["identifier_type"][0], hits["identifier"][0]

    def plan_fold(
        self,
        days: list[str],
        events_of: Callable[[list[str]], pl.LazyFrame],
        now: datetime | None = None,
        *,
        historical: bool = False,
    ) -> Run:
        """The run that folds the events of `days` (ISO dates; `events_of(days)` reads them) into the graph,
        idempotently: a day already folded with the same events is skipped (a re-run changes no table);
        new days are folded incrementally; a day re-delivered with other events (or a pending day of a
        crashed run) makes the run recompute from every folded day, since a day's links cannot be taken
        back out of the aggregate. `historical` (the initial load of an empty alias map) dates the facts as
        known at the end of their valid day, as timely daily runs would have (see `alias_map.update`)."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        days = sorted(set(days))
        ledger = self.read("days")
        known = dict(ledger.filter(pl.col("status") == FOLDED).select("day", "digest").iter_rows())
        pending = ledger.filter(pl.col("status") != FOLDED)["day"].to_list()
        run_events = events_of(days).collect()
        digests = _digests(run_events, days)
        changed = [d for d in days if known.get(d) != digests[d][1]]
        if not changed and not pending:
            return Run(RunSummary(now, 0, 0, 0, 0, 0, mode="noop", days=days), {}, {})
        redelivered = [d for d in changed if d in known]
        if not known or redelivered or pending:
            every = sorted(set(known) | set(days) | set(pending))
            history = run_events if every == days else events_of(every).collect()
            run = self.plan_full(history, now, historical=historical)
            digests = _digests(history, every)
            folded = every
        else:
            fresh = run_events.filter(pl.col("event_time").dt.date().cast(pl.String).is_in(changed))
            run = self.plan_update(fresh, now, historical=historical)
            folded = changed
        rows = pl.DataFrame(
            [(d, digests[d][0], digests[d][1], FOLDED, now) for d in folded], schema=DAY_SCHEMA, orient="row"
        )
        run.tables["days"] = pl.concat([ledger.filter(~pl.col("day").is_in(folded)), rows]).sort("day")
        run.summary.days = folded
        run.meta["days"] = f"{folded[0]}..{folded[-1]}" if folded else ""
        return run

    def commit(self, run: Run) -> RunSummary:
        """Write a planned run's tables (the day ledger marks its days pending meanwhile)."""
        if run.noop:
            return run.summary
        ledger = run.tables.get("days")
        if ledger is not None:
            self.write("days", ledger.with_columns(pl.lit(PENDING).alias("status")), run.meta)
        for name in run.tables:
            if name != "days":
                self._store(name, run)
        if ledger is not None:
            self.write("days", ledger, run.meta)
        return run.summary

    def _plan(
        self,
        ids: pl.DataFrame,
        lk: pl.DataFrame,
        sig: pl.DataFrame,
        touched: pl.DataFrame | None,
        n_events: int,
        now: datetime | None,
        historical: bool,
        base: dict[str, pl.DataFrame] | None = None,
        logs: dict[str, Log] | None = None,
    ) -> Run:
        now = (now or datetime.now(UTC)).astimezone(UTC)
        base, logs = dict(base or {}), dict(logs or {})
        g = self.guardrails
        retractions = self.read("retractions")
        judged, violations = edges.judge(lk, g, retractions)
        scored, review = probabilistic.score(sig, judged, self.scoring, g)
        if retractions.height:
            scored = scored.join(
                retractions.select("anonymous_id", "other_type", "other", pl.lit(True).alias("_r")),
                on=["anonymous_id", "other_type", "other"],
                how="left",
            ).select(
                *edges.LINK_SCHEMA.keys(),
                pl.when(pl.col("_r").fill_null(False)).then(pl.lit("retracted")).otherwise("status").alias("status"),
            )
        judged = pl.concat([judged, scored]).sort("anonymous_id", "other_type", "other")
        usable = ids.filter(~g.blocked("identifier"))
        previous, persons_log = self._load("persons")
        if touched is None or previous.height == 0:
            base = {}
            scope_ids = None
            nodes = usable
            judged_scope = judged
        else:
            before, logs["edges"] = self._load("edges")
            base.update(edges=before, persons=previous)
            logs["persons"] = persons_log
            changed = pl.concat(
                [
                    judged.join(before, on=["anonymous_id", "other_type", "other", "status"], how="anti"),
                    before.join(judged, on=["anonymous_id", "other_type", "other", "status"], how="anti"),
                ]
            )
            endpoints = pl.concat(
                [
                    touched.select("identifier_type", "identifier"),
                    changed.select(
                        pl.lit(edges.ANONYMOUS).alias("identifier_type"), pl.col("anonymous_id").alias("identifier")
                    ),
                    changed.select(pl.col("other_type").alias("identifier_type"), pl.col("other").alias("identifier")),
                ]
            ).unique()
            hit_persons = previous.join(endpoints, on=["identifier_type", "identifier"], how="semi")[
                "person_id"
            ].unique()
            scope_ids = pl.concat(
                [
                    previous.filter(pl.col("person_id").is_in(hit_persons.implode())).select(
                        "identifier_type", "identifier"
                    ),
                    endpoints,
                ]
            ).unique()
            nodes = usable.join(scope_ids, on=["identifier_type", "identifier"], how="semi")
            anon = scope_ids.filter(pl.col("identifier_type") == edges.ANONYMOUS).select(
                pl.col("identifier").alias("anonymous_id")
            )
            judged_scope = judged.join(anon, on="anonymous_id", how="semi")
        found, judged_scope = graph.persons(
            nodes.select("identifier_type", "identifier", "first_seen"), judged_scope, g.max_persons
        )
        if scope_ids is None:
            persons, judged = found, judged_scope
        else:
            persons = pl.concat([previous.join(scope_ids, on=["identifier_type", "identifier"], how="anti"), found])
            # Edges outside the scope keep their last status (including a component check's refusal).
            judged = pl.concat(
                [before.join(judged_scope, on=["anonymous_id", "other_type", "other"], how="anti"), judged_scope]
            )
        persons = persons.sort("identifier_type", "identifier")
        judged = judged.sort("anonymous_id", "other_type", "other")
        old_map = self.read("alias_map")
        if base:
            base["alias_map"] = old_map
        new_map = alias_map.update(
            old_map, alias_map.facts(found), scope_ids, now, historical=historical and old_map.height == 0
        )
        meta = {
            "identity_run": "identity_full" if scope_ids is None else "identity_update",
            "known_at": now.isoformat(),
            "historical_load": str(historical and old_map.height == 0).lower(),
        }
        tables = {
            "identifiers": ids,
            "links": lk,
            "signals": sig,
            "edges": judged,
            "review": review,
            "violations": violations,
            "persons": persons,
            "alias_map": new_map,
        }
        closed = new_map.filter(pl.col("known_to") == now).height
        opened = new_map.height - old_map.height  # facts are only ever added (a historical load dates them)
        statuses = judged.group_by("status").len()
        summary = RunSummary(
            known_at=now,
            events=n_events,
            identifiers=persons.height,
            persons=persons["person_id"].n_unique(),
            recomputed=found.height,
            merged_edges=judged.filter(pl.col("status") == edges.MERGED).height,
            refused_edges={s: n for s, n in statuses.iter_rows() if s != edges.MERGED},
            violations=dict(violations.group_by("rule").len().sort("rule").iter_rows()),
            alias_facts_opened=opened,
            alias_facts_closed=closed,
            mode="full" if scope_ids is None else "incremental",
        )
        return Run(summary, tables, meta, base, logs)

    # -- explanation ------------------------------------------------------------------------------------
    def explain(self, ref: str) -> dict:
        """A person and why: its ids (with their first time and when they joined), the edges inside it and
        refused edges touching it (with the rule), and the violations of its ids."""
        kind, value = self.find(ref)
        persons = self.read("persons")
        pid = persons.filter((pl.col("identifier_type") == kind) & (pl.col("identifier") == value))["person_id"][0]
        members = persons.filter(pl.col("person_id") == pid).sort("first_seen", "identifier_type", "identifier")
        anon = members.filter(pl.col("identifier_type") == edges.ANONYMOUS)["identifier"]
        others = members.filter(pl.col("identifier_type") != edges.ANONYMOUS)
        judged = self.read("edges")
        touching = judged.filter(
            pl.col("anonymous_id").is_in(anon.implode())
            | pl.struct("other_type", "other").is_in(
                others.select(
                    pl.struct(pl.col("identifier_type").alias("other_type"), pl.col("identifier").alias("other"))
                )
                .to_series()
                .implode()
            )
        ).sort("first_seen", "anonymous_id", "other")
        violations = self.read("violations").join(members, on=["identifier_type", "identifier"], how="semi")
        return {
            "person_id": pid,
            "asked": f"{kind}:{value}",
            "aliases": members.select("identifier_type", "identifier", "first_seen", "joined_at").to_dicts(),
            "edges": touching.to_dicts(),
            "violations": violations.to_dicts(),
            "rules": {
                "canonical_id": "p_ + blake2b-64 of the oldest id of the person (older id survives a merge)",
                "guardrails": self.guardrails.__dict__,
            },
        }


def _digests(events: pl.DataFrame, days: list[str]) -> dict[str, tuple[int, str]]:
    """(events, digest) per day: an order-free sum of row hashes of the identity columns, so a re-delivered
    day with other events is told apart from a re-run of the same one."""
    per_day = (
        events.group_by(pl.col("event_time").dt.date().cast(pl.String).alias("day"))
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            (pl.struct([c for c in DIGEST_COLUMNS if c in events.columns]).hash(seed=11) % 1_000_000_007)
            .sum()
            .alias("h"),
        )
        .iter_rows()
    )
    found = {d: (int(n), f"{n}:{h}") for d, n, h in per_day}
    return {d: found.get(d, (0, "0:0")) for d in days}


def _changed(new: pl.DataFrame, old: pl.DataFrame) -> pl.DataFrame:
    """Rows of `new` that `old` does not hold exactly (new keys and changed values)."""
    return new.join(old, on=new.columns, how="anti", nulls_equal=True)


def _known_day(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("known_from").dt.date().cast(pl.String).alias(ALIAS_PARTITION))


def _count(events: pl.LazyFrame) -> int:
    return int(events.select(pl.len()).collect().item())
