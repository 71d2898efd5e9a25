"""The quality checks say why they fail in their latest result: records held in quarantine by an earlier run (which,
and why), and counts labelled as this run's or the table's."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from sync_pipelines.assets.core import build_golden_asset, build_staged_asset
from sync_pipelines.core.normalize import map_records
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse

BAD_ID = "0035g0000000BAD"


def _land(stack, warehouse: Warehouse, records: list[dict]) -> None:
    rows, _ = map_records(
        [{"FirstName": "Al", "LastModifiedDate": "2026-10-01T10:00:00.000+0000", "IsDeleted": False, **record}
         for record in records],
        tool="salesforce", stream_name="Contact", stream=stack.tools["salesforce"].streams["Contact"],
        entity=stack.entities["contacts"], extracted_at=datetime.now(timezone.utc))
    warehouse.land("salesforce", "Contact", rows)


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_a_check_failing_only_on_earlier_quarantine_shows_which_records_are_held_and_why(tmp_path):
    stack = load_stack()
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    warehouse = Warehouse(stack, url)
    assets = [build_staged_asset(stack, "contacts"), build_golden_asset(stack, "contacts")]
    resources = {"sync": SyncResource(warehouse_url=url)}
    _land(stack, warehouse, [{"Id": BAD_ID, "Email": "not-an-email", "LastName": "Bad"},
                             {"Id": "0035g0000000OK1", "Email": "ok1@example.com", "LastName": "Good"}])
    first = _checks(dg.materialize(assets, resources=resources))["salesforce_quality"]
    assert not first.passed and first.metadata["rows_quarantined_this_run"].value == 1

    _land(stack, warehouse, [{"Id": "0035g0000000OK2", "Email": "ok2@example.com", "LastName": "Later"}])
    second = dg.materialize(assets, resources=resources)
    checks = _checks(second)
    latest, meta = checks["salesforce_quality"], checks["salesforce_quality"].metadata

    # this run checked the one new record and every expectation passed on it: the earlier quarantine fails the check
    assert not latest.passed
    assert meta["rows_checked_this_run"].value == 1 and meta["rows_quarantined_this_run"].value == 0
    assert "FAIL" not in meta["expectations_this_run"].value
    assert meta["records_held_in_quarantine"].value == 1
    assert latest.description.startswith("salesforce records held in quarantine now: 1, put there by this run or an "
                                          "earlier one")
    assert latest.description.endswith("Rows checked this run: 1; every expectation passed on them.")
    reason = "email: expect_column_values_to_match_regex"
    [sample] = meta["held_in_quarantine_samples"].value.splitlines()[2:]
    assert sample.startswith(f"| Contact | {BAD_ID} | {reason}")
    [held] = meta["held_in_quarantine_by_reason"].value.splitlines()[2:]
    assert held.startswith(f"| Contact | {reason}") and held.endswith("| 1 |")

    # a tool with nothing held and nothing failing passes, saying so
    assert checks["hubspot_quality"].passed and "held_in_quarantine_samples" not in checks["hubspot_quality"].metadata

    # the golden check says what each count counts: every live golden record, or the ones checked this run
    golden = checks["golden_contacts_quality"].metadata
    assert golden["failure_rate_of_all_live_golden_records"].value == 0.0
    rebuilt = second.asset_materializations_for_node("golden_contacts")[0].metadata["entities_rebuilt"].value
    assert golden["golden_records_checked_this_run"].value == rebuilt
    assert golden["failing_of_those_checked_this_run"].value == 0
    assert golden["volume_of_staged_rows"].value.startswith("2 rows")  # the staged table: the two clean records
    assert not {"rows", "quarantined_rows", "failure_rate", "volume"} & set(golden)
