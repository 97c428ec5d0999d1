"""Dagster resources: where the lake is and which Redis serves, bound once in `definitions.py`."""

from pathlib import Path

import dagster as dg

from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.settings import Settings


class FeatureStoreResource(dg.ConfigurableResource):
    """The offline lake directory and the online Redis, with the number of online versions to keep."""

    lake_dir: str
    redis_url: str
    versions_kept: int = 3
    lease_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "FeatureStoreResource":
        settings = settings or Settings()
        return cls(
            lake_dir=str(settings.lake_dir.resolve()),
            redis_url=settings.redis_url,
            versions_kept=settings.online_versions_kept,
            lease_seconds=settings.online_lease_seconds,
        )

    @property
    def settings(self) -> Settings:
        return Settings(
            lake_dir=Path(self.lake_dir),
            redis_url=self.redis_url,
            online_versions_kept=self.versions_kept,
            online_lease_seconds=self.lease_seconds,
        )

    def online_store(self, layout: OnlineLayout) -> OnlineStore:
        return OnlineStore(
            connect(self.redis_url), layout, versions_kept=self.versions_kept, lease_seconds=self.lease_seconds
        )
