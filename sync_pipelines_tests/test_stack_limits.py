"""Stack files that YAML accepts but that would never finish loading, or that load and fail only when a sync runs."""

from pathlib import Path

import pytest
import yaml

from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack


def _sandbox() -> dict:
    return yaml.safe_load(DEFAULT_STACK.read_text())


def _refused(tmp_path: Path, text: str) -> str:
    file = tmp_path / "stack.yaml"
    file.write_text(text)
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert str(info.value).startswith(f"{file}: at ")
    return str(info.value)


def test_aliases_expanding_to_a_million_values_are_refused(tmp_path):
    levels = "abcdef"
    lines = [f"a: &a [{', '.join(['x'] * 10)}]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip(levels, levels[1:])]
    message = _refused(tmp_path, "\n".join(lines) + "\n")
    assert "refused at line 5, column 4: aliases expand this value to more than 100000 values" in message


def test_an_alias_inside_the_value_it_names_is_refused(tmp_path):
    assert "an alias inside the value it names" in _refused(tmp_path, "name: &a [*a]\n")


def test_small_aliases_and_merge_keys_still_load(tmp_path):
    raw = DEFAULT_STACK.read_text().replace(
        "  salesforce:\n    kind: salesforce\n", "  salesforce: &crm\n    kind: salesforce\n", 1,
    ).replace("  hubspot:\n    kind: hubspot\n", "  hubspot:\n    <<: *crm\n    kind: hubspot\n", 1)
    file = tmp_path / "stack.yaml"
    file.write_text(raw)
    assert load_stack(file).tools["hubspot"].owner == "team:marketing"  # its own keys win over the merged ones


def test_deep_nesting_is_a_stack_error(tmp_path):
    message = _refused(tmp_path, "name: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert "refused at line 1, column 106: nested deeper than 100 levels" in message


def test_an_integer_too_long_for_python_is_a_stack_error_without_its_digits(tmp_path):
    message = _refused(tmp_path, "tools:\n  s:\n    rate_limit: {requests: " + "7" * 5000 + "}\n")
    assert "an integer of 5000 characters; allowed: at most 4300 digits" in message and "7777" not in message


def test_a_file_over_a_mebibyte_is_refused_before_parsing(tmp_path):
    message = _refused(tmp_path, DEFAULT_STACK.read_text() + "# padding\n" * 120_000)
    assert "at <top>: larger than 1 MiB; allowed: at most 1048576 bytes" in message


def test_a_duplicate_key_among_many_is_still_refused(tmp_path):
    keys = "".join(f"  k{i}: {i}\n" for i in range(20_000))
    assert "line 20003, column 3: duplicate key 'k7'" in _refused(tmp_path, f"name: x\nentities:\n{keys}  k7: 0\n")


def _with_csv_stream(name: str):
    def mutate(raw: dict) -> None:
        streams = raw["tools"]["legacy_erp"]["streams"]
        streams[name] = dict(streams["customers"])
    return mutate


def _renamed_tool(name: str):
    def mutate(raw: dict) -> None:
        raw["tools"][name] = raw["tools"].pop("slack")
    return mutate


def _with_entity_field(name: str):
    def mutate(raw: dict) -> None:
        raw["entities"]["contacts"]["fields"][name] = {"type": "string"}
    return mutate


def _second_erp(tool: str, stream: str):
    def mutate(raw: dict) -> None:
        raw["tools"][tool] = {**raw["tools"]["legacy_erp"], "streams": {stream: raw["tools"]["legacy_erp"]["streams"]
                                                                        ["customers"]}}
    return mutate


@pytest.mark.parametrize(
    "mutate, path, problem",
    [
        (_with_csv_stream("a;drop"), "tools.legacy_erp.streams.a;drop", "found name 'a;drop'; allowed: names "
                                                                        "matching ^[A-Za-z][A-Za-z0-9_]*"),
        (_with_csv_stream("../x"), "tools.legacy_erp.streams.../x", "found name '../x'"),
        (_with_csv_stream("a-b"), "tools.legacy_erp.streams.a-b", "found name 'a-b'"),
        (_renamed_tool("hub spot"), "tools.hub spot", "allowed: names matching ^[a-z][a-z0-9_]*$ of at most 40"),
        (_renamed_tool("a-b"), "tools.a-b", "found name 'a-b'"),
        (_renamed_tool("alerts_" + "x" * 40), "tools.alerts_" + "x" * 40, "of at most 40 characters"),
        (_with_entity_field("_source_id"), "entities.contacts.fields._source_id", "a leading _ is kept for the "
                                                                                  "pipeline's own columns"),
        (_with_entity_field("_source"), "entities.contacts.fields._source", "found name '_source'"),
        (_with_entity_field("first name"), "entities.contacts.fields.first name", "found name 'first name'"),
        (lambda r: r["entities"].update({"a;drop": {"fields": {}}}), "entities.a;drop", "found name 'a;drop'"),
        (lambda r: r["integrations"][0].update(name="crm-contacts"), "integrations[0].name", "'crm-contacts'"),
        (lambda r: r["actions"][1].update(name="onboarding task"), "actions[1].name", "'onboarding task'"),
        (_second_erp("legacy", "erp_customers"), "tools.legacy.streams.erp_customers",
         "lands in table 'stg_legacy_erp_customers' like tools.legacy_erp.streams.customers"),
        (_with_csv_stream("Customers"), "tools.legacy_erp.streams.Customers",
         "like tools.legacy_erp.streams.customers; allowed: one table per stream"),
        (_second_erp("e" * 20, "c" * 39), f"tools.{'e' * 20}.streams.{'c' * 39}",
         "of 64 characters; allowed: at most 63"),
        # the Salesforce connector puts the key in the upsert's URL path: `../../x` would PATCH another path
        (lambda r: r["destinations"][0].update(key="../../x"), "destinations[0].key",
         "found name '../../x'; allowed: names matching ^[A-Za-z][A-Za-z0-9_]*$ of at most 63 characters"),
        (lambda r: r["destinations"][0].update(key="Email?x=1"), "destinations[0].key", "found name 'Email?x=1'"),
        (lambda r: r["destinations"][1].update(key="e mail"), "destinations[1].key", "found name 'e mail'"),
        (lambda r: r["destinations"][2].update(key=""), "destinations[2].key", "found name ''"),
    ],
)
def test_names_that_would_fail_at_sync_are_refused_at_load(tmp_path, mutate, path, problem):
    raw = _sandbox()
    mutate(raw)
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert str(info.value).startswith(f"{file}: at {path}: ") and problem in str(info.value)


def test_schema_qualified_sql_tables_and_salesforce_objects_are_valid_stream_names(tmp_path):
    raw = _sandbox()
    _with_csv_stream("erp.customers_2024")(raw)
    _with_csv_stream("Custom_Object__c")(raw)
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw))
    assert {"erp.customers_2024", "Custom_Object__c"} <= set(load_stack(file).tools["legacy_erp"].streams)


