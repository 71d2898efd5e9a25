from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sync_pipelines.core.survive import (
    CONFLICT_COLUMNS,
    PROVENANCE_COLUMNS,
    SurvivorshipRules,
    derive_field_change_times,
    echoed_writes,
    survivorship,
    without_clears,
)

FIELDS = ["email", "first_name", "last_name", "phone", "company_name", "job_title", "lifecycle_stage"]
RULES = {
    "source_of_truth": "salesforce",
    "priority": ["salesforce", "hubspot", "zendesk", "stripe", "legacy_erp"],
    "default_rule": "source_of_truth",
    "fields": {"email": "last_write_wins", "phone": "last_write_wins"},
}
DECIDED = pd.Timestamp("2026-10-01T00:00:00Z")


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def make(*rows: dict) -> tuple[pd.DataFrame, pd.Series]:
    """Records from short dicts: tool, id, entity, at (record time), deleted, plus any canonical fields."""
    frame = pd.DataFrame([
        {
            **{name: row.get(name) for name in FIELDS},
            "_source": row["tool"],
            "_source_id": row["id"],
            "_updated_at": utc(row["at"]),
            "_deleted": row.get("deleted", False),
        }
        for row in rows
    ])
    return frame, pd.Series([row["entity"] for row in rows], index=frame.index)


def run(records: pd.DataFrame, clusters: pd.Series, rules=RULES, **kwargs):
    return survivorship(records, clusters, rules, decided_at=DECIDED, **kwargs)


def provenance_of(result, entity: str, field: str) -> dict:
    rows = result.provenance[(result.provenance.entity_id == entity) & (result.provenance.field == field)]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


def test_source_of_truth_wins_when_present_and_falls_back_by_priority():
    records, clusters = make(
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20", "first_name": "Annie",
         "company_name": "Acme Inc"},
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "first_name": "Ann"},
        {"tool": "legacy_erp", "id": "e1", "entity": "p1", "at": "2026-09-25", "company_name": "ACME Corp",
         "job_title": "CFO"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-02", "job_title": "Finance lead"},
    )
    golden = run(records, clusters).golden.loc["p1"]
    assert golden["first_name"] == "Ann"  # older, but the truth tool's
    assert golden["company_name"] == "Acme Inc"  # no truth value: hubspot outranks legacy_erp despite being older
    assert golden["job_title"] == "Finance lead"  # zendesk outranks legacy_erp
    assert pd.isna(golden["lifecycle_stage"])


def test_last_write_wins_per_field_change_time_not_record_time():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-30", "email": "old@x.com",
         "phone": "+15550001"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-10", "email": "new@x.com",
         "phone": "+15559999"},
    )
    field_times = pd.DataFrame(
        {"email": [utc("2025-09-01"), utc("2026-09-10")], "phone": [utc("2026-09-30"), utc("2026-01-01")]},
        index=records.index,
    )
    result = run(records, clusters, field_times=field_times)
    assert result.golden.loc["p1", "email"] == "new@x.com"  # the support desk changed the email last
    assert result.golden.loc["p1", "phone"] == "+15550001"  # the CRM changed the phone last
    assert provenance_of(result, "p1", "email")["changed_at"] == utc("2026-09-10")
    assert result.golden.loc["p1", "_updated_at"] == utc("2026-09-30")

    without_field_times = run(records, clusters).golden.loc["p1"]
    assert without_field_times["email"] == "old@x.com"  # record time alone would let the CRM win both


def test_unknown_field_time_falls_back_to_record_time():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-30", "email": "crm@x.com"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-10", "email": "desk@x.com"},
    )
    field_times = pd.DataFrame({"email": [pd.NaT, utc("2026-09-20")]}, index=records.index)
    assert run(records, clusters, field_times=field_times).golden.loc["p1", "email"] == "crm@x.com"


def test_last_write_wins_ties_broken_by_priority_then_source_id():
    records, clusters = make(
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-10", "email": "desk@x.com"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-10", "email": "mkt@x.com"},
        {"tool": "stripe", "id": "cus_b", "entity": "p2", "at": "2026-09-10", "email": "b@x.com"},
        {"tool": "stripe", "id": "cus_a", "entity": "p2", "at": "2026-09-10", "email": "a@x.com"},
        {"tool": "stripe", "id": "cus_c", "entity": "p2", "at": "2026-09-10", "email": "c@x.com"},
    )
    result = run(records, clusters)
    assert result.golden.loc["p1", "email"] == "mkt@x.com"
    assert result.golden.loc["p2", "email"] == "a@x.com"
    assert provenance_of(result, "p2", "email")["source_id"] == "cus_a"


