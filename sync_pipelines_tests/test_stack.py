from pathlib import Path

import pytest
import yaml

from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    mutate(raw)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sandbox_stack_loads_with_every_tool_and_stream():
    stack = load_stack()
    assert set(stack.tools) == {"salesforce", "hubspot", "zendesk", "asana", "stripe", "legacy_erp", "slack",
                                 "jira", "mailchimp"}
    assert ("salesforce", "Contact") in {(t, s) for t, _, s, _ in stack.streams()}
    assert stack.tools["zendesk"].credentials == {"email": "ZENDESK_EMAIL", "api_token": "ZENDESK_API_TOKEN"}


def test_env_interpolation_with_default(monkeypatch):
    monkeypatch.setenv("SANDBOX_URL", "http://example.test:9")
    assert load_stack().tools["hubspot"].base_url == "http://example.test:9/hubspot"
    monkeypatch.delenv("SANDBOX_URL")
    assert load_stack().tools["hubspot"].base_url == "http://127.0.0.1:8765/hubspot"


def test_sync_stack_env_selects_another_file(tmp_path, monkeypatch):
    path = _write(tmp_path, lambda raw: raw.update(name="acme"))
    monkeypatch.setenv("SYNC_STACK", str(path))
    assert load_stack().name == "acme"


@pytest.mark.parametrize(
    "mutate, path, allowed",
    [
        (lambda r: r["tools"]["hubspot"].update(kind="hubspott"), "tools.hubspot.kind", "'salesforce'"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][1].update(to="firstname"),
         "tools.hubspot.streams.contacts.fields[1].to", "first_name"),
        (lambda r: r["tools"]["zendesk"].update(ratelimit=3), "tools.zendesk.ratelimit", "rate_limit"),
        (lambda r: r["survivorship"]["contacts"].update(source_of_truth="sap"),
         "survivorship.contacts.source_of_truth", "salesforce"),
        (lambda r: r["tools"]["salesforce"]["streams"]["Contact"]["fields"][0].update(transforms=["lowr"]),
         "tools.salesforce.streams.Contact.fields[0].transforms[0]", "'lower'"),
        (lambda r: r["destinations"].append({"tool": "asana", "entity": "contacts", "stream": "x", "key": "k"}),
         "destinations[6].entity", "tasks"),
        (lambda r: r.update(timezone="Europe/Pariss"), "timezone", "IANA name"),
        (lambda r: r.update(start_date="2026-13-01"), "start_date", "YYYY-MM-DD"),
        (lambda r: r["nightly"].update(cron="0 25 * * *"), "nightly.cron", "hour 25 is out of range 0-23"),
        (lambda r: r["integrations"][0]["trigger"].update(schedule="every night"),
         "integrations[0].trigger.schedule", "5 fields"),
        (lambda r: r["actions"][0]["create"].update(stream="invoicez"), "actions[0].create.stream",
         "customers, invoices"),
        (lambda r: r["destinations"][1].update(stream="contactz"), "destinations[1].stream", "companies, contacts"),
        (lambda r: r["destinations"][1].update(stream="companies"), "destinations[1].stream", "feeds 'companies'"),
        (lambda r: r["quality"]["contacts"]["expectations"].append({"expect": "not_nul", "column": "email"}),
         "quality.contacts.expectations[5]", "not_null"),
        (lambda r: r["quality"]["contacts"]["expectations"].append(
            {"expect": "match_regex", "column": "email", "regex": "(["}),
         "quality.contacts.expectations[5]", "not a valid regular expression"),
        (lambda r: r["quality"]["contacts"]["expectations"].append({"expect": "not_null", "column": "emial"}),
         "quality.contacts.expectations[5].column", "first_name"),
        (lambda r: r["quality"]["contacts"]["volume"].update(min_ratio=3.0), "quality.contacts.volume",
         "above max_ratio"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][0].update({"from": "properties..email"}),
         "tools.hubspot.streams.contacts.fields[0].from", "dotted path"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][0].update({"from": ""}),
         "tools.hubspot.streams.contacts.fields[0].from", "dotted path"),
        (lambda r: r["identity"]["contacts"]["rules"][1].update(blocking=["phoen"]),
         "identity.contacts.rules[1].blocking[0]", "_soundex"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][0].update(transform=["trim"]),
         "tools.hubspot.streams.contacts.fields[0].transform", "from, to, transforms"),
        (lambda r: r["tools"]["hubspot"]["streams"].update({"2024": {"bogus": 1}}),
         "tools.hubspot.streams.2024.entity", "Field required"),  # a key, not an index
        (lambda r: r["tools"]["zendesk"]["streams"].update(userz=r["tools"]["zendesk"]["streams"].pop("users")),
         "tools.zendesk.streams.userz", "tickets, users"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"].append(
            {"from": "properties.work_email", "to": "email"}),
         "tools.hubspot.streams.contacts.fields[8].to", "already mapped by fields[0]"),
        (lambda r: r["survivorship"]["contacts"].update(source_of_truth="slack"),
         "survivorship.contacts.source_of_truth", "no stream of 'contacts'"),
        (lambda r: (r["tools"]["zendesk"]["scopes"]["write"].append("tickets"),
                    r["destinations"].append({"tool": "zendesk", "entity": "tickets", "stream": "tickets",
                                              "key": "id"})),
         "destinations[6].stream", "a zendesk tool can write"),
        (lambda r: r["warehouse"].update(url="postgres ql://secret-pw@db"), "warehouse.url", "not a database URL"),
        (lambda r: r["survivorship"]["contacts"].update(groups=[["first_name", "lats_name"]]),
         "survivorship.contacts.groups[0][1]", "last_name"),
        (lambda r: r["survivorship"]["contacts"].update(groups=[["first_name", "last_name"], ["last_name", "phone"]]),
         "survivorship.contacts.groups[1][0]", "already in survivorship.contacts.groups[0]"),
        (lambda r: r["survivorship"]["contacts"].update(groups=[["first_name", "job_title"]]),
         "survivorship.contacts.groups[0]", "maps first_name but not job_title"),
        (lambda r: (r["tools"]["stripe"]["scopes"]["write"].append("contacts"),
                    r["destinations"].append({"tool": "stripe", "entity": "contacts", "stream": "customers",
                                              "key": "id", "on_delete": "archive"})),
         "destinations[6].on_delete", "cannot delete records"),
        (lambda r: r["survivorship"]["contacts"].update(groups=[["phone", "phone"]]),
         "survivorship.contacts.groups[0]", "two or more different fields"),
        (lambda r: r["destinations"][2].update(fields={"job_title": {"write": "never"}}),
         "destinations[2].fields.job_title", "maps and can write"),
        (lambda r: r["destinations"][1].update(fields={"phone": {"write": "sometimes"}}),
         "destinations[1].fields.phone.write", "'fill_if_empty'"),
        (lambda r: r["tools"]["asana"]["streams"]["tasks"].update(deletions={"scan": "ids", "every": "daily"}),
         "tools.asana.streams.tasks.deletions.every", "30m, 6h or 1d"),
    ],
)
def test_mistakes_name_file_key_path_and_allowed_values(tmp_path, mutate, path, allowed):
    file = _write(tmp_path, mutate)
    with pytest.raises(StackError) as info:
        load_stack(file)
    message = str(info.value)
    assert str(file) in message and f"at {path}:" in message and allowed in message
    assert "secret-pw" not in message


