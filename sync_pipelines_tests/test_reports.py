"""The catalog from the stack file, and the review against a real ephemeral Dagster instance with real runs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipelines.reports import catalog_markdown, review
from sync_pipelines.stack import DEFAULT_STACK, Stack, load_stack

REVIEW_INTEGRATIONS = [
    {"name": "contacts_sync", "purpose": "Contacts everywhere.", "owner": "team:revops",
     "tools": ["salesforce", "hubspot"], "entities": ["contacts"], "trigger": {"schedule": "0 2 * * *"},
     "priority": {"frequency": 5, "impact": 5, "feasibility": 4}},
    {"name": "deals", "purpose": "Deals in the warehouse.", "owner": "team:revops", "tools": ["salesforce"],
     "entities": ["deals"], "trigger": {"schedule": "0 2 * * *"},
     "priority": {"frequency": 3, "impact": 3, "feasibility": 3}},
    {"name": "invoicing", "purpose": "Invoices | and closed-won deals.", "owner": "team:finance",
     "tools": ["stripe", "salesforce"], "entities": ["invoices", "deals"], "trigger": {"schedule": "0 2 * * *"},
     "priority": {"frequency": 4, "impact": 5, "feasibility": 3}},
    {"name": "support", "purpose": "Tickets and users.", "owner": "team:support", "tools": ["zendesk"],
     "entities": ["tickets", "contacts"], "trigger": {"event": "webhook"},
     "priority": {"frequency": 2, "impact": 2, "feasibility": 2}},
    {"name": "projects", "purpose": "Tasks.", "owner": "team:cs", "tools": ["asana"], "entities": ["tasks"],
     "trigger": {"event": "webhook"}, "priority": {"frequency": 1, "impact": 1, "feasibility": 1}},
]


def _stack_with(tmp_path: Path, integrations: list[dict]) -> Stack:
    """The sandbox stack's tools and rules with the given integrations, loaded and validated like any stack."""
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["integrations"] = integrations
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_stack(path)


def _asset(path: list[str], metadata: dict | None = None, fail: bool = False, partitions=None):
    """A tiny asset with one of our key shapes that returns our metadata, or fails like a connector error would."""

    @dg.asset(key=path, partitions_def=partitions)
    def _tiny() -> dg.MaterializeResult:
        if fail:
            raise dg.Failure(f"{path[0]}: 503 from the API")
        return dg.MaterializeResult(metadata=metadata or {})

    return _tiny


def _run(instance: dg.DagsterInstance, assets: list, tags: dict | None = None) -> str:
    result = dg.materialize(assets, instance=instance, raise_on_error=False, tags=tags)
    return result.run_id


# --- catalog ----------------------------------------------------------------------------------------------------


def _headings(markdown: str) -> list[str]:
    return re.findall(r"^## \d+\. (\S+) — score (\d+)$", markdown, flags=re.M)


def test_catalog_lists_every_sandbox_integration_by_score_descending():
    stack = load_stack(DEFAULT_STACK)
    markdown = catalog_markdown(stack)
    headings = _headings(markdown)
    assert markdown.startswith(f"# Integration catalog: {stack.name}\n")
    assert sorted(name for name, _ in headings) == sorted(i.name for i in stack.integrations)
    scores = [int(score) for _, score in headings]
    assert scores == sorted(scores, reverse=True)
    for integration in stack.integrations:
        p = integration.priority
        assert (f"{p.score} = frequency {p.frequency} × impact {p.impact} × feasibility {p.feasibility}"
                in markdown)


def _section(markdown: str, name: str) -> str:
    start = markdown.index(f". {name} — score")
    following = markdown.find("\n## ", start)
    return markdown[start:] if following == -1 else markdown[start:following]


