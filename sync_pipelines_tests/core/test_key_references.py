"""References by a matching key (issue 13, item 3): the one golden record holding the key, or none with a reason;
an id reference to the same entity wins; the stack refuses a key reference naming what does not exist; a stream
can read another stream of its tool, keyed by a transform of its key, skipping rows without one."""

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sync_pipelines.core.normalize import apply_transforms, map_records
from sync_pipelines.core.references import REFERENCE_COLUMNS, resolve_key_references
from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack

MATCHED = {"company_name": ("companies", "name_key", ["name_key"]),
           "email": ("companies", "domain", ["email_domain"])}
# golden companies and the keys their members hold: "twin" is held by two of them
HELD = pd.DataFrame({"entity_id": ["G1", "G1", "G2", "G3", "G2"],
                     "key": ["acme", "acme", "twin", "twin", "twin.example"]})


def _keys_of(entity, by, keys):
    assert entity == "companies" and by in ("name_key", "domain")
    return HELD[HELD["key"].isin(list(keys))]


def _winners(*rows):
    return pd.DataFrame(rows, columns=["entity_id", "field", "tool", "value"])


def _id_links(*rows):
    return pd.DataFrame([dict(zip(["entity_id", "field", "referenced_entity", "referenced_id", "tool", "source_id",
                                   "via"], row)) for row in rows], columns=REFERENCE_COLUMNS)


def test_a_key_held_by_one_golden_record_points_at_it_and_a_missing_or_ambiguous_one_at_nothing():
    links = resolve_key_references(_winners(
        ("a", "company_name", "legacy_erp", "Acme, Inc."),
        ("b", "company_name", "legacy_erp", "Twin GmbH"),
        ("c", "company_name", "legacy_erp", "Nobody Ltd"),
        ("d", "company_name", "legacy_erp", None),  # no value: no reference at all
        ("e", "email", "hubspot", "Ann@Twin.Example"),
        ("f", "company_name", "legacy_erp", "  "),  # a value that makes no key
    ), _keys_of, MATCHED, _id_links()).set_index("entity_id")
    assert list(links.index) == ["a", "b", "c", "e", "f"]
    assert links.loc["a", ["referenced_id", "source_id", "via", "key_points_at"]].tolist() == ["G1", "acme", "key",
                                                                                               "G1"]
    assert pd.isna(links.loc["a", "unresolved_because"])
    assert pd.isna(links.loc["b", "referenced_id"]) and links.loc["b", "via"] == "unresolved"
    assert links.loc["b", "unresolved_because"] == "ambiguous key: 2 golden records hold it"
    assert pd.isna(links.loc["c", "referenced_id"]) and links.loc["c", "unresolved_because"] == \
        "no record holds the key"
    assert links.loc["e", ["referenced_id", "source_id"]].tolist() == ["G2", "twin.example"]  # via email_domain
    assert links.loc["f", "unresolved_because"] == "the value gives no key"


def test_an_id_reference_to_the_same_entity_wins_and_the_key_s_finding_stays_for_audit():
    winners = _winners(("a", "company_name", "hubspot", "Acme Inc"), ("b", "company_name", "hubspot", "Twin"),
                       ("c", "company_name", "hubspot", "Acme"))
    ids = _id_links(("a", "company_source_id", "companies", "G9", "salesforce", "001", "golden value"),
                    ("b", "company_source_id", "companies", "G3", "salesforce", "002", "golden value"),
                    # an id reference that did not resolve does not win
                    ("c", "company_source_id", "companies", None, "salesforce", "003", "unresolved"))
    links = resolve_key_references(winners, _keys_of, MATCHED, ids).set_index("entity_id")
    assert links.loc["a", ["referenced_id", "via", "key_points_at"]].tolist() == ["G9", "id reference", "G1"]
    assert links.loc["b", ["referenced_id", "via"]].tolist() == ["G3", "id reference"]
    assert pd.isna(links.loc["b", "key_points_at"]) and pd.isna(links.loc["b", "unresolved_because"])
    assert links.loc["c", ["referenced_id", "via"]].tolist() == ["G1", "key"]


def test_email_domain_is_the_address_s_organisation():
    got = apply_transforms(pd.Series(["Ann@Acme.COM ", None, "no-at-sign", "a@b@c.io"], dtype=object),
                           ["trim", "email_domain"])
    assert got.tolist()[0] == "acme.com" and got.isna().tolist()[1:3] == [True, True] and got.tolist()[3] == "c.io"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    mutate(raw["entities"]["contacts"]["fields"])
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("reference, at, problem", [
    ({"entity": "companys", "by": "name_key"}, "entities.contacts.fields.company_name.references.entity",
     "unknown entity: 'companys'"),
    ({"entity": "companies", "by": "namekey"}, "entities.contacts.fields.company_name.references.by",
     "unknown field of entity 'companies': 'namekey'"),
    ({"entity": "companies", "by": "name_key", "via": "name_kee"},
     "entities.contacts.fields.company_name.references.via[0]", "found 'name_kee'; allowed: 'trim'"),

])
def test_a_key_reference_to_what_does_not_exist_fails_at_load_at_its_key(tmp_path, reference, at, problem):
    file = _write(tmp_path, lambda fields: fields["company_name"].update(references=reference))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert [(path, problem in what) for path, what in info.value.problems] == [(at, True)], info.value.problems


def test_a_stream_reads_another_keyed_by_a_transform_and_skips_rows_without_a_key():
    stack = load_stack()
    stream = stack.tools["legacy_erp"].streams["companies"]
    assert stream.reads == "customers"
    rows, rejects = map_records(
        [{"customer_no": "C1", "company": "Acme, Inc.", "modified": "2026-11-01 10:00:00"},
         {"customer_no": "C2", "company": "ACME Inc", "modified": "2026-11-02 10:00:00"},
         {"customer_no": "C3", "company": None, "modified": "2026-11-02 10:00:00"},
         {"customer_no": "C4", "company": "Blue Harbor GmbH", "modified": "2026-11-01 10:00:00"}],
        tool="legacy_erp", stream_name="companies", stream=stream, entity=stack.entities["companies"],
        extracted_at=datetime.now(timezone.utc))
    assert rejects.empty  # a customer naming no company is no company record, and nothing to fix
    assert rows.set_index("_source_id")["name"].to_dict() == {"acme": "ACME Inc", "blue harbor": "Blue Harbor GmbH"}
