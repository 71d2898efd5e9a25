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


def batch(sandbox, obj: str, action: str, inputs: list[dict]) -> requests.Response:
    return requests.post(f"{sandbox.url}{API}/objects/{obj}/batch/{action}", json={"inputs": inputs},
                         headers=AUTH["hubspot"])


def person_contacts(sandbox) -> list[dict]:
    """Live, valid HubSpot contacts of real people (truth records)."""
    return [r for r in sandbox.truth("records", tool="hubspot", stream="contacts")
            if r["person"] and not r["deleted"] and not r["invalid"]]


def test_batch_update_is_seen_by_reads_search_and_truth(sandbox):
    record = person_contacts(sandbox)[0]
    before = requests.get(f"{sandbox.url}{API}/objects/contacts/{record['id']}", headers=AUTH["hubspot"]).json()
    response = batch(sandbox, "contacts", "update", [
        {"id": record["id"], "properties": {"phone": "(415) 555-0199", "jobtitle": "Head of Sandboxes"}}])
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "COMPLETE" and "errors" not in body
    [result] = body["results"]
    assert result["id"] == record["id"] and "new" not in result
    assert result["properties"]["phone"] == "(415) 555-0199"
    assert result["updatedAt"] > before["updatedAt"] and result["properties"]["lastmodifieddate"] == result["updatedAt"]
    read = requests.get(f"{sandbox.url}{API}/objects/contacts/{record['id']}", headers=AUTH["hubspot"],
                        params={"properties": "phone,jobtitle,lastmodifieddate"}).json()
    assert read["properties"] == {"phone": "(415) 555-0199", "jobtitle": "Head of Sandboxes",
                                  "lastmodifieddate": result["updatedAt"]}
    found = search(sandbox, "contacts", {"filterGroups": [{"filters": [
        {"propertyName": "lastmodifieddate", "operator": "GT", "value": before["updatedAt"]},
        {"propertyName": "jobtitle", "operator": "EQ", "value": "head of sandboxes"}]}]}).json()
    assert [r["id"] for r in found["results"]] == [record["id"]]
    person = sandbox.truth("people")[record["person"]]
    assert person["phone"] == "+14155550199" and person["job_title"] == "Head of Sandboxes"


def test_batch_update_of_companies_bumps_hs_lastmodifieddate(sandbox):
    company = walk(sandbox, "companies")[0]
    result = batch(sandbox, "companies", "update", [{"id": company["id"], "properties": {"industry": "Toys"}}])
    [record] = result.json()["results"]
    assert record["properties"]["industry"] == "Toys"
    assert record["properties"]["hs_lastmodifieddate"] == record["updatedAt"] > company["updatedAt"]


def test_batch_update_answers_207_for_unknown_and_archived_ids(sandbox):
    live = person_contacts(sandbox)[0]["id"]
    archived = walk(sandbox, "contacts", archived="true")[0]["id"]
    response = batch(sandbox, "contacts", "update", [
        {"id": "999999999", "properties": {"jobtitle": "Ghost"}},
        {"id": live, "properties": {"jobtitle": "Real"}},
        {"id": archived, "properties": {"jobtitle": "Zombie"}}])
    assert response.status_code == 207
    body = response.json()
    assert [r["id"] for r in body["results"]] == [live]
    assert body["numErrors"] == 1
    [error] = body["errors"]
    assert error["category"] == "OBJECT_NOT_FOUND" and error["context"] == {"ids": ["999999999", archived]}
    still = requests.get(f"{sandbox.url}{API}/objects/contacts/{archived}", headers=AUTH["hubspot"],
                         params={"archived": "true", "properties": "jobtitle"}).json()
    assert still["properties"]["jobtitle"] != "Zombie"


def test_company_golden_id_is_unique_and_a_taken_one_fails_only_its_input(sandbox):
    first, second = (company["id"] for company in walk(sandbox, "companies")[:2])
    assert batch(sandbox, "companies", "update", [{"id": first, "properties": {"golden_id": "ent_one"}}]).ok
    upserted = batch(sandbox, "companies", "upsert", [{"idProperty": "golden_id", "id": "ENT_ONE",
                                                       "properties": {"industry": "Toys"}}]).json()["results"]
    assert [(r["id"], r["new"], r["properties"]["industry"]) for r in upserted] == [(first, False, "Toys")]
    response = batch(sandbox, "companies", "update", [{"id": second, "properties": {"golden_id": "ent_one"}},
                                                      {"id": first, "properties": {"domain": "one.example"}}])
    assert response.status_code == 207 and [r["id"] for r in response.json()["results"]] == [first]
    [error] = response.json()["errors"]
    assert error["category"] == "VALIDATION_ERROR" and error["context"] == {"ids": [second]}
    assert "golden_id" in error["message"] and first in error["message"]