def test_a_destination_key_may_be_any_field_name_of_the_tool(tmp_path):
    raw = _sandbox()
    raw["destinations"][0]["key"] = "acme__Customer_Number_In_The_Old_Billing_System__c"  # namespaced: 51 characters
    raw["destinations"][1]["key"] = "hs_object_id"
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw))
    keys = [d.key for d in load_stack(file).destinations]
    assert keys[:2] == ["acme__Customer_Number_In_The_Old_Billing_System__c", "hs_object_id"]
    assert keys[2:] == [d["key"] for d in _sandbox()["destinations"][2:]]


def _with_entity(name: str):
    def mutate(raw: dict) -> None:
        raw["entities"][name] = {"fields": {"name": {"type": "string"}}}
    return mutate


def _again(kind: str, i: int, **changes):
    def mutate(raw: dict) -> None:
        raw[kind].append({**raw[kind][i], **changes})
    return mutate


@pytest.mark.parametrize(
    "mutate, path, problem",
    [
        (_with_entity("changes_contacts"), "entities.changes_contacts",
         "its table 'staged_changes_contacts' is also a table of entities.contacts; allowed: entities whose tables"),
        (_with_entity("failures_contacts"), "entities.failures_contacts",
         "its table 'golden_failures_contacts' is also a table of entities.contacts"),
        (_with_entity_field("email__changed_at"), "entities.contacts.fields.email__changed_at",
         "found name 'email__changed_at'; allowed: field names not ending with __changed_at or __golden"),
        (_with_entity_field("email__golden"), "entities.contacts.fields.email__golden", "found name 'email__golden'"),
        (_with_entity_field("last_name_prefix"), "identity.contacts.rules[2].blocking[0]",
         "blocking key 'last_name_prefix' is both field 'last_name_prefix' and the _prefix of field 'last_name'"),
        (lambda r: r["actions"][0].update(name="invoices"), "actions[0].name",
         "builds Dagster asset key 'stripe/invoices' like tools.stripe.streams.invoices; allowed: one asset per key"),
        (_again("destinations", 1), f"destinations[{len(_sandbox()['destinations'])}]",
         "builds Dagster asset key 'hubspot/contacts_writeback' like destinations[1]"),
        (_again("actions", 1, name="invoice_for_closed_won"), f"actions[{len(_sandbox()['actions'])}].name",
         "found name 'invoice_for_closed_won' again (first at actions[0].name); allowed: one of actions per name"),
        (_again("integrations", 0), "integrations[4].name",
         "found name 'crm_contacts_everywhere' again (first at integrations[0].name)"),
    ],
)
def test_names_that_collide_at_sync_are_refused_at_load(tmp_path, mutate, path, problem):
    test_names_that_would_fail_at_sync_are_refused_at_load(tmp_path, mutate, path, problem)


def test_an_entity_table_name_over_63_characters_is_refused(tmp_path, monkeypatch):
    import sync_pipelines.stack as stack_module

    monkeypatch.setattr(stack_module, "MAX_NAME", 60)  # at 40, the longest table (golden_failures_<40>) has 56
    name = "e" * 49
    test_names_that_would_fail_at_sync_are_refused_at_load(
        tmp_path, _with_entity(name), f"entities.{name}",
        f"its table 'staged_changes_{name}' has 64 characters; allowed: at most 63")


def test_a_field_named_like_a_derived_blocking_key_loads_while_no_rule_blocks_on_it(tmp_path):
    raw = _sandbox()
    _with_entity_field("last_name_prefix")(raw)
    raw["identity"]["contacts"]["rules"][2]["blocking"] = ["phone"]
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw))
    assert "last_name_prefix" in load_stack(file).entities["contacts"].fields


def test_asset_keys_are_the_keys_the_definitions_build():
    from sync_pipelines.definitions import build_definitions
    from sync_pipelines.stack import asset_keys

    stack = load_stack(DEFAULT_STACK)
    built = {tuple(key.path) for key in build_definitions(stack).resolve_asset_graph().get_all_asset_keys()}
    assert built == {key for key, _ in asset_keys(stack)}
