"""Operational Dagster jobs: what on-call staff launch from the UI besides materializations."""

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.resources import FeatureStoreResource


class RollbackConfig(dg.Config):
    """Which online view to roll back, and to which version (default: the one before the serving one)."""

    view: str
    to_version: int | None = None


def build_rollback_job(catalog: Catalog) -> dg.JobDefinition:
    layout = OnlineLayout.from_catalog(catalog)

    @dg.op(name="rollback_online_view", description="Serve an older online version: one atomic pointer flip.")
    def rollback_online_view(context: dg.OpExecutionContext, config: RollbackConfig, store: FeatureStoreResource):
        if config.view not in layout:
            raise dg.Failure(f"unknown online view {config.view!r}; known: {sorted(layout)}")
        before, after = store.online_store(layout).rollback(config.view, config.to_version)
        context.log.info(f"{config.view}: serving version {after} (was {before})")
        context.add_output_metadata({"from_version": before or 0, "to_version": after})

    @dg.job(name="rollback_online", description="Roll an online view back to an older, still complete version.")
    def rollback_online():
        rollback_online_view()

    return rollback_online
