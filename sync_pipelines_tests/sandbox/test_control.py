"""The /_sandbox control plane: faults, stats, mutate, truth, Slack and the ERP export."""

from __future__ import annotations

import csv
import json

import requests

from sync_pipelines.sandbox import running_sandbox

from .conftest import AUTH

CONTACTS = "/hubspot/crm/v3/objects/contacts"


def test_error_rate_answers_5xx_in_vendor_shape(sandbox):
    sandbox.set_faults(error_rate=1.0)
    hubspot = requests.get(sandbox.url + CONTACTS, headers=AUTH["hubspot"])
    assert hubspot.status_code in (500, 502, 503) and hubspot.json()["status"] == "error"
    stripe = requests.get(sandbox.url + "/stripe/v1/customers", headers=AUTH["stripe"])
    assert stripe.json()["error"]["type"] == "api_error"
    sandbox.set_faults(error_rate=None)
    assert requests.get(sandbox.url + CONTACTS, headers=AUTH["hubspot"]).status_code == 200
    assert sandbox.stats()["hubspot"]["server_errors"] == 1


def test_malformed_pages_are_truncated_json(sandbox):
    requests.post(sandbox.url + "/_sandbox/faults", json={"hubspot": {"malformed_page_rate": 1}})
    response = requests.get(sandbox.url + CONTACTS, headers=AUTH["hubspot"])
    assert response.status_code == 200
    try:
        json.loads(response.text)
        raise AssertionError("the page should not parse")
    except ValueError:
        pass


def test_schema_drift_add_drop_retype(sandbox):
    url = sandbox.url + "/salesforce/services/data/v60.0/query"
    params = {"q": "SELECT Id, Phone, Email, Title FROM Contact LIMIT 1"}
    sandbox.set_faults(salesforce={"schema_drift": ["add", "drop"]})
    record = requests.get(url, params=params, headers=AUTH["salesforce"]).json()["records"][0]
    assert "Phone" not in record and record["sandbox_drift_field"] == "surprise"
    sandbox.set_faults(salesforce={"schema_drift": {"retype": "Email"}})
    record = requests.get(url, params=params, headers=AUTH["salesforce"]).json()["records"][0]
    assert isinstance(record["Email"], dict)


def test_bad_fault_knobs_are_refused_with_the_key(sandbox):
    response = requests.post(sandbox.url + "/_sandbox/faults", json={"hubspot": {"error_rte": 0.5}})
    assert response.status_code == 400 and "error_rte" in response.json()["error"]
    response = requests.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 3})
    assert response.status_code == 400 and "error_rate" in response.json()["error"]


def test_stats_count_and_reset(sandbox):
    requests.get(sandbox.url + CONTACTS, headers=AUTH["hubspot"])
    requests.get(sandbox.url + CONTACTS, headers={"Authorization": "Bearer nope"})
    stats = requests.get(sandbox.url + "/_sandbox/stats").json()["hubspot"]
    assert stats["requests"] == 2 and stats["unauthorized"] == 1 and stats["by_status"] == {"200": 1, "401": 1}
    requests.post(sandbox.url + "/_sandbox/stats/reset")
    assert requests.get(sandbox.url + "/_sandbox/stats").json() == {}


def test_mutate_changes_reads_and_truth(sandbox):
    records = sandbox.truth("records", tool="salesforce", stream="Contact")
    record = next(r for r in records if r["person"] and not r["deleted"] and not r["invalid"])
    response = requests.post(sandbox.url + "/_sandbox/mutate", json={
        "tool": "salesforce", "stream": "Contact", "id": record["id"], "changes": {"Email": " NEW@Example.com "}})
    assert response.status_code == 200
    assert sandbox.truth("people")[record["person"]]["email"] == "new@example.com"
    newest = requests.get(sandbox.url + "/salesforce/services/data/v60.0/query", headers=AUTH["salesforce"], params={
        "q": "SELECT Id, Email FROM Contact ORDER BY LastModifiedDate DESC LIMIT 1"}).json()["records"][0]
    assert newest == {**newest, "Id": record["id"], "Email": " NEW@Example.com "}
    sandbox.mutate("salesforce", "Contact", record["id"], {"deleted": True})
    assert sandbox.truth()["streams"]["salesforce/Contact"]["deleted"] == sum(r["deleted"] for r in records) + 1
    unknown = requests.post(sandbox.url + "/_sandbox/mutate", json={
        "tool": "salesforce", "stream": "Contact", "id": record["id"], "changes": {"Emial": "x"}})
    assert unknown.status_code == 400 and "Emial" in unknown.json()["error"]


def test_truth_people_follow_planted_conflicts(shared_sandbox):
    people = shared_sandbox.truth("people")
    conflicts = shared_sandbox.truth("conflicts")
    assert {c["field"] for c in conflicts} == {"email", "phone"}
    for conflict in conflicts:
        assert people[conflict["person"]][conflict["field"]] == conflict["value"] != conflict["older_value"]
    assert all(p["email"] is None or p["email"] == p["email"].strip().lower() for p in people.values())
    assert all(p["phone"] is None or p["phone"].startswith("+1") for p in people.values())


def test_slack_webhook(sandbox):
    good = requests.post(sandbox.url + "/slack/services/T000SANDBOX/B000SANDBOX/sandbox-slack-secret",
                         json={"text": "sync failed"})
    assert good.status_code == 200 and good.text == "ok"
    bad = requests.post(sandbox.url + "/slack/services/T000SANDBOX/B000SANDBOX/wrong", json={"text": "x"})
    assert bad.status_code == 403
    assert requests.get(sandbox.url + "/_sandbox/slack/messages").json() == [{"text": "sync failed"}]


def test_csv_export_and_its_updates(tmp_path):
    with running_sandbox(seed=3, scale=0.2, csv_dir=tmp_path, rate_limits=False) as sandbox:
        rows = list(csv.DictReader((tmp_path / "customers.csv").open()))
        counts = sandbox.truth()["streams"]["legacy_erp/customers"]
        assert len(rows) == counts["total"]
        assert list(rows[0]) == ["customer_no", "contact_name", "email_address", "phone", "company", "modified"]
        assert sum(r["customer_no"] == "" for r in rows) > 0 or counts["invalid"] == 0
        sandbox.mutate("legacy_erp", "customers", rows[0]["customer_no"], {"email_address": "erp@example.com"})
        again = list(csv.DictReader((tmp_path / "customers.csv").open()))
        assert again[0]["email_address"] == "erp@example.com" and again[0]["modified"] > rows[0]["modified"]


def test_custom_credentials(tmp_path):
    with running_sandbox(scale=0.1, credentials={"hubspot": "my-token"}) as sandbox:
        assert requests.get(sandbox.url + CONTACTS, headers=AUTH["hubspot"]).status_code == 401
        assert requests.get(sandbox.url + CONTACTS, headers={"Authorization": "Bearer my-token"}).status_code == 200
