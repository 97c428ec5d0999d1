"""The serving-vs-training consistency check after a revocation: the revoked subject's row is still in the
Delta version the check reads, and rightly no longer served; the check leaves it out instead of failing."""

from __future__ import annotations

from feature_pipelines.checks import consistency
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.orchestration.feature_checks import consistency_check
from feature_pipelines.privacy.consent_change import change_consent
from feature_pipelines.privacy.erasure import erase
from feature_pipelines.privacy.policy import OnlineGuard, PrivacyPolicy
from tests.privacy.conftest import VIEW, publish_day, write_partition

DAY = "2011-03-01"


def test_a_subject_revoked_after_its_partition_is_withheld_not_a_failure(catalog, settings, store):
    write_partition(settings, DAY, [12346, 12347, 12348])
    published = publish_day(catalog, settings, store, DAY)
    view, meta = catalog.views[VIEW], store.meta(VIEW, published.written.version)
    client = OnlineClient(store.r, layout=store.layout)
    assert consistency.check(client, view, meta, 100).passed

    change_consent(catalog, settings, store, "12346", "personalization", granted=False, entity="customer", by="t")
    erase(catalog, settings, store, "12347", entity="customer", by="t")
    # The check reads the Delta version the serving version was written from, which still holds both rows.
    unguarded = consistency.check(client, view, meta, 100)
    assert not unguarded.passed and set(unguarded.differing["country"]) == {12346, 12347}

    guard = OnlineGuard(PrivacyPolicy(catalog, settings), store)
    guarded = consistency.check(client, view, meta, 100, keep=lambda ids: guard.keep(store.layout[VIEW], ids))
    assert guarded.passed and guarded.withheld == 2 and guarded.compared == 1

    result = consistency_check(view, store, OnlineGuard(PrivacyPolicy(catalog, settings), store))
    assert result.passed and result.metadata["withheld_by_privacy"].value == 2
    assert not consistency_check(view, store).passed  # without the policy: the false failure it avoids