def test_empty_values_never_win_and_never_conflict():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-30", "email": "", "first_name": None},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-01", "email": "a@x.com", "first_name": "Ann"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-29", "email": "", "first_name": np.nan},
    )
    result = run(records, clusters)
    assert result.golden.loc["p1", "email"] == "a@x.com"
    assert result.golden.loc["p1", "first_name"] == "Ann"
    assert result.conflicts.empty


def test_deleted_records_never_win_and_are_not_members():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-30", "first_name": "Gone",
         "deleted": True},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-01", "first_name": "Ann"},
        {"tool": "hubspot", "id": "h2", "entity": "p2", "at": "2026-09-01", "first_name": "Ghost", "deleted": True},
    )
    result = run(records, clusters)
    assert list(result.golden.index) == ["p1"]
    assert result.golden.loc["p1", "first_name"] == "Ann"
    assert result.golden.loc["p1", "_member_count"] == 1
    assert result.conflicts.empty
    assert "s1" not in set(result.provenance.source_id)


def test_duplicates_within_one_tool_most_recently_changed_wins():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "job_title": "Analyst"},
        {"tool": "salesforce", "id": "s2", "entity": "p1", "at": "2026-09-15", "job_title": "Manager"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20", "job_title": "Director"},
    )
    result = run(records, clusters)
    assert result.golden.loc["p1", "job_title"] == "Manager"
    assert provenance_of(result, "p1", "job_title")["source_id"] == "s2"
    assert result.golden.loc["p1", "_member_count"] == 3


def test_provenance_has_one_row_per_non_empty_golden_field_with_its_origin():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "first_name": "Ann",
         "last_name": "Lee"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "email": "ann@x.com",
         "lifecycle_stage": "lead"},
        {"tool": "zendesk", "id": "z1", "entity": "p2", "at": "2026-09-03", "email": "bo@x.com"},
    )
    result = run(records, clusters)
    assert list(result.provenance.columns) == PROVENANCE_COLUMNS
    golden_long = result.golden[FIELDS].stack().dropna()
    assert len(result.provenance) == len(golden_long) == 5
    assert set(zip(result.provenance.entity_id, result.provenance.field)) == set(golden_long.index)
    assert provenance_of(result, "p1", "first_name") == {
        "entity_id": "p1", "field": "first_name", "value": "Ann", "tool": "salesforce", "source_id": "s1",
        "changed_at": utc("2026-09-01"), "rule": "source_of_truth",
    }
    assert provenance_of(result, "p1", "email") | {"changed_at": None} == {
        "entity_id": "p1", "field": "email", "value": "ann@x.com", "tool": "hubspot", "source_id": "h1",
        "changed_at": None, "rule": "last_write_wins",
    }


def test_conflicts_list_every_overridden_value_and_nothing_else():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "first_name": "Ann",
         "email": "ann@x.com"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "first_name": "Annie",
         "email": "ann@x.com"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-09", "first_name": "ANN ",
         "email": "ann.lee@x.com"},
        {"tool": "stripe", "id": "cus_1", "entity": "p1", "at": "2026-09-02", "first_name": "Anne"},
        {"tool": "hubspot", "id": "h2", "entity": "p2", "at": "2026-09-02", "first_name": "Bo"},
    )
    conflicts = run(records, clusters).conflicts
    assert list(conflicts.columns) == CONFLICT_COLUMNS
    got = set(zip(conflicts.field, conflicts.loser_tool, conflicts.loser_value, conflicts.winner_value))
    assert got == {
        ("first_name", "hubspot", "Annie", "Ann"),
        ("first_name", "stripe", "Anne", "Ann"),
        ("email", "salesforce", "ann@x.com", "ann.lee@x.com"),
        ("email", "hubspot", "ann@x.com", "ann.lee@x.com"),
    }  # "ANN " differs from "Ann" only in case and spacing: not a conflict
    email_row = conflicts[(conflicts.field == "email") & (conflicts.loser_tool == "salesforce")].iloc[0]
    assert email_row["winner_tool"] == "zendesk" and email_row["winner_source_id"] == "z1"
    assert email_row["rule"] == "last_write_wins"
    assert email_row["winner_changed_at"] == utc("2026-09-09") and email_row["loser_changed_at"] == utc("2026-09-01")
    assert (conflicts.decided_at == DECIDED).all() and (conflicts.entity_id == "p1").all()


