"""A stitching run: events in, the identity tables (Delta, under `<lake>/identity/`) updated.

Tables: `identifiers` and `links` (the events aggregated: the graph's input), `edges` (every link with
its status: merged or the rule that refused it), `violations`, `retractions` (operator splits), `persons`
(each id's person now) and `alias_map` (bitemporal, see `alias_map.py`).

Incremental (`update`): a new day's events are aggregated and merged into `identifiers` and `links`; the
guardrails are re-judged over the link table (vectorised, no event re-read); components are recomputed only
for the persons the day touched (ids in the day's events, and ids whose edges changed status), and only
their alias facts are diffed. `full` recomputes everything from the given events; both give the same
persons and current alias facts (tests/identity/test_incremental.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from feature_pipelines.identity import alias_map, edges, graph
from feature_pipelines.offline import delta
from feature_pipelines.privacy.tombstones import without_erased_identifiers

TABLES = ("identifiers", "links", "edges", "violations", "retractions", "persons", "alias_map")
RETRACTION_SCHEMA = {
    "anonymous_id": pl.String(),
    "other_type": pl.String(),
    "other": pl.String(),
    "retracted_at": pl.Datetime("us", "UTC"),
}
SCHEMAS = {
    "identifiers": edges.IDENTIFIER_SCHEMA,
    "links": edges.LINK_SCHEMA,
    "edges": {**edges.LINK_SCHEMA, "status": pl.String()},
    "violations": edges.VIOLATION_SCHEMA,
    "retractions": RETRACTION_SCHEMA,
    "persons": graph.PERSON_SCHEMA,
    "alias_map": alias_map.ALIAS_SCHEMA,
}


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


class IdentityStore:
    """The identity tables of one lake."""

    def __init__(self, lake_dir: Path | str, guardrails: edges.Guardrails | None = None) -> None:
        self.root = Path(lake_dir) / "identity"
        self.guardrails = guardrails or edges.Guardrails()

    def uri(self, table: str) -> str:
        return str((self.root / table).resolve())

    def read(self, table: str) -> pl.DataFrame:
        if delta.table_version(self.uri(table)) is None:
            return pl.DataFrame(schema=SCHEMAS[table])
        return delta.scan(self.uri(table)).collect().select(SCHEMAS[table].keys())

    def write(self, table: str, frame: pl.DataFrame, metadata: dict[str, str]) -> None:
        delta.overwrite_table(
            self.uri(table), frame.select([pl.col(c).cast(t) for c, t in SCHEMAS[table].items()]), metadata
        )

    def alias_map(self) -> alias_map.AliasMap:
        return alias_map.AliasMap(self.read("alias_map"))

    # -- runs -------------------------------------------------------------------------------------------
    def full(self, events: pl.LazyFrame | pl.DataFrame, now: datetime | None = None) -> RunSummary:
        """Recompute every person from `events` (the whole history); the alias map keeps its past facts."""
        ev = without_erased_identifiers(events.lazy(), self.root.parent, edges.IDENTIFIER_TYPES)  # erased: never again
        ids = edges.identifiers(ev).collect().sort("identifier_type", "identifier")
        lk = edges.links(ev).collect().sort("anonymous_id", "other_type", "other")
        return self._commit(ids, lk, None, _count(ev), now)

    def update(self, events: pl.LazyFrame | pl.DataFrame, now: datetime | None = None) -> RunSummary:
        """Fold new events (a day) into the graph, recomputing only the persons they touch."""
        ev = without_erased_identifiers(events.lazy(), self.root.parent, edges.IDENTIFIER_TYPES)  # erased: never again
        day_ids = edges.identifiers(ev).collect()
        day_links = edges.links(ev).collect()
        ids = edges.merge_identifiers(self.read("identifiers"), day_ids)
        lk = edges.merge_links(self.read("links"), day_links)
        touched = day_ids.select("identifier_type", "identifier")
        return self._commit(ids, lk, touched, _count(ev), now)

    def split(self, a: str, b: str, now: datetime | None = None) -> RunSummary:
        """Retract the edge between ids `a` and `b` (`type:value` or a value): un-merge their person."""
        links = self.read("links")
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
        return self._commit(self.read("identifiers"), links, touched, 0, when)

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

    def _commit(
        self, ids: pl.DataFrame, lk: pl.DataFrame, touched: pl.DataFrame | None, n_events: int, now: datetime | None
    ) -> RunSummary:
        now = (now or datetime.now(UTC)).astimezone(UTC)
        g = self.guardrails
        retractions = self.read("retractions")
        judged, violations = edges.judge(lk, g, retractions)
        usable = ids.filter(~g.blocked("identifier"))
        previous = self.read("persons")
        if touched is None or previous.height == 0:
            scope_ids = None
            nodes = usable
            judged_scope = judged
        else:
            before = self.read("edges")
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
        new_map = alias_map.update(old_map, alias_map.facts(found), scope_ids, now)
        meta = {
            "identity_run": "identity_full" if scope_ids is None else "identity_update",
            "known_at": now.isoformat(),
        }
        for name, frame in (
            ("identifiers", ids),
            ("links", lk),
            ("edges", judged),
            ("violations", violations),
            ("persons", persons),
            ("alias_map", new_map),
        ):
            self.write(name, frame, meta)
        closed = new_map.filter(pl.col("known_to") == now).height
        opened = new_map.filter(pl.col("known_from") == now).height
        statuses = judged.group_by("status").len()
        return RunSummary(
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
        )

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


def _count(events: pl.LazyFrame) -> int:
    return int(events.select(pl.len()).collect().item())
