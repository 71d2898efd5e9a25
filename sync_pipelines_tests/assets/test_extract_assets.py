"""The extraction assets end to end: sandbox over HTTP → Dagster → warehouse (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest
import requests

from sync_pipelines.assets.extract import REPULL_TAG, build_extraction_assets
from sync_pipelines.resources import SyncResource
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

TODAY = datetime.now(timezone.utc).strftime("%Y-%m-%d")
# What each API can return on a full read: Stripe lists never show deleted objects (only its events do), and a Jira
# search never finds a deleted issue.
READABLE = {"stripe/customers": "live", "jira/issues": "live"}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    with running_sandbox(csv_dir=tmp_path / "csv") as box:
        for key, value in sandbox_env(box.url, tmp_path / "csv").items():
            monkeypatch.setenv(key, value)
        yield box


def _materialize(url: str, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
    stack = load_stack()
    return dg.materialize(
        build_extraction_assets(stack), partition_key=TODAY, tags=tags,
        resources={"sync": SyncResource(warehouse_url=url)}, raise_on_error=False,
    )


def _metadata(result, key):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_every_sandbox_record_lands_exactly_once_then_only_changes_are_fetched(sandbox, warehouse_url):
    truth = requests.get(f"{sandbox.url}/_sandbox/truth", timeout=10).json()["streams"]
    first = _materialize(warehouse_url)
    assert first.success
    stack = load_stack()
    warehouse = Warehouse(stack, warehouse_url)
    quarantine = warehouse.read_table("quarantine")
    for tool, _, stream, _ in stack.streams():
        landed = warehouse.count(landing_table_name(tool, stream))
        held = int(((quarantine["_source"] == tool) & (quarantine["_source_stream"] == stream)).sum())
        name = f"{tool}/{stream}"
        assert landed + held == truth[name][READABLE.get(name, "total")], name
    first_requests = sum(_metadata(first, [t, s])["requests"] for t, _, s, _ in stack.streams())

    changed = requests.post(f"{sandbox.url}/_sandbox/mutate", timeout=10, json={
        "tool": "hubspot", "stream": "contacts",
        "id": requests.get(f"{sandbox.url}/_sandbox/truth/records?tool=hubspot&stream=contacts").json()[0]["id"],
        "changes": {"jobtitle": "Chief Sync Officer"},
    })
    assert changed.ok
    second = _materialize(warehouse_url)
    assert second.success
    second_requests = sum(_metadata(second, [t, s])["requests"] for t, _, s, _ in stack.streams())
    assert second_requests < first_requests
    hubspot = _metadata(second, ["hubspot", "contacts"])
    assert hubspot["mode"] == "incremental" and 1 <= hubspot["records_read"] <= 3
    # the UI's Row count is the landing table's rows, every run's; the other counts are this run's read, and say so
    assert hubspot["dagster/row_count"] == warehouse.count("stg_hubspot_contacts") > hubspot["rows_landed"]
    assert hubspot["counts"].startswith(f"Row count (`dagster/row_count`): the {hubspot['dagster/row_count']} rows "
                                        "`stg_hubspot_contacts` holds now, landed by every run. Every other count is "
                                        "this run's read alone")
    assert "Chief Sync Officer" in set(warehouse.read_table("stg_hubspot_contacts")["job_title"].dropna())
    for tool, _, stream, _ in stack.streams():
        assert warehouse.count(landing_table_name(tool, stream)) <= truth[f"{tool}/{stream}"]["total"]


def test_bad_token_fails_once_naming_tool_and_variable_without_the_secret(sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-wrong-secret-123")
    requests.post(f"{sandbox.url}/_sandbox/stats/reset", timeout=10)
    stack = load_stack()
    result = dg.materialize(
        [a for a in build_extraction_assets(stack) if a.key.path[0] == "hubspot"], partition_key=TODAY,
        resources={"sync": SyncResource(warehouse_url=f"sqlite:///{tmp_path}/w.db")}, raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures
    text = " ".join(str(e) for e in result.all_events)
    assert "pat-na1-wrong-secret-123" not in text
    message = failures[0].step_failure_data.error.message
    assert "hubspot" in message and "HUBSPOT_ACCESS_TOKEN" in message
    stats = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()
    assert stats["hubspot"]["requests"] <= 2  # one per stream that ran: no retry storm


def test_a_one_day_backfill_re_pulls_the_whole_day_not_from_the_cursor(sandbox, warehouse_url):
    """`sync-pipelines backfill D D` runs one partition: its tag, not a range, makes the read start at D's midnight
    when the cursor is already inside D."""
    assert _materialize(warehouse_url).success
    first = requests.get(f"{sandbox.url}/_sandbox/truth/records?tool=hubspot&stream=contacts", timeout=10).json()[0]
    requests.post(f"{sandbox.url}/_sandbox/mutate", timeout=10, json={
        "tool": "hubspot", "stream": "contacts", "id": first["id"], "changes": {"jobtitle": "Edited today"}})
    assert _materialize(warehouse_url).success  # the cursor moves into today
    midnight = f"{TODAY} 00:00:00+00:00"
    assert _metadata(_materialize(warehouse_url), ["hubspot", "contacts"])["since"] > midnight  # from the cursor
    repulled = _metadata(_materialize(warehouse_url, tags={REPULL_TAG: "true"}), ["hubspot", "contacts"])
    assert repulled["since"] == midnight
