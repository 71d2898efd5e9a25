"""Where ``${VAR}`` is expanded (issue 11, item 3): whoever edits the stack file must not get the process's secrets.

Only connection settings expand (warehouse.url, tools.<tool>.base_url and rate_limit); ``${...}`` anywhere else is
refused at load with its key path, and so is, anywhere, a variable that holds a tool's secret (the warehouse's URL
outside warehouse.url), never showing it."""

from pathlib import Path

import pytest
import yaml

from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack

SECRET = "sk_live_51Hsecret-never-shown"


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    mutate(raw)
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _refused(tmp_path: Path, mutate) -> str:
    with pytest.raises(StackError) as info:
        load_stack(_write(tmp_path, mutate))
    assert SECRET not in str(info.value) and "hunter2" not in str(info.value)
    return str(info.value).split(": at ", 1)[1]


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    for var in ("STRIPE_API_KEY", "SALESFORCE_ACCESS_TOKEN", "SLACK_WEBHOOK_URL", "ZENDESK_API_TOKEN",
                "HUBSPOT_WEBHOOK_SECRET", "ACME_CRM_TOKEN", "BILLING_API_KEY"):
        monkeypatch.setenv(var, SECRET)
    monkeypatch.setenv("SYNC_WAREHOUSE_URL", "postgresql+psycopg://sync:hunter2@db.internal:5432/sync")
    monkeypatch.setenv("SYNC_CELERY_BROKER", "redis://:hunter2@redis.internal:6379/0")
    monkeypatch.setenv("ACME_PROJECT", "1200000000000101")


def _action_field(value):
    return lambda r: r["actions"][1]["create"]["fields"].update(notes=value)


@pytest.mark.parametrize(
    "mutate, path",
    [
        (_action_field("${ACME_PROJECT}"), "actions[1].create.fields.notes"),
        (lambda r: r["actions"][1]["create"]["fields"].update(projects=["${ACME_PROJECT}"]),
         "actions[1].create.fields.projects[0]"),
        (lambda r: r["integrations"][0].update(purpose="Owned by ${USER}"), "integrations[0].purpose"),
        (lambda r: r["tools"]["hubspot"].update(description="${ACME_PROJECT:-x}"), "tools.hubspot.description"),
        (lambda r: r["tools"]["hubspot"]["streams"]["contacts"]["fields"][0].update(**{"from": "${ACME_PROJECT}"}),
         "tools.hubspot.streams.contacts.fields[0].from"),
        (lambda r: r["tools"]["hubspot"].update(owner="${ACME_PROJECT}"), "tools.hubspot.owner"),
        (lambda r: r["tools"]["hubspot"]["credentials"].update(access_token="${ACME_PROJECT}"),
         "tools.hubspot.credentials.access_token"),
        (lambda r: r.update(name="${ACME_PROJECT}"), "name"),
        (lambda r: r["quality"]["contacts"]["expectations"][3].update(regex="^${ACME_PROJECT}$"),
         "quality.contacts.expectations[3].regex"),
    ],
)
def test_a_reference_outside_the_connection_settings_is_refused_with_its_key_path(tmp_path, mutate, path):
    found = _refused(tmp_path, mutate)
    assert found == (f"{path}: found a ${{...}} reference; allowed: environment variables are expanded only in "
                     "warehouse.url and tools.<tool> connection settings (base_url, rate_limit)")
    assert "1200000000000101" not in found


