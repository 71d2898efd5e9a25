"""Companies resolved across Salesforce and HubSpot against the sandbox's truth, and golden records for every entity
the sandbox stack resolves (issue 13, items 1 and 2). On SQLite and PostgreSQL; each run costs ~10 s."""

from __future__ import annotations

import sqlite3

import pandas as pd

from sync_pipelines import pipeline
from sync_pipelines.assets.extract import extraction_key
from sync_pipelines.pipeline.common import entity_streams, resolved_entities
from sync_pipelines.sandbox.scoring import score, truth_records
from sync_pipelines.warehouse import Warehouse, landing_table_name
from sync_pipelines_tests.sandbox_sync import TODAY

WITHOUT_RULES = ("deals", "tickets", "tasks", "invoices")  # `rules: []`: one golden record per record


def _entity_of(sync, tool: str, source_id: str) -> str:
    crosswalk = sync.warehouse.read_table("crosswalk_companies")
    return crosswalk[(crosswalk["_source"] == tool) & (crosswalk["_source_id"] == source_id)]["entity_id"].iloc[0]


def test_companies_match_the_truth_and_contacts_do_as_before(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    result, _ = sync.run()
    assert result.success
    companies, conflicts = score(sync.box, sync.stack, sync.warehouse, "companies", "company",
                                 sync.box.truth("company_conflicts"))
    assert companies.precision >= 0.995 and companies.recall >= 0.97 and companies.unresolved == 0
    assert conflicts.planted["source_of_truth"] >= 10 and conflicts.planted["last_write_wins"] >= 3
    assert conflicts.resolved == conflicts.planted, conflicts.wrong  # every planted conflict, per rule

    # the traps: each stays apart from the company it resembles (a namesake shares its name key)
    records = truth_records(sync.box, sync.stack, "companies")
    for trap in sync.box.truth()["company_traps"]:
        resembled = records[(records["company"] == trap["resembles"]) & ~records["deleted"].astype(bool)]
        assert len(resembled) and _entity_of(sync, trap["tool"], trap["id"]) not in {
            _entity_of(sync, tool, source_id) for tool, source_id in zip(resembled["_source"], resembled["_source_id"])}

    contacts, contact_conflicts = score(sync.box, sync.stack, sync.warehouse, "contacts", "person",
                                        sync.box.truth("conflicts"))
    assert contacts.precision >= 0.99 and contacts.recall >= 0.95
    assert contact_conflicts.resolved == contact_conflicts.planted, contact_conflicts.wrong


def test_every_entity_is_golden_and_one_tool_s_records_stay_one_each(sync):
    result, _ = sync.run()
    assert result.success
    assert set(resolved_entities(sync.stack)) == set(sync.stack.entities)
    for entity in WITHOUT_RULES:  # each record its own golden record, whichever tool holds it (tasks: two tools)
        landed = pd.concat([sync.warehouse.read_table(landing_table_name(tool, stream)).assign(_source=tool)
                            for tool, stream in entity_streams(sync.stack, entity)], ignore_index=True)
        crosswalk = sync.warehouse.read_table(f"crosswalk_{entity}")
        golden = sync.warehouse.read_table(f"golden_{entity}").query("not _deleted")
        live = landed[~landed["_deleted"].astype(bool)]
        assert len(golden) == len(live) > 0, entity
        refs = set(zip(crosswalk["_source"], crosswalk["_source_id"]))
        assert crosswalk["entity_id"].is_unique and refs >= set(zip(live["_source"], live["_source_id"])), entity


def test_a_later_industry_edit_wins_and_a_domain_removed_keeps_the_company_whole(sync):
    assert sync.run()[0].success
    records = truth_records(sync.box, sync.stack, "companies")
    # a company no trap resembles: a record of no domain, named as two companies are, could be either
    resembled = {trap["resembles"] for trap in sync.box.truth()["company_traps"]}
    live = records[~records["deleted"].astype(bool) & ~records["company"].str.contains("-")
                   & ~records["company"].isin(resembled)]
    both = live.groupby("company").filter(lambda g: set(g["_source"]) == {"salesforce", "hubspot"} and len(g) == 2)
    pair = both[both["company"] == both["company"].iloc[0]]
    account, company = (pair[pair["_source"] == tool].iloc[0] for tool in ("salesforce", "hubspot"))
    entity = _entity_of(sync, "salesforce", account["_source_id"])
    sync.box.mutate("hubspot", "companies", company["_source_id"], {"industry": "Aerospace", "domain": None})
    assert sync.run()[0].success
    golden = sync.warehouse.read_table("golden_companies").set_index("entity_id")
    assert _entity_of(sync, "hubspot", company["_source_id"]) == entity  # joined by its name key, or its history
    assert golden.at[entity, "industry"] == "Aerospace"  # last_write_wins
    accounts = sync.warehouse.read_table(landing_table_name("salesforce", "Account")).set_index("_source_id")
    assert golden.at[entity, "name"] == accounts.at[account["_source_id"], "name"]  # source_of_truth


def test_an_incremental_run_after_domain_edits_equals_a_full_rebuild(sync, tmp_path):
    """A HubSpot company moved to another domain leaves its Account (the veto, and the guard on the crosswalk
    link); one whose domain is cleared stays by its name key. The incremental run finds both, as a rebuild does."""
    assert sync.run()[0].success
    crosswalk = sync.warehouse.read_table("crosswalk_companies")
    pairs = crosswalk.groupby("entity_id").filter(lambda g: sorted(g["_source"]) == ["hubspot", "salesforce"])
    moved, cleared = (pairs[pairs["entity_id"] == e].set_index("_source")["_source_id"]
                      for e in pairs["entity_id"].unique()[:2])
    sync.box.mutate("hubspot", "companies", moved["hubspot"], {"domain": "elsewhere.example"})
    sync.box.mutate("hubspot", "companies", cleared["hubspot"], {"domain": None})
    keys = [extraction_key(tool, stream) for tool, _, stream, _ in sync.stack.streams()]
    assert sync.job.execute_in_process(partition_key=TODAY, asset_selection=keys).success
    assert not pipeline.stage(sync.stack, sync.warehouse, "companies").full

    snapshot = tmp_path / "snapshot.db"
    with sqlite3.connect(tmp_path / "warehouse.db") as source, sqlite3.connect(snapshot) as copy:
        source.backup(copy)
    incremental = pipeline.build_golden(sync.stack, sync.warehouse, "companies")
    assert incremental.changed_ids and incremental.resolved < incremental.records
    full_warehouse = Warehouse(sync.stack, f"sqlite:///{snapshot}")
    with full_warehouse.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM sync_watermarks WHERE name = 'golden_companies'")
    assert pipeline.build_golden(sync.stack, full_warehouse, "companies").changed_ids is None

    final = sync.warehouse.read_table("crosswalk_companies")
    entity_of = dict(zip(zip(final["_source"], final["_source_id"]), final["entity_id"]))
    assert entity_of["hubspot", moved["hubspot"]] != entity_of["salesforce", moved["salesforce"]]
    assert entity_of["hubspot", cleared["hubspot"]] == entity_of["salesforce", cleared["salesforce"]]
    for name, by in (("crosswalk_companies", ["_source", "_source_id"]), ("golden_companies", ["entity_id"])):
        got, expected = (w.read_table(name) for w in (sync.warehouse, full_warehouse))
        columns = sorted(c for c in got.columns if not c.startswith("_") or c in (*by, "_deleted", "_deleted_at"))
        pd.testing.assert_frame_equal(got.sort_values(by, ignore_index=True)[columns].astype("string"),
                                      expected.sort_values(by, ignore_index=True)[columns].astype("string"))
