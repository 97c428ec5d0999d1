"""A push killed with kill -9 in the middle of its write: recognised by its lease, cleaned, serving untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.publish import publish, version_ids
from tests.conftest import ROOT, push_from_delta
from tests.online.test_lifecycle import KEYS, frame, toy_store

ROWS = 20_000


def count_keys(r, version: int) -> int:
    """Every key of a version, found the slow way (the store itself never scans)."""
    return sum(1 for _ in r.scan_iter(match=f"{KEYS.data_prefix(version)}*", count=5000))


def commit(uri: str, day: str, score: int, n: int) -> None:
    overwrite_partitions(
        uri, frame(score, n).with_columns(pl.lit(day).alias("partition_date")), "partition_date", day, day
    )


@pytest.mark.parametrize("cleaner", ["next push", "gc"])
def test_a_killed_push_leaves_no_orphan_keys_and_serving_untouched(r, redis_url, tmp_path, cleaner):
    uri = str(tmp_path / "toy")
    store = toy_store(redis_url)
    good = push_from_delta(store, "toy", frame(1, 100), partition="2011-01-01", uri=uri)
    commit(uri, "2011-01-02", 2, ROWS)
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.online.push_worker", redis_url, uri, "2011-01-02", "1.0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = worker.stdout.readline()
        assert line.startswith("writing"), line
        victim = int(line.split()[1])
        deadline = time.time() + 30
        while count_keys(r, victim) < 1000 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(worker.pid, signal.SIGKILL)  # by its PID, mid-write
        worker.wait()
    orphans = count_keys(r, victim)
    assert 1000 <= orphans < ROWS, orphans  # killed in the middle: some keys, not all
    assert store.meta("toy", victim).status == "writing"
    time.sleep(1.2)  # its lease (1 s) runs out: nothing renews it any more
    assert store.status("toy").in_state("dead") == [victim]
    assert store.serving_version("toy") == good.version
    assert OnlineClient(redis_url).get_view("toy", [5])[0] == {"score": 1, "label": "v1"}

    if cleaner == "next push":
        commit(uri, "2011-01-03", 3, 100)
        nxt = publish(store, "toy", uri, "2011-01-03", run_id="next", definition_hash="h", sample=20)
        assert nxt.promotion.promoted and nxt.pruned.removed == {victim: orphans}
    else:
        assert store.prune("toy", version_ids).removed == {victim: orphans}  # what `fstore gc` runs
        assert store.serving_version("toy") == good.version
    assert count_keys(r, victim) == 0 and store.meta("toy", victim) is None
    assert r.exists(KEYS.lease(victim)) == 0
    expected = 3 if cleaner == "next push" else 1
    assert OnlineClient(redis_url).get_view("toy", [5])[0]["score"] == expected
