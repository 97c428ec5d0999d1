"""`fstore`: the command line of the feature store."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    help="Feature store for personalization engines (Dagster, polars, Delta Lake, Redis).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True, highlight=False)


def _catalog():
    from feature_pipelines.catalog import CatalogError, load_catalog

    try:
        return load_catalog()
    except CatalogError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


def _store(catalog, settings):
    """The online store of the catalog's layout, on the configured Redis."""
    from feature_pipelines.online.connection import connect
    from feature_pipelines.online.layout import OnlineLayout
    from feature_pipelines.online.store import OnlineStore

    return OnlineStore(
        connect(settings.redis_url),
        OnlineLayout.from_catalog(catalog),
        settings.online_versions_kept,
        lease_seconds=settings.online_lease_seconds,
    )


FIRST_RUN = (
    "nothing has been materialized here yet: run `fstore demo` (the whole pipeline on the shipped data), or "
    "`fstore ingest PATH --source NAME` and the assets in the Dagster UI (`make ui`), then try again"
)


def _never_ran(settings, catalog, store=None) -> bool:
    """No feature table in the lake and (if a store is given) no serving version in Redis."""
    from feature_pipelines.offline.delta import table_version

    tables = any(table_version(settings.feature_table(v)) is not None for v in catalog.views)
    serving = store is not None and any(store.serving_version(v.name) is not None for v in catalog.online_views)
    return not tables and not serving


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot serialize {type(value).__name__}")


_DECIMAL = re.compile(r"0|-?[1-9][0-9]*")


def _parse_id(raw: str, entity) -> Any:
    """An id typed on the command line, parsed strictly by its entity's key dtype ("007" is not 7)."""
    dtype = entity.polars_dtype
    if not dtype.is_integer():
        return raw
    if not _DECIMAL.fullmatch(raw) or (dtype.is_unsigned_integer() and raw.startswith("-")):
        raise ValueError(
            f"id {raw!r} is not a valid {entity.join_key} ({dtype}): write it in decimal, with an optional "
            "leading '-', without leading zeros, '+', spaces or '_'"
        )
    return int(raw)


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _view_or_exit(catalog, view: str) -> None:
    if view not in catalog.views or not catalog.views[view].online:
        online = sorted(v.name for v in catalog.online_views)
        errors.print(f"[red]unknown online feature view {view!r}; known: {online}[/red]")
        raise typer.Exit(2)


@app.command()
def demo(
    first: Annotated[str | None, typer.Option(help="first partition (YYYY-MM-DD); default: the data's first")] = None,
    last: Annotated[str | None, typer.Option(help="last partition; default: the data's last")] = None,
) -> None:
    """Run the main job end to end (ingest, features + GE gate, online push) and print a summary."""
    from feature_pipelines.demo import demo as run_demo

    ok = run_demo(console, first, last)
    raise typer.Exit(0 if ok else 1)


@app.command("generate-events")
def generate_events(
    customers: Annotated[
        int | None, typer.Option(help="customers to simulate (default: the real ones); beyond them, clones")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed: the same seed writes the same bytes")] = 11,
    out: Annotated[Path | None, typer.Option(help="folder (default: feature_defs/data/behaviour)")] = None,
    sessions_per_customer: Annotated[
        float | None, typer.Option(help="mean browsing sessions per customer besides the purchases (default 1.5)")
    ] = None,
    visitors_per_customer: Annotated[
        float | None, typer.Option(help="never-login visitors per customer (default 0.5)")
    ] = None,
    sessions_per_visitor: Annotated[
        float | None, typer.Option(help="mean extra sessions per visitor besides the first (default 0.7)")
    ] = None,
) -> None:
    """Write SYNTHETIC behavioural events (one Parquet file per day) and their identity ground truth.

    1M persons and ~10M events: --customers 500000 --visitors-per-customer 1 --sessions-per-customer 0.3
    --sessions-per-visitor 0.3."""
    import dataclasses
    import time

    import polars as pl

    from feature_pipelines.synthetic import events

    knobs = {
        "browse_sessions": sessions_per_customer,
        "visitors": visitors_per_customer,
        "visitor_sessions": sessions_per_visitor,
    }
    bad = {k: v for k, v in knobs.items() if v is not None and v < 0}
    if bad:
        errors.print(f"[red]generate-events: negative rates {bad}[/red]")
        raise typer.Exit(2)
    world = dataclasses.replace(events.World(), **{k: v for k, v in knobs.items() if v is not None})
    started = time.perf_counter()
    folder = out or events.DEFAULT_OUT
    try:
        files = events.write(folder, customers, seed, world)
    except ValueError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    truth = pl.read_parquet(folder / events.TRUTH_FILE)
    rows = sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files)
    console.print(
        f"{rows:,} events in {len(files)} daily files, {truth['person'].n_unique():,} persons "
        f"({truth.height:,} identifiers in {events.TRUTH_FILE}) in {folder}, {time.perf_counter() - started:.1f}s"
    )


identity_app = typer.Typer(help="Identity stitching: build the graph, explain a person, un-merge, accuracy.")
app.add_typer(identity_app, name="identity")


