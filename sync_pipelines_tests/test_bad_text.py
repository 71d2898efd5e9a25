"""Text no warehouse can store in a source record, end to end on SQLite and the real PostgreSQL.

A NUL character (issue 11, item 4): PostgreSQL text cannot hold it, and one in one HubSpot first name failed the
extraction asset there, so staging, golden records, every write-back and every action were skipped. An unpaired
surrogate (a JSON escape like ``\\ud800`` with no partner): no UTF-8 database can hold it, and Arrow could not even
turn it into text, so the stream failed on both warehouses alike. The nightly job must succeed and land the same
data on both: the name without its NUL, a lone surrogate as U+FFFD, the raw payload with each escaped.
"""

from __future__ import annotations

import json

import pytest



def _a_person(sync):
    truth = sync.box.truth("records", tool="hubspot", stream="contacts")
    return truth, next(r for r in truth if r["person"] and not r["deleted"] and not r["invalid"])


def _lands_and_the_whole_sync_runs(sync, truth, record, first_name):
    result, written = sync.run()
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert sum(written.values()) > 0  # the write-backs ran
    landed = sync.warehouse.read_table("stg_hubspot_contacts").set_index("_source_id")
    assert len(landed) == len(truth)
    assert landed.at[record["id"], "first_name"] == first_name
    staged = sync.warehouse.read_table("staged_contacts")
    mine = staged[(staged["_source"] == "hubspot") & (staged["_source_id"] == record["id"])]
    assert mine["first_name"].tolist() == [first_name]
    quarantine = sync.warehouse.read_table("quarantine")
    assert record["id"] not in quarantine["record_key"].tolist()
    return landed.at[record["id"], "_raw"]


def test_a_nul_in_a_hubspot_first_name_lands_stripped_and_the_whole_sync_runs(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    truth, record = _a_person(sync)
    sync.box.mutate("hubspot", "contacts", record["id"], {"firstname": "Ad\x00a"})

    raw = _lands_and_the_whole_sync_runs(sync, truth, record, "Ada")
    assert json.loads(raw)["properties"]["firstname"] == "Ad\x00a"


@pytest.mark.parametrize(("sent", "lands"), [("A\ud800", "A\ufffd"), ("\udc00B", "\ufffdB")])
def test_an_unpaired_surrogate_in_a_hubspot_first_name_lands_as_a_replacement_and_the_whole_sync_runs(
        sync_on_each_warehouse, sent, lands):
    sync = sync_on_each_warehouse
    truth, record = _a_person(sync)
    sync.box.mutate("hubspot", "contacts", record["id"], {"firstname": sent})

    raw = _lands_and_the_whole_sync_runs(sync, truth, record, lands)
    assert json.dumps(sent)[1:-1] in raw  # escaped as sent (\\ud800): text both warehouses take
    assert raw.isascii() and json.loads(raw)["properties"]["firstname"] == sent  # kept whole
