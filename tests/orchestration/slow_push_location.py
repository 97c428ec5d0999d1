"""A code location for the killed-run test: the real online push asset of `user_context`, slowed down.

Served by `dagster api grpc -m tests.orchestration.slow_push_location`; runs launched against it go
through the DefaultRunLauncher into their own run worker process, as in production (which runs the step
in it: the in-process executor). The push writes its
rows in small batches with a pause (`FS_TEST_PUSH_DELAY` seconds) so that a test can kill the run
worker in the middle of the write."""

import os
import time

import dagster as dg

from feature_pipelines.catalog import load_catalog
from feature_pipelines.offline import delta
from feature_pipelines.orchestration.asset_keys import online_key
from feature_pipelines.orchestration.online_assets import build_online_asset
from feature_pipelines.orchestration.resources import FeatureStoreResource

_read = delta.iter_partition


def _slow(uri, column, value, columns, version=None, batch_rows=100_000):
    if len(columns) == 1:  # ids for a prune: full speed
        yield from _read(uri, column, value, columns, version, batch_rows)
        return
    for batch in _read(uri, column, value, columns, version, 100):
        yield batch
        time.sleep(float(os.environ.get("FS_TEST_PUSH_DELAY", "0.1")))


delta.iter_partition = _slow

catalog = load_catalog()
view = catalog.views["user_context"]
defs = dg.Definitions(
    assets=[build_online_asset(view, catalog)],
    # In process: the run worker runs the push itself (one process start less per run under test).
    jobs=[dg.define_asset_job("push_user_context", selection=[online_key(view)], executor_def=dg.in_process_executor)],
    resources={"store": FeatureStoreResource.from_settings()},
)
