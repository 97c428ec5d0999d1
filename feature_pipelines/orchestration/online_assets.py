"""Online push assets: the newest partition of a view's run, published to Redis as a new version (with the
alias keys of its persons for a view keyed through the identity graph)."""

import dagster as dg

from feature_pipelines.catalog import Catalog
from feature_pipelines.identity.stitch import IdentityStore
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import Outcome
from feature_pipelines.orchestration.asset_keys import feature_key, online_key
from feature_pipelines.orchestration.feature_checks import consistency_check, consistency_spec
from feature_pipelines.orchestration.partitions import POLICY, REDIS_POOL, RETRY, partitions_for, run_days
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from feature_pipelines.publish import AliasSource, publish
from feature_pipelines.spec import FeatureView

ROUNDTRIP_CHECK = "roundtrip"


def build_online_asset(view: FeatureView, catalog: Catalog) -> dg.AssetsDefinition:
    layout = OnlineLayout.from_catalog(catalog)
    schema = layout[view.deployed_name]
    key = online_key(view)

    @dg.asset(
        key=key,
        deps=[feature_key(view)],
        partitions_def=partitions_for(catalog.source_of(view)),
        backfill_policy=POLICY,
        retry_policy=RETRY,
        pool=REDIS_POOL,
        group_name="online",
        kinds={"redis"},
        owners=[view.owner],
        tags={"sensitivity": view.namespace_sensitivity},
        description=f"Newest partition of {view.deployed_name} in Redis, as a new version promoted atomically.",
        metadata={"key_namespace": schema.namespace, "ttl_seconds": schema.ttl_seconds or 0},
        check_specs=[
            dg.AssetCheckSpec(
                ROUNDTRIP_CHECK,
                asset=key,
                blocking=True,
                description=f"{view.skew_sample} sampled entities of the new version, read back through the "
                "serving client, equal their Delta rows; checked before the version is promoted.",
            ),
            consistency_spec(key, view),
        ],
    )
    def _push(context: dg.AssetExecutionContext, store: FeatureStoreResource):
        newest = run_days(context)[-1].isoformat()
        uri = store.settings.feature_table(view.deployed_name)
        online = store.online_store(layout)
        published = publish(
            online,
            view.deployed_name,
            uri,
            newest,
            run_id=context.run.run_id,
            definition_hash=view.definition_hash(),
            sample=view.skew_sample,
            guard=OnlineGuard(PrivacyPolicy(catalog, store.settings), online),
            # A person-keyed view is served by any of a person's ids: every push writes the alias keys of the
            # alias map's current facts, so a merge or an un-merge reaches serving with the next push.
            aliases=AliasSource(IdentityStore(store.settings.lake_dir).uri("alias_map")) if view.identity else None,
        )
        written, promotion, roundtrip = published.written, published.promotion, published.roundtrip
        check_meta = {
            "compared_entities": roundtrip.compared,
            "differing_features": ", ".join(roundtrip.differing) or "none",
            "online_version": written.version,
        }
        if not roundtrip.passed:
            yield dg.AssetCheckResult(check_name=ROUNDTRIP_CHECK, passed=False, metadata=check_meta)
            raise dg.Failure(
                f"{view.deployed_name}: version {written.version} not promoted, {promotion.reason}", allow_retries=False
            )
        context.log.info(
            f"{view.deployed_name}: wrote version {written.version} ({written.rows} keys, {written.seconds:.2f}s); "
            f"{'promoted' if promotion.promoted else 'not promoted: ' + promotion.reason}"
        )
        if promotion.outcome is Outcome.PINNED:
            context.log.warning(f"{view.deployed_name}: {promotion.reason}")
        for warning in published.warnings:  # the push stands: no failure, so no retry pushes it again
            context.log.warning(warning)
        pruned = published.pruned
        yield dg.MaterializeResult(
            metadata={
                "online_version": written.version,
                "serving_version": promotion.serving_version or 0,
                "promoted": promotion.promoted,
                "outcome": promotion.outcome.value,
                "keys_written": written.rows,
                "rows_withheld": published.withheld,
                "push_seconds": round(written.seconds, 3),
                "partition": newest,
                "removed_versions": str(sorted(pruned.removed)) if pruned else "prune failed",
                "removed_namespaces": ", ".join(published.retired_namespaces) or "none",
                "pinned": promotion.outcome is Outcome.PINNED,
                "warnings": "\n".join(published.warnings) or "none",
            },
            check_results=[
                dg.AssetCheckResult(check_name=ROUNDTRIP_CHECK, passed=True, metadata=check_meta),
                # After the promotion: serving vs training, for the subjects the policy still lets it serve.
                consistency_check(view, online, OnlineGuard(PrivacyPolicy(catalog, store.settings), online)),
            ],
        )

    return _push
