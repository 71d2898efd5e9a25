"""Entity resolution: matching, blocking, clusters and the chain guard, overrides, stable ids, metrics."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from rapidfuzz import fuzz
from rapidfuzz.distance import JaroWinkler, Levenshtein

from sync_pipelines.core.resolve import (
    _DENSE_SCORES,
    SCORERS,
    Condition,
    _character_counts,
    _counts_apart,
    _similar_values,
    given_names_compatible,
    is_given_name_field,
)
from sync_pipelines.resolve import (
    build_crosswalk,
    entity_id_for,
    explain_members,
    normalize_values,
    pairwise_precision_recall,
    resolve_entities,
    soundex,
)

FIELDS = ("email", "first_name", "last_name", "phone", "company_name", "team")
SANDBOX_RULES = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "sync_pipelines" / "stacks" / "sandbox.yaml").read_text()
)["identity"]["contacts"]
EMAIL = {"name": "same_email", "conditions": [{"field": "email", "method": "exact"}]}
PHONE = {"name": "same_phone", "conditions": [{"field": "phone", "method": "exact"}]}


def frame(*rows: dict, index: list | None = None) -> pd.DataFrame:
    """Records with every identity column present; `ref` 'tool:id' fills _source and _source_id."""
    records = []
    for row in rows:
        source, source_id = row["ref"].split(":")
        records.append({"_source": source, "_source_id": source_id, **{f: row.get(f) for f in FIELDS}})
    return pd.DataFrame(records, index=index)


def identity(*rules: dict, max_cluster_size: int = 12, merge=(), split=()) -> dict:
    manual = {"merge": list(merge), "split": list(split)}
    return {"rules": list(rules), "max_cluster_size": max_cluster_size, "manual": manual}


def groups(result: pd.Series, records: pd.DataFrame) -> set[frozenset[str]]:
    """The partition as sets of refs, independent of the ids chosen."""
    refs = records["_source"] + ":" + records["_source_id"]
    return {frozenset(refs[result == entity]) for entity in result.unique()}


def partition(*clusters: tuple[str, ...]) -> set[frozenset[str]]:
    return {frozenset(cluster) for cluster in clusters}


# ------------------------------------------------------------------------------------------ matching


def test_exact_match_ignores_case_and_whitespace_and_missing_never_matches():
    records = frame(
        {"ref": "a:1", "email": "Ann@Example.com"},
        {"ref": "b:1", "email": "  ann@example.com "},
        {"ref": "c:1", "email": "bob@example.com"},
        {"ref": "d:1", "email": None},
        {"ref": "e:1", "email": "   "},
    )
    result = resolve_entities(records, identity(EMAIL))
    assert groups(result, records) == partition(("a:1", "b:1"), ("c:1",), ("d:1",), ("e:1",))


def test_inner_whitespace_is_collapsed_before_comparing():
    records = frame({"ref": "a:1", "company_name": "Acme   Corp"}, {"ref": "b:1", "company_name": "acme corp"})
    rule = {"name": "company", "conditions": [{"field": "company_name", "method": "exact"}]}
    assert resolve_entities(records, identity(rule)).nunique() == 1


def test_comparison_forms_fold_and_collapse_any_text_as_python_does():
    # most texts are lower-cased by Arrow; the rest (Unicode case and whitespace) must end up the same
    texts = ["Ann Lee", "  ANN   LEE ", "ann\u00a0lee", "ann\x1clee", "Straße", "STRASSE", "ΣΑΣ", "σας", "Zoë",
             "İstanbul", "ǅemal", "\u3000", "", None, "a\u200bb", "Ünal Ölçer", "o'brien-smith", "x\ty\nz"]
    forms = normalize_values(pd.Series(texts * 2, dtype="str"))
    expected = [None if text is None else " ".join(text.casefold().split()) or None for text in texts * 2]
    assert list(forms) == expected
    assert list(normalize_values(pd.Series([1, 2.5, None], dtype=object))) == ["1", "2.5", None]


@pytest.mark.parametrize(
    ("method", "left", "right", "score"),
    [
        ("jaro_winkler", "Katherine", "Kathryn", JaroWinkler.normalized_similarity("katherine", "kathryn")),
        ("levenshtein", "Jonathan", "Johnathon", Levenshtein.normalized_similarity("jonathan", "johnathon")),
        ("token_sort", "Acme Widgets Ltd", "Widgets Acme Limited",
         fuzz.token_sort_ratio("acme widgets ltd", "widgets acme limited") / 100),
    ],
)
def test_each_fuzzy_method_matches_at_its_threshold_and_not_above(method, left, right, score):
    records = frame({"ref": "a:1", "first_name": left, "team": "x"}, {"ref": "b:1", "first_name": right, "team": "x"})

    def matches(threshold: float) -> bool:
        rule = {"name": "fuzzy", "blocking": ["team"],
                "conditions": [{"field": "first_name", "method": method, "threshold": threshold}]}
        return resolve_entities(records, identity(rule)).nunique() == 1

    assert 0.5 < score < 0.99
    assert matches(score)
    assert matches(score - 0.02)
    assert not matches(score + 0.02)


@pytest.mark.parametrize("method", ["jaro_winkler", "levenshtein", "token_sort"])
def test_many_distinct_values_are_scored_as_every_pair_would_be(method):
    # thousands of distinct values take the pair-by-pair path, where a length bound skips hopeless pairs
    rng = np.random.default_rng(7)
    words = ["acme", "acne", "widgets", "widget", "ltd", "limited", "co", "group", "north", "nord"]
    names = pd.unique(np.array([" ".join(rng.choice(words, rng.integers(1, 5))) + f" {n % 97}" for n in range(6000)]))
    assert len(names) ** 2 > _DENSE_SCORES
    left, right = rng.integers(0, len(names), 20000), rng.integers(0, len(names), 20000)
    condition = Condition("company_name", method, 0.85)
    scorer = SCORERS[method]
    expected = [scorer.function(names[i], names[j]) >= condition.cutoff() for i, j in zip(left, right)]
    assert 0 < sum(expected) < len(expected)
    assert _similar_values(left, right, names, condition).tolist() == expected


@pytest.mark.parametrize("method", list(SCORERS))
def test_a_score_bound_is_never_below_the_score(method):
    # pairs whose bound is below a threshold are never scored, so the bound must hold for every pair of texts
    rng = np.random.default_rng(11)
    characters = list("aaabeeilnorstuy019-'éø")
    texts = [" ".join("".join(rng.choice(characters, rng.integers(1, 9))) for _ in range(rng.integers(1, 4)))
             for _ in range(4000)]
    # random pairs, then each text with a prefix of itself (the best case for Winkler's bonus), then counts over 255
    left = texts[:2000] + [text[: len(text) // 2 + 1] for text in texts[:2000]] + ["a" * 300 + "b", "a" * 280]
    right = texts[2000:] + texts[:2000] + ["a" * 260, "a" * 300 + "c"]
    scorer = SCORERS[method]
    scores = np.array([scorer.function(a, b) for a, b in zip(left, right)]) / scorer.scale
    lengths, counts = _character_counts(np.array(left + right, dtype=object))
    first, second = np.arange(len(left)), len(left) + np.arange(len(right))
    bounds = scorer.bound(lengths[first], lengths[second], _counts_apart(counts, first, second)) / scorer.scale
    assert (scores <= bounds + 1e-6).all()
    assert (scores > bounds - 0.05).mean() > 0.05  # and it is close for some


def test_a_rule_needs_all_its_conditions_and_any_rule_is_enough():
    name_and_company = {
        "name": "name_and_company", "blocking": ["team"],
        "conditions": [
            {"field": "last_name", "method": "jaro_winkler", "threshold": 0.9},
            {"field": "company_name", "method": "token_sort", "threshold": 0.9},
        ],
    }
    records = frame(
        {"ref": "a:1", "last_name": "Lindqvist", "company_name": "Acme Corp", "team": "t"},
        {"ref": "b:1", "last_name": "Lindquist", "company_name": "Corp Acme", "team": "t"},  # both hold
        {"ref": "c:1", "last_name": "Lindqvist", "company_name": "Globex", "team": "t"},  # company fails
        {"ref": "d:1", "last_name": "Okonkwo", "company_name": "Globex", "team": "t", "email": "x@y.com"},
        {"ref": "e:1", "email": "x@y.com"},  # only the email rule links it to d
    )
    result = resolve_entities(records, identity(name_and_company, EMAIL))
    assert groups(result, records) == partition(("a:1", "b:1"), ("c:1",), ("d:1", "e:1"))


def test_rules_with_pydantic_like_objects_give_the_same_result_as_the_dict():
    records = frame(
        {"ref": "a:1", "email": "a@x.com", "phone": "+1555", "last_name": "Smith"},
        {"ref": "b:1", "email": "b@x.com", "phone": "+1555", "last_name": "Smyth"},
    )
    as_object = SimpleNamespace(
        max_cluster_size=12,
        manual=SimpleNamespace(merge=[], split=[]),
        rules=[SimpleNamespace(name=r["name"], blocking=r.get("blocking", []),
                               conditions=[SimpleNamespace(**c) for c in r["conditions"]])
               for r in SANDBOX_RULES["rules"]],
    )
    by_dict = resolve_entities(records, SANDBOX_RULES)
    assert by_dict.nunique() == 1
    assert resolve_entities(records, as_object).equals(by_dict)


# ------------------------------------------------------------------------------------------ blocking


def fuzzy_last_name(blocking: list[str], threshold: float = 0.8) -> dict:
    return {"name": "similar_last_name", "blocking": blocking,
            "conditions": [{"field": "last_name", "method": "jaro_winkler", "threshold": threshold}]}


def test_soundex_codes():
    assert [soundex(w) for w in ("Robert", "Rupert", "Ashcraft", "Tymczak", "Pfister", "Smyth")] == [
        "R163", "R163", "A261", "T522", "P236", "S530"]
    assert soundex("123") is None


def test_only_records_sharing_a_blocking_key_are_compared():
    records = frame({"ref": "a:1", "last_name": "Smith"}, {"ref": "b:1", "last_name": "Smyth"})
    assert resolve_entities(records, identity(fuzzy_last_name(["last_name_prefix"]))).nunique() == 2  # smi / smy
    assert resolve_entities(records, identity(fuzzy_last_name(["last_name_soundex"]))).nunique() == 1  # S530


def test_several_blocking_keys_are_each_tried():
    records = frame(
        {"ref": "a:1", "last_name": "Smith", "email": "a@acme.com"},
        {"ref": "b:1", "last_name": "Smyth", "email": "b@acme.com"},
    )
    assert resolve_entities(records, identity(fuzzy_last_name(["last_name_prefix"]))).nunique() == 2
    assert resolve_entities(records, identity(fuzzy_last_name(["last_name_prefix", "email_domain"]))).nunique() == 1


def test_domain_key_is_missing_without_an_at_sign():
    records = frame({"ref": "a:1", "last_name": "Smith", "email": "acme.com"},
                    {"ref": "b:1", "last_name": "Smith", "email": "acme.com"})
    assert resolve_entities(records, identity(fuzzy_last_name(["email_domain"]))).nunique() == 2


def test_a_large_block_is_scored_like_small_ones():
    """Over 64 records in one block take the distinct-values path; each family of spellings is one cluster."""
    families = {"Lindqvist": ["Lindqvist", "Lindquist", "Lindkvist"], "Okonkwo": ["Okonkwo", "Okonkwoo"],
                "Bergstrom": ["Bergstrom", "Bergström", "Bergstrum"], "Fitzgerald": ["Fitzgerald", "Fitzgerrald"]}
    rows, truth = [], []
    for family, spellings in families.items():
        for k in range(20):
            rows.append({"ref": f"t:{family}{k:02d}", "last_name": spellings[k % len(spellings)], "team": "all"})
            truth.append(family)
    records = frame(*rows)
    rule = fuzzy_last_name(["team"], threshold=0.9)
    result = resolve_entities(records, identity(rule, max_cluster_size=50))
    assert pairwise_precision_recall(result, pd.Series(truth, index=records.index)) == (1.0, 1.0)



def test_a_block_too_large_is_split_by_a_further_key_and_what_is_left_is_counted():
    """One team of 80: too large, so split by the fuzzy field's initial (four parts of 20, each compared whole);
    with a limit of 19 the parts are split again by its prefix, which leaves each family whole and still too
    large: nothing in them is compared, and the report says so."""
    families = {"Lindqvist": ["Lindqvist", "Lindquist"], "Okonkwo": ["Okonkwo", "Okonkwoo"],
                "Bergstrom": ["Bergstrom", "Bergstrum"], "Fitzgerald": ["Fitzgerald", "Fitzgerrald"]}
    rows = [{"ref": f"t:{family}{k:02d}", "last_name": spellings[k % 2], "team": "all"}
            for family, spellings in families.items() for k in range(20)]
    truth = pd.Series([row["last_name"][:3] for row in rows])
    records = frame(*rows)
    rule = identity(fuzzy_last_name(["team"], threshold=0.9), max_cluster_size=50)

    split = resolve_entities(records, rule, max_block_size=79)
    assert pairwise_precision_recall(split, truth.set_axis(records.index)) == (1.0, 1.0)
    report = split.attrs["resolution"]
    assert report["skipped"] == []
    [entry] = report["split"]
    assert entry["rule"] == "similar_last_name" and entry["key"] == "team" and entry["size"] == 80
    assert entry["split_by"] == ["last_name_initial"] and entry["records_not_compared"] == 0
    assert entry["pairs_not_compared"] == 80 * 79 // 2 - 4 * (20 * 19 // 2)  # the pairs across families

    left_out = resolve_entities(records, rule, max_block_size=19)
    assert left_out.nunique() == len(records)
    [entry] = left_out.attrs["resolution"]["skipped"]
    assert entry["split_by"] == ["last_name_initial", "last_name_prefix"] and entry["records_not_compared"] == 80
    assert entry["pairs_not_compared"] == 80 * 79 // 2 and entry["reason"] == "block too large"


def test_a_fuzzy_rule_without_keys_blocks_on_its_first_fields_prefix():
    records = frame({"ref": "a:1", "last_name": "Smith"}, {"ref": "b:1", "last_name": "Smithe"},
                    {"ref": "c:1", "last_name": "Smyth"})
    result = resolve_entities(records, identity(fuzzy_last_name([])))
    assert groups(result, records) == partition(("a:1", "b:1"), ("c:1",))


def test_explain_members_gives_the_fewest_links_each_with_its_strongest_reason():
    """Email links the first two (and would, with phone, link them again: only the stronger reason is given),
    phone and a similar name the third; a manual merge the fourth; the fifth is held by the last run only. A link
    the chain guard breaks is no reason: the record it would join is then alone."""
    phone_and_name = {"name": "phone_and_name", "conditions": [
        {"field": "phone", "method": "exact"}, {"field": "last_name", "method": "jaro_winkler", "threshold": 0.8}]}
    records = frame(
        {"ref": "salesforce:1", "email": "ann@x.com", "phone": "+1555", "last_name": "Smith"},
        {"ref": "hubspot:9", "email": "ann@x.com", "phone": "+1555", "last_name": "Smith"},
        {"ref": "zendesk:4", "email": "ann.new@y.com", "phone": "+1555", "last_name": "Smyth"},
        {"ref": "csv:7", "email": "a.smith@old.com", "last_name": "Smith-Jones"},
        {"ref": "erp:3", "email": "ann.smith@home.net", "last_name": "Smith"},
    )
    links = explain_members(records, identity(EMAIL, phone_and_name, merge=[["csv:7", "salesforce:1"]]))
    assert links[["left", "right", "linked_by"]].values.tolist() == [
        ["hubspot:9", "salesforce:1", "rule same_email"],
        ["hubspot:9", "zendesk:4", "rule phone_and_name"],
        ["csv:7", "salesforce:1", "manual merge"],
        ["csv:7", "erp:3", "together on the last run"],
    ]
    assert links["detail"].iloc[1] == "phone: '+1555' / '+1555'; last_name: 'smith' / 'smyth'"
    # a steward's accept joins like a merge; a rejected pair is never given as a link
    accepted = explain_members(records, identity(EMAIL, phone_and_name),
                               decisions=[("accept", "erp:3", "zendesk:4"), ("reject", "hubspot:9", "salesforce:1")])
    reasons = {frozenset((row.left, row.right)): row.linked_by for row in accepted.itertuples()}
    assert reasons[frozenset(("erp:3", "zendesk:4"))] == "accepted by a steward"
    assert frozenset(("hubspot:9", "salesforce:1")) not in reasons and len(accepted) == 4
    # a record no reason reaches is said to be alone (records that are not together, passed by mistake)
    alone = explain_members(records.iloc[[0, 4]], identity(EMAIL), decisions=[("reject", "erp:3", "salesforce:1")])
    assert alone["linked_by"].tolist() == ["nothing links it", "nothing links it"]
    renamed = records.assign(last_name=records["last_name"].where(records["_source"] != "erp", "Okonkwo"))
    guarded = explain_members(renamed, identity(EMAIL, phone_and_name, merge=[["csv:7", "salesforce:1"]]))
    assert guarded.iloc[-1][["left", "linked_by"]].tolist() == ["erp:3", "nothing links it"]


# ----------------------------------------------------------------------------- clusters and the guard


def test_matches_are_closed_transitively_when_nothing_contradicts():
    records = frame(
        {"ref": "salesforce:1", "email": "ann@x.com", "last_name": "Smith"},
        {"ref": "hubspot:1", "email": "ann@x.com", "phone": "+1555", "last_name": "Smith"},
        {"ref": "zendesk:1", "email": "ann.new@y.com", "phone": "+1555", "last_name": "Smith"},
    )
    result = resolve_entities(records, SANDBOX_RULES)
    assert result.nunique() == 1
    assert result.attrs["resolution"]["guarded_components"] == 0


def test_chain_through_a_middle_record_does_not_join_clearly_different_people():
    """A ~ B by phone and similar last name, B ~ C by email, but A (Smith) and C (Okafor) are different people.

    The email match is the stronger rule (listed first), so B stays with C and A stands alone.
    """
    records = frame(
        {"ref": "salesforce:A", "email": "ann@x.com", "phone": "+1555", "last_name": "Smith"},
        {"ref": "hubspot:B", "email": "shared@y.com", "phone": "+1555", "last_name": "Smyth"},
        {"ref": "zendesk:C", "email": "shared@y.com", "last_name": "Okafor"},
    )
    result = resolve_entities(records, SANDBOX_RULES)
    assert groups(result, records) == partition(("salesforce:A",), ("hubspot:B", "zendesk:C"))
    assert result.attrs["resolution"]["guarded_components"] == 1


def test_components_are_cut_back_to_max_cluster_size():
    records = frame(
        {"ref": "a:1", "email": "one@x.com", "phone": "+1"},
        {"ref": "a:2", "email": "one@x.com", "phone": "+2"},
        {"ref": "a:3", "email": "two@x.com", "phone": "+2"},
    )
    chained = resolve_entities(records, identity(EMAIL, PHONE, max_cluster_size=3))
    assert chained.nunique() == 1
    guarded = resolve_entities(records, identity(EMAIL, PHONE, max_cluster_size=2))
    assert groups(guarded, records) == partition(("a:1", "a:2"), ("a:3",))  # the email rule is listed first


def test_a_value_shared_by_too_many_refs_links_nobody(caplog):
    records = frame(*({"ref": f"a:{k}", "email": "info@acme.com"} for k in range(4)))
    with caplog.at_level(logging.WARNING):
        result = resolve_entities(records, identity(EMAIL, max_cluster_size=3))
    assert result.nunique() == 4
    assert "same_email" in caplog.text and "info@acme.com" not in caplog.text
    assert result.attrs["resolution"]["skipped"][0]["size"] == 4


def test_same_ref_is_always_one_entity_and_one_source_may_hold_a_person_twice():
    records = frame(
        {"ref": "salesforce:1", "email": "old@x.com"},
        {"ref": "salesforce:1", "email": "new@x.com"},  # the same record seen twice
        {"ref": "salesforce:2", "email": "other@x.com", "phone": "+1555", "last_name": "Smith"},
        {"ref": "salesforce:3", "email": "third@x.com", "phone": "+1555", "last_name": "Smith"},
    )
    result = resolve_entities(records, SANDBOX_RULES)
    assert groups(result, records) == partition(("salesforce:1",), ("salesforce:2", "salesforce:3"))
    assert result.iloc[0] == result.iloc[1]


def test_records_without_identity_values_are_singletons():
    records = frame({"ref": "a:1"}, {"ref": "b:1"}, {"ref": "c:1", "first_name": "Ann"})
    assert resolve_entities(records, SANDBOX_RULES).nunique() == 3


# ----------------------------------------------------------------------- given names in the guard


@pytest.mark.parametrize(
    ("left", "right"),
    [("alex", "alexander"), ("alexander", "alex"), ("chris", "christopher"), ("bob", "robert"),
     ("bill", "william"), ("liz", "elizabeth"), ("jim", "james"), ("kate", "katherine"), ("kate", "catherine"),
     ("bob", "rob"), ("j.", "james"), ("j", "john"), ("bob", "robert james"), ("mary", "mary ann"),
     ("peggy", "margaret"), ("sam", "samuel"), ("sam", "samantha"), (".", "james")],
)
def test_nicknames_prefixes_and_initials_are_compatible_given_names(left, right):
    assert given_names_compatible(left, right)


@pytest.mark.parametrize(
    ("left", "right"),
    [("jane", "john"), ("samuel", "samantha"), ("al", "alan"), ("jo", "john"), ("bob", "william"),
     ("j", "robert"), ("ann", "joanna")],
)
def test_different_given_names_are_not_compatible(left, right):
    assert not given_names_compatible(left, right)


def test_given_name_fields_are_recognised_by_name():
    assert is_given_name_field("first_name") and is_given_name_field("Contact_Given_Name")
    assert not is_given_name_field("last_name") and not is_given_name_field("company_name")


def alexander_harris(hubspot_email: str | None = None) -> pd.DataFrame:
    """The sandbox case: HubSpot matches Salesforce by phone and last name, Zendesk by email; HubSpot and
    Zendesk match nothing directly and carry "Alex" against "Alexander"."""
    return frame(
        {"ref": "salesforce:1", "first_name": "Alexander", "last_name": "Harris", "phone": "+12136270104",
         "email": "alexander.harris@vertexline.com"},
        {"ref": "zendesk:1", "first_name": "Alexander", "last_name": "Harris",
         "email": "alexander.harris@vertexline.com"},
        {"ref": "hubspot:1", "first_name": "Alex", "last_name": "Harris", "phone": "+12136270104",
         "email": hubspot_email},
    )


def test_a_nickname_does_not_split_records_linked_by_phone_and_email():
    records = alexander_harris()
    assert JaroWinkler.normalized_similarity("alex", "alexander") < 0.90  # what used to split them
    result = resolve_entities(records, SANDBOX_RULES)
    assert result.nunique() == 1
    assert result.attrs["resolution"]["guarded_components"] == 0


def test_the_entity_stays_the_same_after_write_back_fills_in_a_value():
    records = alexander_harris()
    first = resolve_entities(records, SANDBOX_RULES)
    written_back = alexander_harris(hubspot_email="alexander.harris@vertexline.com")
    again = resolve_entities(written_back, SANDBOX_RULES, build_crosswalk(records, first))
    assert again.equals(first)
    assert again.attrs["resolution"]["merged_ids"] == {} and again.attrs["resolution"]["split_ids"] == {}


def test_a_table_nickname_does_not_split_records_either():
    records = frame(
        {"ref": "salesforce:1", "first_name": "Robert", "last_name": "Okafor", "phone": "+1555", "email": "r@x.com"},
        {"ref": "zendesk:1", "first_name": "Robert", "last_name": "Okafor", "email": "r@x.com"},
        {"ref": "hubspot:1", "first_name": "Bob", "last_name": "Okafor", "phone": "+1555"},
    )
    assert resolve_entities(records, SANDBOX_RULES).nunique() == 1


def test_a_different_given_name_still_splits_even_when_it_shares_the_phone_with_the_core():
    """Family on one home phone (or colleagues on a switchboard) share a last name: the phone rule links
    Jane to John's CRM record, but John's desk record says "John", which is clear evidence. Precision first."""
    records = frame(
        {"ref": "salesforce:1", "first_name": "John", "last_name": "Smith", "phone": "+1555", "email": "j@x.com"},
        {"ref": "zendesk:1", "first_name": "John", "last_name": "Smith", "email": "j@x.com"},
        {"ref": "hubspot:1", "first_name": "Jane", "last_name": "Smith", "phone": "+1555"},
    )
    result = resolve_entities(records, SANDBOX_RULES)
    assert groups(result, records) == partition(("salesforce:1", "zendesk:1"), ("hubspot:1",))
    assert result.attrs["resolution"]["guarded_components"] == 1


def test_a_rebuilt_component_keeps_nickname_records_together():
    """A stale crosswalk member (now Okafor) makes the component suspect; the rebuild keeps Alex with
    Alexander and drops only the stale record."""
    records = pd.concat([alexander_harris(), frame(
        {"ref": "stripe:9", "first_name": "Kofi", "last_name": "Okafor", "email": "kofi@z.com"})],
        ignore_index=True)
    crosswalk = pd.DataFrame({"entity_id": "ent_alex", "_source": ["salesforce", "zendesk", "hubspot", "stripe"],
                              "_source_id": ["1", "1", "1", "9"]})
    result = resolve_entities(records, SANDBOX_RULES, crosswalk)
    assert groups(result, records) == partition(("salesforce:1", "zendesk:1", "hubspot:1"), ("stripe:9",))
    assert result.loc[0] == "ent_alex"
    assert result.attrs["resolution"]["guarded_components"] == 1


def test_nickname_awareness_applies_to_given_name_fields_only():
    """The same values in a field that is not a given name still contradict below the threshold."""
    def records(field: str) -> pd.DataFrame:
        return pd.DataFrame({
            "_source": ["a", "b", "c"], "_source_id": ["1", "1", "1"], "email": ["x@x.com", "x@x.com", None],
            "phone": ["+1555", None, "+1555"], field: ["Alexander", "Alexander", "Alex"],
        })

    def rules(field: str) -> dict:
        similar = {"name": "similar", "blocking": ["email"],
                   "conditions": [{"field": field, "method": "jaro_winkler", "threshold": 0.9}]}
        return identity(EMAIL, PHONE, similar)

    assert resolve_entities(records("given_name"), rules("given_name")).nunique() == 1
    assert resolve_entities(records("team"), rules("team")).nunique() == 2


# ------------------------------------------------------------------------------------------ stable ids


def people() -> pd.DataFrame:
    return frame(
        {"ref": "salesforce:1", "email": "ann@x.com"},
        {"ref": "hubspot:7", "email": "ann@x.com"},
        {"ref": "zendesk:3", "email": "bob@x.com"},
        {"ref": "stripe:9", "email": "cy@x.com"},
    )


def test_ids_are_identical_across_runs_and_row_orders():
    records = people()
    first = resolve_entities(records, SANDBOX_RULES)
    assert first.equals(resolve_entities(records, SANDBOX_RULES))
    shuffled = records.sample(frac=1, random_state=3)
    assert resolve_entities(shuffled, SANDBOX_RULES).reindex(records.index).equals(first)
    assert first.iloc[0] == entity_id_for("hubspot:7")  # the smallest member ref names a new cluster


def test_the_smallest_ref_is_compared_as_text_whatever_the_sources_look_like():
    def first_member_id(*refs: tuple[str, str]) -> str:
        records = pd.DataFrame({"_source": [r[0] for r in refs], "_source_id": [r[1] for r in refs],
                                **{f: "same@x.com" if f == "email" else None for f in FIELDS}})
        ids = resolve_entities(records, identity(EMAIL))
        assert ids.nunique() == 1
        return ids.iloc[0]

    # "hub-x:1" < "hub:2" since "-" < ":", though the source "hub" sorts before "hub-x"
    assert first_member_id(("hub", "2"), ("hub-x", "1")) == entity_id_for("hub-x:1")
    # a source holding ":" can interleave with another: "a:b:a" < "a:b:z"
    assert first_member_id(("a", "b:z"), ("a:b", "a")) == entity_id_for("a:b:a")


def test_adding_a_record_does_not_renumber_other_clusters():
    records = people()
    before = resolve_entities(records, SANDBOX_RULES)
    grown = pd.concat([records, frame({"ref": "asana:1", "email": "dee@x.com"}, index=[99])])
    after = resolve_entities(grown, SANDBOX_RULES)
    assert after.loc[records.index].equals(before)
    assert after.loc[99] not in set(before)


def test_crosswalk_keeps_ids_when_a_smaller_ref_joins():
    records = people()
    crosswalk = build_crosswalk(records, resolve_entities(records, SANDBOX_RULES))
    grown = pd.concat([records, frame({"ref": "asana:1", "email": "ann@x.com"}, index=[99])])
    without = resolve_entities(grown, SANDBOX_RULES)
    with_crosswalk = resolve_entities(grown, SANDBOX_RULES, crosswalk)
    assert without.loc[0] != crosswalk.loc[crosswalk["_source_id"] == "1", "entity_id"].item()  # renamed
    assert with_crosswalk.loc[[0, 1, 99]].nunique() == 1
    assert with_crosswalk.loc[0] == crosswalk.loc[crosswalk["_source_id"] == "1", "entity_id"].item()


def test_when_clusters_merge_the_smallest_earlier_id_wins_and_the_merge_is_reported():
    records = people()
    crosswalk = pd.DataFrame({"entity_id": ["ent_b", "ent_a", "ent_c"], "_source": ["salesforce", "hubspot", "zendesk"],
                              "_source_id": ["1", "7", "3"]})
    result = resolve_entities(records, SANDBOX_RULES, crosswalk)
    assert result.loc[0] == result.loc[1] == "ent_a"
    assert result.loc[2] == "ent_c"
    assert result.attrs["resolution"]["merged_ids"] == {"ent_b": "ent_a"}


def test_when_an_entity_splits_the_larger_part_keeps_its_id():
    """a:3 now carries a clearly different name, which breaks its crosswalk links (see the stickiness tests)."""
    records = frame(
        {"ref": "a:1", "email": "ann@x.com", "last_name": "Smith"},
        {"ref": "a:2", "email": "ann@x.com", "last_name": "Smith"},
        {"ref": "a:3", "email": "zed@x.com", "last_name": "Okafor"},
    )
    crosswalk = pd.DataFrame({"entity_id": ["ent_old"] * 3, "_source": ["a"] * 3, "_source_id": ["1", "2", "3"]})
    result = resolve_entities(records, SANDBOX_RULES, crosswalk)
    assert result.loc[0] == result.loc[1] == "ent_old"
    assert result.loc[2] == entity_id_for("a:3")
    assert result.attrs["resolution"]["split_ids"] == {"ent_old": [entity_id_for("a:3")]}


# ---------------------------------------------------------------------------- crosswalk stickiness


def crm_and_desk(desk_email: str = "ann@x.com", desk_last_name: str = "Smith") -> pd.DataFrame:
    """Ann in the CRM and in the support desk, plus Bob; the desk record's email and name can change."""
    return frame(
        {"ref": "salesforce:1", "email": "ann@x.com", "first_name": "Ann", "last_name": "Smith"},
        {"ref": "zendesk:1", "email": desk_email, "first_name": "Ann", "last_name": desk_last_name},
        {"ref": "hubspot:5", "email": "bob@x.com", "first_name": "Bob", "last_name": "Jones"},
    )