def _identity_store():
    from feature_pipelines.identity.stitch import IdentityStore
    from feature_pipelines.settings import Settings

    return IdentityStore(Settings().lake_dir)


@identity_app.command("build")
def identity_build(
    events: Annotated[Path | None, typer.Option(help="event files (folder or glob); default: behaviour_events")] = None,
    incremental: Annotated[bool, typer.Option("--incremental", help="fold these events into the graph")] = False,
) -> None:
    """Stitch ids into persons from events on the identity input contract (full recompute by default)."""
    import polars as pl

    from feature_pipelines.offline.ingest import source_location

    catalog = _catalog()
    pattern = str(events / "events-*.parquet") if events and events.is_dir() else str(events) if events else None
    pattern = pattern or source_location(catalog.sources["behaviour_events"], catalog.base_dir)
    frame = pl.scan_parquet(pattern)
    store = _identity_store()
    summary = store.update(frame) if incremental else store.full(frame)
    console.print_json(json.dumps(summary.__dict__, default=_json_default))


@identity_app.command("resolve")
def identity_resolve(ref: Annotated[str, typer.Argument(help="an id: type:value or a bare value")]) -> None:
    """Explain the person of an id: its aliases, the edges inside it, refused edges and the rules."""
    from feature_pipelines.identity.stitch import IdentityError

    try:
        console.print_json(json.dumps(_identity_store().explain(ref), default=_json_default))
    except IdentityError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@identity_app.command("split")
def identity_split(a: Annotated[str, typer.Argument()], b: Annotated[str, typer.Argument()]) -> None:
    """Retract the edge between ids A and B: their person un-merges and the earlier ids come back."""
    from feature_pipelines.identity.stitch import IdentityError

    try:
        summary = _identity_store().split(a, b)
    except IdentityError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print_json(json.dumps(summary.__dict__, default=_json_default))


