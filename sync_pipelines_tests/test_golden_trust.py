"""Golden records a steward can trust (issue 12): a clear is a fact, a name survives whole, concurrent edits are
listed. On the sandbox, each on SQLite and PostgreSQL; the runs are shared within a test (each costs ~10 s)."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from sync_pipelines.cli import main
from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack
from sync_pipelines.warehouse import landing_table_name


def _entity_of(sync, tool: str, source_id: str) -> str:
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    return crosswalk[(crosswalk["_source"] == tool) & (crosswalk["_source_id"] == source_id)]["entity_id"].iloc[0]


def _members(sync, entity_id: str) -> pd.DataFrame:
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    return crosswalk[crosswalk["entity_id"] == entity_id]


def test_planted_split_names_survive_whole_from_the_source_of_truth(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    result, _ = sync.run()
    assert result.success
    cases, people = sync.box.truth()["split_names"], sync.box.truth("people")
    golden = sync.warehouse.read_table("golden_contacts").set_index("entity_id")
    names = {case["person"]: golden.loc[_entity_of(sync, case["tool"], case["id"]), ["first_name", "last_name"]]
             for case in cases}
    expected = [(people[p]["first_name"], people[p]["last_name"]) for p in names]
    got = [(None if pd.isna(n["first_name"]) else n["first_name"], n["last_name"]) for n in names.values()]
    assert len(cases) >= 10 and got == expected  # 100% of planted cases
    # each resolved with its HubSpot record, split the other way: field by field they would have mixed
    assert all("hubspot" in set(_members(sync, _entity_of(sync, c["tool"], c["id"]))["_source"]) for c in cases)
    mixed = sum(1 for first, last in got if first and last and last.startswith(first + " "))
    assert mixed == 0


def test_a_cleared_source_of_truth_field_stays_empty_and_two_tools_editing_a_field_are_listed(
        sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    assert sync.run()[0].success
    streams = {"salesforce": "Contact", "hubspot": "contacts"}
    landed = {tool: sync.warehouse.read_table(landing_table_name(tool, stream)).query("not _deleted")
              for tool, stream in streams.items()}
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    tools_of = crosswalk.groupby("entity_id")["_source"].agg(set)
    # a contact Salesforce (the title's source of truth) and HubSpot both hold a title for
    titled = {tool: crosswalk[crosswalk["_source"] == tool].merge(
        landed[tool].loc[landed[tool]["job_title"].notna(), ["_source_id"]]) for tool in ("salesforce", "hubspot")}
    chosen = titled["salesforce"][titled["salesforce"]["entity_id"].isin(set(titled["hubspot"]["entity_id"]))].iloc[0]
    cleared_id, cleared_entity = chosen["_source_id"], chosen["entity_id"]
    # a contact held by HubSpot and Zendesk, whose phone each changes differently
    edited_entity = next(e for e, tools in tools_of.items() if {"hubspot", "zendesk"} <= tools and e != cleared_entity)
    edited = _members(sync, edited_entity).drop_duplicates("_source").set_index("_source")["_source_id"]
    sync.box.mutate("salesforce", "Contact", cleared_id, {"Title": None})
    sync.box.mutate("hubspot", "contacts", edited["hubspot"], {"phone": "+1 212 555 0101"})
    sync.box.mutate("zendesk", "users", edited["zendesk"], {"phone": "+1 212 555 0199"})

    second, _ = sync.run()
    assert second.success
    golden = sync.warehouse.read_table("golden_contacts").set_index("entity_id")
    assert pd.isna(golden.at[cleared_entity, "job_title"])
    provenance = sync.warehouse.read_table("provenance_contacts")
    origin = provenance[(provenance["entity_id"] == cleared_entity) & (provenance["field"] == "job_title")].iloc[0]
    assert origin["tool"] == "salesforce" and pd.isna(origin["value"])
    audit = sync.warehouse.read_table("conflicts_contacts")
    lost = audit[(audit["entity_id"] == cleared_entity) & (audit["field"] == "job_title")]
    assert lost["winner_value"].isna().all() and "hubspot" in set(lost["loser_tool"])

    check = next(e for e in second.get_asset_check_evaluations() if e.check_name == "golden_contacts_concurrent_edits")
    assert not check.passed and check.severity.value == "WARN" and check.metadata["concurrent_edits"].value >= 1
    assert edited_entity in check.metadata["samples"].value
    listed = CliRunner().invoke(main, ["conflicts", "--entity", "contacts", "--since", "2000-01-01"])
    assert listed.exit_code == 0 and "+12125550101" in listed.output and "+12125550199" in listed.output
    assert "field(s) changed differently" in listed.output
    unknown = CliRunner().invoke(main, ["conflicts", "--entity", "contcats"])
    assert unknown.exit_code == 2 and "'contcats'" in unknown.output

    third, _ = sync.run()  # the tools re-read what write-back cleared: nothing is resurrected from an older copy
    assert third.success
    golden = sync.warehouse.read_table("golden_contacts").set_index("entity_id")
    assert pd.isna(golden.at[cleared_entity, "job_title"])
    members = _members(sync, cleared_entity)
    for tool in ("salesforce", "hubspot"):
        held = sync.warehouse.read_table(landing_table_name(tool, streams[tool]))
        held = held[held["_source_id"].isin(set(members.loc[members["_source"] == tool, "_source_id"]))]
        assert len(held) and (held["job_title"].isna() | held["job_title"].eq("")).all(), tool  # 0 resurrected
    assert next(e for e in third.get_asset_check_evaluations()
                if e.check_name == "golden_contacts_concurrent_edits").passed  # listed once, not every run


def test_a_group_of_fields_with_mixed_rules_is_refused_at_load(tmp_path):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["survivorship"]["contacts"]["groups"] = [["first_name", "last_name"], ["email", "job_title"]]
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(StackError, match=r"at survivorship\.contacts\.groups\[1\]:.*one rule for all the fields"):
        load_stack(file)