def test_batch_update_by_email_id_property(sandbox):
    contact = next(r for r in walk(sandbox, "contacts", properties="email") if r["properties"]["email"])
    email = contact["properties"]["email"]
    total = sandbox.truth()["streams"]["hubspot/contacts"]["total"]
    response = batch(sandbox, "contacts", "update", [
        {"idProperty": "email", "id": email.strip().upper(), "properties": {"firstname": "Renamed"}},
        {"idProperty": "email", "id": "nobody@nowhere.example", "properties": {"firstname": "Nobody"}}])
    assert response.status_code == 207
    assert [r["id"] for r in response.json()["results"]] == [contact["id"]]
    assert response.json()["errors"][0]["context"]["ids"] == ["nobody@nowhere.example"]
    assert sandbox.truth()["streams"]["hubspot/contacts"]["total"] == total  # update never creates
    read = requests.get(f"{sandbox.url}{API}/objects/contacts/{contact['id']}", headers=AUTH["hubspot"]).json()
    assert read["properties"]["firstname"] == "Renamed"


def test_batch_update_limits_and_bad_input(sandbox):
    ids = [r["id"] for r in walk(sandbox, "contacts")[:101]]
    too_many = batch(sandbox, "contacts", "update", [{"id": i, "properties": {"jobtitle": "X"}} for i in ids])
    assert too_many.status_code == 400 and too_many.json()["category"] == "VALIDATION_ERROR"
    assert "101" in too_many.json()["message"]
    hundred = batch(sandbox, "contacts", "update", [{"id": i, "properties": {"jobtitle": "X"}} for i in ids[:100]])
    assert hundred.status_code == 200 and len(hundred.json()["results"]) == 100
    duplicated = batch(sandbox, "contacts", "update", [{"id": ids[0], "properties": {}}] * 2)
    assert duplicated.status_code == 400 and "Duplicate" in duplicated.json()["message"]
    bad_property = batch(sandbox, "contacts", "update", [{"id": ids[0], "properties": {"hs_object_id": "1"}}])
    assert bad_property.status_code == 207 and bad_property.json()["errors"][0]["category"] == "VALIDATION_ERROR"
    no_id = batch(sandbox, "contacts", "update", [{"properties": {"jobtitle": "X"}}])
    assert no_id.status_code == 400 and "inputs[0].id" in no_id.json()["message"]


def test_hs_object_id_is_refused_as_id_property(sandbox):
    record_id = person_contacts(sandbox)[0]["id"]
    for action in ("upsert", "update"):
        response = batch(sandbox, "contacts", action, [
            {"idProperty": "hs_object_id", "id": record_id, "properties": {"jobtitle": "Should not land"}}])
        assert response.status_code == 400, action
        assert response.json()["category"] == "VALIDATION_ERROR" and "hs_object_id" in response.json()["message"]
    read = requests.get(f"{sandbox.url}{API}/objects/contacts/{record_id}", params={"properties": "jobtitle"},
                        headers=AUTH["hubspot"]).json()
    assert read["properties"]["jobtitle"] != "Should not land"
    no_id_property = batch(sandbox, "contacts", "upsert", [{"id": "a@b.com", "properties": {}}])
    assert no_id_property.status_code == 400 and "idProperty" in no_id_property.json()["message"]
    not_unique = batch(sandbox, "contacts", "upsert", [{"idProperty": "firstname", "id": "Ada", "properties": {}}])
    assert not_unique.status_code == 400 and "firstname" in not_unique.json()["message"]


def test_batch_associate_default_answers_each_input_and_names_the_failed_ids(sandbox):
    """As HubSpot: 207 Multi-Status, the pair made in `results`, the unknown company in `errors[].context`."""
    contacts = [r["id"] for r in walk(sandbox, "contacts")[:2]]
    company = walk(sandbox, "companies")[0]["id"]
    response = requests.post(f"{sandbox.url}/hubspot/crm/v4/associations/contacts/companies/batch/associate/default",
                             headers=AUTH["hubspot"], json={"inputs": [
                                 {"from": {"id": contacts[0]}, "to": {"id": "999999999"}},
                                 {"from": {"id": contacts[1]}, "to": {"id": company}}]})
    body = response.json()
    assert response.status_code == 207 and body["numErrors"] == 1
    assert [(r["from"]["id"], r["to"]["id"]) for r in body["results"]] == [(contacts[1], company)]
    assert body["errors"][0]["context"] == {"toObjectId": ["999999999"]}