def test_case_and_spacing_are_cosmetic_in_any_script():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "last_name": "Straße"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-02", "last_name": " STRASSE"},
        {"tool": "salesforce", "id": "s2", "entity": "p2", "at": "2026-09-01", "last_name": "ΣΑΣ"},
        {"tool": "hubspot", "id": "h2", "entity": "p2", "at": "2026-09-02", "last_name": "σας"},
        {"tool": "salesforce", "id": "s3", "entity": "p3", "at": "2026-09-01", "last_name": "Zoë"},
        {"tool": "hubspot", "id": "h3", "entity": "p3", "at": "2026-09-02", "last_name": "ZOE"},
    )
    result = run(records, clusters)
    assert result.golden["last_name"].tolist() == ["Straße", "ΣΑΣ", "Zoë"]  # the winner's own spelling
    conflicts = result.conflicts
    assert list(zip(conflicts.entity_id, conflicts.loser_value, conflicts.winner_value)) == [("p3", "ZOE", "Zoë")]


def test_fields_that_are_not_text_keep_their_type_and_compare_as_values():
    records = pd.DataFrame({
        "seats": [3, 3, 7, 5],
        "amount": [1.0, 1, 2.5, np.nan],  # 1.0 and 1 are one value
        "active": pd.Series([True, False, None, True], dtype=object),
        "renewal": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01", None], utc=True),
        "_source": ["salesforce", "hubspot", "salesforce", "hubspot"],
        "_source_id": ["s1", "h1", "s2", "h2"],
        "_updated_at": [utc("2026-09-01")] * 4,
    })
    clusters = pd.Series(["p1", "p1", "p2", "p2"])
    result = survivorship(records, clusters, {**RULES, "fields": {}}, decided_at=DECIDED)
    golden = result.golden
    assert golden["seats"].dtype == np.int64 and golden["seats"].tolist() == [3, 7]
    assert golden["amount"].tolist() == [1.0, 2.5]
    assert golden["active"].dtype == object and golden["active"].tolist() == [True, True]
    assert golden["renewal"].tolist() == [utc("2026-01-01"), utc("2026-03-01")]
    got = set(zip(result.conflicts.entity_id, result.conflicts.field, result.conflicts.loser_value))
    assert got == {("p1", "active", "False"), ("p1", "renewal", "2026-02-01 00:00:00+00:00"), ("p2", "seats", "5")}
    assert set(result.provenance["value"]) >= {"3", "1.0", "True", "2026-01-01 00:00:00+00:00"}


def test_golden_layout_and_member_counts():
    records, clusters = make(
        {"tool": "hubspot", "id": "h1", "entity": "p2", "at": "2026-09-02", "first_name": "Bo"},
        {"tool": "hubspot", "id": "h2", "entity": "p1", "at": "2026-09-03", "first_name": "Ann"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-04"},
    )
    golden = run(records, clusters).golden
    assert golden.index.name == "entity_id" and list(golden.index) == ["p1", "p2"]
    assert list(golden.columns) == FIELDS + ["_member_count", "_updated_at"]
    assert golden["_member_count"].tolist() == [2, 1]
    assert golden.loc["p1", "_updated_at"] == utc("2026-09-03")


def test_entity_without_any_value_takes_newest_member_time():
    records, clusters = make(
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-02"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-04"},
    )
    assert run(records, clusters).golden.loc["p1", "_updated_at"] == utc("2026-09-04")