def last_run_crosswalk() -> pd.DataFrame:
    records = crm_and_desk()
    return build_crosswalk(records, resolve_entities(records, SANDBOX_RULES))


def with_split(*refs: str) -> dict:
    return {**SANDBOX_RULES, "manual": {"merge": [], "split": [list(refs)]}}


def test_a_record_whose_email_changed_stays_in_its_entity_only_with_a_crosswalk():
    crosswalk = last_run_crosswalk()
    ann = crosswalk.loc[crosswalk["_source_id"] == "1", "entity_id"].unique().item()
    records = crm_and_desk(desk_email="ann.new@y.com")

    kept = resolve_entities(records, SANDBOX_RULES, crosswalk)
    assert kept.loc[0] == kept.loc[1] == ann
    assert kept.attrs["resolution"]["sticky_links"] == 1
    assert kept.attrs["resolution"]["split_ids"] == {}

    without = resolve_entities(records, SANDBOX_RULES)
    assert groups(without, records) == partition(("salesforce:1",), ("zendesk:1",), ("hubspot:5",))
    assert without.attrs["resolution"]["sticky_links"] == 0


def test_records_a_rule_still_links_are_not_counted_as_sticky():
    result = resolve_entities(crm_and_desk(), SANDBOX_RULES, last_run_crosswalk())
    assert result.loc[0] == result.loc[1]
    assert result.attrs["resolution"]["sticky_links"] == 0


