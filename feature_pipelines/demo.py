"""The main job, end to end on embedded defaults, and the summary it prints."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.orchestration.asset_keys import raw_key
from feature_pipelines.orchestration.partitions import partitions_for
from feature_pipelines.settings import Settings

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class RunOutcome:
    success: bool
    run_id: str
    seconds: float
    first: str
    last: str
    reasons: list[str] = field(default_factory=list)


def run_main_job(
    catalog: Catalog, instance: dg.DagsterInstance, first: str | None = None, last: str | None = None
) -> RunOutcome:
    """One run of the main job over `first..last` (default: every partition of the data).

    The demo loads the whole history into an empty lake, so the run declares itself an initial historical
    load: its partitions count as known at their ends for training sets (on a lake that already has regular
    writes the declaration is recorded and ignored; see `training.py`). A range that starts after the source's first day ingests the raw days its feature windows read first
    (a partition is computed only from a complete window)."""
    from feature_pipelines.orchestration.definitions import MAIN_JOB, defs
    from feature_pipelines.orchestration.feature_assets import HISTORICAL_LOAD_TAG

    started = time.perf_counter()
    ensure_behaviour_events(catalog)
    keys = partitions_for(next(iter(catalog.sources.values()))).get_partition_keys()
    first, last = first or keys[0], last or keys[-1]
    run_config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # step logs, not event noise
    history = _raw_history_range(catalog, first)
    if history is not None:
        raw_job = defs.resolve_implicit_job_def_def_for_assets([raw_key(s) for s in catalog.sources.values()])
        pre = raw_job.get_subset(asset_selection={raw_key(s) for s in catalog.sources.values()}).execute_in_process(
            instance=instance,
            tags={RANGE_START: history[0], RANGE_END: history[1]},
            raise_on_error=False,
            run_config=run_config,
        )
        if not pre.success:
            why = [f"ingesting the raw days {history[0]}..{history[1]} that the windows read:", *failure_reasons(pre)]
            return RunOutcome(False, pre.run_id, time.perf_counter() - started, first, last, why)
    job = defs.resolve_job_def(MAIN_JOB)
    result = job.execute_in_process(
        instance=instance,
        tags={RANGE_START: first, RANGE_END: last, HISTORICAL_LOAD_TAG: "true"},
        raise_on_error=False,
        run_config=run_config,
    )
    reasons = [] if result.success else failure_reasons(result)
    return RunOutcome(result.success, result.run_id, time.perf_counter() - started, first, last, reasons)


def ensure_behaviour_events(catalog: Catalog) -> None:
    """The behaviour events are synthetic and git-ignored: generate the default set (seeded, deterministic)
    when the declared location has none, so a fresh checkout runs the whole demo."""
    from feature_pipelines.offline.ingest import SourceError, source_files
    from feature_pipelines.synthetic import consent, events

    if "behaviour_events" in catalog.sources:
        try:
            source_files(catalog.sources["behaviour_events"], catalog.base_dir)
        except SourceError:
            events.ensure(events.DEFAULT_OUT)
    if "consent_events" in catalog.sources:  # the consent choices follow the behaviour events' cookies
        try:
            source_files(catalog.sources["consent_events"], catalog.base_dir)
        except SourceError:
            consent.ensure(consent.DEFAULT_OUT)


def _raw_history_range(catalog: Catalog, first: str) -> tuple[str, str] | None:
    """The raw days before `first` that the views' windows read, if `first` is not the source's first day."""
    start = date.fromisoformat(first)
    lookback = max((v.lookback for v in catalog.views.values()), default=timedelta(days=1))
    source_start = min(s.start for s in catalog.sources.values())
    lo = max(source_start, start - lookback + timedelta(days=1))
    return (lo.isoformat(), (start - timedelta(days=1)).isoformat()) if lo < start else None


def failure_reasons(result: dg.ExecuteInProcessResult) -> list[str]:
    """Why a run failed, as an operator needs it: each failed blocking check (view, check, partitions and the
    failing expectations with columns and example rows) and each failed step's own message."""
    reasons = []
    for ev in result.get_asset_check_evaluations():
        if ev.passed or ev.severity != dg.AssetCheckSeverity.ERROR:
            continue
        md = {k: v.value for k, v in ev.metadata.items()}
        where = f"partitions {md['partitions']}" if "partitions" in md else "partition " + str(ev.partition or "-")
        details = md.get("failures") or md.get("differing_features") or ""
        reasons.append(f"{ev.asset_key.to_user_string()}: check {ev.check_name} failed for {where}\n{details}".strip())
    for ev in result.get_step_failure_events():
        data = ev.step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            text = user.description
        else:
            error = data.error
            text = error.message.strip() if error else "failed"
            if error is not None and error.cause is not None:
                text += f"\ncaused by: {error.cause.message.strip()}"
        reasons.append(f"{ev.step_key}: {text}")
    return reasons


