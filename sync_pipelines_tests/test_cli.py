"""The CLI as a user types it (click's runner, real stack files, a real Dagster instance)."""

import pytest
import yaml
from click.testing import CliRunner

from sync_pipelines.cli import main
from sync_pipelines.stack import DEFAULT_STACK


def test_validate_summarises_a_good_stack_and_rejects_a_bad_one(tmp_path):
    ok = CliRunner().invoke(main, ["validate"])
    assert ok.exit_code == 0 and "salesforce" in ok.output and "contacts" in ok.output
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["tools"]["asana"]["kind"] = "trello"
    bad = tmp_path / "stack.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2 and "tools.asana.kind" in result.output and "'salesforce'" in result.output
    assert "trello" not in result.output  # nothing found under tools is echoed: it may be a secret


def test_catalog_lists_every_integration():
    result = CliRunner().invoke(main, ["catalog"])
    assert result.exit_code == 0
    for name in ("crm_contacts_everywhere", "companies_and_deals", "support_and_projects", "invoicing"):
        assert name in result.output


def test_plan_before_any_sync_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    result = CliRunner().invoke(main, ["plan"])
    assert result.exit_code == 1 and "sync-pipelines sync" in result.output


def test_review_needs_an_instance_and_reads_its_history(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert CliRunner().invoke(main, ["review"]).exit_code == 2
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    result = CliRunner().invoke(main, ["review", "--days", "7"])
    assert result.exit_code == 0 and "crm_contacts_everywhere" in result.output


@pytest.mark.parametrize("command", [["sync", "--partition", "2026-11-01"],
                                     ["backfill", "2026-11-01", "2026-11-02", "--tool", "legacy_erp"]])
def test_a_failed_step_prints_its_innermost_cause(tmp_path, monkeypatch, command):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    (tmp_path / "customers.csv").write_text("customer_no,contact_name,email_address,phone,company,modified\n"
                                            "C1,Ann Lee,ann@example.com,,Acme,2026-10-26 05:22:59\n")
    raw["tools"] = {"legacy_erp": {**raw["tools"]["legacy_erp"], "base_url": str(tmp_path)}}
    for section in ("integrations", "identity", "survivorship", "quality", "destinations", "actions"):
        del raw[section]
    raw["warehouse"]["url"] = f"sqlite:///{tmp_path}"  # a folder: SQLite cannot open it
    (tmp_path / "stack.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("SYNC_STACK", str(tmp_path / "stack.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert "legacy_erp__customers failed: sqlite3.OperationalError: unable to open database file" in result.output