def test_a_manual_split_wins_over_the_crosswalk():
    records = crm_and_desk(desk_email="ann.new@y.com")
    result = resolve_entities(records, with_split("zendesk:1"), last_run_crosswalk())
    assert groups(result, records) == partition(("salesforce:1",), ("zendesk:1",), ("hubspot:5",))
    assert result.attrs["resolution"]["sticky_links"] == 0


def test_a_clearly_different_name_breaks_a_stale_crosswalk_link():
    """The desk record now describes someone else (a reused id): history must not merge two people."""
    records = crm_and_desk(desk_email="kofi@z.com", desk_last_name="Okafor")
    result = resolve_entities(records, SANDBOX_RULES, last_run_crosswalk())
    assert groups(result, records) == partition(("salesforce:1",), ("zendesk:1",), ("hubspot:5",))
    report = result.attrs["resolution"]
    assert report["guarded_components"] == 1
    assert report["sticky_links"] == 0


def test_only_the_stale_member_leaves_and_the_others_stay_together():
    """The stale record has the smallest ref, so linking the others only through it would lose them too."""
    crosswalk = pd.DataFrame({"entity_id": ["ent_ann"] * 3, "_source": ["hubspot", "salesforce", "zendesk"],
                              "_source_id": ["1", "2", "3"]})
    records = frame(
        {"ref": "hubspot:1", "email": "kofi@z.com", "last_name": "Okafor"},
        {"ref": "salesforce:2", "email": "ann@x.com", "last_name": "Smith"},
        {"ref": "zendesk:3", "email": "ann@new.com", "last_name": "Smith"},
    )
    result = resolve_entities(records, SANDBOX_RULES, crosswalk)
    assert groups(result, records) == partition(("hubspot:1",), ("salesforce:2", "zendesk:3"))
    assert result.loc[1] == "ent_ann"
    assert result.attrs["resolution"]["sticky_links"] == 1


