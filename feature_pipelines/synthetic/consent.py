"""SYNTHETIC consent events: grants and revocations around the synthetic behaviour world.

The retail data has no consent records. The demo needs some to show consent enforced end to end, so this
module invents them, deterministically from a seed, in the consent source's contract (`feature_defs/
sources.py` `consent_events`): who (`subject_type` "customer_id" with a real customer id, or
"anonymous_id" with a cookie of the behaviour events), which purpose, granted or revoked, when, and where
the choice was made (`origin`). Nothing it writes is real.

Who does what (shares drawn from `numpy.random.default_rng(seed)`, see `ConsentWorld`): a few customers
object to personalization or analytics in the preference centre (some change their mind later), some opt
in to ads (a few opt out again), and a few cookies decline analytics or personalization in the cookie
banner, at or after the cookie's first visit. A cookie's choice applies to the person it stitches to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from feature_pipelines.synthetic import events as behaviour

DEFAULT_OUT = behaviour.DEFAULT_OUT.parent / "consent"
FILE = "consent-events.parquet"
DEFAULT_SEED = 13
CUSTOMER, ANONYMOUS = "customer_id", "anonymous_id"

SCHEMA: dict[str, pl.DataType] = {
    "consent_id": pl.String(),
    "subject_type": pl.String(),
    "subject_id": pl.String(),
    "purpose": pl.String(),
    "granted": pl.Boolean(),
    "event_time": pl.Datetime("us", "UTC"),
    "origin": pl.String(),
}
ORIGINS = ("preference_center", "cookie_banner", "support_request")


@dataclass(frozen=True)
class ConsentWorld:
    """Shares of customers and cookies making each choice; the defaults make the shipped demo data."""

    object_personalization: float = 0.02  # customers revoking personalization
    regrant: float = 0.25  # of those, granting it again later
    object_analytics: float = 0.02  # customers revoking analytics
    opt_in_ads: float = 0.05  # customers granting ads (opt-in)
    opt_out_ads: float = 0.2  # of those, revoking ads later
    cookie_declines_analytics: float = 0.01  # cookies declining analytics in the banner
    cookie_declines_personalization: float = 0.003  # cookies declining personalization
    support_share: float = 0.2  # customer choices made through a support request, not the preference centre


def generate(
    anchors: behaviour.Anchors, cookies: pl.DataFrame, seed: int = DEFAULT_SEED, world: ConsentWorld = ConsentWorld()
) -> pl.DataFrame:
    """Consent events of the real customers and of `cookies` (columns anonymous_id, first_seen), in SCHEMA,
    sorted by event_time then consent_id."""
    rng = np.random.default_rng(seed)
    w = world
    customers = anchors.customers["customer_id"].cast(pl.String).to_numpy()
    start = int(anchors.start.timestamp() * 1e6) + 3_600_000_000
    end = int(anchors.end.timestamp() * 1e6)
    parts: list[pl.DataFrame] = []

    def times(n: int, lo: np.ndarray | int = start) -> np.ndarray:
        lo = np.broadcast_to(np.asarray(lo, dtype=np.int64), (n,))
        return lo + (rng.random(n) * (end - lo)).astype(np.int64) // 60_000_000 * 60_000_000

    def customer_origin(n: int) -> np.ndarray:
        return np.where(rng.random(n) < w.support_share, "support_request", "preference_center")

    def add(kind: str, ids: np.ndarray, purpose: str, granted: bool, at: np.ndarray, origin: np.ndarray) -> None:
        parts.append(
            pl.DataFrame(
                {
                    "subject_type": [kind] * ids.size,
                    "subject_id": ids.astype(str),
                    "purpose": [purpose] * ids.size,
                    "granted": [granted] * ids.size,
                    "event_time": at,
                    "origin": origin.astype(str),
                },
                schema_overrides={"event_time": pl.Int64, "subject_id": pl.String, "origin": pl.String},
            )
        )

    for purpose, share in (("personalization", w.object_personalization), ("analytics", w.object_analytics)):
        who = customers[rng.random(customers.size) < share]
        at = times(who.size)
        add(CUSTOMER, who, purpose, False, at, customer_origin(who.size))
        again = rng.random(who.size) < w.regrant if purpose == "personalization" else np.zeros(who.size, bool)
        add(CUSTOMER, who[again], purpose, True, times(int(again.sum()), at[again]), customer_origin(int(again.sum())))
    fans = customers[rng.random(customers.size) < w.opt_in_ads]
    at = times(fans.size)
    add(CUSTOMER, fans, "ads", True, at, customer_origin(fans.size))
    leave = rng.random(fans.size) < w.opt_out_ads
    add(CUSTOMER, fans[leave], "ads", False, times(int(leave.sum()), at[leave]), customer_origin(int(leave.sum())))

    cookie_ids = cookies["anonymous_id"].to_numpy()
    first_seen = cookies["first_seen"].dt.epoch("us").to_numpy()
    for purpose, share in (
        ("analytics", w.cookie_declines_analytics),
        ("personalization", w.cookie_declines_personalization),
    ):
        pick = rng.random(cookie_ids.size) < share
        # The banner shows on the first visit: most answer then, some later.
        lo = first_seen[pick]
        later = rng.random(int(pick.sum())) < 0.3
        at = np.where(later, times(int(pick.sum()), np.maximum(lo, start)), lo)
        add(ANONYMOUS, cookie_ids[pick], purpose, False, at, np.full(int(pick.sum()), "cookie_banner"))

    frame = (
        pl.concat(parts)
        .with_columns(pl.col("event_time").cast(pl.Datetime("us", "UTC")))
        .sort("event_time", "subject_type", "subject_id", "purpose", "granted")
    )
    return frame.with_columns(
        pl.format("consent-{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(7)).alias("consent_id")
    ).select(SCHEMA.keys())


def cookies(behaviour_dir: Path = behaviour.DEFAULT_OUT) -> pl.DataFrame:
    """Each real cookie (not a placeholder, not a kiosk's) of the behaviour events with its first visit."""
    files = sorted(behaviour_dir.glob(f"{behaviour.FILE_PREFIX}*.parquet"))
    if not files:
        raise FileNotFoundError(f"no behaviour events in {behaviour_dir}: consent events follow their cookies")
    return (
        pl.scan_parquet(files)
        .filter(
            ~pl.col("anonymous_id").is_in(list(behaviour.PLACEHOLDER_ANONYMOUS_IDS))
            & ~pl.col("anonymous_id").str.starts_with("kiosk-")
        )
        .group_by("anonymous_id")
        .agg(pl.col("event_time").min().alias("first_seen"))
        .collect()
        .sort("anonymous_id")
    )


def write(
    out: Path = DEFAULT_OUT,
    behaviour_dir: Path = behaviour.DEFAULT_OUT,
    seed: int = DEFAULT_SEED,
    world: ConsentWorld = ConsentWorld(),
) -> Path:
    """Write `consent-events.parquet` into `out` (replacing it); the behaviour events must exist."""
    frame = generate(behaviour.load_anchors(), cookies(behaviour_dir), seed, world)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE
    frame.write_parquet(path, statistics=True)
    return path


def ensure(out: Path = DEFAULT_OUT, behaviour_dir: Path = behaviour.DEFAULT_OUT, seed: int = DEFAULT_SEED) -> bool:
    """Generate the consent events (and the behaviour events they follow) when missing; True if it wrote."""
    if (out / FILE).exists():
        return False
    behaviour.ensure(behaviour_dir)
    write(out, behaviour_dir, seed)
    return True