def test_catalog_sections_hold_trigger_owner_actions_and_mapping_tables(tmp_path):
    stack = _stack_with(tmp_path, REVIEW_INTEGRATIONS)
    markdown = catalog_markdown(stack)
    assert [name for name, _ in _headings(markdown)] == ["contacts_sync", "invoicing", "deals", "support",
                                                         "projects"]

    contacts = _section(markdown, "contacts_sync")
    assert "**Trigger:** schedule `0 2 * * *`" in contacts and "**Owner:** team:revops" in contacts
    assert "write back golden contacts to salesforce `Contact` (matched on `External_Id__c`)" in contacts
    assert "write back golden contacts to hubspot `contacts`" in contacts
    assert "zendesk" not in contacts  # its tools are salesforce and hubspot only
    assert "| salesforce field | canonical field | transforms |" in contacts
    assert "| `properties.email` | `email` | trim, lower |" in contacts
    assert "| `AccountId` | `company_source_id` | — |" in contacts
    assert "Opportunity" not in contacts and "invoice_for_closed_won" not in contacts  # not its entities

    invoicing = _section(markdown, "invoicing")
    assert "`invoice_for_closed_won`: when a deals record's `stage` becomes `closed_won`, create stripe " \
           "`invoices`" in invoicing
    assert "Invoices \\| and closed-won deals." in invoicing  # a pipe in prose cannot break a table
    assert "### stripe `invoices` → invoices" in invoicing and "### salesforce `Opportunity` → deals" in invoicing
    assert "| `metadata.deal_id` | `deal_id` | — |" in invoicing
    assert "`Contact`" not in invoicing

    support = _section(markdown, "support")
    assert "**Trigger:** event `webhook`" in support
    assert "write back golden contacts to zendesk `users`" in support
    assert "### zendesk `tickets` → tickets" in support and "### zendesk `users` → contacts" in support
    assert "`onboard_new_customer`: when a contacts record's `lifecycle_stage` becomes `customer`, " \
           "create asana `tasks`" in _section(markdown, "projects")


def test_catalog_of_a_stack_without_integrations_says_so(tmp_path):
    markdown = catalog_markdown(_stack_with(tmp_path, []))
    assert "0 integrations" in markdown and "No integrations are declared" in markdown


# --- review -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Seven real runs in an ephemeral instance, with our assets' key shapes and metadata."""
    stack = _stack_with(tmp_path_factory.mktemp("stack"), REVIEW_INTEGRATIONS)
    instance = dg.DagsterInstance.ephemeral()
    days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-10")
    runs = {
        "contacts": _run(instance, [
            _asset(["salesforce", "Contact"], {"records_read": 20, "rows_landed": 19, "requests": 3}),
            _asset(["hubspot", "contacts"], {"records_read": 10, "rows_landed": 10, "throttled_429": 1}),
            _asset(["hubspot", "contacts_writeback"], {"written": 5, "planned_updates": 7}),
            _asset(["golden_contacts"], {"dagster/row_count": 99}),  # a core asset: no tool, counts for nobody
        ]),
        "deals_and_invoices": _run(instance, [
            _asset(["salesforce", "Opportunity"], {"records_read": 4}),
            _asset(["stripe", "invoice_for_closed_won"], {"created": 2, "transitions": 2}),
        ]),
        "support_partly_failed": _run(instance, [
            _asset(["zendesk", "tickets"], {"records_read": 3}),
            _asset(["zendesk", "users"], fail=True),
        ]),
        "support_failed_before_anything": _run(instance, [_asset(["zendesk", "users"], fail=True)]),
        "support_ok": _run(instance, [_asset(["zendesk", "tickets"], {"records_read": 7})]),
        # One run for two integrations, as the nightly job does: zendesk's failure is not hubspot's.
        "mixed": _run(instance, [
            _asset(["hubspot", "contacts"], {"records_read": 6}),
            _asset(["zendesk", "users"], fail=True),
        ]),
        # A backfill over three days in one run: Dagster records one materialization per partition.
        "contacts_backfill": _run(
            instance, [_asset(["hubspot", "contacts"], {"records_read": 10}, partitions=days)],
            tags={"dagster/asset_partition_range_start": "2026-01-01",
                  "dagster/asset_partition_range_end": "2026-01-03"},
        ),
    }
    return stack, instance, runs


def _by_name(result) -> dict[str, dict]:
    return {row["integration"]: row for row in result.rows}