def summary(catalog: Catalog, settings: Settings, instance: dg.DagsterInstance, console: Console) -> None:
    """Delta tables, the latest check evaluations and what Redis serves: names never cut (80 columns)."""
    lake = os.path.relpath(settings.lake_dir.resolve())
    tables = Table(title=f"Delta tables ({settings.lake_dir.resolve() if lake.startswith('..') else lake}/)")
    tables.add_column("table", no_wrap=True)
    for col in ("rows", "days", "Delta v"):
        tables.add_column(col, justify="right", no_wrap=True)
    for source in catalog.sources.values():
        _table_row(tables, f"raw/{source.name}", settings.raw_table(source.name), "event_date")
    for view in catalog.views.values():
        _table_row(tables, f"features/{view.asset_name}", settings.feature_table(view.deployed_name), "partition_date")
    console.print(tables)

    checks = Table(title="Checks (latest evaluation)")
    checks.add_column("asset", no_wrap=True)
    checks.add_column("check", no_wrap=True)
    checks.add_column("ok", no_wrap=True)
    checks.add_column("details", overflow="fold")
    from feature_pipelines.orchestration.definitions import defs

    for check_key in sorted(defs.resolve_asset_graph().asset_check_keys, key=lambda k: (k.asset_key.path, k.name)):
        rec = instance.get_latest_asset_check_evaluation_record(check_key)
        ev = rec.evaluation if rec else None
        if ev is None or not hasattr(ev, "passed"):
            continue
        md = {k: v.value for k, v in ev.metadata.items()}
        details = ", ".join(f"{k}={v}" for k, v in md.items() if isinstance(v, int | float) and "/" not in k)
        asset = check_key.asset_key.path[-1]
        checks.add_row(asset, check_key.name, "yes" if ev.passed else "[red]NO[/red]", details[:90])
    console.print(checks)
    _online_table(catalog, settings, console, f"Redis ({settings.redis_url})")

    service = next(iter(catalog.services), None)
    if service:
        users = pl.scan_delta(settings.feature_table("user_purchase_behavior")).select("customer_id", "partition_date")
        newest = users.select(pl.col("partition_date").max()).collect().item()
        some_user = users.filter(pl.col("partition_date") == newest).select("customer_id").head(1).collect().item()
        client = OnlineClient(settings.redis_url, catalog)
        # A valid id nobody has and a well-formed unknown code: unknown keys come back as nulls.
        row = client.get_service(service, {"customer_id": [some_user, 99999], "stock_code": ["85123A", "99999Z"]})
        console.print(
            f"[bold]Sample lookup[/bold] get_service({service!r}, customer_id=[{some_user}, 99999], "
            f"stock_code=['85123A', '99999Z']):"
        )
        for r in row:
            console.print(r.to_dict(), soft_wrap=True)
    alias_lookup(catalog, settings, console)
    consent_summary(catalog, settings, console)


def consent_summary(catalog: Catalog, settings: Settings, console: Console) -> dict[str, tuple[int, int]] | None:
    """What consent withholds now: per personal entity, ledger events that speak for it and subjects its
    Redis deny hash blocks (none of their keys are served). Returns entity -> (events, denied)."""
    from feature_pipelines.online.layout import deny_key
    from feature_pipelines.privacy.policy import PrivacyPolicy

    policy = PrivacyPolicy(catalog, settings)
    if delta.table_version(policy.consent.uri) is None:
        return None
    r = connect(settings.redis_url)
    shown = {}
    for entity in sorted(e.name for e in catalog.entities.values() if e.personal):
        shown[entity] = (policy.subject_events(entity).height, int(r.hlen(deny_key(entity))))
    r.close()
    text = "; ".join(f"{entity}: {n:,} events, {d:,} withheld" for entity, (n, d) in shown.items())
    console.print(f"[bold]Consent[/bold] (ledger, Redis deny hashes): {text}", highlight=False)
    return shown


PROFILE_VIEW = "person_profile"
SHOWN = ("events_30d", "sessions_30d", "purchases_30d", "last_device_type", "intent_ready_to_buy")


