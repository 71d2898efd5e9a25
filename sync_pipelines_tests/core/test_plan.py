from datetime import datetime, timezone

import pandas as pd

from sync_pipelines.core.plan import (
    CLEAR, UNRESOLVED_REFERENCE, hold_back_references, plan_writes, to_tool_record, translate_references,
    writable_fields,
)
from sync_pipelines.stack import load_stack

STACK = load_stack()
T1, T2, T3 = (datetime(2026, 11, d, tzinfo=timezone.utc) for d in (1, 2, 3))
GOLDEN = pd.DataFrame({"email": ["new@x.io", "b@x.io"], "phone": [None, "+14155550102"]},
                      index=pd.Index(["ent_a", "ent_b"], name="entity_id"))
CROSSWALK = pd.DataFrame({"entity_id": ["ent_a", "ent_a", "ent_b"], "_source": "hubspot",
                          "_source_id": ["1", "2", "3"]})


def current(**changes):
    frame = pd.DataFrame({
        "_source_id": ["1", "2", "3"], "email": ["old@x.io", "old@x.io", "b@x.io"],
        "phone": ["+14155550101", None, "+14155550102"], "_deleted": False,
        "_updated_at": [T2, T1, T1], "_extracted_at": [T1, T1, T1],
    })
    return frame.assign(**changes)


def test_only_differences_travel_an_empty_golden_value_never_erases_and_in_tool_duplicates_are_reported():
    plan = plan_writes(GOLDEN, CROSSWALK, current(), ["email", "phone"], "hubspot").set_index("source_id")
    assert plan.loc["1", "action"] == "update" and plan.loc["1", "changes"] == {"email": "new@x.io"}
    assert plan.loc["2", "action"] == "duplicate"  # the older copy of ent_a in the same tool
    assert plan.loc["3", "action"] == "unchanged" and plan.loc["3", "changes"] == {}


def test_a_value_already_written_is_not_sent_again_until_the_tool_is_re_read():
    ledger = pd.DataFrame([{"source_id": "1", "field": "email", "value": "new@x.io", "written_at": T2}])
    before_reread = plan_writes(GOLDEN, CROSSWALK, current(), ["email"], "hubspot", ledger=ledger)
    assert before_reread.set_index("source_id").loc["1", "action"] == "unchanged"
    # re-read after the write and the tool still holds the old value (someone reverted it): send it again
    after = plan_writes(GOLDEN, CROSSWALK, current(_extracted_at=T3), ["email"], "hubspot", ledger=ledger)
    assert after.set_index("source_id").loc["1", "changes"] == {"email": "new@x.io"}


def test_a_name_the_tool_holds_whole_is_compared_whole_so_a_two_word_first_name_is_not_written_forever():
    """Zendesk holds one `name`, read back split at the first space: "Mary Ann" "Williams" comes back as "Mary"
    "Ann Williams". Compared field by field it would differ on every run; compared as the tool holds it, it does not."""
    golden = pd.DataFrame({"first_name": ["Mary Ann", "Mary Ann"], "last_name": ["Williams", "Smith"]},
                          index=pd.Index(["ent_a", "ent_b"], name="entity_id"))
    crosswalk = pd.DataFrame({"entity_id": ["ent_a", "ent_b"], "_source": "zendesk", "_source_id": ["1", "2"]})
    held = pd.DataFrame({"_source_id": ["1", "2"], "first_name": ["Mary", "Mary"],
                         "last_name": ["Ann Williams", "Ann Williams"], "_deleted": False, "_updated_at": T1,
                         "_extracted_at": T1})
    name = ["first_name", "last_name"]
    plan = plan_writes(golden, crosswalk, held, name, "zendesk", composed=[name]).set_index("source_id")
    assert plan.loc["1", "action"] == "unchanged"
    assert plan.loc["2", "changes"] == {"first_name": "Mary Ann", "last_name": "Smith"}  # a real change still goes
    assert plan_writes(golden, crosswalk, held, name, "zendesk").set_index("source_id").loc["1", "action"] == "update"


