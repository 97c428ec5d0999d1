"""Training set assets: a declared `TrainingSetSpec`, built point in time, with its manifest."""

from pathlib import Path

import dagster as dg
import polars as pl

from feature_pipelines import training
from feature_pipelines.catalog import Catalog
from feature_pipelines.orchestration.asset_keys import feature_key, training_set_key
from feature_pipelines.orchestration.resources import FeatureStoreResource
from feature_pipelines.privacy.policy import PrivacyPolicy
from feature_pipelines.spec import TrainingSetSpec


def build_training_set_asset(spec: TrainingSetSpec, catalog: Catalog) -> dg.AssetsDefinition:
    views = sorted({ref.view.deployed_name for ref in catalog.resolve_service(spec.service)})

    @dg.asset(
        key=training_set_key(spec),
        deps=[feature_key(catalog.views[v]) for v in views],
        group_name="training",
        kinds={"polars", "parquet"},
        owners=[spec.owner],
        description=f"{spec.description}\n\nFeature service `{spec.service}`, point in time ({spec.mode}).",
        metadata={"labels": spec.labels, "defined_at": spec.defined_at},
    )
    def _training_set(context: dg.AssetExecutionContext, store: FeatureStoreResource) -> dg.MaterializeResult:
        labels = pl.read_parquet(spec.resolve_labels(catalog.base_dir))
        result = training.build(
            catalog,
            spec.service,
            labels,
            store.settings.feature_table,
            timestamp_column=spec.timestamp_column,
            mode=spec.mode,
            privacy=PrivacyPolicy(catalog, store.settings),
        )
        out = Path(store.lake_dir) / "training_sets" / spec.name / f"{context.run.run_id}.parquet"
        manifest = result.write(out)
        frame = result.frame
        features = [f for read in result.manifest.views for f in read.features]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": frame.height,
                "rows_withheld": result.manifest.withheld,
                "path": dg.MetadataValue.path(str(out)),
                "manifest": dg.MetadataValue.path(str(manifest)),
                "delta_versions": dg.MetadataValue.json({r.view: r.delta_version for r in result.manifest.views}),
                **{f"null_rate/{f}": round(frame[f].null_count() / max(frame.height, 1), 4) for f in features},
            }
        )

    return _training_set
