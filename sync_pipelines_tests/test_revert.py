"""Undo one run (issue 12, item 6): `sync-pipelines revert RUN_ID [--apply]` against the sandbox."""

from __future__ import annotations

import pandas as pd
from click.testing import CliRunner

from sync_pipelines.cli import main
from sync_pipelines.definitions import build_definitions
from sync_pipelines.pipeline.revert import revert
from sync_pipelines.resources import SyncResource


def snapshot(sync) -> dict[tuple[str, str], dict]:
    """Every record of every tool, as the tool holds it (fields and deleted flag, not times)."""
    with sync.box.state.lock:
        return {(key, str(table.id(row))): {**table.fields(row), "deleted": bool(table.deleted[row])}
                for key, table in sync.box.state.world.tables.items() for row in range(len(table))}


def differences(before: dict, after: dict) -> list[tuple]:
    return [(key, name, before[key].get(name), value) for key in before.keys() | after.keys()
            for name, value in after.get(key, {}).items() if before.get(key, {}).get(name) != value] + [
        (key, None, None, None) for key in before.keys() - after.keys()]


def test_revert_round_trip_restores_every_tool_and_leaves_a_field_edited_since(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    assert sync.run()[0].success and sync.run()[0].success  # the first write-back, then re-read
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    in_hubspot = crosswalk.loc[crosswalk["_source"] == "hubspot", "entity_id"]
    crm = crosswalk[(crosswalk["_source"] == "salesforce") & crosswalk["entity_id"].isin(in_hubspot)].head(3)
    for source_id in crm["_source_id"]:  # a corrupted source of truth: its titles would reach HubSpot
        sync.box.mutate("salesforce", "Contact", source_id, {"Title": "CORRUPTED"})
    before = snapshot(sync)
    result, written = sync.run()
    assert result.success and written["hubspot/contacts_writeback"] == 3
    spread = differences(before, snapshot(sync))
    assert len(spread) == 3 and {value for *_, value in spread} == {"CORRUPTED"}
    (_, edited), *_ = sorted(key for key, *_ in spread)
    sync.box.mutate("hubspot", "contacts", edited, {"jobtitle": "Edited since"})  # a person, after the run

    runner = CliRunner()
    unknown = runner.invoke(main, ["revert", "no-such-run", "--apply"])
    assert unknown.exit_code == 2 and "run no-such-run is unknown" in unknown.output
    dry = runner.invoke(main, ["revert", result.run_id])
    assert dry.exit_code == 0 and "would restore (2)" in dry.output and "conflicts" in dry.output, dry.output
    assert "dry run: nothing was written" in dry.output
    applied = runner.invoke(main, ["revert", result.run_id, "--apply"])
    assert applied.exit_code == 0 and "2 records restored, 0 failed, 1 conflicts left" in applied.output, applied.output

    left = differences(before, snapshot(sync))
    assert left == [(("hubspot/contacts", edited), "jobtitle", before[("hubspot/contacts", edited)]["jobtitle"],
                     "Edited since")]  # 0 differences but the field edited since, which was not overwritten
    log = sync.warehouse.read_table("revert_log")
    assert log[["reverted_run_id", "restored", "conflicts"]].values.tolist() == [[result.run_id, 2, 1]]
    undo = revert(sync.stack, sync.warehouse, SyncResource().connector, log["revert_run_id"].iloc[0])
    assert len(undo.restores) == 2 and set(undo.restores["restore"]) == {"CORRUPTED"}  # a revert can be reverted

    job = build_definitions(sync.stack).resolve_job_def("revert")  # the same from the UI, the run id as config
    launched = job.execute_in_process(run_config={"ops": {"revert_run": {"config": {"run_id": "no-such-run"}}}},
                                      raise_on_error=False)
    [failure] = [e for e in launched.all_events if e.is_step_failure]
    assert "run no-such-run is unknown" in failure.step_failure_data.error.message
    dry_run = job.execute_in_process(run_config={"ops": {"revert_run": {"config": {"run_id": result.run_id}}}})
    assert dry_run.success and sync.warehouse.count("revert_log") == 1  # a dry run writes nothing


def test_revert_deletes_the_draft_invoice_an_action_created_in_that_run(sync):
    assert sync.run()[0].success  # the actions' baseline
    deals = sync.warehouse.read_table("stg_salesforce_opportunity")
    deal = deals[(deals["stage"] != "closed_won") & ~deals["_deleted"]].iloc[0]
    sync.box.mutate("salesforce", "Opportunity", deal["_source_id"], {"StageName": "Closed Won"})
    result, _ = sync.run()
    assert result.success

    dry = revert(sync.stack, sync.warehouse, SyncResource().connector, result.run_id)
    [created] = dry.created
    assert created["tool"] == "stripe" and created["undo"].startswith("on --apply")
    undone = revert(sync.stack, sync.warehouse, SyncResource().connector, result.run_id, apply=True)
    assert [c["undo"] for c in undone.created] == ["deleted (it was a draft)"]
    invoices = {r["id"]: r for r in sync.box.truth("records", tool="stripe", stream="invoices")}
    assert invoices[created["id"]]["deleted"]


def test_parts_of_a_value_a_tool_holds_whole_are_no_conflict_when_only_the_split_differs():
    """Zendesk holds a name whole: "Mary Ann" + "Williams" written comes back as "Mary" + "Ann Williams"."""
    from sync_pipelines.pipeline.revert import _changed_since

    now = pd.DataFrame({"source_id": ["7", "7", "8", "8"], "field": ["first_name", "last_name"] * 2,
                        "written": ["Mary Ann", "Williams", "Jo", "Smith"],
                        "now": ["Mary", "Ann Williams", "Joanna", "Smith"]})
    changed = _changed_since(now, {"name": ["first_name", "last_name"], "email": ["email"]})
    assert changed.tolist() == [False, False, True, True]