def test_review_counts_runs_rates_and_records_from_the_run_history(history):
    stack, instance, runs = history
    assert instance.get_run_by_id(runs["support_partly_failed"]).status == dg.DagsterRunStatus.FAILURE
    rows = _by_name(review(stack, instance, days=90))

    contacts = rows["contacts_sync"]
    assert (contacts["runs"], contacts["successful_runs"], contacts["success_rate"]) == (3, 3, 1.0)
    assert contacts["records_moved"] == 20 + 10 + 5 + 6 + 10  # the backfill's three partitions count once
    assert contacts["error_rate"] == 0.0 and contacts["flags"] == []
    assert contacts["hours_saved"] == pytest.approx(51 * 0.5 / 60)

    assert (rows["deals"]["runs"], rows["deals"]["records_moved"]) == (1, 4)
    assert (rows["invoicing"]["runs"], rows["invoicing"]["records_moved"]) == (1, 4 + 2)

    support = rows["support"]
    assert (support["runs"], support["successful_runs"], support["failed_runs"]) == (4, 1, 3)
    assert support["success_rate"] == pytest.approx(1 / 4) and support["error_rate"] == pytest.approx(3 / 4)
    assert support["records_moved"] == 3 + 7  # a failed run's finished assets still moved records
    assert support["flags"] == ["investigate"]

    projects = rows["projects"]
    assert projects["runs"] == 0 and projects["records_moved"] == 0 and projects["flags"] == ["retire"]
    assert projects["success_rate"] is None and projects["last_success"] is None


def test_review_last_success_is_the_newest_successful_run_end(history):
    stack, instance, runs = history
    rows = _by_name(review(stack, instance))
    backfill_end = instance.get_run_record_by_id(runs["contacts_backfill"]).end_time
    support_end = instance.get_run_record_by_id(runs["support_ok"]).end_time
    assert rows["contacts_sync"]["last_success"] == datetime.fromtimestamp(backfill_end, timezone.utc)
    assert rows["support"]["last_success"] == datetime.fromtimestamp(support_end, timezone.utc)


def test_review_only_counts_runs_created_inside_the_period(history):
    stack, instance, _ = history
    later = datetime.now(timezone.utc) + timedelta(days=200)
    rows = review(stack, instance, days=90, now=later).rows
    assert all(row["runs"] == 0 and row["flags"] == ["retire"] for row in rows)
    earlier = datetime.now(timezone.utc) - timedelta(days=1)
    assert all(row["runs"] == 0 for row in review(stack, instance, days=90, now=earlier).rows)


def test_review_rows_follow_priority_and_the_assumption_scales_hours(history):
    stack, instance, _ = history
    result = review(stack, instance, minutes_saved_per_record=6)
    assert [row["integration"] for row in result.rows] == ["contacts_sync", "invoicing", "deals", "support",
                                                           "projects"]
    assert _by_name(result)["contacts_sync"]["hours_saved"] == pytest.approx(51 * 6 / 60)


def test_review_markdown_prints_the_assumption_and_one_line_per_integration(history):
    stack, instance, _ = history
    markdown = review(stack, instance, days=30, minutes_saved_per_record=0.5).to_markdown()
    assert "last 30 days" in markdown and "saves 0.5 minutes of manual work" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(table) == 5
    assert "| support | team:support | 8 | 4 | 1 | 25% | 75% | 10 | 0.1 |" in markdown
    assert re.search(r"\| projects \|.*\| never \| retire \|$", markdown, flags=re.M)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"days": 0}, "days must be a positive whole number"),
        ({"days": 1.5}, "days must be a positive whole number"),
        ({"now": datetime(2026, 1, 1)}, "now must be timezone-aware"),
        ({"minutes_saved_per_record": -1}, "minutes_saved_per_record must be 0 or more"),
    ],
)
def test_review_refuses_bad_arguments_by_name(history, kwargs, message):
    stack, instance, _ = history
    with pytest.raises(ValueError, match=message):
        review(stack, instance, **kwargs)


def test_the_catalog_describes_every_kind_of_action_trigger(tmp_path):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["actions"][0]["when"] = {"kind": "changes", "entity": "deals", "field": "amount", "as": "deal",
                                 "filter": "amount > 1000"}
    raw["actions"][1]["when"] = {"kind": "new_record", "entity": "contacts", "as": "contact"}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    markdown = catalog_markdown(load_stack(path))
    assert "`invoice_for_closed_won`: when a deals record's `amount` changes and `amount > 1000`, create stripe " \
           "`invoices`" in markdown
    assert "`onboard_new_customer`: when a new contacts record appears, create asana `tasks`" in markdown
