"""Asset keys of the graph, one function per layer: `raw/<source>`, `identity/<table>`, `features/<view>`,
`online/<view>`.

A view version after the first is `features/<view>__v<N>` (`FeatureView.asset_name`, from `spec.versioned_name`)."""

import dagster as dg

from feature_pipelines.spec import BatchSource, FeatureView, TrainingSetSpec


def raw_key(source: BatchSource) -> dg.AssetKey:
    return dg.AssetKey(["raw", source.name])


def feature_key(view: FeatureView) -> dg.AssetKey:
    return dg.AssetKey(["features", view.asset_name])


def online_key(view: FeatureView) -> dg.AssetKey:
    return dg.AssetKey(["online", view.asset_name])


def training_set_key(spec: TrainingSetSpec) -> dg.AssetKey:
    return dg.AssetKey(["training_sets", spec.name])


IDENTITY_TABLES = ("edges", "persons", "alias_map")
"""The identity tables that are assets (one stitching step writes them; `identity_assets.py`)."""


def identity_key(name: str) -> dg.AssetKey:
    """`identity/<table>`: the identity graph's tables (`edges`, `persons`, `alias_map`)."""
    return dg.AssetKey(["identity", name])
