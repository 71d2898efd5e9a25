"""Every API write path changes records and ground truth exactly as the same change made through /_sandbox/mutate."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import requests

from sync_pipelines.sandbox import RunningSandbox, running_sandbox
from sync_pipelines.sandbox.stripe import EVENT_TYPES

from .conftest import AUTH

SALESFORCE = "/salesforce/services/data/v60.0/composite/sobjects/Contact"
HUBSPOT = "/hubspot/crm/v3/objects/contacts/batch"
ZENDESK = "/zendesk/api/v2/users"
STRIPE = "/stripe/v1/customers"
ASANA = "/asana/api/1.0/tasks"

# A write: (sandbox, record id, current fields) -> the same change in the table's own field names (for mutate).
Write = Callable[[RunningSandbox, Any, dict[str, Any]], dict[str, Any]]


def salesforce_by_id(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    changes = {"Email": " Ada.Lovelace@Example.COM ", "Title": "Countess"}
    body = {"records": [{"attributes": {"type": "Contact"}, "Id": record_id, **changes}]}
    result = requests.patch(f"{sandbox.url}{SALESFORCE}/Id", json=body, headers=AUTH["salesforce"]).json()
    assert result == [{"id": record_id, "success": True, "errors": [], "created": False}]
    return changes


def salesforce_by_external_id(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    tag = {"attributes": {"type": "Contact"}, "Id": record_id, "External_Id__c": f"golden-{record_id}"}
    requests.patch(f"{sandbox.url}{SALESFORCE}/Id", json={"records": [tag]}, headers=AUTH["salesforce"])
    record = {"attributes": {"type": "Contact"}, "External_Id__c": f"GOLDEN-{record_id}", "Phone": "(212) 555-0101"}
    result = requests.patch(f"{sandbox.url}{SALESFORCE}/External_Id__c", json={"records": [record]},
                            headers=AUTH["salesforce"]).json()
    assert result[0]["id"] == record_id and result[0]["created"] is False
    return {"External_Id__c": f"GOLDEN-{record_id}", "Phone": "(212) 555-0101"}  # matched case-blind, stored as sent


def hubspot_upsert(sandbox: RunningSandbox, record_id: Any, fields: dict) -> dict[str, Any]:
    changes = {"phone": "+44 20 7946 0958", "lifecyclestage": "Customer"}
    inputs = [{"idProperty": "email", "id": fields["email"], "properties": changes}]
    result = requests.post(f"{sandbox.url}{HUBSPOT}/upsert", json={"inputs": inputs}, headers=AUTH["hubspot"]).json()
    assert [(r["id"], r["new"]) for r in result["results"]] == [(str(record_id), False)]
    return {**changes, "email": fields["email"]}


def hubspot_update(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    changes = {"email": "grace.hopper@navy.example", "lastname": "Hopper"}
    inputs = [{"id": str(record_id), "properties": changes}]
    response = requests.post(f"{sandbox.url}{HUBSPOT}/update", json={"inputs": inputs}, headers=AUTH["hubspot"])
    assert response.status_code == 200
    return changes


def zendesk_job(sandbox: RunningSandbox, method: str, action: str, user: dict) -> dict[str, Any]:
    job = requests.request(method, f"{sandbox.url}{ZENDESK}/{action}.json", json={"users": [user]},
                           headers=AUTH["zendesk"]).json()["job_status"]
    return requests.get(job["url"], headers=AUTH["zendesk"]).json()["job_status"]["results"][0]


def zendesk_create_or_update(sandbox: RunningSandbox, record_id: Any, fields: dict) -> dict[str, Any]:
    changes = {"email": fields["email"], "phone": "646.555.0177"}
    result = zendesk_job(sandbox, "POST", "create_or_update_many", changes)
    assert (result["id"], result["status"]) == (record_id, "Updated")
    return changes


def zendesk_update(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    changes = {"name": "Katherine Johnson", "email": "KJ@nasa.example"}
    result = zendesk_job(sandbox, "PUT", "update_many", {"id": record_id, **changes})
    assert (result["id"], result["status"]) == (record_id, "Updated")
    return changes


def stripe_update(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    changes = {"name": "Mary Jackson", "phone": "+13125550188"}
    response = requests.post(f"{sandbox.url}{STRIPE}/{record_id}", data=changes, headers=AUTH["stripe"])
    assert response.status_code == 200
    return changes


def stripe_delete(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    assert requests.delete(f"{sandbox.url}{STRIPE}/{record_id}", headers=AUTH["stripe"]).json()["deleted"] is True
    return {"deleted": True}


def asana_update(sandbox: RunningSandbox, record_id: Any, _: dict) -> dict[str, Any]:
    changes = {"notes": "call booked", "completed": True}
    response = requests.put(f"{sandbox.url}{ASANA}/{record_id}", json={"data": changes}, headers=AUTH["asana"])
    assert response.status_code == 200
    return changes


# (tool, stream, write, what truth must then say of the record's person; None when the record leaves truth)
WRITES: list[tuple[str, str, Write, dict[str, Any] | None]] = [
    ("salesforce", "Contact", salesforce_by_id, {"email": "ada.lovelace@example.com", "job_title": "Countess"}),
    ("salesforce", "Contact", salesforce_by_external_id, {"phone": "+12125550101"}),
    ("hubspot", "contacts", hubspot_upsert, {"phone": "+442079460958", "lifecycle_stage": "customer"}),
    ("hubspot", "contacts", hubspot_update, {"email": "grace.hopper@navy.example", "last_name": "Hopper"}),
    ("zendesk", "users", zendesk_create_or_update, {"phone": "+16465550177"}),
    ("zendesk", "users", zendesk_update, {"first_name": "Katherine", "last_name": "Johnson",
                                          "email": "kj@nasa.example"}),
    ("stripe", "customers", stripe_update, {"first_name": "Mary", "phone": "+13125550188"}),
    ("stripe", "customers", stripe_delete, None),
    ("asana", "tasks", asana_update, None),
]


@pytest.fixture(scope="module")
def twins() -> Iterator[tuple[RunningSandbox, RunningSandbox, list[tuple[str, str, Any, str | None]]]]:
    """Two identical sandboxes: each write goes through the API in one and through mutate in the other."""
    with running_sandbox(seed=5, scale=0.3, rate_limits=False) as api, \
            running_sandbox(seed=5, scale=0.3, rate_limits=False) as mutated:
        used_people: set[str] = set()
        touched = []
        for tool, stream, write, _ in WRITES:
            record_id, person = _pick(api, tool, stream, used_people)
            fields = api.state.world.table(tool, stream).fields(api.state.world.table(tool, stream).row_of(record_id))
            changes = write(api, record_id, fields)
            mutated.mutate(tool, stream, record_id, changes)
            touched.append((tool, stream, record_id, person))
        yield api, mutated, touched


def _pick(sandbox: RunningSandbox, tool: str, stream: str, used_people: set[str]) -> tuple[Any, str | None]:
    """A live, valid record with an email, of a person no earlier write touched (ties in time stay out of it)."""
    table = sandbox.state.world.table(tool, stream)
    for record in sandbox.truth("records", tool=tool, stream=stream):
        if record["deleted"] or record["invalid"] or (record["person"] and record["person"] in used_people):
            continue
        email_field = {"salesforce": "Email", "asana": None}.get(tool, "email")
        if email_field and not (table.fields(table.row_of(record["id"])).get(email_field) or "").strip():
            continue
        if record["person"]:
            used_people.add(record["person"])
        return record["id"], record["person"]
    raise AssertionError(f"no usable record in {tool}/{stream}")


def test_truth_after_api_writes_equals_truth_after_mutations(twins):
    api, mutated, _ = twins
    assert api.truth("people") == mutated.truth("people")
    assert api.truth()["streams"] == mutated.truth()["streams"]


@pytest.mark.parametrize("index", range(len(WRITES)), ids=[w[2].__name__ for w in WRITES])
def test_each_write_reaches_its_record_and_truth(twins, index):
    api, mutated, touched = twins
    tool, stream, record_id, person = touched[index]
    expected = WRITES[index][3]
    tables = [s.state.world.table(tool, stream) for s in (api, mutated)]
    rows = [t.row_of(record_id) for t in tables]
    assert tables[0].fields(rows[0]) == tables[1].fields(rows[1])
    assert bool(tables[0].deleted[rows[0]]) == bool(tables[1].deleted[rows[1]])
    assert tables[0].modified[rows[0]] > api.state.world.anchor_ms  # the write bumped the record's time
    people = api.truth("people")
    if expected is not None:
        assert {field: people[person][field] for field in expected} == expected
    if tool == "stripe":
        logs = [s.state.vendors["stripe"].events for s in (api, mutated)]
        kinds = [[EVENT_TYPES[t] for t in log.type[(log.stream == 0) & (log.row == row)]]
                 for log, row in zip(logs, rows)]
        assert kinds[0] == kinds[1]
        assert kinds[0][-1] == ("customer.deleted" if expected is None else "customer.updated")


def test_created_contact_joins_the_person_owning_its_email(sandbox):
    in_hubspot = {r["person"] for r in sandbox.truth("records", tool="hubspot", stream="contacts")}
    contacts = sandbox.state.world.table("salesforce", "Contact")
    record = next(r for r in sandbox.truth("records", tool="salesforce", stream="Contact")
                  if r["person"] and r["person"] not in in_hubspot and not r["deleted"] and not r["invalid"]
                  and contacts.fields(contacts.row_of(r["id"])).get("Email"))
    email = contacts.fields(contacts.row_of(record["id"]))["Email"]
    people_before = sandbox.truth("people")
    inputs = [{"idProperty": "email", "id": email, "properties": {"jobtitle": "Chief Sandbox Officer",
                                                                  "lifecyclestage": "evangelist"}},
              {"idProperty": "email", "id": "stranger@nowhere.example", "properties": {"jobtitle": "Stranger"}}]
    created = requests.post(f"{sandbox.url}{HUBSPOT}/upsert", json={"inputs": inputs},
                            headers=AUTH["hubspot"]).json()["results"]
    assert [r["new"] for r in created] == [True, True]
    owners = {r["id"]: r["person"] for r in sandbox.truth("records", tool="hubspot", stream="contacts")}
    assert owners[created[0]["id"]] == record["person"] and owners[created[1]["id"]] is None
    people = sandbox.truth("people")
    assert people[record["person"]] == {**people_before[record["person"]], "job_title": "Chief Sandbox Officer",
                                        "lifecycle_stage": "evangelist"}
    assert set(people) == set(people_before)


def test_upserts_skip_deleted_records(sandbox):
    contacts = sandbox.state.world.table("salesforce", "Contact")
    deleted_id = next(r["id"] for r in sandbox.truth("records", tool="salesforce", stream="Contact") if r["deleted"])
    by_id = requests.patch(f"{sandbox.url}{SALESFORCE}/Id", headers=AUTH["salesforce"], json={
        "records": [{"attributes": {"type": "Contact"}, "Id": deleted_id, "Title": "Ghost"}]}).json()
    assert by_id[0]["success"] is False and by_id[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert contacts.fields(contacts.row_of(deleted_id))["Title"] != "Ghost"
    users = sandbox.state.world.table("zendesk", "users")
    deleted_user = next(r["id"] for r in sandbox.truth("records", tool="zendesk", stream="users")
                        if r["deleted"] and users.fields(users.row_of(r["id"])).get("email"))
    email = users.fields(users.row_of(deleted_user))["email"]
    live_twin = users.live(users.lookup("email", email))
    result = zendesk_job(sandbox, "POST", "create_or_update_many", {"email": email, "name": "Back Again"})
    assert result["id"] != deleted_user
    assert result["action"] == ("update" if live_twin is not None else "create")
