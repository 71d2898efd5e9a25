"""Near real time through the daemon: an edit in Zendesk reaches Salesforce and HubSpot by a signed webhook, the
inbox sensor and one run, within the acceptance criteria's minute; an unsigned webhook is refused and runs nothing."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pytest
import requests

from sync_pipelines.connectors import connect
from sync_pipelines_tests.e2e.conftest import Services, wait_for

pytestmark = pytest.mark.e2e

PROPAGATION_BUDGET_S = 60  # acceptance criteria: an edit in one tool is in the others within a minute
TARGETS = ("salesforce", "hubspot")


def _linked_zendesk_user(services: Services) -> dict[str, str]:
    """Source ids of one person held once each in Zendesk, Salesforce and HubSpot, live and valid in Zendesk."""
    refs: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row in services.table("crosswalk_contacts"):
        refs[row["entity_id"]][row["_source"]].append(str(row["_source_id"]))
    usable = {str(r["id"]) for r in services.box.truth("records", tool="zendesk", stream="users")
              if not r["deleted"] and not r["invalid"]}
    for entity in sorted(refs):
        held = refs[entity]
        if all(len(held[tool]) == 1 for tool in ("zendesk", *TARGETS)) and held["zendesk"][0] in usable:
            return {tool: held[tool][0] for tool in ("zendesk", *TARGETS)}
    raise AssertionError("no person is held once each in Zendesk, Salesforce and HubSpot")


def _emails_changed_since(services: Services, since: datetime) -> dict[str, dict[str, str]]:
    """Per target tool, {record id: email} of the records changed since `since`, read through its vendor API."""
    env = services.env
    salesforce = connect("salesforce", services.box.base_url("salesforce"),
                         {"access_token": env["SALESFORCE_ACCESS_TOKEN"]}, name="salesforce")
    hubspot = connect("hubspot", services.box.base_url("hubspot"),
                      {"access_token": env["HUBSPOT_ACCESS_TOKEN"]}, name="hubspot")
    return {
        "salesforce": {r["Id"]: r.get("Email") for r in salesforce.read("Contact", since=since)},
        "hubspot": {r["id"]: r["properties"].get("email") for r in hubspot.read("contacts", since=since)},
    }


def test_an_unsigned_webhook_is_refused_lands_nothing_and_launches_no_run(services: Services, synced: str):
    services.settle()
    inbox_rows = len(services.table("webhook_inbox"))
    runs = len(services.dagster.runs())
    event_id = str(uuid.uuid4())
    body = {"type": "zen:event-type:user.identity_changed", "account_id": 1, "id": event_id,
            "subject": "zen:user:1", "detail": {"id": "1"}, "event": {"current": "forged@example.org"}}
    sent_at = time.time()
    response = requests.post(f"{services.receiver_url}/webhooks/zendesk", data=json.dumps(body),
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 401, response.text
    assert "X-Zendesk-Webhook-Signature" in response.json()["error"]

    # The sensor evaluates every few seconds: wait for a finished tick after the post (a tick still evaluating
    # reads STARTED), then nothing may have happened.
    ticks = wait_for(lambda: [t for t in services.dagster.sensor_ticks("webhook_inbox_sensor")
                              if t["timestamp"] > sent_at + 1 and t["status"] != "STARTED"], 60,
                     "a finished webhook_inbox_sensor tick after the post", interval=1)
    assert all(tick["status"] == "SKIPPED" and not tick["runIds"] for tick in ticks), ticks
    assert len(services.table("webhook_inbox")) == inbox_rows
    assert len(services.dagster.runs()) == runs
    print(f"\nunsigned webhook: 401, inbox unchanged ({inbox_rows} rows), {len(ticks)} sensor tick(s) skipped, "
          "no run launched")


def test_an_email_changed_in_zendesk_reaches_salesforce_and_hubspot_within_a_minute(
        services: Services, synced: str):
    services.settle()
    person = _linked_zendesk_user(services)
    new_email = f"moved.{uuid.uuid4().hex[:8]}@example.org"
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    started = time.monotonic()
    response = requests.post(f"{services.box.url}/_sandbox/mutate", timeout=30, json={
        "tool": "zendesk", "stream": "users", "id": person["zendesk"], "changes": {"email": new_email}})
    assert response.ok, response.text

    def propagated() -> bool:
        changed = _emails_changed_since(services, since)
        return all(changed[tool].get(person[tool]) == new_email for tool in TARGETS)

    wait_for(propagated, PROPAGATION_BUDGET_S, f"{new_email} to reach {' and '.join(TARGETS)}", interval=1)
    seconds = time.monotonic() - started
    triggered = [run for run in services.dagster.runs(tags={"sync_pipelines/trigger": "webhook"})
                 if run["startTime"] and run["startTime"] >= since.timestamp()]
    print(f"\nwebhook propagation: Zendesk user {person['zendesk']} -> Salesforce {person['salesforce']} and "
          f"HubSpot {person['hubspot']} in {seconds:.1f} s (budget {PROPAGATION_BUDGET_S} s), "
          f"run(s) {[run['runId'] for run in triggered]}")
    assert triggered, "the edit propagated without a webhook-triggered run"
