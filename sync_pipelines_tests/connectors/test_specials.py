"""What is special about each API, checked against a scripted server: SOQL building, HubSpot's search paged by id,
Zendesk job polling, Stripe form encoding and idempotency keys, option and `since` validation."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qsl, quote

import pytest

from sync_pipelines.connectors import ConnectorError, connect
from sync_pipelines.connectors.base import parse_since
from sync_pipelines.connectors.stripe import form_encode
from sync_pipelines_tests.connectors.conftest import Reply


def test_salesforce_builds_soql_from_fields_and_follows_next_records_url(fake_api, sleeps):
    def script(seen):
        if seen.path.endswith("/queryAll"):
            return Reply(200, {"done": False, "nextRecordsUrl": "/services/data/v60.0/query/01g-2",
                               "records": [{"attributes": {"type": "Contact"}, "Id": "1"}]})
        assert seen.path == "/sf/services/data/v60.0/query/01g-2" and not seen.query
        return Reply(200, {"done": True, "records": [{"attributes": {"type": "Contact"}, "Id": "2"}]})

    fake_api.script = script
    salesforce = connect("salesforce", fake_api.url + "/sf", "tok-123456", fields={"Contact": ["Email"]},
                         sleep=sleeps)
    records = list(salesforce.read("Contact", since="2026-09-01T10:00:00+02:00"))
    assert records == [{"Id": "1"}, {"Id": "2"}]
    soql = fake_api.seen[0].query["q"][0]
    assert soql == ("SELECT Id, LastModifiedDate, IsDeleted, Email FROM Contact "
                    "WHERE LastModifiedDate >= 2026-09-01T08:00:00Z ORDER BY LastModifiedDate ASC")


def test_salesforce_names_cannot_reach_another_rest_path_or_the_soql(fake_api, sleeps):
    fake_api.script = lambda seen: Reply(200, [{"success": True, "id": "003A", "created": False}])
    salesforce = connect("salesforce", fake_api.url + "/sf", "tok-123456", sleep=sleeps)
    for key in ("../../x", "..", "Id/../../../sobjects/User", "Email?x=1", "Id#x"):
        with pytest.raises(ConnectorError, match="external id field .* is not a Salesforce API name"):
            salesforce.write("Contact", [{key: "a@x.io"}], key=key)
    for stream in ("..", "Contact/../User", "Contact WHERE Id != null", "User--"):
        with pytest.raises(ConnectorError, match="stream .* is not a Salesforce API name"):
            salesforce.write(stream, [{"External_Id__c": "a"}])
        with pytest.raises(ConnectorError, match="stream .* is not a Salesforce API name"):
            list(salesforce.read(stream))
    with pytest.raises(ConnectorError, match="field 'Email FROM User' is not a Salesforce API name"):
        list(connect("salesforce", fake_api.url + "/sf", "tok-123456", sleep=sleeps,
                     fields={"Contact": ["Email FROM User"]}).read("Contact"))
    assert fake_api.seen == []  # the token went nowhere
    assert salesforce.write("Custom_Object__c", [{"Legacy_Key__c": "k1"}], key="Legacy_Key__c")[0]["ok"]
    assert [s.path for s in fake_api.seen] == ["/sf/services/data/v60.0/composite/sobjects/Custom_Object__c/"
                                               "Legacy_Key__c"]


CEILING = 10  # the search endpoint's 10,000-result ceiling, scaled down


def hubspot_search_api(fake_api, stamps, edits=None):
    """Contacts `i` modified at `stamps[i]` ms, searched as HubSpot does: filters (GTE/LTE on the time, GT on the
    id), one sort, `after` offsets refused past the ceiling. `edits` maps a search's number to a contact edited
    just before it is answered (it gets the newest time)."""
    searches = []

    def script(seen):
        if seen.method == "GET":  # the archived pass
            return Reply(200, {"results": []})
        body = json.loads(seen.body)
        searches.append(body)
        if len(searches) in (edits or {}):
            stamps[edits[len(searches)]] = max(stamps) + 1
        tests = {"GTE": int.__ge__, "LTE": int.__le__, "GT": int.__gt__}
        column = {"lastmodifieddate": lambda i: stamps[i], "hs_object_id": lambda i: i}
        matches = [i for i in range(len(stamps))
                   if all(tests[f["operator"]](column[f["propertyName"]](i), int(f["value"]))
                          for f in body["filterGroups"][0]["filters"])]
        [sort] = body["sorts"]
        matches.sort(key=column[sort["propertyName"]], reverse=sort["direction"] == "DESCENDING")
        after, limit = int(body.get("after", 0)), body["limit"]
        if after + limit > CEILING:
            return Reply(400, {"category": "VALIDATION_ERROR", "message": "past the ceiling"})
        page = [{"id": str(i), "properties": {"lastmodifieddate": str(stamps[i])}} for i in matches[after:after + limit]]
        more = after + limit < len(matches)
        return Reply(200, {"total": len(matches), "results": page,
                           **({"paging": {"next": {"after": str(after + limit)}}} if more else {})})
    fake_api.script = script
    return searches


@pytest.mark.parametrize("kind, stream, record, answer", [
    ("asana", "tasks", {"gid": "1/../../workspaces", "name": "x"}, {"data": {"gid": "1"}}),
    ("stripe", "customers", {"id": "cus_1/../../charges", "name": "x"}, {"id": "cus_1"}),
])
def test_a_record_id_is_one_path_segment_never_another_rest_path(fake_api, sleeps, kind, stream, record, answer):
    fake_api.script = lambda seen: Reply(200, answer)
    connector = connect(kind, fake_api.url, "tok-123456", sleep=sleeps)
    connector.write(stream, [record])
    [sent] = fake_api.seen
    record_id = record.get("gid") or record["id"]
    assert sent.path.endswith(f"/{stream}/{quote(record_id, safe='')}"), sent.path


def test_hubspot_search_pages_by_id_past_the_ceiling_even_on_one_timestamp(fake_api, sleeps):
    searches = hubspot_search_api(fake_api, [5000] * 13 + [1000 + n for n in range(12)])
    connector = connect("hubspot", fake_api.url, "tok-123456", page_size=2, fields={"contacts": ["email"]},
                        sleep=sleeps)
    ids = [r["id"] for r in connector.read("contacts", since=datetime.fromtimestamp(0, timezone.utc))]
    assert ids == [str(n) for n in range(25)]
    assert all("after" not in s for s in searches) and len(searches) == 1 + 7  # the newest change, then 7 pages


def test_hubspot_edits_during_an_incremental_read_skip_nothing(fake_api, sleeps):
    """A contact already read is edited mid-read: every contact of the window is still read once, and the edited
    one's new time lies past the newest time read, where the next run's cursor starts."""
    stamps = [1000 + n for n in range(20)]
    hubspot_search_api(fake_api, stamps, edits={3: 1, 5: 12})  # one already read, one not yet read
    connector = connect("hubspot", fake_api.url, "tok-123456", page_size=2, fields={"contacts": ["email"]},
                        sleep=sleeps)
    read = list(connector.read("contacts", since="1970-01-01"))
    ids = [r["id"] for r in read]
    assert ids == [str(n) for n in range(20) if n != 12]  # 12 left the window before its page: next run's
    cursor = max(int(r["properties"]["lastmodifieddate"]) for r in read)
    assert stamps[1] > cursor and stamps[12] > cursor


def test_hubspot_search_with_no_change_asks_once(fake_api, sleeps):
    searches = hubspot_search_api(fake_api, [1000, 2000])
    connector = connect("hubspot", fake_api.url, "tok-123456", fields={"contacts": ["email"]}, sleep=sleeps)
    assert list(connector.read("contacts", since=datetime.fromtimestamp(3, timezone.utc))) == []
    assert len(searches) == 1


def test_zendesk_polls_the_job_and_maps_each_result(fake_api, sleeps):
    states = iter(["queued", "working", "completed"])

    def script(seen):
        if seen.path.endswith("create_or_update_many.json"):
            assert [u["email"] for u in json.loads(seen.body)["users"]] == ["a@x.io", "b@x.io"]
            return Reply(200, {"job_status": {"id": "J1", "status": "queued"}})
        status = next(states)
        results = [{"id": 11, "status": "Created", "email": "a@x.io"},
                   {"id": 2, "status": "Failed", "error": "UserUpdateError", "details": "bad email"}]
        return Reply(200, {"job_status": {"id": "J1", "status": status,
                                          "results": results if status == "completed" else None}})

    fake_api.script = script
    zendesk = connect("zendesk", fake_api.url, {"email": "me@x.io", "api_token": "zd-secret"}, sleep=sleeps)
    results = zendesk.write("users", [{"email": "a@x.io"}, {"email": "b@x.io"}])
    assert results[0] == {"ok": True, "id": "11", "created": True, "error": None}
    assert results[1]["ok"] is False and "bad email" in results[1]["error"]
    assert sleeps == [1, 2]
    assert fake_api.seen[0].headers["Authorization"].startswith("Basic ")


def test_stripe_form_encoding_nests_like_stripe():
    pairs = form_encode({"customer": "cus_1", "metadata": {"deal_id": "D1"}, "lines": [{"price": "p", "qty": 2}],
                         "auto_advance": True, "description": None})
    assert pairs == [("customer", "cus_1"), ("metadata[deal_id]", "D1"), ("lines[0][price]", "p"),
                     ("lines[0][qty]", "2"), ("auto_advance", "true"), ("description", "")]


def test_stripe_idempotency_keys_cover_one_write_and_its_retries(fake_api, sleeps):
    """A key per call, which its retries reuse, or the record's own; never one derived from the values, to which
    Stripe would answer with the first write's result (a field set A, B, then A again would stay B)."""
    fake_api.script = lambda seen: (Reply(500, {"error": {"type": "api_error"}}) if len(fake_api.seen) == 1
                                    else Reply(200, {"id": "cus_1"}))
    stripe = connect("stripe", fake_api.url, "sk_test_abcdef", sleep=sleeps)
    results = stripe.write("customers", [{"id": "cus_1", "phone": "A"}, {"id": "cus_1", "phone": "B"},
                                         {"id": "cus_1", "phone": "A"}, {"email": "x@example.com",
                                                                         "idempotency_key": "mine-1"}])
    assert [r["ok"] for r in results] == [True] * 4
    keys = [s.headers["Idempotency-Key"] for s in fake_api.seen]
    assert len(keys) == 5 and keys[0] == keys[1]  # the 500 was retried with the same key
    assert len(set(keys[1:4])) == 3 and keys[4] == "mine-1"
    assert dict(parse_qsl(fake_api.seen[4].body.decode())) == {"email": "x@example.com"}