@identity_app.command("accuracy")
def identity_accuracy(
    truth: Annotated[Path | None, typer.Option(help="truth Parquet (identifier_type, identifier, person)")] = None,
) -> None:
    """Pairwise precision and recall of the current persons against ground truth."""
    import polars as pl

    from feature_pipelines.identity.accuracy import pairwise
    from feature_pipelines.synthetic import events

    path = truth or events.DEFAULT_OUT / events.TRUTH_FILE
    if not path.exists():
        errors.print(f"[red]no ground truth at {path}[/red]")
        raise typer.Exit(2)
    store = _identity_store()
    result = pairwise(store.read("persons"), pl.read_parquet(path))
    scored = store.read("edges").filter(pl.col("other_type") == "anonymous_id")
    console.print_json(
        json.dumps(
            {
                **result.__dict__,
                "scored_edges_merged": scored.filter(pl.col("status") == "merged").height,
                "review": store.read("review").height,
                "review_table": store.uri("review"),
            }
        )
    )


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="a file, a folder of files, or a glob of the source's format")],
    source: Annotated[str, typer.Option("--source", help="the BatchSource the files belong to")],
    first: Annotated[
        str | None, typer.Option(help="first day to replace (YYYY-MM-DD); default: the files' first")
    ] = None,
    last: Annotated[str | None, typer.Option(help="last day to replace; default: the files' last")] = None,
    allow_shrink: Annotated[
        bool, typer.Option("--allow-shrink", help="accept shrinking days that had rows (recorded in the commit)")
    ] = False,
) -> None:
    """Ingest files into a source's raw Delta table: the same contract gate, guards and commit as the asset."""
    import uuid

    from feature_pipelines.offline import ingest as ingesting
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    if source not in catalog.sources:
        errors.print(f"[red]unknown source {source!r}; known: {sorted(catalog.sources)}[/red]")
        raise typer.Exit(2)
    spec = catalog.sources[source]
    settings = Settings()
    from feature_pipelines.privacy.policy import PrivacyPolicy

    run_id = f"fstore-ingest-{uuid.uuid4().hex[:12]}"
    try:
        days = [date.fromisoformat(d) if d else None for d in (first, last)]
    except ValueError as exc:
        errors.print(f"[red]--first/--last must be YYYY-MM-DD: {exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        files = ingesting.source_files(spec, Path.cwd(), str(path.resolve()) if path.exists() else str(path))
        result = ingesting.ingest(
            spec,
            catalog.entities,
            files,
            days[0],
            days[1],
            raw_uri=settings.raw_table(source),
            quarantine_uri=settings.quarantine_table(source),
            run_id=run_id,
            allow_shrink=allow_shrink,
            commit_metadata={"ingested_by": "fstore ingest", "run_id": run_id},
            exclude=PrivacyPolicy(catalog, settings).without_erased,
        )
    except ingesting.SourceError as exc:
        errors.print(f"[red]ingest failed, nothing was committed:\n{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    console.print(result.summary(), soft_wrap=True, highlight=False)


@app.command()
def validate() -> None:
    """Load and validate the catalog in feature_defs/."""
    catalog = _catalog()
    for warning in catalog.warnings:
        errors.print(f"[yellow]warning: {warning}[/yellow]")
    console.print(
        f"catalog OK: {len(catalog.entities)} entities, {len(catalog.sources)} sources, "
        f"{len(catalog.views)} feature views, {len(catalog.services)} feature services, "
        f"{len(catalog.training_sets)} training sets"
    )


_MARK = {"new": "+", "versioned": "+", "additive": "+", "breaking": "!", "info": "~", "retired": "-"}
_STYLE = {"new": "green", "versioned": "green", "additive": "green", "breaking": "red", "info": "yellow"}


@app.command()
def plan() -> None:
    """Compare the catalog with what is deployed (Delta schemas and commits, online metadata) and say what
    each change implies. Exit code 1 when a breaking change is present (bump the view's version)."""
    from feature_pipelines.catalog import load_catalog
    from feature_pipelines.online.connection import connect
    from feature_pipelines.plan import BACKFILL_HOW, make_plan
    from feature_pipelines.settings import Settings

    catalog = load_catalog(strict=False)
    settings = Settings()
    client, online_error = None, None
    try:
        client = connect(settings.redis_url)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - the plan still covers Delta; it says Redis was not checked
        client, online_error = None, f"Redis at {settings.redis_url} not checked: {exc}"
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"plan: catalog feature_defs/ vs lake {settings.lake_dir.resolve()} and Redis {settings.redis_url}")
    for problem in catalog.problems:
        out.print(f"[red]! catalog: {problem}[/red]")
    try:
        result = make_plan(catalog, settings.feature_table, client, online_error)
    except Exception as exc:  # noqa: BLE001 - an invalid catalog may not support a plan: say so
        errors.print(f"[red]no plan: the catalog is invalid ({type(exc).__name__}: {exc})[/red]")
        raise typer.Exit(2) from exc
    if result.online_error:
        out.print(f"[yellow]{result.online_error}[/yellow]")
    if result.nothing_deployed:
        out.print("nothing deployed yet: everything is new")
    for view in result.views:
        d = view.deployed
        where = []
        if d.delta_version is not None:
            span = f", partitions {d.partitions[0]}..{d.partitions[1]}" if d.partitions else ""
            where.append(f"Delta v{d.delta_version}{span}")
        for ns, meta in d.online_namespaces.items():
            where.append(f"online {ns} v{meta.version} ({meta.partition})" if meta else f"online {ns} (none serving)")
        out.print(f"\n[bold]{view.view}[/bold]  ({'; '.join(where) or 'not deployed'})")
        if not view.changes:
            out.print("  no changes")
        for change in view.changes:
            style = _STYLE.get(change.kind, "white")
            out.print(f"  [{style}]{_MARK[change.kind]} {change.what}[/{style}]")
            out.print(f"      {change.implies}")
    if result.services:
        out.print("\n[bold]feature services[/bold]")
        for change in result.services:
            style = _STYLE.get(change.kind, "white")
            out.print(f"  [{style}]{_MARK[change.kind]} {change.what}[/{style}]\n      {change.implies}")
    if any("backfill " in c.implies for v in result.views for c in v.changes):
        out.print(f"\n({BACKFILL_HOW})")
    broken = [v.view for v in result.views if v.breaking]
    if broken:
        out.print(f"\n[red]breaking changes in {', '.join(broken)}: the pipeline refuses them; bump the version[/red]")
    if broken or catalog.problems or result.breaking:
        raise typer.Exit(1)


@app.command()
def lock(
    services: Annotated[list[str] | None, typer.Argument(help="feature services to lock (default: all)")] = None,
) -> None:
    """Record what feature services consume now (view versions, feature dtypes) in feature_defs/services.lock.json:
    the contract serving and training check. Run it when a model is (re)trained on the current features."""
    from feature_pipelines.catalog import CatalogError, lock_services

    catalog = _catalog()
    try:
        path = lock_services(catalog, services or None)
    except (CatalogError, KeyError) as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for name in services or sorted(catalog.services):
        views = ", ".join(f"{v} v{lv.version} ({len(lv.features)} features)" for v, lv in catalog.locks[name].items())
        console.print(f"{name}: {views}")
    console.print(f"wrote {path}")


@app.command(context_settings={"ignore_unknown_options": True})  # negative ids need no `--`
def get(
    service: Annotated[str, typer.Argument(help="feature service (or feature view with --view)")],
    ids: Annotated[list[str], typer.Argument(help="entity ids; `join_key=id` when the service has several")],
    view: Annotated[bool, typer.Option("--view", help="SERVICE names a feature view")] = False,
) -> None:
    """Print the online features of entities as JSON, one object per id."""
    from feature_pipelines.online.client import OnlineClient
    from feature_pipelines.online.errors import OnlineStoreError
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings()
    try:
        client = OnlineClient(settings.redis_url, catalog)
        if view:
            if service not in catalog.views:
                raise KeyError(f"unknown feature view {service!r}; known: {sorted(catalog.views)}")
            entity = catalog.entity_of(catalog.views[service])
            rows = client.get_view(service, [_parse_id(i, entity) for i in ids])
        else:
            rows = client.get_service(service, _entity_columns(catalog, service, ids))
    except (OnlineStoreError, KeyError, ValueError) as exc:
        hint = f"\n{FIRST_RUN}" if "no serving version" in str(exc) else ""
        errors.print(f"[red]{escape(str(exc))}[/red]{hint}")
        raise typer.Exit(1) from exc
    sys.stdout.write(json.dumps([row.to_dict() for row in rows], default=_json_default, indent=2) + "\n")


def _entity_columns(catalog, service: str, ids: list[str]) -> dict[str, list[Any]]:
    entities = {}
    for ref in catalog.resolve_service(service):
        entity = catalog.entity_of(ref.view)
        entities.setdefault(entity.join_key, entity)
    keys = list(entities)
    if all("=" not in i for i in ids):
        if len(keys) != 1:
            raise ValueError(f"service {service!r} needs ids for {keys}: pass them as key=id, e.g. {keys[0]}=1")
        return {keys[0]: [_parse_id(i, entities[keys[0]]) for i in ids]}
    columns: dict[str, list[Any]] = {k: [] for k in keys}
    for item in ids:
        parts = dict(p.split("=", 1) for p in item.split(","))
        for k in keys:
            columns[k].append(_parse_id(parts[k], entities[k]) if k in parts else None)
    return columns


@app.command("training-set")
def training_set(
    service: Annotated[str | None, typer.Argument(help="feature service (omit with --manifest)")] = None,
    entities: Annotated[
        Path | None,
        typer.Argument(
            help="Parquet: entity ids (for person-keyed views: person_id, or any of customer_id / device_id / "
            "anonymous_id, resolved as known at each row's time), a timezone-aware timestamp, labels"
        ),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="where to write the training set (Parquet)")] = Path(
        "training_set.parquet"
    ),
    timestamp_column: Annotated[str, typer.Option(help="the entity rows' time column")] = "event_timestamp",
    latest: Annotated[bool, typer.Option("--latest", help="latest known values instead of as known then")] = False,
    manifest: Annotated[Path | None, typer.Option(help="rebuild exactly from this manifest")] = None,
) -> None:
    """Build a point-in-time correct training set (and its manifest), or rebuild one from a manifest."""
    import polars as pl
    from rich.progress import Progress

    from feature_pipelines import training
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    if manifest is not None:
        if entities is None and service is not None:  # `--manifest M.json ENTITIES`: one positional
            entities, service = Path(service), None
        recorded = training.Manifest.from_json(manifest.read_text())
        service = recorded.service
    if service is None or entities is None:
        errors.print("[red]give SERVICE and ENTITIES (or --manifest M.json ENTITIES)[/red]")
        raise typer.Exit(2)
    frame = pl.read_parquet(entities)
    if manifest is None:
        from feature_pipelines.offline.delta import table_version

        settings = Settings()
        views = [r.view.name for r in catalog.resolve_service(service)] if service in catalog.services else []
        absent = [v for v in dict.fromkeys(views) if table_version(settings.feature_table(v)) is None]
        if absent:
            errors.print(f"no feature table for {absent} under {settings.lake_dir.resolve()}: {FIRST_RUN}")
            raise typer.Exit(1)
    n_views = len({r.view.name for r in catalog.resolve_service(service)})
    with Progress(console=errors, transient=True) as progress:
        task = progress.add_task(f"{service}: {frame.height:,} rows", total=n_views)

        def step(what: str) -> None:
            progress.update(task, description=f"{service}: {what}", advance=0)
            progress.advance(task)

        from feature_pipelines.privacy.policy import PrivacyPolicy

        privacy = PrivacyPolicy(catalog, Settings())
        try:
            if manifest is not None:
                result = training.rebuild(catalog, recorded, frame, progress=step, privacy=privacy)
            else:
                from feature_pipelines.identity.stitch import IdentityStore

                result = training.build(
                    catalog,
                    service,
                    frame,
                    Settings().feature_table,
                    timestamp_column=timestamp_column,
                    mode="latest" if latest else "known",
                    progress=step,
                    privacy=privacy,
                    alias_map_uri=IdentityStore(Settings().lake_dir).uri("alias_map"),
                )
        except (training.TrainingSetError, KeyError, ValueError) as exc:
            errors.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from exc
    manifest_path = result.write(output)
    console.print(f"{result.frame.height:,} rows x {result.frame.width} columns -> {output} (manifest {manifest_path})")
    if result.manifest.withheld:
        console.print(
            f"{result.manifest.withheld:,} rows withheld: their subjects lack consent for the service's purpose "
            "(at the row's time as known then, or now), or were erased"
        )


