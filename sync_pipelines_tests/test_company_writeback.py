"""Golden companies written back to the CRMs (issue 13, item 1: every entity gets the whole chain, write-back too),
on SQLite and PostgreSQL: after one sync and a re-extraction, Salesforce Accounts and HubSpot companies of one golden
company hold the same domain and industry; the next sync writes no company; the names stay each tool's own."""

from __future__ import annotations

from sync_pipelines.sandbox.scoring import field_agreement

TOOLS = ["salesforce", "hubspot"]
FIELDS = ["domain", "industry"]
COMPANY_STREAMS = {"salesforce": ("Account", "Name"), "hubspot": ("companies", "name")}


def _names(sync) -> dict[str, dict]:
    """Each CRM's company names as the tool holds them, by record id."""
    names = {}
    for tool, (stream, field) in COMPANY_STREAMS.items():
        table = sync.box.state.world.table(tool, stream)
        with sync.box.state.lock:
            names[tool] = {str(table.id(row)): table.fields(row)[field] for row in range(len(table))}
    return names


def test_golden_companies_reach_both_crms_once_and_their_fields_then_agree(sync_on_each_warehouse):
    sync = sync_on_each_warehouse
    names = _names(sync)
    first, written = sync.run()
    assert first.success
    companies = {tool: written[f"{tool}/companies_writeback"] for tool in TOOLS}
    assert all(companies.values()), companies
    before = field_agreement(sync.stack, sync.warehouse, "companies", FIELDS, TOOLS)  # as read before writing
    assert before.differ["industry"] > 0  # the sandbox plants industries edited later in HubSpot
    second, again = sync.run()  # re-extracts what the first run wrote
    assert second.success
    after = field_agreement(sync.stack, sync.warehouse, "companies", FIELDS, TOOLS)
    assert after.compared == before.compared > 0
    assert after.differ == {"domain": 0, "industry": 0}, after.samples
    assert before.missing["domain"] > 0 and after.missing == {"domain": 0, "industry": 0}  # empty ones filled
    assert {tool: again[f"{tool}/companies_writeback"] for tool in TOOLS} == {"salesforce": 0, "hubspot": 0}
    ledger = sync.warehouse.read_table("writeback_ledger")
    sent = ledger[ledger["stream"].isin([stream for stream, _ in COMPANY_STREAMS.values()])]
    assert set(sent["field"]) <= set(FIELDS) and len(sent)  # the name stays each tool's own
    assert _names(sync) == names
    print(f"\ncompany records written: first sync {companies}, next "
          f"{ {tool: again[f'{tool}/companies_writeback'] for tool in TOOLS} }; golden companies held by both CRMs: "
          f"{after.compared}; fields differing before {before.differ} (one side empty: {before.missing}), "
          f"after {after.differ} (one side empty: {after.missing})")
