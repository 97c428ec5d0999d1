"""Runtime settings from the environment (or `.env`): where data lives and which Redis serves it."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """`FS_LAKE_DIR` holds every Delta table; `REDIS_URL` (or `FS_REDIS_URL`) is the online store."""

    model_config = SettingsConfigDict(env_prefix="FS_", env_file=".env", extra="ignore")

    lake_dir: Path = Path("lake")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", validation_alias=AliasChoices("FS_REDIS_URL", "REDIS_URL")
    )
    online_versions_kept: int = 3
    online_lease_seconds: float = 30.0
    """A push's lease on the version it writes: the version counts as dead this long after its push died."""
    # The serving client's deadlines (seconds) and circuit breaker; bulk writers keep their own, longer ones.
    serving_connect_timeout: float = 0.5
    serving_timeout: float = 0.5
    serving_breaker_failures: int = 3
    serving_breaker_cooldown: float = 2.0
    erasure_purge_days: float = 7.0
    """Declared purge window: an erased subject's rows are physically gone (VACUUM) within this many days."""

    def raw_table(self, source: str) -> str:
        return str((self.lake_dir / "raw" / source).resolve())

    def quarantine_table(self, source: str) -> str:
        """Rows a source's raw gate set aside (`on_bad_rows="quarantine"`), with their reasons."""
        return str((self.lake_dir / "quarantine" / source).resolve())

    def source_location(self, source: str) -> str | None:
        """`FS_SOURCE_<NAME>_LOCATION` points a source at another file, folder or glob without editing code."""
        import os

        return os.environ.get(f"FS_SOURCE_{source.upper()}_LOCATION") or None

    def privacy_table(self, name: str) -> str:
        """The privacy ledgers: `consent`, `tombstones`, `audit`."""
        return str((self.lake_dir / "privacy" / name).resolve())

    def feature_table(self, view: str) -> str:
        return str((self.lake_dir / "features" / view).resolve())
