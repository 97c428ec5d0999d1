"""Everything Dagster knows about a catalog, built from it: assets, checks, automation and jobs.

Resources and the executor are bound once, in `definitions.py` (pitfall P16), so tests can build the
definitions of any catalog and bind their own resources.
"""

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.orchestration.automation import build_automation_defs, with_automation
from feature_pipelines.orchestration.feature_assets import build_feature_asset
from feature_pipelines.orchestration.identity_assets import IDENTITY_GROUP, build_identity_assets
from feature_pipelines.orchestration.jobs import build_rollback_job
from feature_pipelines.orchestration.online_assets import build_online_asset
from feature_pipelines.orchestration.privacy_assets import CONSENT_KEY, build_consent_asset, build_privacy_defs
from feature_pipelines.orchestration.raw_assets import build_source_asset
from feature_pipelines.orchestration.training_assets import build_training_set_asset

MAIN_JOB = "materialize_all"


def build_asset_defs(catalog: Catalog) -> dg.Definitions:
    """Every asset of the catalog, without automation."""
    assets = [build_source_asset(s, catalog) for s in catalog.sources.values()]
    identity = build_identity_assets(catalog)
    assets += [identity] if identity is not None else []
    consent = build_consent_asset(catalog)
    assets += [consent] if consent is not None else []
    assets += [build_feature_asset(v, catalog) for v in catalog.views.values()]
    assets += [build_online_asset(v, catalog) for v in catalog.online_views]
    assets += [build_training_set_asset(t, catalog) for t in catalog.training_sets.values()]
    return dg.Definitions(assets=assets)


def build_defs(catalog: Catalog) -> dg.Definitions:
    """Assets with their automation, sensors and checks, the main job and the operational jobs."""
    materialize_all = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups("raw", IDENTITY_GROUP, "features", "online")
        | dg.AssetSelection.assets(*([CONSENT_KEY] if build_consent_asset(catalog) else [])),
        description="Ingest, identity stitching with its accuracy gate, the consent ledger, every feature partition "
        "of the run's range with its GE gate, then the online push.",
    )
    return dg.Definitions.merge(
        with_automation(build_asset_defs(catalog), catalog),
        build_automation_defs(catalog),
        build_privacy_defs(catalog),
        dg.Definitions(jobs=[materialize_all, build_rollback_job(catalog)]),
    )
