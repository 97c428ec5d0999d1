"""On-call in the real Dagster UI: open a feature asset, backfill 3 days through the UI's own dialog.

Starts `dagster dev` (webserver + daemons) on a PostgreSQL-backed instance configured by the project's
dagster.yaml, drives it with Playwright in Debian's headless Chromium, waits for the backfill, then checks
the Delta partitions and the runs. Screenshots land in tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from feature_pipelines.online.local_server import free_port
from feature_pipelines.orchestration.asset_keys import raw_key
from tests.conftest import ROOT, run

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DAYS = ["2011-03-01", "2011-03-02", "2011-03-03"]


@pytest.fixture
def dagster_ui(tmp_path, redis_url, pg_url, pg_instance):
    """`dagster dev` on a fresh DAGSTER_HOME holding the project's (PostgreSQL) dagster.yaml."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is required for the UI test (apt-get install chromium); .ci/run installs it")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    # Dagster's first-visit survey dialog opens a moment after the page loads; its backdrop then intercepts
    # the next click at random. A fresh test instance would show it every time, so it is switched off here.
    with open(home / "dagster.yaml", "a") as config:
        config.write("\nnux:\n  enabled: false\n")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": pg_url,
        "FS_LAKE_DIR": str(tmp_path / "lake"),
        "FS_REDIS_URL": redis_url,
        "PYTHONWARNINGS": "ignore:Function `dev_command` is superseded",
    }
    log = open(tmp_path / "dagster_dev.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{url}/server_info", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"dagster dev did not come up: {(tmp_path / 'dagster_dev.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, home, env
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # our own process group: dagster dev and its children
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_backfill_three_days_from_the_ui(dagster_ui, catalog, store_resource, pg_instance):
    from playwright.sync_api import sync_playwright

    url, home, env = dagster_ui
    instance = pg_instance  # the same PostgreSQL storage the webserver and daemon use
    # The raw days the item view reads for those 3 days (30-day windows), ingested beforehand.
    store = store_resource.model_copy(update={"lake_dir": env["FS_LAKE_DIR"]})
    assert run(
        catalog, instance, store, [raw_key(catalog.sources["online_retail"])], first="2011-01-30", last=DAYS[-1]
    ).success
    before = {b.backfill_id for b in instance.get_backfills()}
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/assets/features/item_popularity", wait_until="networkidle")
        page.get_by_role("button", name="Materialize…").click()
        box = page.get_by_placeholder("ex: 2010-12-01", exact=False)
        box.fill(f"[{DAYS[0]}...{DAYS[-1]}]")
        box.press("Enter")
        page.get_by_text("3 partitions", exact=True).wait_for(timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "backfill-dialog.png"))
        page.get_by_role("button", name="Launch backfill").click()

        deadline = time.time() + 300
        backfill = None
        while time.time() < deadline:
            new = [b for b in instance.get_backfills() if b.backfill_id not in before]
            if new and new[0].status.value in ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                backfill = new[0]
                break
            time.sleep(3)
        assert backfill is not None, "the backfill did not finish within 5 minutes"
        page.goto(f"{url}/runs/b/{backfill.backfill_id}?tab=runs", wait_until="networkidle")
        page.wait_for_timeout(2000)
        page.screenshot(path=str(ARTIFACTS / "backfill-done.png"))
        page.goto(f"{url}/assets/features/item_popularity?view=partitions", wait_until="networkidle")
        page.wait_for_timeout(2000)
        page.screenshot(path=str(ARTIFACTS / "asset-partitions.png"))
        browser.close()

    assert backfill.status.value == "COMPLETED_SUCCESS"
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id}))
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert len(runs) == 1  # single-run backfill policy: one run for the three days
    table = pl.read_delta(str(Path(env["FS_LAKE_DIR"]) / "features" / "item_popularity"))
    assert sorted(table["partition_date"].unique()) == DAYS
    assert table.group_by("partition_date").len()["len"].min() > 100