@pytest.mark.parametrize(
    "mutate, path, holds",
    [
        (_action_field("${STRIPE_API_KEY}"), "actions[1].create.fields.notes", "credential 'api_key' of tool 'stripe'"),
        (lambda r: r["integrations"][3].update(purpose="key ${STRIPE_API_KEY:-none}"), "integrations[3].purpose",
         "credential 'api_key' of tool 'stripe'"),
        # where expansion is allowed too: a base_url sends its query string to the tool, and leaks in logs
        (lambda r: r["tools"]["hubspot"].update(base_url="http://x.test/?k=${SALESFORCE_ACCESS_TOKEN}"),
         "tools.hubspot.base_url", "credential 'access_token' of tool 'salesforce'"),
        (lambda r: r["tools"]["slack"].update(base_url="${SLACK_WEBHOOK_URL}"), "tools.slack.base_url",
         "credential 'webhook_url' of tool 'slack'"),
        (lambda r: r["warehouse"].update(url="${ZENDESK_API_TOKEN}"), "warehouse.url",
         "credential 'api_token' of tool 'zendesk'"),
        (lambda r: r["tools"]["asana"].update(base_url="${SAFE:-${HUBSPOT_WEBHOOK_SECRET}}"), "tools.asana.base_url",
         "the webhook signing secret of hubspot tools"),
        # the warehouse's URL holds its password: expanded in warehouse.url only, whatever variable it is read from
        (_action_field("${SYNC_WAREHOUSE_URL}"), "actions[1].create.fields.notes", "the warehouse URL"),
        (lambda r: r["tools"]["hubspot"].update(base_url="https://x.test/?u=${SYNC_WAREHOUSE_URL}"),
         "tools.hubspot.base_url", "the warehouse URL (its password)"),
        (lambda r: (r["warehouse"].update(url="${ACME_DB:-sqlite:///w.db}"),
                    r["tools"]["hubspot"].update(base_url="${ACME_DB}")),
         "tools.hubspot.base_url", "the warehouse URL"),
        (lambda r: r["tools"]["hubspot"].update(base_url="${SYNC_CELERY_BROKER}"), "tools.hubspot.base_url",
         "the Celery broker URL"),
        # a tool's own credential variable, whatever its name
        (lambda r: (r["tools"]["hubspot"].update(credentials={"access_token": "ACME_CRM_TOKEN"}),
                    r["tools"]["hubspot"].update(base_url="${ACME_CRM_TOKEN}")),
         "tools.hubspot.base_url", "credential 'access_token' of tool 'hubspot'"),
        # none declared: the connector names <TOOL>_<KEY> (connectors/base.py Options.env_var)
        (lambda r: (r["tools"].update(billing={**r["tools"]["stripe"], "streams": {}, "scopes": {}}),
                    r["tools"]["billing"].pop("credentials"), _action_field("${BILLING_API_KEY}")(r)),
         "actions[1].create.fields.notes", "credential 'api_key' of tool 'billing'"),
    ],
)
def test_a_reference_to_a_tools_secret_is_refused_anywhere_without_its_value(tmp_path, mutate, path, holds):
    found = _refused(tmp_path, mutate)
    assert found.startswith(f"{path}: ") and holds in found and "no secret in the stack file" in found


def test_the_connection_settings_still_expand(tmp_path, monkeypatch):
    monkeypatch.setenv("SANDBOX_URL", "https://sandbox.internal:8443")
    monkeypatch.setenv("ERP_RATE", "7")

    def mutate(r):
        r["tools"]["legacy_erp"].update(base_url="${ERP_DIR:-/srv/erp}/exports", rate_limit={
            "requests": "${ERP_RATE}", "per_seconds": "${ERP_WINDOW:-2.5}"})

    stack = load_stack(_write(tmp_path, mutate))
    assert stack.warehouse.url == "postgresql+psycopg://sync:hunter2@db.internal:5432/sync"
    assert stack.tools["salesforce"].base_url == "https://sandbox.internal:8443/salesforce"
    assert stack.tools["legacy_erp"].base_url == "/srv/erp/exports"
    assert stack.tools["legacy_erp"].rate_limit.model_dump() == {"requests": 7, "per_seconds": 2.5}


def test_an_error_under_tools_never_shows_an_expanded_value(tmp_path, monkeypatch):
    monkeypatch.setenv("ERP_RATE", "hunter2")
    found = _refused(tmp_path, lambda r: r["tools"]["legacy_erp"].update(
        rate_limit={"requests": "${ERP_RATE}", "per_seconds": 1}))
    assert found.startswith("tools.legacy_erp.rate_limit.requests: ")