def test_in_a_rebuild_a_rule_match_beats_a_crosswalk_link():
    """A~B from the last run, B~C by email now, A and C clearly different: the current email match wins."""
    crosswalk = pd.DataFrame({"entity_id": ["ent_ab"] * 2, "_source": ["salesforce", "hubspot"],
                              "_source_id": ["A", "B"]})
    records = frame(
        {"ref": "salesforce:A", "email": "ann@x.com", "last_name": "Smith"},
        {"ref": "hubspot:B", "email": "shared@y.com", "last_name": "Smyth"},
        {"ref": "zendesk:C", "email": "shared@y.com", "last_name": "Okafor"},
    )
    result = resolve_entities(records, SANDBOX_RULES, crosswalk)
    assert groups(result, records) == partition(("salesforce:A",), ("hubspot:B", "zendesk:C"))


def test_the_size_guard_still_cuts_an_entity_held_by_the_crosswalk():
    refs = [f"a:{k}" for k in range(5)]
    crosswalk = pd.DataFrame({"entity_id": "ent_big", "_source": "a", "_source_id": [r[2:] for r in refs]})
    records = frame(*({"ref": ref} for ref in refs))
    result = resolve_entities(records, identity(EMAIL, max_cluster_size=3), crosswalk)
    assert result.value_counts().max() == 3
    assert result.attrs["resolution"]["guarded_components"] == 1