@app.command("catalog")
def catalog_command(
    fmt: Annotated[str, typer.Option("--format", help="table, json or markdown")] = "table",
    static: Annotated[bool, typer.Option("--static", help="only the declared contract, no live state")] = False,
    output: Annotated[Path | None, typer.Option(help="write to this file instead of printing")] = None,
) -> None:
    """List every feature: dtype, description, owner, sensitivity, TTLs, version, online, freshness."""
    from feature_pipelines import catalog_listing
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings()
    listing = catalog_listing.rows(catalog, None if static else settings.feature_table)
    if fmt == "table":
        table = Table(title="feature catalog", box=box.SIMPLE)
        for col in listing[0]:
            table.add_column(col, overflow="fold")
        for row in listing:
            table.add_row(*[str(v) for v in row.values()])
        console.print(table)
        if not static and _never_ran(settings, catalog):
            console.print(f"No live state (never materialized) under {settings.lake_dir.resolve()}: {FIRST_RUN}")
        return
    try:
        text = catalog_listing.render(listing, fmt)
    except ValueError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if output:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command("lineage")
def lineage_command(
    target: Annotated[str, typer.Argument(help="a Redis key (fs:VIEW:N:{ID}), VIEW:FEATURE, or VIEW")],
) -> None:
    """Print the chain: online version -> Delta table and version -> Dagster runs -> sources -> definition."""
    import os

    from feature_pipelines import lineage
    from feature_pipelines.online.errors import OnlineStoreError
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    instance = None
    if os.environ.get("DAGSTER_HOME"):
        import dagster as dg

        instance = dg.DagsterInstance.get()
    settings = Settings()
    store = _store(catalog, settings)
    try:
        links = lineage.chain(catalog, store, target, instance)
    except (KeyError, OnlineStoreError) as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    except OSError as exc:  # a Delta table named by Redis is gone (e.g. the lake was cleaned)
        errors.print(f"[red]lineage of {target!r}: {escape(str(exc))}[/red]\n{FIRST_RUN}")
        raise typer.Exit(1) from exc
    if _never_ran(settings, catalog, store):
        errors.print(f"[yellow]{target}: no serving version in Redis and no feature table in the lake: {FIRST_RUN}")
        raise typer.Exit(1)
    for i, link in enumerate(links):
        console.print(f"{'  ' * i}{'└─ ' if i else ''}[bold]{link.what}[/bold]")
        for name, value in link.facts.items():
            console.print(f"{'  ' * i}   {name}: {value}", soft_wrap=True, highlight=False)


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def versions(view: Annotated[str, typer.Argument(help="online feature view")]) -> None:
    """List the kept online versions of a view (status, which one serves) and its promotion history."""
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    _view_or_exit(catalog, view)
    settings = Settings()
    status = _store(catalog, settings).status(view)
    if not status.versions:
        errors.print(f"no online version of {view!r} in Redis at {settings.redis_url}: {FIRST_RUN}")
        raise typer.Exit(1)
    table = Table(title=f"online versions of {view}", box=box.SIMPLE)
    for col in ("version", "serving", "status", "served", "partition", "rows", "Delta v", "run", "written (UTC)"):
        table.add_column(col, no_wrap=True)
    for state in status.versions:
        meta = state.meta
        table.add_row(
            str(meta.version),
            "*" + (" (pinned)" if state.pinned else "") if state.serving else ("pinned" if state.pinned else ""),
            state.state,
            "yes" if state.served_before else "never",
            meta.partition,
            str(meta.rows),
            str(meta.delta_version),
            meta.run_id[:8],
            _when(meta.written_at)[:16],
        )
    console.print(table)
    history = Table(title=f"promotion history of {view} (newest first)", box=box.SIMPLE)
    for col in ("at (UTC)", "action", "version", "previous", "partition", "run", "by", "reason"):
        history.add_column(col, no_wrap=col != "reason", overflow="fold")
    for e in status.history:
        previous = "" if e.previous is None else str(e.previous)
        history.add_row(
            _when(e.at), e.action.value, str(e.version), previous, e.partition, e.run_id[:8], e.by, e.reason
        )
    console.print(history)