def _random_records(seed: int, size: int) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    tools = np.array(["salesforce", "hubspot", "zendesk", "stripe", "legacy_erp", "asana"])
    days = pd.to_datetime("2026-09-01", utc=True) + pd.to_timedelta(rng.integers(0, 4, size), unit="D")
    records = pd.DataFrame({
        name: np.where(rng.random(size) < 0.2, None, rng.choice(["a", "b", "B", "c", ""], size)).astype(object)
        for name in FIELDS
    })
    records["_source"] = tools[rng.integers(0, len(tools), size)]
    records["_source_id"] = [f"id{i}" for i in range(size)]
    records["_updated_at"] = days
    records["_deleted"] = rng.random(size) < 0.1
    clusters = pd.Series(rng.integers(0, size // 4, size), index=records.index)
    field_times = pd.DataFrame({
        name: days.where(rng.random(size) < 0.5, pd.NaT) - pd.to_timedelta(rng.integers(0, 3, size), unit="D")
        for name in ["email", "phone"]
    }, index=records.index)
    return records, clusters, field_times


def test_shuffled_input_gives_identical_output():
    records, clusters, field_times = _random_records(seed=7, size=400)
    expected = run(records, clusters, field_times=field_times)
    assert len(expected.conflicts) > 0  # the data has ties and conflicts worth ordering
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(len(records))
        shuffled = records.iloc[order].set_axis(np.arange(len(records))[::-1])
        got = run(
            shuffled,
            clusters.iloc[order].set_axis(shuffled.index),
            field_times=field_times.iloc[order].set_axis(shuffled.index),
        )
        pd.testing.assert_frame_equal(got.golden, expected.golden)
        pd.testing.assert_frame_equal(got.provenance, expected.provenance)
        pd.testing.assert_frame_equal(got.conflicts, expected.conflicts)


def test_rules_object_with_attributes_is_accepted():
    records, clusters = make(
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20", "first_name": "Annie"},
        {"tool": "legacy_erp", "id": "e1", "entity": "p1", "at": "2026-09-21", "first_name": "Ann"},
    )
    rules = SimpleNamespace(
        source_of_truth="legacy_erp", priority=["hubspot"], default_rule="source_of_truth", fields={}
    )
    assert run(records, clusters, rules=rules).golden.loc["p1", "first_name"] == "Ann"


def test_unknown_rule_type_raises_naming_it():
    records, clusters = make({"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20"})
    with pytest.raises(ValueError, match=r"fields\.email.*'newest_wins'"):
        run(records, clusters, rules={**RULES, "fields": {"email": "newest_wins"}})
    with pytest.raises(ValueError, match=r"default_rule.*'majority'"):
        run(records, clusters, rules={**RULES, "default_rule": "majority"})


def test_rule_for_missing_field_raises_naming_it():
    records, clusters = make({"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20"})
    with pytest.raises(ValueError, match="'fax'"):
        run(records, clusters, rules={**RULES, "fields": {"fax": "last_write_wins"}})


def test_records_without_entity_id_raise():
    records, _ = make({"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20"})
    with pytest.raises(ValueError, match="no entity id"):
        run(records, pd.Series([None], index=records.index))


def test_deleted_records_may_lack_an_entity_id():
    records, _ = make(
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20", "first_name": "Ann"},
        {"tool": "hubspot", "id": "h2", "entity": None, "at": "2026-09-21", "first_name": "Old", "deleted": True},
    )
    result = run(records, pd.Series(["p1", None], index=records.index))
    assert result.golden["first_name"].tolist() == ["Ann"]


def test_misaligned_field_times_raise():
    records, clusters = make({"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20"})
    with pytest.raises(ValueError, match="field_times must be aligned"):
        run(records, clusters, field_times=pd.DataFrame({"email": [utc("2026-09-01")]}, index=[99]))


def test_conflicts_come_closest_contender_first():
    records, clusters = make(
        {"tool": "legacy_erp", "id": "e1", "entity": "p1", "at": "2026-09-09", "job_title": "Clerk"},
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "job_title": "CFO"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "job_title": "Finance"},
    )
    assert run(records, clusters).conflicts["loser_tool"].tolist() == ["hubspot", "legacy_erp"]


def test_naive_record_times_raise():
    records, clusters = make({"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-20"})
    records["_updated_at"] = records["_updated_at"].dt.tz_localize(None)
    with pytest.raises(ValueError, match="_updated_at.*timezone-naive"):
        run(records, clusters)


def test_tool_order_puts_undeclared_tools_last_alphabetically():
    rules = SurvivorshipRules.coerce(RULES)
    assert rules.tool_order(["zeta", "hubspot", "alpha"])[-2:] == ["alpha", "zeta"]
    assert rules.tool_order([])[0] == "salesforce"


STATE_FIELDS = ["email", "phone"]


def staged(*rows: tuple[str, str, str | None, str | None, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"_source": t, "_source_id": i, "email": e, "phone": p, "_updated_at": utc(at)} for t, i, e, p, at in rows]
    )