def test_sticky_ids_are_stable_across_runs_and_row_orders():
    records = crm_and_desk(desk_email="ann.new@y.com")
    first = resolve_entities(records, SANDBOX_RULES, last_run_crosswalk())
    again = resolve_entities(records, SANDBOX_RULES, build_crosswalk(records, first))
    assert again.equals(first)
    assert again.attrs["resolution"]["sticky_links"] == 1
    shuffled = records.sample(frac=1, random_state=5)
    assert resolve_entities(shuffled, SANDBOX_RULES, last_run_crosswalk()).reindex(records.index).equals(first)


def test_build_crosswalk_lists_each_ref_once():
    records = pd.concat([people(), people().iloc[[0]]])
    result = resolve_entities(records, SANDBOX_RULES)
    crosswalk = build_crosswalk(records, result)
    assert list(crosswalk.columns) == ["entity_id", "_source", "_source_id"]
    assert len(crosswalk) == 4
    assert crosswalk["entity_id"].nunique() == 3


# ------------------------------------------------------------------------------------- manual overrides


def test_manual_merge_joins_and_manual_split_separates():
    records = people()
    result = resolve_entities(records, identity(EMAIL, merge=[["zendesk:3", "stripe:9"]], split=[["hubspot:7"]]))
    assert groups(result, records) == partition(("salesforce:1",), ("hubspot:7",), ("zendesk:3", "stripe:9"))


