"""`fstore consent`, `fstore erase`, `fstore purge` and `fstore audit` end to end on the real Redis and Delta."""

from __future__ import annotations

from typer.testing import CliRunner

from feature_pipelines.cli import app
from feature_pipelines.online.client import OnlineClient
from feature_pipelines.privacy.audit import subject_digest
from tests.privacy.conftest import VIEW, publish_day, write_partition

runner = CliRunner()


def test_revoke_erase_purge_and_audit_from_the_command_line(catalog, settings, store, r, monkeypatch):
    monkeypatch.setenv("FS_LAKE_DIR", str(settings.lake_dir))
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("COLUMNS", "250")
    write_partition(settings, "2011-03-01", [1, 2, 3])
    publish_day(catalog, settings, store, "2011-03-01")

    out = runner.invoke(app, ["consent", "revoke", "2", "--purpose", "personalization", "--reason", "ticket 42"])
    assert out.exit_code == 0, out.output
    assert "customer 2: personalization revoked; 1 online keys removed" in out.output
    assert OnlineClient(r, catalog).get_view(VIEW, [2])[0]["country"] is None
    shown = runner.invoke(app, ["consent", "show", "2"])
    assert shown.exit_code == 0 and "personalization revoked" in shown.output

    bad = runner.invoke(app, ["consent", "revoke", "2", "--purpose", "spam"])
    assert bad.exit_code == 2 and "unknown purpose 'spam'" in bad.output

    erased = runner.invoke(app, ["erase", "3", "--reason", "art. 17"])
    assert erased.exit_code == 0, erased.output
    assert "customer 3 erased: 1 online keys removed" in erased.output and "1 Delta rows deleted" in erased.output
    purged = runner.invoke(app, ["purge", "--keep-hours", "0"])
    assert purged.exit_code == 0, purged.output

    audit = runner.invoke(app, ["audit"])
    assert audit.exit_code == 0, audit.output
    assert "consent_revoke" in audit.output and "erase" in audit.output and "purge" in audit.output
    about = runner.invoke(app, ["audit", "--subject", "3"])
    assert subject_digest("customer", "3") in about.output and "1 records" in about.output