def test_derive_field_change_times_keeps_unchanged_and_stamps_changed():
    first = derive_field_change_times(
        None,
        staged(("zendesk", "1", "a@x.com", "+1555", "2026-09-01"), ("zendesk", "2", "b@x.com", None, "2026-09-02")),
        STATE_FIELDS,
        extracted_at=utc("2026-09-03"),
    )
    assert list(first.columns) == [
        "_source", "_source_id", "email", "email__changed_at", "phone", "phone__changed_at", "_seen_at",
    ]
    assert first["email__changed_at"].tolist() == [utc("2026-09-01"), utc("2026-09-02")]

    second = derive_field_change_times(
        first,
        staged(("zendesk", "1", "a@x.com", "+1666", "2026-09-10"), ("zendesk", "3", "c@x.com", None, "2026-09-11")),
        STATE_FIELDS,
        extracted_at=utc("2026-09-12"),
    ).set_index("_source_id")
    assert second.loc["1", "email__changed_at"] == utc("2026-09-01")  # unchanged value keeps its time
    assert second.loc["1", "phone__changed_at"] == utc("2026-09-10")  # changed value gets the record time
    assert second.loc["1", "phone"] == "+1666"
    assert second.loc["3", "email__changed_at"] == utc("2026-09-11")  # new record
    assert second.loc["2", "email__changed_at"] == utc("2026-09-02")  # not extracted this run: kept as is
    assert second.loc["2", "_seen_at"] == utc("2026-09-03") and second.loc["1", "_seen_at"] == utc("2026-09-12")


def written(*rows: tuple[str, str, str, str | None]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["_source", "_source_id", "field", "value"])


def test_echoed_writes_are_changes_made_only_of_what_we_wrote():
    before = derive_field_change_times(None, staged(
        ("hubspot", "1", "old@x.com", "+1555", "2026-09-01"), ("hubspot", "2", "b@x.com", "+1555", "2026-09-01"),
        ("hubspot", "3", "c@x.com", "+1555", "2026-09-01"), ("hubspot", "4", "d@x.com", "+1555", "2026-09-01"),
        ("hubspot", "5", "e@x.com", "+1555", "2026-09-01"), ("zendesk", "1", "z@x.com", "+1555", "2026-09-01"),
    ), STATE_FIELDS, extracted_at=utc("2026-09-02"))
    now = staged(
        ("hubspot", "1", "new@x.com", "+1555", "2026-09-03"),  # took the email we wrote
        ("hubspot", "2", "b@x.com", None, "2026-09-03"),  # took the clear we wrote
        ("hubspot", "3", "mine@x.com", "+1555", "2026-09-03"),  # someone else's email, not the one we wrote
        ("hubspot", "4", "d@x.com", "+1999", "2026-09-03"),  # we wrote the email, a person changed the phone
        ("hubspot", "6", "f@x.com", "+1555", "2026-09-03"),  # new, with a phone we did not write
        ("hubspot", "7", "g@x.com", None, "2026-09-03"),  # new, holding only what we wrote: one we created
        ("zendesk", "1", "z@x.com", "+1555", "2026-09-03"),  # touched, but we never wrote to it
    )
    ours = written(("hubspot", "1", "email", "new@x.com"), ("hubspot", "2", "phone", None),
                   ("hubspot", "3", "email", "ours@x.com"), ("hubspot", "4", "email", "d@x.com"),
                   ("hubspot", "6", "email", "f@x.com"), ("hubspot", "7", "email", "g@x.com"),
                   ("zendesk", "2", "email", "z@x.com"))
    assert echoed_writes(now, before, ours, STATE_FIELDS).tolist() == [True, True, False, False, False, True, False]