def test_stripe_read_from_past_the_events_feeds_reach_lists_every_object_first(fake_api, sleeps):
    """Stripe keeps 30 days of events: from further back (a paused sync) the objects are listed whole, then the
    events still kept are taken in, newer, after them."""
    def script(seen):
        if seen.path.endswith("/customers"):
            return Reply(200, {"object": "list", "has_more": False, "data": [{"id": "cus_1", "created": 100}]})
        return Reply(200, {"object": "list", "has_more": False, "data": [
            {"id": "evt_1", "type": "customer.updated", "created": 5000, "data": {"object": {"id": "cus_1"}}}]})

    fake_api.script = script
    stripe = connect("stripe", fake_api.url, "sk_test_abcdef", sleep=sleeps)
    now = datetime.now(timezone.utc)
    records = list(stripe.read("customers", since=now - timedelta(days=45)))
    assert [(r["id"], r["updated"]) for r in records] == [("cus_1", 100), ("cus_1", 5000)]
    assert [s.path for s in fake_api.seen] == ["/v1/customers", "/v1/events"]
    floor = int(fake_api.seen[1].query["created[gte]"][0])
    assert (now - timedelta(days=30)).timestamp() < floor < now.timestamp()
    fake_api.seen.clear()
    list(stripe.read("customers", since=now - timedelta(days=3)))
    assert [s.path for s in fake_api.seen] == ["/v1/events"]


