from __future__ import annotations

import re

import requests

from .conftest import AUTH

API = "/salesforce/services/data/v60.0"


def query(sandbox, soql: str, all_rows: bool = False) -> tuple[list[dict], int]:
    """Follow nextRecordsUrl to the end; returns the records and the number of pages."""
    url = f"{sandbox.url}{API}/{'queryAll' if all_rows else 'query'}"
    response = requests.get(url, params={"q": soql}, headers=AUTH["salesforce"])
    records, pages = [], 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        records += body["records"]
        pages += 1
        assert len(body["records"]) <= 2000
        if body["done"]:
            assert "nextRecordsUrl" not in body
            return records, pages
        assert body["nextRecordsUrl"].startswith("/services/data/v60.0/query")
        response = requests.get(f"{sandbox.url}/salesforce{body['nextRecordsUrl']}", headers=AUTH["salesforce"])


def test_query_walks_every_live_row_and_query_all_adds_deleted(sandbox):
    sandbox.set_faults(salesforce={"page_size": 50})
    counts = sandbox.truth()["streams"]["salesforce/Contact"]
    live, pages = query(sandbox, "SELECT Id, Email, IsDeleted FROM Contact")
    assert len(live) == counts["live"] and pages > 3
    assert len({r["Id"] for r in live}) == len(live)
    assert not any(r["IsDeleted"] for r in live)
    everything, _ = query(sandbox, "SELECT Id, IsDeleted FROM Contact", all_rows=True)
    assert len(everything) == counts["total"]
    assert sum(r["IsDeleted"] for r in everything) == counts["deleted"]
    truth_ids = {r["id"] for r in sandbox.truth("records", tool="salesforce", stream="Contact")}
    assert {r["Id"] for r in everything} == truth_ids


def test_records_have_vendor_shape(shared_sandbox):
    records, _ = query(shared_sandbox, "SELECT Id, FirstName, LastModifiedDate, AccountId FROM Contact LIMIT 5")
    record = records[0]
    assert record["attributes"]["type"] == "Contact"
    assert record["attributes"]["url"].endswith(record["Id"])
    assert len(record["Id"]) == 18 and record["Id"].startswith("003")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", record["LastModifiedDate"])
    assert record["AccountId"].startswith("001")
    assert list(record) == ["attributes", "Id", "FirstName", "LastModifiedDate", "AccountId"]