def test_echoed_writes_compare_as_text_and_by_the_whole_key():
    before = derive_field_change_times(None, staged(("stripe", "7", "a@x.com", "+1555", "2026-09-01")),
                                       STATE_FIELDS, extracted_at=utc("2026-09-02"))
    now = staged(("stripe", "7", "b@x.com", "+1555", "2026-09-03"))
    assert echoed_writes(now, before, written(("hubspot", "7", "email", "b@x.com")), STATE_FIELDS).tolist() == [False]
    assert echoed_writes(now, before, written(("stripe", "7", "email", "b@x.com")), STATE_FIELDS).tolist() == [True]


def test_derived_state_feeds_survivorship_as_field_times():
    state = derive_field_change_times(
        None,
        staged(
            ("salesforce", "s1", "old@x.com", "+1555", "2025-01-01"),
            ("zendesk", "z1", "new@x.com", "+1999", "2026-01-01"),
        ),
        STATE_FIELDS,
        extracted_at=utc("2026-01-02"),
    )
    current = staged(
        ("salesforce", "s1", "old@x.com", "+1777", "2026-09-01"),
        ("zendesk", "z1", "new@x.com", "+1999", "2026-01-01"),
    )
    state = derive_field_change_times(state, current, STATE_FIELDS, extracted_at=utc("2026-09-02"))
    clusters = pd.Series(["p1", "p1"], index=current.index)
    golden = run(current, clusters, field_times=state).golden.loc["p1"]
    assert golden["email"] == "new@x.com"  # the CRM's record is newer, but its email is from 2025
    assert golden["phone"] == "+1777"


def test_derive_rejects_repeated_keys():
    rows = staged(("zendesk", "1", "a@x.com", None, "2026-09-01"), ("zendesk", "1", "b@x.com", None, "2026-09-02"))
    with pytest.raises(ValueError, match="repeat keys"):
        derive_field_change_times(None, rows, STATE_FIELDS, extracted_at=utc("2026-09-03"))


def test_derive_stamps_extraction_time_when_record_time_is_unknown():
    rows = staged(("stripe", "cus_1", "a@x.com", None, "2026-09-01"))
    rows["_updated_at"] = pd.Series([pd.NaT], dtype="datetime64[us, UTC]")
    state = derive_field_change_times(None, rows, STATE_FIELDS, extracted_at=utc("2026-09-03"))
    assert state.loc[0, "email__changed_at"] == utc("2026-09-03")


def test_derive_times_a_clear_but_not_a_gap():
    first = derive_field_change_times(
        None, staged(("zendesk", "1", "a@x.com", "+1555", "2026-09-01"), ("zendesk", "2", "b@x.com", None,
                                                                           "2026-09-02")),
        STATE_FIELDS, extracted_at=utc("2026-09-03"))
    assert first["phone__changed_at"].isna().tolist() == [False, True]  # never held a phone: a gap, no time
    second = derive_field_change_times(
        first, staged(("zendesk", "1", "a@x.com", "", "2026-09-10"), ("zendesk", "2", "b@x.com", None,
                                                                       "2026-09-11")),
        STATE_FIELDS, extracted_at=utc("2026-09-12")).set_index("_source_id")
    assert second.loc["1", "phone__changed_at"] == utc("2026-09-10")  # emptied where it held one: a clear
    assert pd.isna(second.loc["2", "phone__changed_at"])  # still a gap
    third = derive_field_change_times(second.reset_index(), staged(("zendesk", "1", "a@x.com", None, "2026-09-20")),
                                      STATE_FIELDS, extracted_at=utc("2026-09-21")).set_index("_source_id")
    assert third.loc["1", "phone__changed_at"] == utc("2026-09-10")  # the clear keeps its time while it stands
    assert without_clears(second.reset_index(), STATE_FIELDS)["phone__changed_at"].isna().all()


def clear_case(rules=RULES, cleared_at="2026-09-10"):
    """Salesforce cleared the job title (its state times the clear), HubSpot still holds it, Zendesk never had it."""
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-10", "first_name": "Ann"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "first_name": "Ann", "job_title": "CEO"},
        {"tool": "zendesk", "id": "z1", "entity": "p1", "at": "2026-09-06", "first_name": "Ann"},
    )
    times = pd.DataFrame({"job_title": [utc(cleared_at), utc("2026-09-05"), pd.NaT]}, index=records.index)
    return run(records, clusters, rules, field_times=times)


