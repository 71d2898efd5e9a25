"""Destination modes (issue 13, item 4): a destination that may create gets the golden records it lacks, exactly
once, as far as its filter and its cap let them through."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from sync_pipelines import pipeline
from sync_pipelines.core.plan import HELD_BY_DUPLICATE_KEY, HELD_BY_TAKEN_KEY, HELD_WITHOUT_KEY, plan_creates
from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack
from sync_pipelines.pipeline.writeback import CREATES_HELD_BACK, WriteCapExceeded
from sync_pipelines.resources import SyncResource

NEW_LEAD = {"External_Id__c": "lead-new-1", "Email": "lena.okafor@newco.example", "FirstName": "Lena",
            "LastName": "Okafor", "Phone": "+14155550199", "Title": "Founder"}


def hubspot_records_of(sync, email: str | None = None, **equal: str) -> list[tuple[str, dict]]:
    """The live HubSpot contacts holding ``email`` (and the properties ``equal``), as (id, properties)."""
    table = sync.box.state.world.table("hubspot", "contacts")
    with sync.box.state.lock:
        rows = [row for row in range(len(table)) if not table.deleted[row]]
        return [(str(table.id(row)), fields) for row in rows
                if all((fields := table.fields(row)).get(name) == value
                       for name, value in {**({"email": email} if email else {}), **equal}.items())]


def synced_with_a_new_salesforce_lead(sync) -> None:
    """A first sync, then a lead made in Salesforce, then the sync that makes it a golden contact HubSpot lacks."""
    assert sync.run()[0].success
    connector = SyncResource().connector("salesforce")
    [outcome] = connector.write("Contact", [NEW_LEAD], mode="upsert", key="External_Id__c")
    assert outcome["ok"] and outcome["created"], outcome
    assert sync.run()[0].success


def hubspot_upsert(sync, **changes):
    hubspot = next(d for d in sync.stack.destinations if d.tool == "hubspot")
    return hubspot.model_copy(update={"mode": "upsert", "filter": f"email == '{NEW_LEAD['Email']}'", **changes})


def write_back_killed_before_the_link(sync, monkeypatch, connector, dest) -> None:
    """A write-back whose process dies after the tool made the record, before its link and ledger rows commit."""
    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed after the create reached HubSpot")

    with monkeypatch.context() as patched:
        patched.setattr(pipeline.writeback, "_enter_created", crash)
        with pytest.raises(KeyboardInterrupt):
            pipeline.write_back(sync.stack, sync.warehouse, connector, dest)


def test_a_lead_new_in_salesforce_reaches_hubspot_exactly_once_over_three_runs(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    synced_with_a_new_salesforce_lead(sync)
    dest, connector = hubspot_upsert(sync), SyncResource().connector("hubspot")
    plan, _ = pipeline.plan_destination(sync.stack, sync.warehouse, dest)
    creates = plan[plan["action"] == "create"]
    assert len(creates) == 1 and creates.iloc[0]["changes"]["email"] == NEW_LEAD["Email"]
    assert plan.attrs[CREATES_HELD_BACK]["filter"] > 0  # every other golden contact HubSpot lacks
    created = []
    for _ in range(3):
        created += pipeline.write_back(sync.stack, sync.warehouse, connector, dest).created_ids
        assert sync.run()[0].success  # the nightly run reads the created record back
    assert len(created) == 1
    [(_, record)] = hubspot_records_of(sync, NEW_LEAD["Email"])
    assert (record["firstname"], record["lastname"]) == ("Lena", "Okafor")
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    entity = crosswalk.loc[(crosswalk["_source"] == "hubspot") & (crosswalk["_source_id"] == created[0]), "entity_id"]
    members = crosswalk[crosswalk["entity_id"] == entity.iloc[0]]
    assert set(members["_source"]) == {"salesforce", "hubspot"}  # read back into the same golden contact
    ledger = sync.warehouse.read_table("writeback_ledger")
    assert set(ledger.loc[ledger["source_id"] == created[0], "field"]) >= {"email", "first_name", "last_name"}


def test_a_create_a_crash_cut_off_before_its_ledger_row_is_matched_not_made_again(sync_on_each_warehouse,
                                                                                   monkeypatch):
    sync = sync_on_each_warehouse
    synced_with_a_new_salesforce_lead(sync)
    dest, connector = hubspot_upsert(sync), SyncResource().connector("hubspot")

    write_back_killed_before_the_link(sync, monkeypatch, connector, dest)
    assert len(hubspot_records_of(sync, NEW_LEAD["Email"])) == 1  # it reached the tool, unrecorded
    rerun = pipeline.write_back(sync.stack, sync.warehouse, connector, dest)
    [(record_id, _)] = hubspot_records_of(sync, NEW_LEAD["Email"])
    assert rerun.created_ids == [record_id]  # matched on the email: the same record, linked now
    assert pipeline.write_back(sync.stack, sync.warehouse, connector, dest).creates == 0


def test_a_create_cut_off_by_a_crash_is_matched_even_when_its_key_changed_before_the_rerun(sync_on_each_warehouse,
                                                                                            monkeypatch):
    sync = sync_on_each_warehouse
    synced_with_a_new_salesforce_lead(sync)
    dest = hubspot_upsert(sync, filter="first_name == 'Lena' and last_name == 'Okafor'")
    connector = SyncResource().connector("hubspot")

    write_back_killed_before_the_link(sync, monkeypatch, connector, dest)
    [record_id] = [rid for rid, _ in hubspot_records_of(sync, firstname="Lena", lastname="Okafor")]
    assert len(sync.warehouse.read_table("writeback_intents")) == 1  # the key it was sent with
    mark = "%s" if sync.warehouse.dialect == "postgresql" else "?"
    with sync.warehouse.engine.begin() as conn:  # the golden key changes before the rerun
        conn.exec_driver_sql(f"UPDATE golden_contacts SET email = {mark} WHERE email = {mark}",
                             ("lena@renamed.example", NEW_LEAD["Email"]))
    rerun = pipeline.write_back(sync.stack, sync.warehouse, connector, dest)
    assert rerun.created_ids == [record_id]  # sent again under the key it was first sent with: the same record
    assert [rid for rid, _ in hubspot_records_of(sync, firstname="Lena", lastname="Okafor")] == [record_id]
    assert sync.warehouse.read_table("writeback_intents").empty
    assert pipeline.write_back(sync.stack, sync.warehouse, connector, dest).creates == 0
    assert [rid for rid, _ in hubspot_records_of(sync, firstname="Lena", lastname="Okafor")] == [record_id]


def test_a_run_over_max_per_run_writes_nothing_and_create_mode_leaves_held_records_alone(sync):
    synced_with_a_new_salesforce_lead(sync)
    connector = SyncResource().connector("hubspot")
    with pytest.raises(WriteCapExceeded, match=r"hubspot contacts: 1 records to create .* max_per_run \(0\)"):
        pipeline.write_back(sync.stack, sync.warehouse, connector, hubspot_upsert(sync, max_per_run=0))
    assert hubspot_records_of(sync, NEW_LEAD["Email"]) == []

    hubspot = next(d for d in sync.stack.destinations if d.tool == "hubspot")
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    linked = crosswalk.loc[crosswalk["_source"] == "hubspot", "entity_id"].iloc[0]
    with sync.warehouse.engine.begin() as conn:  # a golden value that differs from what HubSpot holds
        conn.exec_driver_sql("UPDATE golden_contacts SET job_title = 'Changed' WHERE entity_id = ?", (linked,))
    update_only, _ = pipeline.plan_destination(sync.stack, sync.warehouse, hubspot)
    assert linked in set(update_only.loc[update_only["action"] == "update", "entity_id"])
    assert "create" not in set(update_only["action"])
    create_only = hubspot_upsert(sync, mode="create")
    plan, _ = pipeline.plan_destination(sync.stack, sync.warehouse, create_only)
    assert set(plan["action"]) == {"create"}
    outcome = pipeline.write_back(sync.stack, sync.warehouse, connector, create_only.model_copy(
        update={"max_per_run": 1}))
    assert (outcome.updates, len(outcome.created_ids)) == (0, 1)


def _loaded(tmp_path, **destination):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["destinations"][1].update(destination)
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_stack(file)


def test_destination_modes_are_checked_at_load(tmp_path):
    dest = _loaded(tmp_path, mode="upsert", filter="lifecycle_stage in ['lead', 'customer']",
                   max_per_run=500).destinations[1]
    assert (dest.creates, dest.updates, dest.max_per_run) == (True, True, 500)
    assert not _loaded(tmp_path).destinations[1].creates  # update, as before
    for destination, path, problem in [
        ({"mode": "insert"}, "destinations[1].mode", "'insert'"),
        ({"mode": "create", "filter": "stage == 'lead'"}, "destinations[1].filter",
         "unknown field of entity 'contacts' in the filter: 'stage'"),
        ({"filter": "email ="}, "destinations[1].filter", ""),
        ({"max_per_run": -1}, "destinations[1].max_per_run", ""),
        ({"mode": "upsert", "fields": {"email": {"write": "never"}}}, "destinations[1].key",
         "mapped to 'email', which this destination cannot write"),
    ]:
        with pytest.raises(StackError) as info:
            _loaded(tmp_path, **destination)
        assert info.value.path == path and problem in info.value.problem, (destination, str(info.value))


def test_creates_whose_key_another_create_or_a_tool_record_holds_are_held_back():
    golden = pd.DataFrame({"email": ["a@x.io", "A@X.io", "b@x.io", "c@x.io", None], "first_name": "Ann",
                           "_deleted": False}, index=pd.Index(["e1", "e2", "e3", "e4", "e5"], name="entity_id"))
    plan, held = plan_creates(golden, pd.Index([]), ["email", "first_name"], key_field="email",
                              taken=pd.Index(["c@x.io", "c@x.io"]))  # a tool may hold a key twice
    assert plan["entity_id"].tolist() == ["e3"]  # a and A would be one record to the tool; c is someone else's
    assert held == {HELD_WITHOUT_KEY: 1, HELD_BY_DUPLICATE_KEY: 2, HELD_BY_TAKEN_KEY: 1}