def test_writable_fields_invert_the_mapping_and_records_nest_and_join_names():
    zendesk = writable_fields(STACK.tools["zendesk"].streams["users"])
    assert zendesk["name"] == ["first_name", "last_name"] and zendesk["email"] == ["email"]
    assert "stage" not in writable_fields(STACK.tools["salesforce"].streams["Opportunity"]).get("StageName", [])
    golden_row = pd.Series({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@x.io"})
    assert to_tool_record({"last_name": "Lovelace"}, golden_row, zendesk) == {"name": "Ada Lovelace"}
    hubspot = writable_fields(STACK.tools["hubspot"].streams["contacts"])
    assert to_tool_record({"email": "ada@x.io"}, golden_row, hubspot) == {"properties": {"email": "ada@x.io"}}


class Policy:
    def __init__(self, write="own", clear="allow"):
        self.write, self.clear = write, clear


def test_policies_hold_back_what_a_destination_keeps_and_say_which_held_it():
    golden = pd.DataFrame({"email": ["new@x.io", "b@x.io"], "phone": ["+14155550109", "+14155550102"]},
                          index=pd.Index(["ent_a", "ent_b"], name="entity_id"))
    held = current(phone=["+14155550101", None, None])
    plan = plan_writes(golden, CROSSWALK, held, ["email", "phone"], "hubspot",
                       policies={"email": Policy("never"), "phone": Policy("fill_if_empty")}).set_index("source_id")
    assert plan.loc["1", "changes"] == {} and plan.loc["1", "held_back"] == {"email": "never", "phone": "fill_if_empty"}
    assert plan.loc["3", "changes"] == {"phone": "+14155550102"}  # the tool held no phone: filled
    assert plan.loc["3", "before"] == {"phone": None} and plan.loc["3", "held_back"] == {}


def test_a_golden_clear_empties_the_tool_under_clear_allow_only_and_a_gap_never_does():
    golden = pd.DataFrame({"email": ["a@x.io", "b@x.io"], "phone": [None, None]},
                          index=pd.Index(["ent_a", "ent_b"], name="entity_id"))
    held = current(email=["a@x.io", "a@x.io", "b@x.io"], phone=["+14155550101", None, "+14155550102"])
    cleared = pd.DataFrame({"entity_id": ["ent_a"], "field": ["phone"]})  # ent_b merely lacks a phone
    plan = plan_writes(golden, CROSSWALK, held, ["email", "phone"], "hubspot", cleared=cleared).set_index("source_id")
    assert plan.loc["1", "changes"] == {"phone": CLEAR} and plan.loc["1", "before"] == {"phone": "+14155550101"}
    assert plan.loc["3", "action"] == "unchanged"
    kept = plan_writes(golden, CROSSWALK, held, ["email", "phone"], "hubspot", cleared=cleared,
                       policies={"phone": Policy(clear="never")}).set_index("source_id")
    assert kept.loc["1", "changes"] == {} and kept.loc["1", "held_back"] == {"phone": "clear never"}
    ledger = pd.DataFrame([{"source_id": "1", "field": "phone", "value": None, "written_at": T2}])
    again = plan_writes(golden, CROSSWALK, held, ["email", "phone"], "hubspot", cleared=cleared, ledger=ledger)
    assert again.set_index("source_id").loc["1", "action"] == "unchanged"  # cleared, not re-read yet
    assert to_tool_record({"phone": CLEAR}, {"phone": "+14155550101"},
                          writable_fields(STACK.tools["hubspot"].streams["contacts"])) == {"properties": {"phone": None}}


def test_a_reference_is_written_as_the_destinations_own_id_and_held_back_where_it_has_none():
    # golden contacts hold Salesforce account ids; HubSpot holds its own records of two of the three companies
    golden = pd.DataFrame({"company": ["001A", "001B", "001C", None, "001X"]},
                          index=pd.Index(["ent_a", "ent_b", "ent_c", "ent_d", "ent_e"], name="entity_id"))
    references = pd.DataFrame({"entity_id": ["ent_a", "ent_b", "ent_c", "ent_e"], "field": "company",
                               "referenced_entity": "companies",
                               "referenced_id": ["co_1", "co_2", "co_3", None]})
    targets = pd.DataFrame({"referenced_entity": "companies", "entity_id": ["co_1", "co_2", "co_2"],
                            "_source_id": ["501", "502", "509"]})  # HubSpot holds co_2 twice
    held = pd.DataFrame({"entity_id": ["ent_a", "ent_b"], "field": "company", "value": ["777", "509"]})
    translated, held_back = translate_references(golden, references, targets, held, {"company": "companies"},
                                                 "hubspot")
    # co_1 becomes HubSpot's 501; ent_b already names one of co_2's HubSpot records, kept; no other tool's id
    assert translated["company"].tolist() == ["501", "509", None, None, None]
    reasons = held_back.set_index("entity_id")["reason"]
    assert sorted(reasons.index) == ["ent_c", "ent_e"]  # ent_d holds no company: nothing to hold back
    assert reasons["ent_c"] == f"{UNRESOLVED_REFERENCE}: companies co_3 has no record in hubspot"
    assert reasons["ent_e"] == f"{UNRESOLVED_REFERENCE}: 001X points at no golden companies"
    crosswalk = pd.DataFrame({"entity_id": translated.index, "_source": "hubspot",
                              "_source_id": ["h1", "h2", "h3", "h4", "h5"]})
    landed = pd.DataFrame({"_source_id": ["h1", "h2", "h3", "h4", "h5"], "company": ["777", "509", None, None, "9"],
                           "_deleted": False, "_updated_at": T1, "_extracted_at": T1})
    plan = hold_back_references(plan_writes(translated, crosswalk, landed, ["company"], "hubspot"), held_back)
    plan = plan.set_index("entity_id")
    assert plan.loc["ent_a", "changes"] == {"company": "501"} and plan.loc["ent_b", "action"] == "unchanged"
    assert plan.loc["ent_c", "changes"] == {} and plan.loc["ent_c", "held_back"] == {"company": reasons["ent_c"]}
    assert plan.loc["ent_e", "changes"] == {}  # the tool's own value stays: no Salesforce id is written over it
