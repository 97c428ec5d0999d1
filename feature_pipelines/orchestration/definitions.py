"""The code location: the catalog in `feature_defs/`, its definitions, and the resources, bound once."""

from __future__ import annotations

import warnings

import dagster as dg

# backfill_policy is beta and partitioned checks are preview in Dagster 1.13; used on purpose (pitfall P19).
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from feature_pipelines.catalog import load_catalog  # noqa: E402
from feature_pipelines.orchestration.factory import MAIN_JOB, build_defs  # noqa: E402
from feature_pipelines.orchestration.resources import FeatureStoreResource  # noqa: E402

__all__ = ["MAIN_JOB", "catalog", "defs"]

catalog = load_catalog()

defs = dg.Definitions.merge(
    build_defs(catalog), dg.Definitions(resources={"store": FeatureStoreResource.from_settings()})
)
