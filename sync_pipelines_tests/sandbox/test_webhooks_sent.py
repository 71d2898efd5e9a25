"""The sandbox sends signed vendor webhooks on every change of HubSpot contacts and companies, Zendesk users and
Stripe customers, and the real receiver accepts them end to end."""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
import requests

from sync_pipelines.sandbox import RunningSandbox, build_app, running_sandbox
from sync_pipelines.sandbox.server import serving
from sync_pipelines.sandbox.webhooks import DEFAULT_SECRETS
from sync_pipelines.webhooks import build_webhook_app, read_inbox

from .conftest import AUTH

CHANGES = {("hubspot", "contacts"): {"jobtitle": "Countess"}, ("zendesk", "users"): {"name": "Ada Lovelace"},
           ("stripe", "customers"): {"name": "Ada Lovelace"}}


@pytest.fixture
def inbox_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def receiver(inbox_url) -> Iterator[str]:
    with serving(build_webhook_app(inbox_url, DEFAULT_SECRETS), name="webhooks") as url:
        yield url


def first_id(sandbox: RunningSandbox, tool: str, stream: str) -> Any:
    return next(r["id"] for r in sandbox.truth("records", tool=tool, stream=stream) if not r["deleted"])


def wait_sent(sandbox: RunningSandbox, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The control plane's sent log once it holds `count` deliveries (delivery is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        sent = requests.get(f"{sandbox.url}/_sandbox/webhooks/sent", timeout=10).json()
        if len(sent) >= count or time.monotonic() > deadline:
            return sent
        time.sleep(0.02)


def test_mutations_reach_the_inbox_signed(receiver, inbox_url):
    with running_sandbox(seed=3, scale=0.05, rate_limits=False, webhook_url=receiver) as sandbox:
        ids = {}
        for (tool, stream), changes in CHANGES.items():
            ids[tool] = first_id(sandbox, tool, stream)
            body = {"tool": tool, "stream": stream, "id": ids[tool], "changes": changes}
            assert requests.post(f"{sandbox.url}/_sandbox/mutate", json=body, timeout=10).status_code == 200
        sent = wait_sent(sandbox, 3)
        stripe_events = requests.get(f"{sandbox.url}/stripe/v1/events", params={"limit": 1},
                                     headers=AUTH["stripe"], timeout=10).json()["data"]
    assert [(s["tool"], s["status"], s["error"]) for s in sent] == \
        [("hubspot", 200, None), ("zendesk", 200, None), ("stripe", 200, None)]
    rows = {row["tool"]: row for row in read_inbox(inbox_url)}
    assert {tool: (row["object_type"], row["object_id"]) for tool, row in rows.items()} == {
        "hubspot": ("contact", str(ids["hubspot"])), "zendesk": ("user", str(ids["zendesk"])),
        "stripe": ("customer", str(ids["stripe"]))}
    hubspot = rows["hubspot"]["payload"]
    assert (hubspot["subscriptionType"], hubspot["propertyName"], hubspot["propertyValue"]) == \
        ("contact.propertyChange", "jobtitle", "Countess")
    assert rows["zendesk"]["payload"]["type"] == "zen:event-type:user.name_changed"
    assert rows["zendesk"]["payload"]["subject"] == f"zen:user:{ids['zendesk']}"
    stripe = rows["stripe"]["payload"]
    assert stripe["type"] == "customer.updated" and stripe["data"]["object"]["name"] == "Ada Lovelace"
    assert stripe["id"] == stripe_events[0]["id"]  # the same event /v1/events lists


def test_api_writes_send_webhooks_too(receiver, inbox_url):
    with running_sandbox(seed=3, scale=0.05, rate_limits=False, webhook_url=receiver) as sandbox:
        created = requests.post(f"{sandbox.url}/stripe/v1/customers", data={"email": "new@example.com"},
                                headers=AUTH["stripe"], timeout=10).json()
        contact = first_id(sandbox, "hubspot", "contacts")
        requests.post(f"{sandbox.url}/hubspot/crm/v3/objects/contacts/batch/update", headers=AUTH["hubspot"],
                      json={"inputs": [{"id": str(contact), "properties": {"phone": "+1 212 555 0101",
                                                                          "company": "Analytical"}}]}, timeout=10)
        sent = wait_sent(sandbox, 2)
    assert [(s["tool"], s["status"]) for s in sent] == [("stripe", 200), ("hubspot", 200)]
    rows = read_inbox(inbox_url)
    assert rows[0]["payload"]["type"] == "customer.created" and rows[0]["object_id"] == created["id"]
    assert sorted(row["payload"]["propertyName"] for row in rows[1:]) == ["company", "phone"]
    assert len({row["event_id"] for row in rows[1:]}) == 2


def test_a_company_batch_update_sends_one_company_property_change_per_property(receiver, inbox_url):
    with running_sandbox(seed=3, scale=0.05, rate_limits=False, webhook_url=receiver) as sandbox:
        company = first_id(sandbox, "hubspot", "companies")
        requests.post(f"{sandbox.url}/hubspot/crm/v3/objects/companies/batch/update", headers=AUTH["hubspot"],
                      json={"inputs": [{"id": str(company), "properties": {"domain": "acme.example",
                                                                          "industry": "Retail"}}]}, timeout=10)
        assert sandbox.mutate("hubspot", "companies", company, {"deleted": True})["deleted"] is True
        wait_sent(sandbox, 2)
    rows = read_inbox(inbox_url)
    assert {(row["object_type"], row["object_id"]) for row in rows} == {("company", str(company))}
    assert sorted((row["payload"]["subscriptionType"], row["payload"].get("propertyName"),
                   row["payload"].get("propertyValue")) for row in rows) == [
        ("company.deletion", None, None), ("company.propertyChange", "domain", "acme.example"),
        ("company.propertyChange", "industry", "Retail")]


def test_wrong_secret_is_refused_and_recorded_without_blocking(receiver, inbox_url):
    secrets = {"zendesk": "not-the-receivers-secret"}
    with running_sandbox(seed=3, scale=0.05, rate_limits=False, webhook_url=receiver,
                         webhook_secrets=secrets) as sandbox:
        user = first_id(sandbox, "zendesk", "users")
        assert sandbox.mutate("zendesk", "users", user, {"deleted": True})["deleted"] is True
        [entry] = wait_sent(sandbox, 1)
    assert entry["status"] == 401 and "X-Zendesk-Webhook-Signature" in entry["error"]
    assert secrets["zendesk"] not in entry["error"]
    assert read_inbox(inbox_url) == []


def test_unreachable_receiver_is_logged_not_raised():
    with serving(build_webhook_app("sqlite://", DEFAULT_SECRETS), name="gone") as gone:
        pass  # the port is free again: nothing listens there
    with running_sandbox(seed=3, scale=0.05, rate_limits=False, webhook_url=gone) as sandbox:
        contact = first_id(sandbox, "hubspot", "contacts")
        assert sandbox.mutate("hubspot", "contacts", contact, {"firstname": "Ada"})["fields"]["firstname"] == "Ada"
        [entry] = wait_sent(sandbox, 1)
    assert entry["status"] is None and "ConnectionError" in entry["error"]


def test_no_webhook_url_sends_nothing(shared_sandbox):
    assert requests.get(f"{shared_sandbox.url}/_sandbox/webhooks/sent", timeout=10).json() == []
    assert shared_sandbox.state.webhooks is None


def test_secrets_without_url_and_unknown_tools_are_refused():
    with pytest.raises(ValueError, match="without webhook_url"):
        build_app(scale=0.05, webhook_secrets={"stripe": "x"})
    with pytest.raises(ValueError, match="unknown tool"):
        build_app(scale=0.05, webhook_url="http://127.0.0.1:9", webhook_secrets={"asana": "x"})
