"""Operational Dagster jobs: what on-call staff launch from the UI besides materializations."""

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.online.errors import OnlineStoreError
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy.audit import AuditLog
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from feature_pipelines.publish import guarded_aliases, guarded_ids


class RollbackConfig(dg.Config):
    """Which online view to roll back, and to which version (default: the one that served before)."""

    view: str
    to_version: int | None = None
    reason: str = ""


def build_rollback_job(catalog: Catalog) -> dg.JobDefinition:
    layout = OnlineLayout.from_catalog(catalog)

    @dg.op(
        name="rollback_online_view",
        description="Serve again the version that served before (one atomic pointer flip) and pin the view.",
    )
    def rollback_online_view(context: dg.OpExecutionContext, config: RollbackConfig, store: FeatureStoreResource):
        if config.view not in layout:
            raise dg.Failure(f"unknown online view {config.view!r}; known: {sorted(layout)}")
        online = store.online_store(layout)
        # Subjects revoked or erased since the target was written: their keys are gone on purpose.
        guard = OnlineGuard(PrivacyPolicy(catalog, store.settings), online)
        by = f"dagster run {context.run_id[:8]}"
        try:
            done = online.rollback(
                config.view,
                config.to_version,
                ids_of=guarded_ids(guard),
                aliases_of=guarded_aliases(guard),
                by=by,
                reason=config.reason,
                run_id=context.run_id,
            )
        except OnlineStoreError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from exc
        AuditLog(store.settings.privacy_table("audit")).append(
            "rollback",
            by=by,
            reason=config.reason,
            target=config.view,
            details={"to": done.version, "from": done.previous},
        )
        context.log.info(f"{config.view}: serving version {done.version} (was {done.previous}); pinned")
        context.add_output_metadata(
            {"from_version": done.previous or 0, "to_version": done.version, "keys_refreshed": done.keys_refreshed}
        )

    @dg.job(
        name="rollback_online",
        description="Roll an online view back to a version that served before, and pin it (`fstore unpin`).",
    )
    def rollback_online():
        rollback_online_view()

    return rollback_online