@app.command()
def status(
    view: Annotated[str | None, typer.Argument(help="online feature view; default: all of them")] = None,
) -> None:
    """Per online view: serving version and partition, pin (by whom, why, when), kept, writing and dead versions."""
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    if view is not None:
        _view_or_exit(catalog, view)
    store = _store(catalog, Settings())
    table = Table(title="online views", box=box.SIMPLE)
    for col in ("view", "serving", "partition", "pinned", "kept", "writing", "dead", "deleting"):
        table.add_column(col, overflow="fold")
    names = [view] if view else [v.name for v in catalog.online_views]
    for name in names:
        st = store.status(name)
        kept = [str(v) for v in st.in_state("written", "rejected")]
        table.add_row(
            name,
            str(st.serving.version) if st.serving else "-",
            st.serving.partition if st.serving else "-",
            st.pin.describe() if st.pin else "no",
            ", ".join(kept) or "-",
            ", ".join(map(str, st.in_state("writing"))) or "-",
            ", ".join(map(str, st.in_state("dead"))) or "-",
            ", ".join(map(str, st.in_state("deleting"))) or "-",
        )
    console.print(table)


@app.command()
def rollback(
    view: Annotated[str, typer.Argument(help="online feature view")],
    to: Annotated[int | None, typer.Option(help="version to serve; default: the one that served before")] = None,
    reason: Annotated[str, typer.Option(help="why, for the history and the pin")] = "",
) -> None:
    """Serve again the version that served before (or --to V), instantly, and pin the view.

    Only a version that served before and is still complete qualifies; its keys' TTLs are refreshed first.
    While pinned, pushes write and verify their versions but do not promote them (`fstore status` shows it):
    end it with `fstore unpin VIEW`, or `fstore promote VIEW VERSION --unpin`."""
    from feature_pipelines.online.errors import OnlineStoreError
    from feature_pipelines.privacy.audit import AuditLog
    from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
    from feature_pipelines.publish import guarded_aliases, guarded_ids
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    _view_or_exit(catalog, view)
    settings = Settings()
    store = _store(catalog, settings)
    # Subjects revoked or erased since the target was written: their keys are gone on purpose.
    guard = OnlineGuard(PrivacyPolicy(catalog, settings), store)
    ids_of, aliases_of = guarded_ids(guard), guarded_aliases(guard)
    try:
        done = store.rollback(view, to, ids_of=ids_of, aliases_of=aliases_of, by=_user(), reason=reason)
        AuditLog(settings.privacy_table("audit")).append(
            "rollback", by=_user(), reason=reason, target=view, details={"to": done.version, "from": done.previous}
        )
    except OnlineStoreError as exc:
        hint = f"\n{FIRST_RUN}" if not store.versions(view) else ""
        errors.print(f"[red]{escape(str(exc))}[/red]{hint}")
        raise typer.Exit(1) from exc
    console.print(
        f"{view}: serving version {done.version} (was {done.previous}); {done.keys_refreshed} keys refreshed; "
        f"{done.pin.describe() if done.pin else 'pinned'}. Unpin with `fstore unpin {view}`."
    )


