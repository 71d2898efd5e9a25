"""References by a matching key on the sandbox (issue 13, item 3): the ERP's export read a second time gives a
company per name, which joins the CRM's companies precisely; every ERP contact naming a company carries its golden
company, an id reference wins where a contact holds both, and a contact moved to another company by name follows on
the next run, as a full rebuild would have it."""

from __future__ import annotations

import pandas as pd
from pandas.testing import assert_frame_equal

from sync_pipelines.pipeline.references import _resolve, reference_fields
from sync_pipelines.sandbox.scoring import resolution, truth_records


def test_erp_companies_join_precisely_and_erp_contacts_carry_their_company_by_name(sync):
    result, _ = sync.run()
    assert result.success
    truth = truth_records(sync.box, sync.stack, "companies")
    assert (truth["_source"] == "legacy_erp").sum() > 50
    scored = resolution(truth, sync.warehouse.read_table("crosswalk_companies"), "company")
    assert scored.precision >= 0.995 and scored.recall >= 0.97 and scored.unresolved == 0
    print(f"\ncompanies over {scored.records} records: precision {scored.precision:.4f}, recall {scored.recall:.4f}")

    golden = sync.warehouse.read_table("golden_contacts").query("not _deleted").set_index("entity_id")
    links = sync.warehouse.read_table("references_contacts")
    by_key = links[links["field"] == "company_name"].set_index("entity_id")
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    sources = crosswalk.groupby("entity_id")["_source"].agg(frozenset)
    erp_only = [e for e in golden.index[golden["company_name"].notna()] if sources.get(e) == {"legacy_erp"}]
    assert erp_only and by_key.loc[erp_only, "referenced_id"].notna().all()
    # ... at the company the truth gives their person
    companies = sync.warehouse.read_table("crosswalk_companies")
    erp_company = companies[companies["_source"] == "legacy_erp"].set_index("_source_id")["entity_id"]
    assert (by_key.loc[erp_only, "referenced_id"] == erp_company.reindex(by_key.loc[erp_only, "source_id"]).to_numpy()
            ).all()
    # where an id reference resolves too, it wins, and the key agrees with it here
    both = by_key[by_key["via"] == "id reference"]
    by_id = links[(links["field"] == "company_source_id")].set_index("entity_id")["referenced_id"]
    assert len(both) and (both["referenced_id"] == by_id.reindex(both.index)).all()
    assert (both["key_points_at"].dropna() == both["referenced_id"][both["key_points_at"].notna()]).all()
    events = [e for e in result.get_asset_materialization_events()
              if e.asset_key.to_user_string() == "references_contacts"]
    metadata = events[0].materialization.metadata
    assert metadata["company_name_ambiguous_keys"].value == 0 and metadata["company_name_unresolved"].value == 0


def test_an_erp_customer_renamed_to_another_company_follows_it_incrementally(sync):
    assert sync.run()[0].success
    links = sync.warehouse.read_table("references_contacts")
    by_key = links[(links["field"] == "company_name") & (links["via"] == "key")]
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    erp = crosswalk[crosswalk["_source"] == "legacy_erp"]
    moved = by_key[by_key["entity_id"].isin(erp["entity_id"])].iloc[0]
    other = by_key[by_key["referenced_id"] != moved["referenced_id"]].iloc[0]
    customer = erp[erp["entity_id"] == moved["entity_id"]]["_source_id"].iloc[0]
    accounts = sync.warehouse.read_table("golden_companies").set_index("entity_id")
    sync.box.mutate("legacy_erp", "customers", customer, {"company": accounts.at[other["referenced_id"], "name"]})
    assert sync.run()[0].success
    after = sync.warehouse.read_table("references_contacts").set_index(["entity_id", "field"])
    assert after.loc[(moved["entity_id"], "company_name"), "referenced_id"] == other["referenced_id"]
    golden = sync.warehouse.read_table("golden_contacts")
    live = set(golden.loc[~golden["_deleted"].astype(bool), "entity_id"])
    full = _resolve(sync.stack, sync.warehouse, "contacts", reference_fields(sync.stack, "contacts"), live, full=True)

    def comparable(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values(["entity_id", "field"]).reset_index(drop=True)[full.columns].astype(object)
        return frame.where(frame.notna(), None)

    assert_frame_equal(comparable(after.reset_index()), comparable(full), check_dtype=False)