def test_since_must_say_its_time_zone():
    assert parse_since("2026-09-01", "t") == datetime(2026, 9, 1, tzinfo=timezone.utc)
    assert parse_since(date(2026, 9, 1), "t") == datetime(2026, 9, 1, tzinfo=timezone.utc)
    assert parse_since("2026-09-01T02:00:00Z", "t") == datetime(2026, 9, 1, 2, tzinfo=timezone.utc)
    with pytest.raises(ConnectorError, match="no time zone"):
        parse_since(datetime(2026, 9, 1), "t")
    with pytest.raises(ConnectorError, match="not an ISO 8601"):
        parse_since("last tuesday", "t")


@pytest.mark.parametrize("kind, credentials, options, message", [
    ("nosuch", "x", {}, "unknown connector kind 'nosuch'"),
    ("hubspot", "tok-123456", {"pagesize": 10}, "unknown option(s) ['pagesize']"),
    ("zendesk", {"email": "me@x.io"}, {"credential_env": {"api_token": "ZD_TOKEN"}},
     "set the environment variable ZD_TOKEN"),
    ("stripe", "sk_1234", {"timeout": -1}, "option timeout must be a positive number"),
    ("asana", "tok-123456", {"rate_limit": {"requests": 10}}, "rate_limit needs a positive"),
    ("salesforce", "tok-123456", {}, "base_url must be an http(s) URL"),
])
def test_connect_rejects_bad_input_clearly(kind, credentials, options, message):
    base_url = "acme.my.salesforce.com" if kind == "salesforce" else "http://127.0.0.1:9"
    with pytest.raises(ConnectorError) as raised:
        connect(kind, base_url, credentials, **options)
    assert message in str(raised.value)


def test_streams_and_modes_are_checked(fake_api):
    zendesk = connect("zendesk", fake_api.url, {"email": "me@x.io", "api_token": "zd-secret"})
    with pytest.raises(ConnectorError, match="cannot write stream 'tickets'"):
        zendesk.write("tickets", [{"subject": "x"}])
    with pytest.raises(ConnectorError, match="write mode 'merge' is not supported"):
        zendesk.write("users", [{"email": "a@x.io"}], mode="merge")
    with pytest.raises(ConnectorError, match="record #1 for users is a str"):
        zendesk.write("users", [{"email": "a@x.io"}, "b@x.io"])
    assert fake_api.seen == []