def test_manual_merge_is_not_capped_by_max_cluster_size():
    records = people()
    merge = [["salesforce:1", "zendesk:3", "stripe:9"]]
    assert resolve_entities(records, identity(EMAIL, max_cluster_size=2, merge=merge)).nunique() == 1


def test_unknown_refs_in_overrides_are_reported(caplog):
    with caplog.at_level(logging.WARNING):
        result = resolve_entities(people(), identity(EMAIL, merge=[["zendesk:3", "ghost:1"]], split=[["ghost:2"]]))
    assert result.attrs["resolution"]["unknown_refs"] == ["ghost:2", "ghost:1"]
    assert "ghost:1" in caplog.text and "ghost:2" in caplog.text


def test_a_ref_both_merged_and_split_is_an_error():
    with pytest.raises(ValueError, match="zendesk:3"):
        resolve_entities(people(), identity(EMAIL, merge=[["zendesk:3", "stripe:9"]], split=[["zendesk:3"]]))


# ------------------------------------------------------------------------------------- shapes and errors


def test_empty_frame_gives_an_empty_series():
    result = resolve_entities(pd.DataFrame(columns=["_source", "_source_id", "email"]), identity(EMAIL))
    assert result.empty and result.name == "entity_id"


def test_result_is_aligned_with_a_non_default_index():
    records = frame(
        {"ref": "a:1", "email": "ann@x.com"},
        {"ref": "b:1", "email": "bob@x.com"},
        {"ref": "c:1", "email": "ann@x.com"},
        index=["z", "m", "a"],
    )
    result = resolve_entities(records, identity(EMAIL))
    assert list(result.index) == ["z", "m", "a"]
    assert result["z"] == result["a"] != result["m"]
    assert all(isinstance(value, str) for value in result)


