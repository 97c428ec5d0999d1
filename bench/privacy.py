"""Privacy figures: revocation to gone-from-Redis (p50/p99, target p99 < 1 s) and the erasure of one
subject across a year of daily Delta partitions (time, rows deleted, files rewritten).

`python -m bench.privacy` (alone: it uses a private redis-server on a free port and a tmp lake). Writes
bench/results/privacy.json.
"""

from __future__ import annotations

import json
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from feature_pipelines.catalog import load_catalog
from feature_pipelines.offline.compute import partition_end
from feature_pipelines.offline.delta import overwrite_partitions
from feature_pipelines.online.connection import connect
from feature_pipelines.online.layout import OnlineLayout
from feature_pipelines.online.local_server import RedisServer
from feature_pipelines.online.store import OnlineStore
from feature_pipelines.privacy.consent_change import change_consent
from feature_pipelines.privacy.erasure import erase
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from feature_pipelines.publish import publish
from feature_pipelines.settings import Settings
from feature_pipelines.spec import EVENT_DATE, EVENT_TIMESTAMP, PARTITION_DATE

RESULTS = Path(__file__).resolve().parent / "results"
CUSTOMERS = 20_000
REVOCATIONS = 200
YEAR_START = date(2011, 1, 1)
RAW_ROWS_PER_DAY = 2_000


def context_rows(day: date, ids: list[int]) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "customer_id": ids,
            "country": ["United Kingdom"] * n,
            "locale": ["en_GB"] * n,
            "currency": ["GBP"] * n,
            EVENT_TIMESTAMP: [partition_end(day)] * n,
            PARTITION_DATE: [day.isoformat()] * n,
        },
        schema_overrides={"customer_id": pl.Int64, EVENT_TIMESTAMP: pl.Datetime("us", "UTC")},
    )


def revocations(catalog, settings: Settings, store: OnlineStore) -> dict:
    """Three kept versions of user_context with CUSTOMERS keys, then REVOCATIONS revocations, each timed from
    the call until its keys are gone from Redis (checked after each call), and until the whole change (the
    ledger commit and the audit record too) is done."""
    ids = list(range(1, CUSTOMERS + 1))
    uri = settings.feature_table("user_context")
    for k in range(3):
        day = YEAR_START + timedelta(days=k)
        overwrite_partitions(uri, context_rows(day, ids), PARTITION_DATE, day.isoformat(), day.isoformat())
        publish(
            store,
            "user_context",
            uri,
            day.isoformat(),
            run_id="bench",
            definition_hash="bench",
            sample=200,
            guard=OnlineGuard(PrivacyPolicy(catalog, settings), store),
        )
    keys = store.keys("user_context")
    versions = store.versions("user_context")
    samples, totals = [], []
    for subject in random.Random(7).sample(ids, REVOCATIONS):
        done = change_consent(catalog, settings, store, str(subject), "personalization", granted=False, by="bench")
        samples.append(done.online_seconds)
        totals.append(done.seconds)
        if any(store.r.exists(keys.data_key(v, subject)) for v in versions):
            raise AssertionError(f"subject {subject} still has keys after its revocation")
    samples.sort()
    totals.sort()
    return {
        "revocations": REVOCATIONS,
        "kept_versions": len(versions),
        "keys_per_version": CUSTOMERS,
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p99_ms": round(samples[int(0.99 * (len(samples) - 1))] * 1000, 1),
        "max_ms": round(samples[-1] * 1000, 1),
        "with_ledger_and_audit_p50_ms": round(statistics.median(totals) * 1000, 1),
        "with_ledger_and_audit_p99_ms": round(totals[int(0.99 * (len(totals) - 1))] * 1000, 1),
    }


def year_of_raw(subject: int) -> pl.DataFrame:
    """A year of raw lines (online_retail's raw schema): the subject buys on one day in three."""
    days = [YEAR_START + timedelta(days=d) for d in range(365)]
    frames = []
    for i, day in enumerate(days):
        n = RAW_ROWS_PER_DAY
        at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=10)
        customers = pl.int_range(1000, 1000 + n, eager=True)
        if i % 3 == 0:
            customers = customers.scatter(0, subject)
        frames.append(
            pl.DataFrame(
                {
                    "invoice_no": [f"{500000 + i}"] * n,
                    "stock_code": ["85123A"] * n,
                    "description": ["WHITE HANGING HEART T-LIGHT HOLDER"] * n,
                    "quantity": [1] * n,
                    "invoice_date": [at] * n,
                    "unit_price": [2.55] * n,
                    "customer_id": customers,
                    "country": ["United Kingdom"] * n,
                    EVENT_DATE: [day.isoformat()] * n,
                },
                schema_overrides={"invoice_date": pl.Datetime("us", "UTC")},
            )
        )
    return pl.concat(frames)


def erasure(catalog, settings: Settings, store: OnlineStore) -> dict:
    subject = 12346
    raw = year_of_raw(subject)
    first, last = raw[EVENT_DATE].min(), raw[EVENT_DATE].max()
    overwrite_partitions(settings.raw_table("online_retail"), raw, EVENT_DATE, first, last)
    days = [YEAR_START + timedelta(days=d) for d in range(365)]
    features = pl.concat([context_rows(d, [subject, *range(1000, 1000 + 2_000)]) for d in days])
    overwrite_partitions(
        settings.feature_table("user_context"), features, PARTITION_DATE, days[0].isoformat(), days[-1].isoformat()
    )
    started = time.perf_counter()
    done = erase(catalog, settings, store, str(subject), entity="customer", by="bench")
    return {
        "partitions_per_table": 365,
        "raw_rows": raw.height,
        "feature_rows": features.height,
        "seconds": round(time.perf_counter() - started, 2),
        "online_ms": round(done.online_seconds * 1000, 1),
        "rows_deleted": done.rows_deleted,
        "files_rewritten": done.files_rewritten,
    }


def measure() -> dict:
    """Both figures, nested as privacy.json keeps them."""
    catalog = load_catalog()
    server = RedisServer()
    try:
        with tempfile.TemporaryDirectory() as lake:
            settings = Settings(lake_dir=Path(lake), redis_url=server.url)
            store = OnlineStore(connect(server.url), OnlineLayout.from_catalog(catalog), 3)
            revoke = revocations(catalog, settings, store)
        with tempfile.TemporaryDirectory() as lake:
            settings = Settings(lake_dir=Path(lake), redis_url=server.url)
            store.r.flushall()
            erased = erasure(catalog, settings, store)
    finally:
        server.stop()
    return {"revocation": revoke, "erasure": erased}


def figures() -> dict:
    """The figures `make bench` tabulates (bench/run.py), flat: `revocation_*` and `erasure_*`."""
    results = measure()
    return {f"{group}_{k}": v for group, values in results.items() for k, v in values.items()}


def main() -> None:
    results = figures()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "privacy.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
