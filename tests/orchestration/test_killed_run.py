"""A Dagster run killed (kill -9) during its online push does not keep the `redis_writes` pool slot.

The production instance (deploy/dagster.yaml, PostgreSQL) with `redis_writes` limited to 1 slot. A code
server (`dagster api grpc`) serves the real online push asset, slowed down; `dagster-daemon run` runs
the queue and run monitoring. The first push is launched like any run (what `dagster job launch` does:
queued, then the DefaultRunLauncher starts a run worker in its own process); mid-write, the run worker
(and anything it started) is killed with SIGKILL, by PID. The code server sees its run worker gone and marks the run
failed; the monitoring daemon frees the run's slots (`free_slots_after_run_end_seconds`). The second
push then runs, and its prune removes the keys of the killed push's dead version.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest
import redis
import yaml

from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.local_server import free_port
from feature_pipelines.spec import PARTITION_DATE
from tests.conftest import DAY, ROOT

BIN = Path(sys.executable).parent
POOL = "redis_writes"


@pytest.fixture
def fresh_pg_db(pg_url):
    """A database of its own: this test sets a pool limit and runs a daemon that monitors every run in it."""
    import psycopg2

    admin = os.environ.get("FS_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"fs_kill_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    yield pg_url.rsplit("/", 1)[0] + "/" + name
    conn.cursor().execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
    )
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - the process owns it until it is stopped
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server we started, and what it started (its own process group), by its id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(what: str, check, timeout: float, logs: list[Path]):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tails}")


@pytest.mark.slow
def test_a_killed_push_run_frees_its_redis_pool_slot(catalog, store_resource, redis_url, tmp_path, fresh_pg_db):
    deployed = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    monitoring = deployed["run_monitoring"]
    assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0  # what production runs
    home = tmp_path / "dagster_home"
    home.mkdir()
    deployed["storage"]["postgres"]["postgres_url"] = fresh_pg_db
    monitoring.update(poll_interval_seconds=1, free_slots_after_run_end_seconds=1)  # the same mechanism, faster
    (home / "dagster.yaml").write_text(yaml.safe_dump(deployed))
    port = free_port()
    workspace = home / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump({"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": "slow"}}]})
    )
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "FS_LAKE_DIR": store_resource.lake_dir,
        "FS_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        "FS_TEST_PUSH_DELAY": "0.1",
        "FS_ONLINE_LEASE_SECONDS": "2",  # a killed push's version is dead 2 s after the kill
    }
    instance = dg.DagsterInstance.from_config(str(home))
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    logs = [tmp_path / "code_server.log", tmp_path / "daemon.log"]
    code = start(
        [str(BIN / "dagster"), "api", "grpc", "-m", "tests.orchestration.slow_push_location", "-h", "127.0.0.1",
         "-p", str(port)], env, logs[0],
    )  # fmt: skip
    daemon = start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, logs[1])
    # The partition to push, as the feature asset leaves it in Delta (3,000 customers).
    n = 3000
    rows = pl.DataFrame(
        {"customer_id": range(n), "country": ["France"] * n, "locale": ["fr_FR"] * n, "currency": ["EUR"] * n}
    )
    table = store_resource.settings.feature_table("user_context")
    overwrite_partitions(table, rows.with_columns(pl.lit(DAY).alias(PARTITION_DATE)), PARTITION_DATE, DAY, DAY)
    r = redis.Redis.from_url(redis_url)
    keys = OnlineLayout.from_catalog(catalog).keys_of("user_context")

    def launch() -> str:
        """`dagster job launch -w WORKSPACE -j push_user_context --tags ...`, without a process start."""
        from dagster._cli.job import execute_launch_command
        from dagster._cli.workspace.cli_target import WorkspaceOpts

        launched = execute_launch_command(
            instance=instance,
            workspace_opts=WorkspaceOpts(workspace=(str(workspace),)),
            job_name="push_user_context",
            tags=json.dumps({"dagster/partition": DAY}),
        )
        return launched.run_id

    def status(run_id: str) -> dg.DagsterRunStatus | None:
        found = instance.get_run_by_id(run_id)
        return found.status if found else None

    try:
        wait_for("the code server", lambda: _answers(port), 90, logs)
        first = launch()
        # Mid-push: the run holds the pool slot and its version is being written (a live lease).
        writing = wait_for(
            "the first push to write",
            lambda: [int(k.rsplit(b":", 1)[1]) for k in r.scan_iter(match=keys.control("lease:*"))],
            120,
            logs,
        )
        victim = writing[0]
        assert [s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots] == [first]
        worker = _run_worker_pid(instance, first)
        family = [psutil.Process(worker), *psutil.Process(worker).children(recursive=True)]
        for proc in family:
            os.kill(proc.pid, signal.SIGKILL)
        wait_for("the killed run to be marked failed", lambda: status(first) == dg.DagsterRunStatus.FAILURE, 30, logs)
        wait_for(
            "the monitoring daemon to free the slot",
            lambda: not instance.event_log_storage.get_concurrency_info(POOL).claimed_slots,
            60,
            logs,
        )
        second = launch()
        wait_for("the next push to succeed", lambda: status(second) == dg.DagsterRunStatus.SUCCESS, 120, logs)
    finally:
        stop(daemon)
        stop(code)
        instance.dispose()
    serving = r.get(keys.current)
    assert serving is not None and int(serving) > victim
    # The killed push's version was dead (its lease ran out) and the next push's prune removed its keys.
    assert r.hget(keys.versions, str(victim)) is None
    assert not list(r.scan_iter(match=f"{keys.data_prefix(victim)}*"))


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    for entry in instance.all_logs(run_id):
        found = re.search(r"Started process for run \(pid: (\d+)\)", entry.message or "")
        if found:
            return int(found.group(1))
    raise AssertionError(f"run {run_id} has no 'Started process' event")