def test_a_missing_field_names_the_rule_and_the_field():
    records = frame({"ref": "a:1", "email": "a@x.com"}).drop(columns=["phone"])
    with pytest.raises(ValueError, match=r"same_phone_similar_name.*'phone'"):
        resolve_entities(records, SANDBOX_RULES)


def test_records_need_a_source_and_a_source_id():
    with pytest.raises(ValueError, match="_source_id"):
        resolve_entities(frame({"ref": "a:1"}).drop(columns=["_source_id"]), identity(EMAIL))
    records = frame({"ref": "a:1"}, {"ref": "b:1"})
    records.loc[1, "_source_id"] = None
    with pytest.raises(ValueError, match="1 row"):
        resolve_entities(records, identity(EMAIL))
    for blank in ("", " \t", "\u3000", "\x1f"):  # whitespace as Python's str.strip() sees it
        records.loc[1, "_source_id"] = blank
        with pytest.raises(ValueError, match="1 row"):
            resolve_entities(records, identity(EMAIL))
    records.loc[1, "_source_id"] = "\u200b"  # a zero-width space is no whitespace to Python: a usable id
    assert len(resolve_entities(records, identity(EMAIL))) == 2


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"field": "email", "method": "soundalike"}, "unknown method 'soundalike'"),
        ({"field": "email", "method": "jaro_winkler", "threshold": 1.5}, "threshold in"),
        ({"field": "email", "method": "levenshtein"}, "threshold in"),
    ],
)
def test_bad_conditions_name_the_rule(condition, message):
    with pytest.raises(ValueError, match=rf"'broken'.*{message}"):
        resolve_entities(people(), identity({"name": "broken", "conditions": [condition]}))