def test_a_clear_in_the_source_of_truth_empties_the_golden_field_and_is_audited():
    result = clear_case()
    golden = result.golden.loc["p1"]
    assert pd.isna(golden["job_title"])
    origin = provenance_of(result, "p1", "job_title")
    assert pd.isna(origin["value"]) and origin["tool"] == "salesforce" and origin["changed_at"] == utc("2026-09-10")
    lost = result.conflicts[result.conflicts.field == "job_title"].iloc[0]
    assert pd.isna(lost["winner_value"]) and lost["loser_tool"] == "hubspot" and lost["loser_value"] == "CEO"


def test_a_clear_wins_under_last_write_wins_only_when_it_is_the_newest_change():
    lww = {**RULES, "fields": {**RULES["fields"], "job_title": "last_write_wins"}}
    assert pd.isna(clear_case(lww).golden.loc["p1", "job_title"])
    older = clear_case(lww, cleared_at="2026-09-01")
    assert older.golden.loc["p1", "job_title"] == "CEO"
    lost = older.conflicts[older.conflicts.field == "job_title"].iloc[0]
    assert lost["winner_value"] == "CEO" and pd.isna(lost["loser_value"]) and lost["loser_tool"] == "salesforce"


def test_a_gap_changes_nothing():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-10", "first_name": "Ann"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "job_title": "CEO"},
    )
    times = pd.DataFrame({"job_title": [pd.NaT, utc("2026-09-05")]}, index=records.index)
    result = run(records, clusters, field_times=times)
    assert result.golden.loc["p1", "job_title"] == "CEO"
    assert provenance_of(result, "p1", "job_title")["tool"] == "hubspot"
    assert result.conflicts[result.conflicts.field == "job_title"].empty


NAME_GROUP = {**RULES, "groups": [["first_name", "last_name"]]}


def test_a_group_comes_from_one_record_never_mixed():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "last_name": "Rebecca Williams"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "first_name": "Rebecca",
         "last_name": "Williams"},
        {"tool": "hubspot", "id": "h2", "entity": "p2", "at": "2026-09-05", "first_name": "Bo", "last_name": "Li"},
    )
    mixed = run(records, clusters).golden.loc["p1"]
    assert (mixed["first_name"], mixed["last_name"]) == ("Rebecca", "Rebecca Williams")  # field by field
    result = run(records, clusters, NAME_GROUP)
    golden = result.golden
    assert pd.isna(golden.loc["p1", "first_name"]) and golden.loc["p1", "last_name"] == "Rebecca Williams"
    assert (golden.loc["p2", "first_name"], golden.loc["p2", "last_name"]) == ("Bo", "Li")
    emptied = provenance_of(result, "p1", "first_name")  # a null value: write-back empties it too, or a tool mixes
    assert emptied["tool"] == "salesforce" and pd.isna(emptied["value"])
    lost = result.conflicts[result.conflicts.entity_id == "p1"].set_index("field")
    assert lost.loc["first_name", "loser_value"] == "Rebecca" and pd.isna(lost.loc["first_name", "winner_value"])
    assert lost.loc["last_name", "loser_value"] == "Williams"


def test_a_record_holding_none_of_a_group_takes_no_part_in_it():
    records, clusters = make(
        {"tool": "salesforce", "id": "s1", "entity": "p1", "at": "2026-09-01", "email": "a@x.com"},
        {"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05", "first_name": "Ann", "last_name": "Lee"},
    )
    golden = run(records, clusters, NAME_GROUP).golden.loc["p1"]
    assert (golden["first_name"], golden["last_name"]) == ("Ann", "Lee")


def test_a_group_needs_one_rule_and_known_fields():
    with pytest.raises(ValueError, match=r"groups\[0\].*one rule"):
        SurvivorshipRules.coerce({**RULES, "groups": [["first_name", "email"]]})
    records, clusters = make({"tool": "hubspot", "id": "h1", "entity": "p1", "at": "2026-09-05"})
    with pytest.raises(ValueError, match="'street'"):
        run(records, clusters, {**RULES, "groups": [["first_name", "street"]]})
