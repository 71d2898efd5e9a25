"""The CLI as a user types it (click's runner, real stack files, a real Dagster instance)."""

import os

import pytest
import yaml
from click.testing import CliRunner

from sync_pipelines.cli import main
from sync_pipelines.sandbox import sandbox_env
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
    assert "found 'trello'" in result.output  # a name refused by a closed set; never a secret (test_stack_errors)


def test_catalog_lists_every_integration():
    result = CliRunner().invoke(main, ["catalog"])
    assert result.exit_code == 0
    for name in ("crm_contacts_everywhere", "companies_and_deals", "support_and_projects", "invoicing"):
        assert name in result.output


def test_plan_before_any_sync_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    result = CliRunner().invoke(main, ["plan"])
    assert result.exit_code == 1 and "sync-pipelines sync" in result.output


def test_review_without_dagster_home_reads_the_default_instance(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)  # no dagster.yaml here: the fallback instance, created on first use
    result = CliRunner().invoke(main, ["review"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".sync_pipelines" / "dagster").is_dir()


def test_review_reads_the_history_of_the_instance_in_dagster_home(tmp_path, monkeypatch):
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
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 1
    assert "legacy_erp__customers failed: sqlite3.OperationalError: unable to open database file" in result.output
    # the run is kept where the message says, not in a throwaway instance
    home = tmp_path / ".sync_pipelines" / "dagster"
    assert f"its logs are in the Dagster instance at {home}" in result.output
    assert (home / "storage").is_dir() or any(home.iterdir())


def test_an_unexpected_failure_is_one_line_with_exit_2_and_the_traceback_only_with_debug(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", f"sqlite:///{tmp_path}")  # a folder: SQLite cannot open it
    result = CliRunner().invoke(main, ["plan"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("plan failed: OperationalError:"), result.output
    assert "Traceback" not in result.output and "--debug" in lines[0]
    debug = CliRunner().invoke(main, ["--debug", "plan"])
    assert debug.exit_code == 1 and debug.exception is not None  # the exception itself, for the traceback


def test_the_bundled_stack_finds_the_sandbox_credentials_in_a_clean_environment(monkeypatch):
    for key in sandbox_env("http://x", "."):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SYNC_STACK", raising=False)
    assert CliRunner().invoke(main, ["validate"]).exit_code == 0
    assert os.environ["SALESFORCE_ACCESS_TOKEN"] == sandbox_env("http://x", ".")["SALESFORCE_ACCESS_TOKEN"]
    assert os.environ["SANDBOX_URL"] == "http://127.0.0.1:8765"


def test_a_set_credential_wins_and_another_stack_gets_no_sandbox_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", "mine")
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    assert CliRunner().invoke(main, ["validate"]).exit_code == 0
    assert os.environ["SALESFORCE_ACCESS_TOKEN"] == "mine" and os.environ["HUBSPOT_ACCESS_TOKEN"]
    other = tmp_path / "stack.yaml"
    other.write_text(DEFAULT_STACK.read_text())
    monkeypatch.setenv("SYNC_STACK", str(other))
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    assert CliRunner().invoke(main, ["validate"]).exit_code == 0
    assert "HUBSPOT_ACCESS_TOKEN" not in os.environ
