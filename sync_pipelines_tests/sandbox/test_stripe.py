from __future__ import annotations

import requests

from .conftest import AUTH

API = "/stripe/v1"


def walk(sandbox, path: str, **params) -> list[dict]:
    items, query = [], {"limit": 100, **params}
    while True:
        body = requests.get(f"{sandbox.url}{API}/{path}", params=query, headers=AUTH["stripe"]).json()
        assert body["object"] == "list"
        items += body["data"]
        if not body["has_more"]:
            return items
        query = {**query, "starting_after": body["data"][-1]["id"]}


def test_lists_are_newest_first_and_complete(shared_sandbox):
    counts = shared_sandbox.truth()["streams"]
    customers = walk(shared_sandbox, "customers")
    assert len(customers) == counts["stripe/customers"]["live"]
    assert [c["created"] for c in customers] == sorted((c["created"] for c in customers), reverse=True)
    assert all(c["id"].startswith("cus_") and c["object"] == "customer" for c in customers)
    invoices = walk(shared_sandbox, "invoices")
    assert len(invoices) == counts["stripe/invoices"]["total"]
    assert any(i["metadata"].get("deal_id", "").startswith("006") for i in invoices)


def test_events_created_gt_and_types(shared_sandbox):
    deleted = walk(shared_sandbox, "events", **{"types[]": "customer.deleted"})
    assert len(deleted) == shared_sandbox.truth()["streams"]["stripe/customers"]["deleted"]
    assert all(e["data"]["object"]["deleted"] is True for e in deleted)
    every = walk(shared_sandbox, "events")
    cut = sorted(e["created"] for e in every)[len(every) // 2]
    later = walk(shared_sandbox, "events", **{"created[gt]": cut})
    assert len(later) == sum(e["created"] > cut for e in every) > 0


def test_idempotency_key_returns_the_same_invoice(sandbox):
    customer = walk(sandbox, "customers")[0]["id"]
    headers = {**AUTH["stripe"], "Idempotency-Key": "deal-0065g-1"}
    params = {"customer": customer, "metadata[deal_id]": "0065g0000000001AAA"}
    first = requests.post(f"{sandbox.url}{API}/invoices", data=params, headers=headers)
    second = requests.post(f"{sandbox.url}{API}/invoices", data=params, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] == second.json()["id"] and second.headers["Idempotent-Replayed"] == "true"
    assert first.json()["metadata"] == {"deal_id": "0065g0000000001AAA"}
    invoices = walk(sandbox, "invoices")
    assert sum(i["id"] == first.json()["id"] for i in invoices) == 1
    assert len(invoices) == sandbox.truth()["streams"]["stripe/invoices"]["total"]
    other = requests.post(f"{sandbox.url}{API}/invoices", data={**params, "description": "x"}, headers=headers)
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    created = walk(sandbox, "events", **{"types[]": "invoice.created"})
    assert created[0]["data"]["object"]["id"] == first.json()["id"]


def test_customer_updates_and_deletes_emit_events(sandbox):
    customer = walk(sandbox, "customers")[-1]["id"]
    updated = requests.post(f"{sandbox.url}{API}/customers/{customer}", data={"email": "new@example.com"},
                            headers=AUTH["stripe"])
    assert updated.json()["email"] == "new@example.com"
    requests.delete(f"{sandbox.url}{API}/customers/{customer}", headers=AUTH["stripe"])
    newest = walk(sandbox, "events")[:2]
    assert [e["type"] for e in newest] == ["customer.deleted", "customer.updated"]
    assert customer not in {c["id"] for c in walk(sandbox, "customers")}


def test_stripe_errors(shared_sandbox):
    unauthorized = requests.get(f"{shared_sandbox.url}{API}/customers", headers={"Authorization": "Bearer sk_x"})
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]["type"] == "invalid_request_error"
    assert "sk_x" not in unauthorized.text
    basic = requests.get(f"{shared_sandbox.url}{API}/customers", auth=("sk_test_sandbox", ""))
    assert basic.status_code == 200
    missing = requests.post(f"{shared_sandbox.url}{API}/invoices", data={}, headers=AUTH["stripe"])
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "customer"