def alias_lookup(catalog: Catalog, settings: Settings, console: Console) -> dict | None:
    """A serving system holding only a cookie: the person's profile by an anonymous id, in one round trip,
    beside the same read by the person's device and customer ids. Picks a stitched person of the serving
    version (one with an anonymous id and a customer id). Returns what it showed (None: nothing served)."""
    from feature_pipelines.identity.stitch import IdentityStore

    if PROFILE_VIEW not in catalog.views or not catalog.views[PROFILE_VIEW].online:
        return None
    client = OnlineClient(settings.redis_url, catalog)
    store = OnlineStore(connect(settings.redis_url), OnlineLayout.from_catalog(catalog))
    meta = store.serving_meta(PROFILE_VIEW)
    aliases_uri = IdentityStore(settings.lake_dir).uri("alias_map")
    if meta is None or delta.table_version(aliases_uri) is None:
        return None
    served = pl.scan_delta(settings.feature_table(PROFILE_VIEW)).filter(pl.col("partition_date") == meta.partition)
    current = (
        delta.scan(aliases_uri)
        .filter(pl.col("known_to").is_null())
        .join(served.select("person_id"), on="person_id", how="semi")
        .collect()
    )
    kinds = current.group_by("person_id").agg(pl.col("identifier_type").n_unique().alias("k"), pl.len().alias("n"))
    pick = kinds.sort("k", "n", "person_id", descending=[True, True, False]).head(1)
    if not pick.height:
        return None
    person = pick["person_id"][0]
    ids = current.filter(pl.col("person_id") == person).sort("identifier_type", "identifier")
    anonymous = ids.filter(pl.col("identifier_type") == "anonymous_id")["identifier"][0]
    read = client.get_by_alias(PROFILE_VIEW, "anonymous_id", anonymous)
    values = read.features.to_dict()
    shown = {k: values[k] for k in SHOWN}
    shown["top_interest"] = _top_interest(values)
    shown["profile_vector[:3]"] = [round(x, 3) for x in (values["profile_vector"] or [])[:3]]
    lines = [
        "[bold]Lookup by alias[/bold] (one round trip: FCALL_RO fs_get_by_alias)",
        f"  get_by_alias({PROFILE_VIEW!r}, 'anonymous_id', {anonymous!r})",
        f"  -> person {read.person_id}",
        *[f"  {k} = {v}" for k, v in shown.items()],
    ]
    others = ids.filter(pl.col("identifier_type") != "anonymous_id").select("identifier_type", "identifier")
    for kind, ident in others.head(2).iter_rows():
        other = client.get_by_alias(PROFILE_VIEW, kind, ident)
        lines.append(f"  by {kind} {ident}: {'same profile' if other.features == read.features else 'DIFFERENT'}")
    for line in lines:
        console.print(line, highlight=False)
    return {"anonymous_id": anonymous, "person_id": read.person_id, "ids": ids.height, **shown}


def _online_table(catalog: Catalog, settings: Settings, console: Console, title: str) -> None:
    store = OnlineStore(connect(settings.redis_url), OnlineLayout.from_catalog(catalog))
    online = Table(title=title)
    online.add_column("view", no_wrap=True)
    for col in ("version", "partition", "keys", "TTL s", "Delta v"):
        online.add_column(col, justify="right", no_wrap=True)
    for view in catalog.online_views:
        meta = store.serving_meta(view.deployed_name)
        if meta is None:
            online.add_row(view.deployed_name, "-", "-", "-", "-", "-")
            continue
        online.add_row(
            view.deployed_name,
            str(meta.version),
            meta.partition,
            f"{meta.rows:,}",
            str(meta.schema.ttl_seconds),
            str(meta.delta_version),
        )
    console.print(online)


def _table_row(table: Table, name: str, uri: str, part_col: str) -> None:
    version = delta.table_version(uri)
    if version is None:
        table.add_row(name, "-", "-", "-")
        return
    stats = pl.scan_delta(uri).select(pl.len(), pl.col(part_col).n_unique()).collect().row(0)
    table.add_row(name, f"{stats[0]:,}", str(stats[1]), str(version))


def demo(console: Console, first: str | None = None, last: str | None = None) -> bool:
    from feature_pipelines.online.local_server import redis_for
    from feature_pipelines.orchestration.definitions import catalog

    settings = Settings()
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    with redis_for(settings.redis_url) as url:
        if url != settings.redis_url:
            console.print(f"No Redis at {settings.redis_url}; started a private one at {url}")
            os.environ["FS_REDIS_URL"] = url
            settings = Settings(redis_url=url)
            import importlib

            import feature_pipelines.orchestration.definitions as definitions

            importlib.reload(definitions)
        with dg.DagsterInstance.get() as instance:
            console.print(f"Dagster instance: {home} (SQLite); lake: {settings.lake_dir.resolve()}")
            outcome = run_main_job(catalog, instance, first, last)
            if outcome.success:
                console.print(
                    f"Main job succeeded: run {outcome.run_id}, partitions {outcome.first}..{outcome.last}, "
                    f"{outcome.seconds:.1f}s"
                )
                summary(catalog, settings, instance, console)
            else:
                report_failure(catalog, settings, outcome, console)
    return outcome.success


def report_failure(catalog: Catalog, settings: Settings, outcome: RunOutcome, console: Console) -> None:
    """The reasons first, then what still serves: never a summary that looks like this run's result."""
    console.print(
        f"[bold red]Main job FAILED[/bold red]: run {outcome.run_id}, partitions {outcome.first}..{outcome.last}, "
        f"{outcome.seconds:.1f}s. Why:",
        highlight=False,
    )
    for reason in outcome.reasons or ["no failure event was recorded; see the run's log in the Dagster UI"]:
        console.print(f"- {escape(reason)}", soft_wrap=True, highlight=False)
    console.print(
        "Nothing this run failed on was committed or promoted: Delta and Redis keep their last good versions.",
        highlight=False,
    )
    _online_table(catalog, settings, console, "Still serving (Redis)")


def _top_interest(profile: dict) -> str | None:
    """The category of a profile's highest `interest_<category>` (None without interactions)."""
    scores = {k.removeprefix("interest_"): v for k, v in profile.items() if k.startswith("interest_") and v}
    return max(sorted(scores), key=lambda c: scores[c]) if scores else None
