"""Golden references on small frames: the golden value's own tool first, another member's value next, else
unresolved naming the golden value's id."""

import pandas as pd

from sync_pipelines.core.references import UNRESOLVED, VIA_GOLDEN, VIA_MEMBER, resolve_references

COMPANIES = pd.DataFrame({"entity_id": ["C1", "C1", "C2"], "_source": ["crm", "mkt", "crm"],
                          "_source_id": ["a1", "h1", "a2"]})


def _values(rows):
    return pd.DataFrame(rows, columns=["entity_id", "field", "tool", "value"])


def _resolve(winners, members, targets=None):
    asked = []

    def members_of(pairs):
        asked.append(len(pairs))
        return _values(members)

    targets = {"companies": COMPANIES} if targets is None else targets
    links = resolve_references(_values(winners), members_of, lambda entity, _: targets.get(entity),
                               {"company_id": "companies"}, priority=["crm", "mkt"])
    links.attrs["members_asked"] = asked
    return links.set_index("entity_id")


def test_the_golden_value_resolves_in_the_tool_it_came_from():
    links = _resolve([("P1", "company_id", "crm", "a2"), ("P2", "company_id", "mkt", "h1")],
                     [("P1", "company_id", "mkt", "h1")])
    assert links.loc["P1", "referenced_id"] == "C2" and links.loc["P1", "via"] == VIA_GOLDEN
    assert links.loc["P2", "referenced_id"] == "C1" and links.loc["P2", "referenced_entity"] == "companies"
    assert links.attrs["members_asked"] == []  # every golden value resolved: no member was read


def test_an_id_is_never_looked_up_in_another_tool():
    links = _resolve([("P1", "company_id", "mkt", "a2")], [])  # a2 is a crm id, not a mkt one
    assert links.loc["P1", "via"] == UNRESOLVED and pd.isna(links.loc["P1", "referenced_id"])
    assert (links.loc["P1", "tool"], links.loc["P1", "source_id"]) == ("mkt", "a2")


def test_another_member_resolves_what_the_golden_value_cannot_in_priority_order():
    links = _resolve([("P1", "company_id", "crm", "gone")],
                     [("P1", "company_id", "mkt", "h1"), ("P1", "company_id", "crm", "a2"),
                      ("P1", "company_id", "crm", "gone")])
    assert links.loc["P1", "referenced_id"] == "C2" and links.loc["P1", "via"] == VIA_MEMBER  # crm before mkt
    assert links.loc["P1", "source_id"] == "a2"


def test_an_empty_golden_value_points_nowhere_even_when_members_hold_one():
    links = _resolve([("P1", "company_id", "crm", None)], [("P1", "company_id", "mkt", "h1")])
    assert links.empty


def test_a_referenced_entity_without_a_crosswalk_resolves_nothing():
    assert _resolve([("P1", "company_id", "crm", "a1")], [], targets={}).empty


def test_a_golden_value_no_member_can_rescue_leaves_one_unresolved_row_and_nothing_else():
    links = _resolve([("P1", "company_id", "crm", "gone")], [("P1", "company_id", "mkt", "also-gone")])
    assert len(links) == 1 and links.loc["P1", "via"] == UNRESOLVED and links.index.notna().all()