def test_a_secret_in_the_stack_file_is_refused_without_echoing_it(tmp_path):
    file = _write(tmp_path, lambda r: r["tools"]["zendesk"]["credentials"].update(api_token="s3cr3t-value"))
    with pytest.raises(StackError) as info:
        load_stack(file)
    assert "environment variable" in str(info.value) and "s3cr3t-value" not in str(info.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(StackError, match="file not found"):
        load_stack(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools: [unclosed")
    with pytest.raises(StackError, match="not valid YAML"):
        load_stack(bad)


def test_a_duplicate_key_is_refused_with_its_line(tmp_path):
    file = tmp_path / "stack.yaml"
    file.write_text("name: x\ntools:\n  hubspot:\n    streams:\n      contacts: {entity: contacts}\n"
                    "      contacts: {entity: companies}\n")
    with pytest.raises(StackError, match="line 6, column 7: duplicate key 'contacts'"):
        load_stack(file)


def test_yaml_errors_and_unknown_tool_keys_never_echo_a_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntools:\n  s:\n    credentials: {api_key: sk_live_51Hsecret\n")
    with pytest.raises(StackError, match="at line 5, column 1") as info:
        load_stack(bad)
    assert "sk_live" not in str(info.value)
    typo = _write(tmp_path, lambda r: r["tools"]["stripe"].update(credentails={"api_key": "sk_live_51Hsecret"}))
    with pytest.raises(StackError, match=r"at tools\.stripe\.credentails: unknown key") as info:
        load_stack(typo)
    assert "sk_live" not in str(info.value)


def test_an_unreadable_file_is_a_stack_error(tmp_path):
    with pytest.raises(StackError, match="cannot be read: Is a directory"):
        load_stack(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: x\ndescription: caf\xe9\n")
    with pytest.raises(StackError, match=r"not UTF-8 text \(line 2\)"):
        load_stack(latin1)


def test_an_unset_variable_without_default_names_the_variable_and_key(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_URL", raising=False)
    file = _write(tmp_path, lambda r: r["tools"]["hubspot"].update(base_url="${NO_SUCH_URL}/hubspot"))
    with pytest.raises(StackError, match=r"at tools\.hubspot\.base_url: environment variable NO_SUCH_URL is not set"):
        load_stack(file)
    monkeypatch.setenv("NO_SUCH_URL", "http://example.test")
    assert load_stack(file).tools["hubspot"].base_url == "http://example.test/hubspot"