def test_hubspot_update_by_record_id_uses_batch_update(fake_api, sleeps):
    def script(seen):
        inputs = json.loads(seen.body)["inputs"]
        return Reply(200, {"status": "COMPLETE", "results": [
            {"id": i["id"], "properties": i["properties"]} for i in reversed(inputs) if i["id"] != "404"]})

    fake_api.script = script
    connector = connect("hubspot", fake_api.url, "tok-123456", sleep=sleeps)
    results = connector.write("contacts", [{"id": "101", "properties": {"email": "new@x.io"}},
                                           {"id": "404", "properties": {"phone": "+1555"}},
                                           {"properties": {"phone": "+1555"}}], mode="update", key="id")
    assert fake_api.seen[0].path == "/crm/v3/objects/contacts/batch/update"
    assert json.loads(fake_api.seen[0].body)["inputs"][0] == {"id": "101", "properties": {"email": "new@x.io"}}
    assert results[0] == {"ok": True, "id": "101", "created": False, "error": None}
    assert results[1]["ok"] is False and results[2] == {"ok": False, "id": None, "created": None,
                                                        "error": "record lacks its id"}


def test_zendesk_update_by_id_uses_update_many(fake_api, sleeps):
    def script(seen):
        if seen.path.endswith("update_many.json"):
            assert seen.method == "PUT" and json.loads(seen.body)["users"] == [{"id": 7, "email": "new@x.io"}]
            return Reply(200, {"job_status": {"id": "J2", "status": "queued"}})
        return Reply(200, {"job_status": {"id": "J2", "status": "completed",
                                          "results": [{"id": 7, "action": "update", "status": "Updated"}]}})

    fake_api.script = script
    zendesk = connect("zendesk", fake_api.url, {"email": "me@x.io", "api_token": "zd-secret"}, sleep=sleeps)
    assert zendesk.write("users", [{"id": 7, "email": "new@x.io"}], mode="update", key="id") == [
        {"ok": True, "id": "7", "created": False, "error": None}]
    with pytest.raises(ConnectorError, match="update matches users by id, not email"):
        zendesk.write("users", [{"email": "a@x.io"}], mode="update", key="email")


def test_asana_walks_workspaces_and_projects_and_dedupes_tasks(fake_api, sleeps):
    tasks = {"P1": [{"gid": "T1"}, {"gid": "T2"}, {"gid": "T3"}], "P2": [{"gid": "T2"}, {"gid": "T4"}]}

    def script(seen):
        if seen.path.endswith("/workspaces"):
            return Reply(200, {"data": [{"gid": "W1"}], "next_page": None})
        if seen.path.endswith("/projects"):
            assert seen.query["workspace"] == ["W1"]
            return Reply(200, {"data": [{"gid": "P1"}, {"gid": "P2"}], "next_page": None})
        project, offset = seen.query["project"][0], int(seen.query.get("offset", ["0"])[0])
        page = tasks[project][offset:offset + 2]
        more = offset + 2 < len(tasks[project])
        return Reply(200, {"data": page, "next_page": {"offset": str(offset + 2)} if more else None})

    fake_api.script = script
    asana = connect("asana", fake_api.url, "tok-123456", page_size=2, sleep=sleeps)
    assert [t["gid"] for t in asana.read("tasks", since="2026-09-01T00:00:00Z")] == ["T1", "T2", "T3", "T4"]
    first_task_page = next(s for s in fake_api.seen if s.path.endswith("/tasks"))
    assert first_task_page.query["modified_since"] == ["2026-09-01T00:00:00Z"]
    assert "assignee.email" in first_task_page.query["opt_fields"][0]


@pytest.mark.parametrize("status, calls, said", [
    ("draft", ["GET", "DELETE"], "deleted (it was a draft)"),
    ("open", ["GET", "POST"], "voided"),
    ("paid", ["GET"], "not undone: the invoice is paid; refund or credit it in Stripe"),
])
def test_stripe_undoes_an_invoice_only_the_way_its_status_allows(fake_api, sleeps, status, calls, said):
    fake_api.script = lambda seen: Reply(200, {"id": "in_1", "object": "invoice", "status": status})
    stripe = connect("stripe", fake_api.url, "sk_test_x", sleep=sleeps)
    assert stripe.undo_create("invoices", "in_1") == said
    assert [seen.method for seen in fake_api.seen] == calls
    assert connect("asana", fake_api.url, "tok", sleep=sleeps).undo_create("tasks", "1").startswith("not undone")
