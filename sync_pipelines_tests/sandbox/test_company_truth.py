"""The sandbox's companies: HubSpot writes them otherwise than Salesforce, holds some twice, edits some industries
later, and holds traps (other companies that look like one); the truth says which company each record is."""

from __future__ import annotations

import collections

import pytest

from sync_pipelines.core.legal_forms import name_key_of
from sync_pipelines.sandbox import truth
from sync_pipelines.sandbox.data import build_world, company_label


@pytest.fixture(scope="module")
def world():
    return build_world(seed=42, scale=1.0)


def _without_suffix(name: str) -> str:
    return name.rsplit(" ", 1)[0]


def _records(world, key):
    table = world.tables[key]
    return [(company_label(table, row), table.fields(row), bool(table.deleted[row])) for row in range(len(table))]


def test_every_company_record_is_labelled_and_hubspot_holds_some_twice(world):
    accounts, hubspot = _records(world, "salesforce/Account"), _records(world, "hubspot/companies")
    assert all(label is not None for label, _, _ in accounts + hubspot)
    per_company = collections.Counter(label for label, _, _ in hubspot)
    assert sum(1 for count in per_company.values() if count == 2) >= 3
    assert [entry["company"] for entry in truth.records(world.tables["hubspot/companies"])] == \
           [label for label, _, _ in hubspot]


def test_hubspot_writes_a_company_otherwise_with_the_same_name_key(world):
    registered = {label: values["Name"] for label, values, _ in _records(world, "salesforce/Account")}
    written = [(label, values) for label, values, _ in _records(world, "hubspot/companies") if label in registered]
    differently = [(label, values["name"]) for label, values in written if values["name"] != registered[label]]
    assert len(differently) >= 10
    assert all(name_key_of(name) == name_key_of(registered[label]) for label, name in differently)
    assert {name for _, name in differently if name.isupper()} and {name for _, name in differently if ", " in name}
    domains = [values["domain"] for _, values in written]
    assert None in domains and any(str(d).startswith("www.") for d in domains)


def test_traps_are_companies_of_their_own_with_a_similar_name_and_another_domain(world):
    accounts = {label: values for label, values, _ in _records(world, "salesforce/Account")}
    traps = world.company_traps
    assert {trap["kind"] for trap in traps} == {"namesake", "lookalike"} and len(traps) >= 4
    hubspot = world.tables["hubspot/companies"]
    for trap in traps:
        row = hubspot.row_of(trap["id"])
        values, resembled = hubspot.fields(row), accounts[trap["resembles"]]
        assert company_label(hubspot, row) == trap["company"] != trap["resembles"]
        assert values["domain"] not in resembled["Website"]
        if trap["kind"] == "namesake":  # the same name under another legal form: only the domain tells them apart
            assert name_key_of(values["name"]) == name_key_of(_without_suffix(resembled["Name"]))
        else:
            assert name_key_of(values["name"]) != name_key_of(resembled["Name"])


def test_planted_company_conflicts_name_a_rule_and_the_value_it_makes_golden(world):
    conflicts = world.company_conflicts
    by_rule = collections.Counter((c["field"], c["rule"]) for c in conflicts)
    assert by_rule[("name", "source_of_truth")] >= 10 and by_rule[("industry", "last_write_wins")] >= 3
    accounts, hubspot = world.tables["salesforce/Account"], world.tables["hubspot/companies"]
    live = {company_label(hubspot, row): row for row in range(len(hubspot)) if not hubspot.deleted[row]}
    for conflict in conflicts:
        account = int(conflict["company"][1:])
        assert not accounts.deleted[account] and conflict["value"] != conflict["other_value"]
        if conflict["rule"] == "last_write_wins":  # the HubSpot edit is newer than anything Salesforce did
            row = live[conflict["company"]]
            assert hubspot.fields(row)["industry"] == conflict["value"]
            assert hubspot.modified[row] > accounts.modified[account]
        else:
            assert accounts.fields(account)["Name"] == conflict["value"]


def test_company_planting_is_deterministic_and_leaves_the_contacts_alone():
    first, second = build_world(seed=7, scale=0.5), build_world(seed=7, scale=0.5)
    assert first.company_conflicts == second.company_conflicts and first.company_traps == second.company_traps
    assert {c["field"] for c in first.conflicts} == {"email", "phone"}
