"""Golden references on the sandbox (issue 13, item 3), each on SQLite and PostgreSQL: every golden record that
holds a reference points at the golden record of what it references, whatever tool it came from, and follows a
change of that reference on the next run."""

from __future__ import annotations

import pandas as pd
import requests

from pandas.testing import assert_frame_equal

from sync_pipelines.pipeline.references import _resolve, reference_fields
from sync_pipelines.warehouse import landing_table_name


def _references(sync, entity: str) -> pd.DataFrame:
    return sync.warehouse.read_table(f"references_{entity}")


def test_every_held_reference_leads_to_the_golden_record_of_the_tool_record_it_names(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    result, _ = sync.run()
    assert result.success
    shares = {}
    for entity in ("contacts", "deals", "tickets", "invoices"):
        fields = reference_fields(sync.stack, entity)
        assert fields, entity
        links = _references(sync, entity)
        for field, target in fields.items():
            held = links[links["field"] == field]
            crosswalk = sync.warehouse.read_table(f"crosswalk_{target}")
            known = held.merge(crosswalk, left_on=["tool", "source_id"], right_on=["_source", "_source_id"],
                               suffixes=("", "_expected"))
            # where the referenced tool record is in the warehouse, the reference names its golden record
            assert len(known) and (known["referenced_id"] == known["entity_id_expected"]).all(), (entity, field)
            shares[f"{entity}.{field}"] = (held["referenced_id"].notna().sum(), len(held))
    # the golden value a reference was read from is the golden record's own
    golden = sync.warehouse.read_table("golden_contacts").set_index("entity_id")
    links = _references(sync, "contacts").set_index("entity_id")
    golden_links = links[links["via"] == "golden value"]
    assert (golden.loc[golden_links.index, "company_source_id"] == golden_links["source_id"]).all()
    print("\nreferences resolved: " + ", ".join(f"{k} {r}/{n}" for k, (r, n) in shares.items()))
    # what does not resolve names a record that has no golden record, and says why
    for entity in ("contacts", "deals", "tickets", "invoices"):
        links = _references(sync, entity)
        unresolved = links[links["referenced_id"].isna()]
        assert unresolved["unresolved_because"].notna().all() and not (
            unresolved["unresolved_because"] == "not resolved yet").any(), unresolved
        assert links.loc[links["referenced_id"].notna(), "unresolved_because"].isna().all()
    assert sum(n - r for r, n in shares.values()) < 0.05 * sum(n for _, n in shares.values())
    checks = {e.event_specific_data.asset_check_key.name: e.event_specific_data.passed for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert all(checks[f"references_{entity}_resolve"] for entity in ("contacts", "deals", "tickets", "invoices"))


def test_a_contact_moved_to_another_account_points_at_that_company_after_the_next_run(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    assert sync.run()[0].success
    contacts = sync.warehouse.read_table(landing_table_name("salesforce", "Contact"))
    accounts = sync.warehouse.read_table(landing_table_name("salesforce", "Account"))
    contact = contacts[contacts["company_source_id"].notna()].iloc[0]
    other = accounts[accounts["_source_id"] != contact["company_source_id"]].iloc[0]["_source_id"]
    response = requests.post(f"{sync.box.url}/_sandbox/mutate", timeout=30, json={
        "tool": "salesforce", "stream": "Contact", "id": contact["_source_id"], "changes": {"AccountId": other}})
    assert response.ok, response.text
    assert sync.run()[0].success
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    person = crosswalk[(crosswalk["_source"] == "salesforce")
                       & (crosswalk["_source_id"] == contact["_source_id"])]["entity_id"].iloc[0]
    companies = sync.warehouse.read_table("crosswalk_companies")
    expected = companies[(companies["_source"] == "salesforce") & (companies["_source_id"] == other)]["entity_id"]
    link = _references(sync, "contacts").set_index(["entity_id", "field"]).loc[(person, "company_source_id")]
    assert link["referenced_id"] == expected.iloc[0] and link["source_id"] == other
    # the incremental run left the same table a full one builds
    for entity in ("contacts", "deals", "tickets", "invoices"):
        golden = sync.warehouse.read_table(f"golden_{entity}")
        live = set(golden.loc[~golden["_deleted"].astype(bool), "entity_id"])
        full = _resolve(sync.stack, sync.warehouse, entity, reference_fields(sync.stack, entity), live, full=True)
        stored = _references(sync, entity)
        order = ["entity_id", "field"]
        def comparable(frame):
            frame = frame.sort_values(order).reset_index(drop=True)[full.columns].astype(object)
            return frame.where(frame.notna(), None)

        assert_frame_equal(comparable(stored), comparable(full), check_dtype=False)
    # nothing changed since: the table is left as it is
    assert sync.run()[0].success
    events = [e for e in sync.run()[0].get_asset_materialization_events()
              if e.asset_key.to_user_string() == "references_contacts"]
    assert events and events[0].materialization.metadata["rebuilt"].value is False