@app.command()
def unpin(
    view: Annotated[str, typer.Argument(help="online feature view")],
    reason: Annotated[str, typer.Option(help="why, for the history")] = "",
) -> None:
    """End a view's pin: the next push promotes again (the pinned version serves until then)."""
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    _view_or_exit(catalog, view)
    pin = _store(catalog, Settings()).unpin(view, by=_user(), reason=reason)
    console.print(f"{view}: unpinned (it was {pin.describe()})" if pin else f"{view}: was not pinned")


@app.command()
def promote(
    view: Annotated[str, typer.Argument(help="online feature view")],
    version: Annotated[int, typer.Argument(help="a written version, e.g. one a pin held back")],
    unpin_: Annotated[bool, typer.Option("--unpin", help="also end the view's pin, in the same step")] = False,
    reason: Annotated[str, typer.Option(help="why, for the history")] = "",
) -> None:
    """Serve a written version on purpose (never an older partition than the serving one; that is rollback)."""
    from feature_pipelines.online.errors import OnlineStoreError
    from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
    from feature_pipelines.publish import guarded_aliases, guarded_ids
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    _view_or_exit(catalog, view)
    settings = Settings()
    store = _store(catalog, settings)
    guard = OnlineGuard(PrivacyPolicy(catalog, settings), store)
    ids_of, aliases_of = guarded_ids(guard), guarded_aliases(guard)
    try:
        done = store.promote_version(
            view, version, ids_of=ids_of, aliases_of=aliases_of, unpin=unpin_, by=_user(), reason=reason
        )
    except OnlineStoreError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if not done.promoted:
        errors.print(f"[red]{view}: version {version} not promoted: {done.reason}[/red]")
        raise typer.Exit(1)
    console.print(f"{view}: serving version {version} (was {done.previous}); {done.reason}")


@app.command()
def gc(view: Annotated[str | None, typer.Argument(help="online feature view; default: all of them")] = None) -> None:
    """Remove what pruning would: dead pushes' keys, half-deleted versions, versions beyond the kept ones."""
    from feature_pipelines.publish import version_aliases, version_ids
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    if view is not None:
        _view_or_exit(catalog, view)
    store = _store(catalog, Settings())
    failed = False
    for name in [view] if view else [v.name for v in catalog.online_views]:
        try:
            pruned = store.prune(name, version_ids, version_aliases)
        except Exception as exc:  # noqa: BLE001 - one view's failure (Redis, its Delta table) does not stop the others
            errors.print(f"[red]{name}: {type(exc).__name__}: {exc}[/red]")
            failed = True
            continue
        removed = ", ".join(f"{v} ({n} keys)" for v, n in pruned.removed.items()) or "nothing"
        left = "; left: " + ", ".join(f"{v} ({why})" for v, why in pruned.skipped.items()) if pruned.skipped else ""
        console.print(f"{name}: removed {removed}; kept {sorted(pruned.kept)}{left}")
    raise typer.Exit(1 if failed else 0)


consent_app = typer.Typer(help="Consent of data subjects to purposes: grant, revoke, show, sync.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")

SubjectArg = Annotated[
    str, typer.Argument(help="the subject's id (a customer id; with --entity person: a person id or any alias)")
]
PurposeOpt = Annotated[str, typer.Option("--purpose", "-p", help="a declared purpose, e.g. personalization")]
EntityOpt = Annotated[str | None, typer.Option(help="the subject's entity; default: the only personal one")]
ReasonOpt = Annotated[str, typer.Option(help="why, for the audit log")]


