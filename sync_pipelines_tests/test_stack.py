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
    assert set(stack.tools) == {"salesforce", "hubspot", "zendesk", "asana", "stripe", "legacy_erp", "slack"}
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
         "destinations[3].entity", "tasks"),
    ],
)
def test_mistakes_name_file_key_path_and_allowed_values(tmp_path, mutate, path, allowed):
    file = _write(tmp_path, mutate)
    with pytest.raises(StackError) as info:
        load_stack(file)
    message = str(info.value)
    assert str(file) in message and f"at {path}:" in message and allowed in message


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
