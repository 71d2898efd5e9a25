from __future__ import annotations

import requests

from .conftest import AUTH

API = "/hubspot/crm/v3"


def walk(sandbox, obj: str, **params) -> list[dict]:
    url, records = f"{sandbox.url}{API}/objects/{obj}", []
    query = {"limit": 100, **params}
    while True:
        body = requests.get(url, params=query, headers=AUTH["hubspot"]).json()
        records += body["results"]
        if "paging" not in body:
            return records
        assert body["paging"]["next"]["link"].startswith(sandbox.url + API)
        url, query = body["paging"]["next"]["link"], None


def test_list_walks_live_and_archived_separately(shared_sandbox):
    counts = shared_sandbox.truth()["streams"]["hubspot/contacts"]
    live = walk(shared_sandbox, "contacts", properties="email,lastmodifieddate")
    archived = walk(shared_sandbox, "contacts", archived="true")
    assert len(live) == counts["live"] and len(archived) == counts["deleted"]
    assert not any(r["archived"] for r in live) and all(r["archived"] for r in archived)
    assert len({r["id"] for r in live + archived}) == counts["total"]
    record = live[0]
    assert set(record) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert set(record["properties"]) == {"email", "lastmodifieddate"}
    assert all(isinstance(v, (str, type(None))) for r in live for v in r["properties"].values())


def search(sandbox, obj: str, body: dict) -> requests.Response:
    return requests.post(f"{sandbox.url}{API}/objects/{obj}/search", json=body, headers=AUTH["hubspot"])


def test_search_filters_by_modified_time_in_epoch_ms(shared_sandbox):
    every = walk(shared_sandbox, "companies", properties="hs_lastmodifieddate")
    stamps = sorted(r["updatedAt"] for r in every)
    cut = stamps[len(stamps) // 2]
    from datetime import datetime
    cut_ms = int(datetime.fromisoformat(cut.replace("Z", "+00:00")).timestamp() * 1000)
    body = {"filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE",
                                           "value": str(cut_ms)}]}],
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}], "limit": 7}
    found, after = [], None
    while True:
        page = search(shared_sandbox, "companies", {**body, **({"after": after} if after else {})}).json()
        found += page["results"]
        after = page.get("paging", {}).get("next", {}).get("after")
        if not after:
            break
    assert len(found) == page["total"] == sum(s >= cut for s in stamps)
    assert [r["updatedAt"] for r in found] == sorted(r["updatedAt"] for r in found)


def test_search_stops_at_ten_thousand_results(shared_sandbox):
    ok = search(shared_sandbox, "contacts", {"limit": 100, "after": "9900"})
    assert ok.status_code == 200
    past = search(shared_sandbox, "contacts", {"limit": 100, "after": "9901"})
    assert past.status_code == 400
    assert past.json()["status"] == "error" and past.json()["category"] == "VALIDATION_ERROR"


def test_unauthorized_shape(shared_sandbox):
    response = requests.get(f"{shared_sandbox.url}{API}/objects/contacts", headers={"Authorization": "Bearer no"})
    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION"


def test_rate_limit_429_with_hubspot_body_and_headers(sandbox):
    sandbox.set_faults(hubspot={"rate_limits": {"requests": 3, "per_seconds": 1}})
    responses = [requests.get(f"{sandbox.url}{API}/objects/companies", headers=AUTH["hubspot"]) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers["X-HubSpot-RateLimit-Max"] == "3"
    assert responses[2].headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert responses[3].json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert responses[3].headers["Retry-After"] == "1"
    assert sandbox.stats()["hubspot"]["throttled"] == 1


def test_batch_upsert_by_email_creates_and_updates(sandbox):
    existing = walk(sandbox, "contacts", properties="email")
    email = next(r["properties"]["email"] for r in existing if r["properties"]["email"])
    inputs = [{"idProperty": "email", "id": email.strip().upper(), "properties": {"jobtitle": "CFO"}},
              {"idProperty": "email", "id": "new.person@example.com", "properties": {"firstname": "New"}}]
    body = requests.post(f"{sandbox.url}{API}/objects/contacts/batch/upsert", json={"inputs": inputs},
                         headers=AUTH["hubspot"]).json()
    assert body["status"] == "COMPLETE"
    assert [r["new"] for r in body["results"]] == [False, True]
    assert body["results"][1]["properties"]["email"] == "new.person@example.com"
    updated = requests.get(f"{sandbox.url}{API}/objects/contacts/{body['results'][0]['id']}",
                           params={"properties": "jobtitle"}, headers=AUTH["hubspot"]).json()
    assert updated["properties"]["jobtitle"] == "CFO"
    assert len(walk(sandbox, "contacts")) == len(existing) + 1
    too_many = requests.post(f"{sandbox.url}{API}/objects/contacts/batch/upsert", headers=AUTH["hubspot"],
                             json={"inputs": [{"idProperty": "email", "id": f"p{i}@x.com", "properties": {}}
                                              for i in range(101)]})
    assert too_many.status_code == 400


def test_properties_endpoint(shared_sandbox):
    body = requests.get(f"{shared_sandbox.url}{API}/properties/contacts", headers=AUTH["hubspot"]).json()
    assert {"email", "lastmodifieddate", "hs_object_id", "lifecyclestage"} <= {p["name"] for p in body["results"]}
