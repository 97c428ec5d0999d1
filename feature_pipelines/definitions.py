"""The one place Dagster definitions are assembled: assets from the catalog, jobs, resources."""

from __future__ import annotations

import warnings

import dagster as dg

# backfill_policy is beta in Dagster 1.13; we rely on it on purpose (pitfall P19).
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from feature_pipelines.assets import build_defs  # noqa: E402
from feature_pipelines.automation import build_automation_defs, with_automation  # noqa: E402
from feature_pipelines.catalog import load_catalog  # noqa: E402
from feature_pipelines.jobs import build_rollback_job  # noqa: E402
from feature_pipelines.resources import FeatureStoreResource  # noqa: E402

MAIN_JOB = "materialize_all"

catalog = load_catalog()

materialize_all = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.groups("raw", "features", "online"),
    description="Ingest, every feature partition of the run's range with its GE gate, then the online push.",
)

defs = dg.Definitions.merge(
    with_automation(build_defs(catalog), catalog),
    build_automation_defs(catalog),
    dg.Definitions(
        jobs=[materialize_all, build_rollback_job(catalog)],
        resources={"store": FeatureStoreResource.from_settings()},
    ),
)