def test_an_unknown_blocking_key_names_the_rule():
    rule = fuzzy_last_name(["last_name_initials"])
    with pytest.raises(ValueError, match=r"'similar_last_name'.*last_name_initials"):
        resolve_entities(people(), identity(rule))


# ------------------------------------------------------------------------------------------ metrics


def test_pairwise_precision_and_recall():
    truth = pd.Series(["p", "p", "p", "q", "q"], index=list("abcde"))
    predicted = pd.Series([1, 1, 2, 2, 3], index=list("abcde"))
    # predicted pairs: ab, cd -> one right (ab); true pairs: ab, ac, bc, de
    assert pairwise_precision_recall(predicted, truth) == (0.5, 0.25)
    assert pairwise_precision_recall(truth.sample(frac=1, random_state=1), truth) == (1.0, 1.0)


def test_precision_recall_treats_missing_labels_as_singletons_and_checks_the_index():
    truth = pd.Series(["p", "p", None, None], index=range(4))
    assert pairwise_precision_recall(pd.Series([1, 1, 2, 3]), truth) == (1.0, 1.0)
    assert pairwise_precision_recall(pd.Series([1, 1, 2, 2]), truth) == (0.5, 1.0)
    with pytest.raises(ValueError, match="same index"):
        pairwise_precision_recall(pd.Series([1, 2]), truth)


def test_precision_recall_is_near_linear_on_many_records():
    labels = pd.Series(np.arange(200_000) // 2)
    assert pairwise_precision_recall(labels, labels) == (1.0, 1.0)


def test_a_whole_name_in_the_last_name_field_is_no_contradiction_to_the_chain_guard():
    """A tool that keeps "Frank Jones" in its last-name field still describes the Frank Jones other tools split."""
    records = pd.DataFrame({
        "_source": ["crm", "crm", "desk"], "_source_id": ["a", "b", "c"],
        "first_name": ["Frank", None, "Frank"], "last_name": ["Jones", "Frank Jones", "Jones"],
        "email": ["f@x.io", "f@x.io", "frank@y.io"], "phone": ["+1555", None, "+1555"],
    })
    rules = {"rules": [
        {"name": "same_email", "conditions": [{"field": "email", "method": "exact"}]},
        {"name": "same_phone", "blocking": ["phone"], "conditions": [
            {"field": "phone", "method": "exact"}, {"field": "last_name", "method": "jaro_winkler", "threshold": 0.88}]},
    ]}
    assert resolve_entities(records, rules).nunique() == 1
    other = records.assign(last_name=["Jones", "Frank Jonas", "Jones"])  # a different last name still contradicts
    assert resolve_entities(other, rules).nunique() == 2