def test_incremental_where_and_order(shared_sandbox):
    every, _ = query(shared_sandbox, "SELECT Id, LastModifiedDate FROM Contact ORDER BY LastModifiedDate")
    stamps = [r["LastModifiedDate"] for r in every]
    assert stamps == sorted(stamps)
    cut = stamps[len(stamps) // 2]
    newer, _ = query(shared_sandbox, f"SELECT Id FROM Contact WHERE LastModifiedDate > {cut} AND IsDeleted = false")
    expected = [r for r in every if r["LastModifiedDate"] > cut]
    assert len(newer) == len(expected) and 0 < len(newer) < len(every)


def test_bad_queries_get_salesforce_errors(shared_sandbox):
    url = f"{shared_sandbox.url}{API}/query"
    bad_field = requests.get(url, params={"q": "SELECT Nope FROM Contact"}, headers=AUTH["salesforce"])
    assert bad_field.status_code == 400 and bad_field.json()[0]["errorCode"] == "INVALID_FIELD"
    bad_object = requests.get(url, params={"q": "SELECT Id FROM Lead"}, headers=AUTH["salesforce"])
    assert bad_object.json()[0]["errorCode"] == "INVALID_TYPE"
    unauthorized = requests.get(url, params={"q": "SELECT Id FROM Contact"},
                                headers={"Authorization": "Bearer wrong"})
    assert unauthorized.status_code == 401
    assert unauthorized.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    assert "wrong" not in unauthorized.text


def test_describe_lists_fields(shared_sandbox):
    body = requests.get(f"{shared_sandbox.url}{API}/sobjects/Contact/describe", headers=AUTH["salesforce"]).json()
    fields = {f["name"]: f for f in body["fields"]}
    assert {"Id", "Email", "External_Id__c", "LastModifiedDate", "IsDeleted"} <= set(fields)
    assert fields["External_Id__c"]["externalId"] is True


def test_limit_info_header_counts_requests(sandbox):
    url = f"{sandbox.url}{API}/query"
    first = requests.get(url, params={"q": "SELECT Id FROM Account LIMIT 1"}, headers=AUTH["salesforce"])
    second = requests.get(url, params={"q": "SELECT Id FROM Account LIMIT 1"}, headers=AUTH["salesforce"])
    used = [int(r.headers["Sforce-Limit-Info"].split("=")[1].split("/")[0]) for r in (first, second)]
    assert used[1] == used[0] + 1


def test_daily_budget_exhausted_answers_request_limit_exceeded(sandbox):
    sandbox.set_faults(salesforce={"rate_limits": {"requests": 2, "per_seconds": 60}})
    url = f"{sandbox.url}{API}/query"
    statuses = [requests.get(url, params={"q": "SELECT Id FROM Account LIMIT 1"}, headers=AUTH["salesforce"])
                for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 403]
    assert statuses[2].json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert statuses[0].headers["Sforce-Limit-Info"] == "api-usage=1/2"


def upsert(sandbox, records: list[dict], all_or_none: bool = False) -> requests.Response:
    return requests.patch(f"{sandbox.url}{API}/composite/sobjects/Contact/External_Id__c",
                          json={"allOrNone": all_or_none, "records": records}, headers=AUTH["salesforce"])


def test_upsert_creates_then_updates_and_reads_see_it(sandbox):
    record = {"attributes": {"type": "Contact"}, "External_Id__c": "golden-1", "LastName": "Okafor",
              "Email": "ada@example.com"}
    created = upsert(sandbox, [record]).json()
    assert created == [{"id": created[0]["id"], "success": True, "errors": [], "created": True}]
    updated = upsert(sandbox, [{**record, "Email": "ada.new@example.com"}]).json()
    assert updated[0]["created"] is False and updated[0]["id"] == created[0]["id"]
    rows, _ = query(sandbox, "SELECT Id, Email, External_Id__c FROM Contact ORDER BY LastModifiedDate DESC LIMIT 1")
    assert rows[0]["Id"] == created[0]["id"] and rows[0]["Email"] == "ada.new@example.com"


def test_upsert_updates_a_seeded_contact_by_external_id(sandbox):
    contact, _ = query(sandbox, "SELECT Id FROM Contact LIMIT 1")
    first = requests.patch(f"{sandbox.url}{API}/composite/sobjects/Contact/Id", headers=AUTH["salesforce"],
                           json={"records": [{"attributes": {"type": "Contact"}, "Id": contact[0]["Id"],
                                              "External_Id__c": "gold-42"}]}).json()
    assert first[0]["created"] is False
    again = upsert(sandbox, [{"attributes": {"type": "Contact"}, "External_Id__c": "GOLD-42", "Title": "CFO"}]).json()
    assert again[0] == {"id": contact[0]["Id"], "success": True, "errors": [], "created": False}


def test_upsert_per_record_errors_and_limits(sandbox):
    results = upsert(sandbox, [
        {"attributes": {"type": "Contact"}, "External_Id__c": "x1", "LastName": "A", "Email": "jane@@example"},
        {"attributes": {"type": "Contact"}, "External_Id__c": "x2", "LastName": "B", "Bogus__c": 1},
        {"attributes": {"type": "Contact"}, "External_Id__c": "x3"},
        {"attributes": {"type": "Contact"}, "External_Id__c": "x4", "LastName": "D"},
    ]).json()
    assert [r["success"] for r in results] == [False, False, False, True]
    assert [r["errors"][0]["statusCode"] for r in results[:3]] == [
        "INVALID_EMAIL_ADDRESS", "INVALID_FIELD", "REQUIRED_FIELD_MISSING"]
    rolled_back = upsert(sandbox, [{"attributes": {"type": "Contact"}, "External_Id__c": "y1", "LastName": "Y"},
                                   {"attributes": {"type": "Contact"}, "External_Id__c": "y2"}], all_or_none=True)
    assert [r["success"] for r in rolled_back.json()] == [False, False]
    too_many = upsert(sandbox, [{"attributes": {"type": "Contact"}, "External_Id__c": f"z{i}", "LastName": "Z"}
                                for i in range(201)])
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    exactly_200 = upsert(sandbox, [{"attributes": {"type": "Contact"}, "External_Id__c": f"z{i}", "LastName": "Z"}
                                   for i in range(200)])
    assert exactly_200.status_code == 200 and all(r["created"] for r in exactly_200.json())


def collection_update(sandbox, records: list, all_or_none: bool = False) -> requests.Response:
    return requests.patch(f"{sandbox.url}{API}/composite/sobjects", headers=AUTH["salesforce"],
                          json={"allOrNone": all_or_none, "records": records})


def test_collection_update_by_id_answers_per_record_in_order_and_reads_see_it(sandbox):
    (account,), _ = query(sandbox, "SELECT Id FROM Account LIMIT 1")
    (contact,), _ = query(sandbox, "SELECT Id FROM Contact LIMIT 1")
    results = collection_update(sandbox, [
        {"attributes": {"type": "Account"}, "id": account["Id"], "Industry": "Retail", "External_Id__c": "ent_a"},
        {"attributes": {"type": "Contact"}, "Id": contact["Id"], "Title": "CFO"},  # field names are case-blind
        {"attributes": {"type": "Account"}, "Industry": "Retail"},
        {"attributes": {"type": "Account"}, "id": contact["Id"], "Industry": "Retail"},
        {"attributes": {"type": "Account"}, "id": account["Id"], "Bogus__c": 1},
    ]).json()
    assert [(r["success"], r.get("id")) for r in results[:2]] == [(True, account["Id"]), (True, contact["Id"])]
    assert all("created" not in r for r in results)  # an update's SaveResult says nothing of creating
    assert [r["errors"][0]["statusCode"] for r in results[2:]] == ["MISSING_ARGUMENT", "MALFORMED_ID", "INVALID_FIELD"]
    read = requests.get(f"{sandbox.url}{API}/sobjects/Account/{account['Id']}", headers=AUTH["salesforce"]).json()
    assert (read["Industry"], read["External_Id__c"]) == ("Retail", "ent_a")


def test_collection_update_refuses_deleted_records_rolls_back_all_or_none_and_takes_at_most_200(sandbox):
    (account,), _ = query(sandbox, "SELECT Id FROM Account WHERE IsDeleted = true LIMIT 1", all_rows=True)
    [gone] = collection_update(sandbox, [{"attributes": {"type": "Account"}, "id": account["Id"],
                                          "Industry": "Retail"}]).json()
    assert not gone["success"] and gone["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    (live,), _ = query(sandbox, "SELECT Id, Industry FROM Account LIMIT 1")
    rolled_back = collection_update(sandbox, [{"attributes": {"type": "Account"}, "id": live["Id"], "Industry": "X"},
                                              {"attributes": {"type": "Account"}, "Industry": "Y"}], True).json()
    assert [r["errors"][0]["statusCode"] for r in rolled_back] == ["ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                                                   "MISSING_ARGUMENT"]
    unchanged = requests.get(f"{sandbox.url}{API}/sobjects/Account/{live['Id']}", headers=AUTH["salesforce"]).json()
    assert unchanged["Industry"] == live["Industry"]
    too_many = collection_update(sandbox, [{"attributes": {"type": "Account"}, "id": live["Id"]}] * 201)
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    untyped = collection_update(sandbox, [{"id": live["Id"], "Industry": "Z"}])
    assert untyped.status_code == 400 and untyped.json()[0]["errorCode"] == "INVALID_TYPE"