def _consent(subject: str, purpose: str, entity: str | None, reason: str, at: str | None, granted: bool) -> None:
    from feature_pipelines.privacy.consent import ConsentError
    from feature_pipelines.privacy.consent_change import change_consent
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings()
    when = datetime.fromisoformat(at).astimezone(UTC) if at else None
    try:
        done = change_consent(
            catalog,
            settings,
            _store(catalog, settings),
            subject,
            purpose,
            granted=granted,
            entity=entity,
            event_time=when,
            by=_user(),
            reason=reason,
        )
    except ConsentError as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    verb = "granted" if granted else "revoked"
    denied = "" if done.deny_entry is None else f"; denied online for {done.deny_entry}"
    console.print(
        f"{done.entity} {done.subject}: {purpose} {verb}; {done.keys_removed} online keys removed{denied} "
        f"({done.seconds * 1000:.0f} ms)"
    )


@consent_app.command("grant")
def consent_grant(
    subject: SubjectArg,
    purpose: PurposeOpt,
    entity: EntityOpt = None,
    reason: ReasonOpt = "",
    at: Annotated[str | None, typer.Option(help="when it was given (ISO time); default now")] = None,
) -> None:
    """Record that SUBJECT consents to --purpose; their rows come back with the next push."""
    _consent(subject, purpose, entity, reason, at, True)


@consent_app.command("revoke")
def consent_revoke(
    subject: SubjectArg,
    purpose: PurposeOpt,
    entity: EntityOpt = None,
    reason: ReasonOpt = "",
    at: Annotated[str | None, typer.Option(help="when it was withdrawn (ISO time); default now")] = None,
) -> None:
    """Record that SUBJECT withdraws consent to --purpose; their keys leave Redis in the same step, and no
    compute, push, rollback or training set uses them for it again."""
    _consent(subject, purpose, entity, reason, at, False)


@consent_app.command("show")
def consent_show(subject: SubjectArg, entity: EntityOpt = None) -> None:
    """SUBJECT's consent events and their state now, per purpose."""
    from feature_pipelines.privacy.consent import ConsentError
    from feature_pipelines.privacy.consent_change import personal_entity
    from feature_pipelines.privacy.policy import PrivacyPolicy
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    try:
        name = personal_entity(catalog, entity, subject)
    except ConsentError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    policy = PrivacyPolicy(catalog, Settings())
    import polars as pl

    events = policy.consent.events(name).filter(pl.col("subject") == subject).sort("event_time", "known_time")
    table = Table("purpose", "now", "default", box=box.SIMPLE)
    for purpose in sorted(catalog.purposes):
        ok = policy.permitted(name, pl.Series([subject]), [purpose])[0]
        table.add_row(
            purpose, "consents" if ok else "denied", "opt-in" if catalog.purposes[purpose].opt_in else "opt-out"
        )
    console.print(table)
    if policy.erased(name, pl.Series([subject]))[0]:
        console.print(f"{name} {subject} is erased")
    for row in events.iter_rows(named=True):
        verb = "granted" if row["granted"] else "revoked"
        console.print(
            f"{row['event_time']:%Y-%m-%d %H:%M} {row['purpose']} {verb} (known {row['known_time']:%Y-%m-%d %H:%M}, {row['origin']}, by {row['by']})"
        )


@consent_app.command("sync")
def consent_sync() -> None:
    """Rebuild the Redis deny hashes from the consent ledger and tombstones (e.g. after Redis lost them)."""
    from feature_pipelines.privacy.consent_change import sync_deny
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings()
    for entity, n in sync_deny(catalog, settings, _store(catalog, settings)).items():
        console.print(f"{entity}: {n} subjects denied")


@app.command()
def audit(
    action: Annotated[str | None, typer.Option(help="only this action (consent_revoke, erase, acl_apply...)")] = None,
    since: Annotated[str | None, typer.Option(help="only records from this ISO time on")] = None,
    subject: Annotated[
        str | None, typer.Option(help="only records about this subject id (matched by its hash)")
    ] = None,
    entity: EntityOpt = None,
) -> None:
    """The audit log: consent changes, erasures, purges, ACL applies, rollbacks; who, what, when, why."""
    from feature_pipelines.privacy.audit import AuditLog
    from feature_pipelines.privacy.consent_change import personal_entity
    from feature_pipelines.settings import Settings

    about = (personal_entity(_catalog(), entity, subject), subject) if subject else None
    when = datetime.fromisoformat(since).astimezone(UTC) if since else None
    frame = AuditLog(Settings().privacy_table("audit")).read(action=action, since=when, subject=about)
    table = Table("at", "by", "action", "subject", "target", "reason", "details", box=box.SIMPLE)
    for row in frame.iter_rows(named=True):
        table.add_row(
            f"{row['at']:%Y-%m-%d %H:%M:%S}",
            row["by"],
            row["action"],
            row["subject_digest"],
            row["target"],
            escape(row["reason"]),
            escape(row["details"]),
        )
    console.print(table)
    console.print(f"{frame.height} records")


