"""The feature catalog: entities, sources, feature views and feature services, declared as plain data.

Each module here is scanned by `feature_pipelines.catalog.load_catalog`; every spec object found at module
level joins the catalog. Add a feature by adding a `Feature` to a view and a column to its transformation.
"""
