"""The main job, end to end on embedded defaults, and the summary it prints."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
from rich.console import Console
from rich.table import Table

from feature_pipelines.catalog import Catalog
from feature_pipelines.offline import delta
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
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


def run_main_job(
    catalog: Catalog, instance: dg.DagsterInstance, first: str | None = None, last: str | None = None
) -> RunOutcome:
    """One run of the main job over `first..last` (default: every partition of the data).

    The demo loads the whole history into an empty lake, so the run declares itself an initial historical
    load: its partitions count as known at their ends for training sets (on a lake that already has regular
    writes the declaration is recorded and ignored; see `training.py`)."""
    from feature_pipelines.orchestration.definitions import MAIN_JOB, defs
    from feature_pipelines.orchestration.feature_assets import HISTORICAL_LOAD_TAG

    keys = partitions_for(next(iter(catalog.sources.values()))).get_partition_keys()
    first, last = first or keys[0], last or keys[-1]
    job = defs.resolve_job_def(MAIN_JOB)
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags={RANGE_START: first, RANGE_END: last, HISTORICAL_LOAD_TAG: "true"},
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},  # step logs, not event noise
    )
    return RunOutcome(result.success, result.run_id, time.perf_counter() - started, first, last)


def summary(catalog: Catalog, settings: Settings, instance: dg.DagsterInstance, console: Console) -> None:
    tables = Table(title="Delta tables")
    for col in ("table", "rows", "partitions", "Delta version", "path"):
        tables.add_column(col)
    for source in catalog.sources.values():
        uri = settings.raw_table(source.name)
        _table_row(tables, f"raw/{source.name}", uri, "event_date")
    for view in catalog.views.values():
        _table_row(tables, f"features/{view.asset_name}", settings.feature_table(view.deployed_name), "partition_date")
    console.print(tables)

    checks = Table(title="Checks (latest evaluation)")
    for col in ("asset", "check", "passed", "details"):
        checks.add_column(col)
    from feature_pipelines.orchestration.definitions import defs

    for check_key in sorted(defs.resolve_asset_graph().asset_check_keys, key=lambda k: (k.asset_key.path, k.name)):
        rec = instance.get_latest_asset_check_evaluation_record(check_key)
        ev = rec.evaluation if rec else None
        if ev is None or not hasattr(ev, "passed"):
            continue
        md = {k: v.value for k, v in ev.metadata.items()}
        details = ", ".join(f"{k}={v}" for k, v in md.items() if isinstance(v, int | float) and "/" not in k)
        checks.add_row(check_key.asset_key.to_user_string(), check_key.name, str(ev.passed), details[:90])
    console.print(checks)

    store = OnlineStore(connect(settings.redis_url), OnlineLayout.from_catalog(catalog))
    online = Table(title=f"Redis ({settings.redis_url})")
    for col in ("view", "serving version", "partition", "keys", "TTL s", "Delta version"):
        online.add_column(col)
    for view in catalog.online_views:
        meta = store.serving_meta(view.deployed_name)
        if meta is None:
            online.add_row(view.deployed_name, "-", "-", "-", "-", "-")
            continue
        online.add_row(
            view.deployed_name,
            str(meta.version),
            meta.partition,
            str(meta.rows),
            str(meta.schema.ttl_seconds),
            str(meta.delta_version),
        )
    console.print(online)

    service = next(iter(catalog.services), None)
    if service:
        users = pl.scan_delta(settings.feature_table("user_purchase_behavior")).select("customer_id", "partition_date")
        newest = users.select(pl.col("partition_date").max()).collect().item()
        some_user = users.filter(pl.col("partition_date") == newest).select("customer_id").head(1).collect().item()
        client = OnlineClient(settings.redis_url, catalog)
        row = client.get_service(service, {"customer_id": [some_user, -1], "stock_code": ["85123A", "NOPE"]})
        console.print(
            f"[bold]Sample lookup[/bold] get_service({service!r}, customer_id=[{some_user}, -1], "
            f"stock_code=['85123A', 'NOPE']):"
        )
        for r in row:
            console.print(r.to_dict(), soft_wrap=True)


def _table_row(table: Table, name: str, uri: str, part_col: str) -> None:
    version = delta.table_version(uri)
    if version is None:
        table.add_row(name, "-", "-", "-", uri)
        return
    stats = pl.scan_delta(uri).select(pl.len(), pl.col(part_col).n_unique()).collect().row(0)
    table.add_row(name, f"{stats[0]:,}", str(stats[1]), str(version), os.path.relpath(uri))


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
            console.print(
                f"Main job {'succeeded' if outcome.success else 'FAILED'}: run {outcome.run_id}, partitions "
                f"{outcome.first}..{outcome.last}, {outcome.seconds:.1f}s"
            )
            summary(catalog, settings, instance, console)
    return outcome.success
