"""Ids of people and sensitive values stay out of the Delta log's statistics and GE result documents."""

from __future__ import annotations

from datetime import date

import polars as pl
from deltalake import DeltaTable

from feature_pipelines.checks import quality
from feature_pipelines.offline import delta, ingest
from feature_pipelines.privacy import pii
from feature_pipelines.privacy.audit import subject_digest
from tests.conftest import real_data
from tests.privacy.conftest import context_rows


def stats_columns(uri: str) -> set[str]:
    actions = pl.DataFrame(DeltaTable(uri).get_add_actions(flatten=True))
    return {c.split(".", 1)[1] for c in actions.columns if c.startswith(("min.", "max."))}


def test_raw_and_feature_tables_keep_no_ids_in_their_log_statistics(tmp_path, catalog, settings):
    path = tmp_path / "retail.parquet"
    real_data("2011-03-01", "2011-03-02").write_parquet(path)
    source = catalog.sources["online_retail"]
    ingest.ingest(
        source,
        catalog.entities,
        [str(path)],
        date(2011, 3, 1),
        date(2011, 3, 2),
        raw_uri=settings.raw_table(source.name),
        quarantine_uri=settings.quarantine_table(source.name),
        run_id="t",
    )
    raw = stats_columns(settings.raw_table(source.name))
    assert "customer_id" not in raw and {"quantity", "invoice_date"} <= raw
    assert pii.raw_identifiers(catalog, source) == {"customer_id"}

    view = catalog.views["user_context"]
    sensitive = pii.sensitive_columns(catalog, view)
    # The personal key, and every feature of this confidential view (a feature without its own sensitivity
    # takes the view's).
    assert sensitive == {"customer_id", "country", "locale", "currency"}
    uri = settings.feature_table("user_context")
    frame = context_rows("2011-03-01", [1, 2])
    delta.overwrite_partitions(uri, frame, "partition_date", "2011-03-01", "2011-03-01")
    assert "customer_id" in stats_columns(uri)  # without the setting, the log keeps them
    delta.overwrite_partitions(
        uri,
        frame,
        "partition_date",
        "2011-03-01",
        "2011-03-01",
        stats_columns=pii.stats_columns(frame.columns, sensitive),
    )
    assert stats_columns(uri).isdisjoint(sensitive) and "event_timestamp" in stats_columns(uri)
    assert delta.table_properties(uri)["delta.dataSkippingStatsColumns"] == "event_timestamp,partition_date"


def test_ge_results_keep_no_sensitive_values_nor_ids(catalog):
    view = catalog.views["user_context"]
    frame = context_rows("2011-03-01", [12346, 12347]).with_columns(
        pl.Series("country", ["Atlantis", "United Kingdom"]), pl.Series("locale", ["xx_XX", "en_GB"])
    )
    report = quality.validate(view, catalog, frame)
    assert not report.passed
    assert "Atlantis" in str(report.result)  # GE itself keeps the unexpected values
    clean = pii.redact_report(report, pii.sensitive_columns(catalog, view), "customer_id", "customer")
    text = str(clean.result) + str(clean.partition_results) + "".join(str(f) + str(f.rows) for f in clean.failures)
    assert "Atlantis" not in text and "12346" not in text
    assert "xx_XX" not in text and {f.column for f in clean.failures} >= {"country", "locale"}  # what failed stays
    assert not clean.passed and len(clean.failures) == len(report.failures)
    rows = [r for f in clean.failures for r in f.rows]
    assert all(
        r.get("customer_id") in (None, subject_digest("customer", "12346"), subject_digest("customer", "12347"))
        for r in rows
    )
