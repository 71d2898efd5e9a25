"""The name_key transform (legal forms from a data file), the equal_or_missing veto and rule-less identities."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from sync_pipelines.core.legal_forms import legal_forms, name_key, name_key_of
from sync_pipelines.resolve import resolve_entities
from sync_pipelines.stack import StackError, load_stack

SANDBOX_STACK = Path(__file__).resolve().parents[2] / "sync_pipelines" / "stacks" / "sandbox.yaml"


@pytest.mark.parametrize("name", ["Acme Inc.", "ACME, Inc", "Acme", "acme  corp", "Acme Pty Ltd", "Acme S.A.",
                                  "Acme GmbH & Co. KG", "Acme, L.L.C.", "Acme plc", "Acme Limited"])
def test_a_name_written_with_any_legal_form_has_one_key(name):
    assert name_key_of(name) == "acme"


@pytest.mark.parametrize("name, key", [("Acme Holdings", "acme holdings"), ("Acme Labs Inc", "acme labs"),
                                       ("Limited Ltd", "limited"), ("Inc", "inc"), ("Co-op Foods Co", "co op foods"),
                                       ("Müller AG", "müller"), ("  ", None), ("Acme 2 Inc", "acme 2")])
def test_only_legal_forms_ending_the_name_go_and_a_word_always_stays(name, key):
    assert name_key_of(name) == key


def test_the_forms_come_from_the_data_file(tmp_path):
    forms = tmp_path / "forms.txt"
    forms.write_text("# comment\nsprl\n\n", encoding="utf-8")
    assert legal_forms(forms) == frozenset({("sprl",)})
    assert name_key_of("Acme SPRL", legal_forms(forms)) == "acme"
    assert name_key_of("Acme Inc", legal_forms(forms)) == "acme inc"


def test_the_transform_keeps_missing_values_missing():
    keys = name_key(pd.Series(["Acme, Inc.", None, "Blue Harbor LLC"], dtype="str"))
    assert keys.tolist()[0] == "acme" and pd.isna(keys.tolist()[1]) and keys.tolist()[2] == "blue harbor"


RULES = {"rules": [
    {"name": "same_domain", "conditions": [{"field": "domain", "method": "exact"}]},
    {"name": "same_key", "conditions": [{"field": "key", "method": "exact"},
                                        {"field": "domain", "method": "equal_or_missing"}]},
]}


def _resolve(rows, rules=RULES):
    records = pd.DataFrame(rows, columns=["_source", "_source_id", "key", "domain"])
    return dict(zip(records["_source_id"], resolve_entities(records, rules)))


def test_a_name_match_between_different_domains_is_vetoed():
    ids = _resolve([("sf", "1", "acme", "acme.com"), ("hs", "2", "acme", "acme.com"),
                    ("hs", "3", "acme", "acme.de"), ("hs", "4", "acme", None)])
    assert ids["1"] == ids["2"] != ids["3"]


def test_a_record_without_the_veto_field_does_not_chain_two_records_it_vetoes():
    """4 has no domain, so it may join either; 1 and 3 never meet through it."""
    ids = _resolve([("sf", "1", "acme", "acme.com"), ("hs", "3", "acme", "acme.de"), ("hs", "4", "acme", None)])
    assert ids["1"] != ids["3"] and ids["4"] in (ids["1"], ids["3"])


def test_without_the_veto_the_same_key_merges_across_domains():
    unvetoed = {"rules": [RULES["rules"][0], {"name": "same_key", "conditions": [{"field": "key"}]}]}
    ids = _resolve([("sf", "1", "acme", "acme.com"), ("hs", "3", "acme", "acme.de")], unvetoed)
    assert ids["1"] == ids["3"]


def test_a_rule_of_vetoes_only_is_refused_by_the_resolver():
    with pytest.raises(ValueError, match="only equal_or_missing"):
        _resolve([("sf", "1", "acme", "acme.com")],
                 {"rules": [{"name": "veto", "conditions": [{"field": "domain", "method": "equal_or_missing"}]}]})


def test_no_rules_make_each_record_its_own_entity():
    ids = _resolve([("sf", "1", "acme", "acme.com"), ("sf", "2", "acme", "acme.com"), ("sf", "1", "acme", None)],
                   {"rules": []})
    assert len(set(ids.values())) == 2


def _stack_with(tmp_path, change) -> Path:
    raw = yaml.safe_load(SANDBOX_STACK.read_text())
    change(raw)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_stack_refuses_a_rule_of_vetoes_only_naming_its_key_path(tmp_path):
    def veto_only(raw):
        raw["identity"]["companies"]["rules"][1]["conditions"] = [{"field": "domain", "method": "equal_or_missing"}]
    with pytest.raises(StackError, match=r"identity\.companies\.rules\[1\]\.conditions: found only equal_or_missing"):
        load_stack(_stack_with(tmp_path, veto_only))


def test_the_stack_accepts_an_entity_of_no_rules(tmp_path):
    assert load_stack(_stack_with(tmp_path, lambda raw: None)).identity["deals"].rules == []