@app.command()
def erase(
    subject: SubjectArg,
    entity: EntityOpt = None,
    reason: ReasonOpt = "",
) -> None:
    """Erase SUBJECT (with --entity person: a person id or any of its aliases, `type:value` or a value): gone from serving at once (every view, version and namespace), deleted from every raw,
    quarantine, feature and consent table, tombstoned so nothing writes it again; physically purged by
    `fstore purge` within the declared purge window (FS_ERASURE_PURGE_DAYS)."""
    from feature_pipelines.privacy.consent import ConsentError
    from feature_pipelines.privacy.consent_change import personal_entity
    from feature_pipelines.privacy.erasure import ErasureError
    from feature_pipelines.privacy.erasure import erase as run_erase
    from feature_pipelines.privacy.person_erasure import PERSON_KEY, erase_person
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings()
    try:
        name = entity if entity in catalog.entities else personal_entity(catalog, entity, subject)
        if catalog.entities[name].join_key == PERSON_KEY:  # a person, named by its id or any alias
            person = erase_person(
                catalog, settings, _store(catalog, settings), subject, entity=name, by=_user(), reason=reason
            )
            kinds = sorted({k for k, _ in person.identifiers})
            console.print(
                f"person {person.person_id} erased with {len(person.identifiers)} identifiers ({', '.join(kinds)}): "
                f"{person.redis_keys_removed} online keys removed (data and alias keys); {person.rows_deleted} Delta "
                f"rows deleted (identity, behaviour events, {len(person.customers)} customers' rows); identifiers "
                f"tombstoned, never stitched again; physically purged within {settings.erasure_purge_days:g} days"
            )
            return
        done = run_erase(catalog, settings, _store(catalog, settings), subject, entity=name, by=_user(), reason=reason)
    except (ConsentError, ErasureError) as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    console.print(
        f"{done.entity} {done.subject} erased: {done.redis_keys_removed} online keys removed "
        f"({done.online_seconds * 1000:.0f} ms); {done.rows_deleted} Delta rows deleted in "
        f"{sum(1 for d in done.tables.values() if d.rows)} tables ({done.files_rewritten} files rewritten); "
        f"physically purged within {settings.erasure_purge_days:g} days by `fstore purge`"
    )


@app.command()
def acl(
    apply_: Annotated[bool, typer.Option("--apply", help="set the users on the Redis (ACL SETUSER)")] = False,
    url: Annotated[
        str | None, typer.Option(help="an admin URL of the Redis to apply to; default the configured one")
    ] = None,
    reason: ReasonOpt = "",
) -> None:
    """Redis ACL users from the spec: one per feature-service consumer, reading exactly its views' keys.
    Without --apply, prints each user's rules; passwords come from FS_ACL_PASSWORD_<USER> and are never shown."""
    from feature_pipelines.online.connection import connect
    from feature_pipelines.privacy.acl import AclError, password_variable, users
    from feature_pipelines.privacy.acl import apply as apply_users
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings() if url is None else Settings(redis_url=url)
    if not apply_:
        for user in users(catalog):
            console.print(
                f"[bold]{user.name}[/bold] (consumer {user.consumer}; services {', '.join(user.services)}; "
                f"password from {password_variable(user.consumer)})"
            )
            sys.stdout.write("ACL SETUSER " + " ".join([user.name, *user.rules()]) + "\n")
        return
    try:
        done = apply_users(connect(settings.redis_url), catalog, settings, by=_user(), reason=reason)
    except AclError as exc:
        errors.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    for a in done:
        detail = "".join(
            [f"\n  + {' '.join(a.added)}" if a.added else "", f"\n  - {' '.join(a.removed)}" if a.removed else ""]
        )
        console.print(f"{a.user}: {a.change}{escape(detail)}")


@app.command()
def retention(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count what would be deleted")] = False,
    as_of: Annotated[str | None, typer.Option(help="count ages from this ISO time instead of now")] = None,
) -> None:
    """Delete raw, quarantined and feature rows older than their declared retention (the catalog's
    `retention` and `raw_retention`); audited. The Dagster schedule `retention_daily` runs it every day."""
    from feature_pipelines.privacy.retention import enforce
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    at = datetime.fromisoformat(as_of).astimezone(UTC) if as_of else None
    done = enforce(catalog, Settings(), by=_user(), at=at, dry_run=dry_run)
    if not done:
        console.print("no source or view declares a retention: nothing expires")
    verb = "would delete" if dry_run else "deleted"
    for e in done:
        console.print(
            f"{e.expiry.kind} {e.expiry.owner} (keeps {e.expiry.retention_days}d, from {e.expiry.cutoff}): "
            f"{verb} {e.rows} rows, {e.files_rewritten} files rewritten"
        )


@app.command()
def purge(
    keep_hours: Annotated[float, typer.Option(help="keep files replaced within this many hours (time travel)")] = 24.0,
) -> None:
    """VACUUM every lake table: files replaced by erasures and retention deletes more than --keep-hours ago
    are removed for good. Run it daily (the Dagster schedule does)."""
    from feature_pipelines.privacy.purge import overdue
    from feature_pipelines.privacy.purge import purge as run_purge
    from feature_pipelines.settings import Settings

    catalog = _catalog()
    settings = Settings()
    for uri, n in run_purge(catalog, settings, keep_hours=keep_hours, by=_user()).items():
        console.print(f"{uri}: {n} files removed")
    late = overdue(catalog, settings)
    if late.count:
        errors.print(f"[red]{late.count} erasures are past their purge date (by entity: {late.by_entity})[/red]")
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
