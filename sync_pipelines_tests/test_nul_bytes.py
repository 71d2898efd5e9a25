"""A NUL character in a source record, end to end on SQLite and the real PostgreSQL (issue 11, item 4).

PostgreSQL text cannot hold NUL: one in one HubSpot first name failed the extraction asset there, so staging, golden
records, every write-back and every action were skipped. The nightly job must succeed and land the same data on
both warehouses: the name without its NUL, the raw payload with it escaped.
"""

from __future__ import annotations

import json


def test_a_nul_in_a_hubspot_first_name_lands_stripped_and_the_whole_sync_runs(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    truth = sync.box.truth("records", tool="hubspot", stream="contacts")
    record = next(r for r in truth if r["person"] and not r["deleted"] and not r["invalid"])
    sync.box.mutate("hubspot", "contacts", record["id"], {"firstname": "Ad\x00a"})

    result, written = sync.run()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert sum(written.values()) > 0  # the write-backs ran
    landed = sync.warehouse.read_table("stg_hubspot_contacts").set_index("_source_id")
    assert len(landed) == len(truth)
    assert landed.at[record["id"], "first_name"] == "Ada"
    assert json.loads(landed.at[record["id"], "_raw"])["properties"]["firstname"] == "Ad\x00a"
    staged = sync.warehouse.read_table("staged_contacts")
    mine = staged[(staged["_source"] == "hubspot") & (staged["_source_id"] == record["id"])]
    assert mine["first_name"].tolist() == ["Ada"]
    quarantine = sync.warehouse.read_table("quarantine")
    assert record["id"] not in quarantine["record_key"].tolist()
