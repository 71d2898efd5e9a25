"""Every connector against the sandbox: full reads equal the ground truth, incremental reads return only what
changed, a bad credential fails at once and names its variable, and writes round-trip."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import requests

from sync_pipelines.connectors import AuthError, RateLimitError, connect

sandbox_module = pytest.importorskip("sync_pipelines.sandbox")

CREDENTIALS = sandbox_module.sandbox_credentials()
BAD_CREDENTIALS = {
    "salesforce": "wrong-salesforce-secret",
    "hubspot": "wrong-hubspot-secret",
    "zendesk": {"email": "sync@sandbox.example", "api_token": "wrong-zendesk-secret"},
    "asana": "wrong-asana-secret",
    "stripe": "sk_test_wrong_secret",
}
# (tool, stream, a field the sandbox lets us change, its new value)
STREAMS = [
    ("salesforce", "Contact", "Title", "Chief Testing Officer"),
    ("salesforce", "Account", "Industry", "Testing"),
    ("salesforce", "Opportunity", "Name", "Changed deal"),
    ("hubspot", "contacts", "jobtitle", "Chief Testing Officer"),
    ("hubspot", "companies", "industry", "Testing"),
    ("zendesk", "users", "phone", "+15550001111"),
    ("zendesk", "organizations", "name", "Changed Organization"),
    ("zendesk", "tickets", "subject", "Changed subject"),
    ("asana", "tasks", "notes", "Changed notes"),
    ("stripe", "customers", "name", "Changed Name"),
    ("stripe", "invoices", "amount_due", 4321),
]
ID_FIELD = {"salesforce": "Id", "asana": "gid"}
IS_DELETED = {"salesforce": lambda r: r["IsDeleted"], "hubspot": lambda r: r["archived"],
              "zendesk": lambda r: r.get("active") is False or r.get("status") == "deleted"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    with sandbox_module.running_sandbox(seed=7, scale=0.1, rate_limits=False,
                                        csv_dir=tmp_path_factory.mktemp("erp")) as running:
        yield running


def open_tool(sandbox, tool, credentials=None, **options):
    """One module-wide sandbox serves dozens of reads: lift Zendesk's 10 exports a minute on the client side too."""
    options.setdefault("endpoint_limits", {})
    return connect(tool, sandbox.base_url(tool), credentials or CREDENTIALS[tool], name=tool, **options)


def truth_ids(sandbox, tool, stream, live_only=False):
    return {str(r["id"]) for r in sandbox.truth("records", tool=tool, stream=stream)
            if not (live_only and r["deleted"])}


@pytest.mark.parametrize("tool, stream", [(t, s) for t, s, _, _ in STREAMS])
def test_full_read_equals_the_truth(sandbox, tool, stream):
    connector = open_tool(sandbox, tool)
    records = list(connector.read(stream))
    ids = [str(r[ID_FIELD.get(tool, "id")]) for r in records]
    # Stripe lists never show deleted objects; only its events feed does.
    expected = truth_ids(sandbox, tool, stream, live_only=tool == "stripe")
    assert len(ids) == len(set(ids)) == len(expected)
    assert set(ids) == expected
    if tool in IS_DELETED:
        deleted = {str(r[ID_FIELD.get(tool, "id")]) for r in records if IS_DELETED[tool](r)}
        assert deleted == truth_ids(sandbox, tool, stream) - truth_ids(sandbox, tool, stream, live_only=True)
    assert connector.stats.records == len(ids) and connector.stats.pages >= 1


@pytest.mark.parametrize("tool, stream, field, value", STREAMS)
def test_incremental_read_returns_only_the_changed_record(sandbox, tool, stream, field, value):
    record_id = sorted(truth_ids(sandbox, tool, stream, live_only=True))[0]
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    sandbox.mutate(tool, stream, int(record_id) if tool == "zendesk" else record_id, {field: value})
    changed = list(open_tool(sandbox, tool).read(stream, since=since))
    assert [str(r[ID_FIELD.get(tool, "id")]) for r in changed] == [record_id]


@pytest.mark.parametrize("tool", sorted(BAD_CREDENTIALS))
def test_bad_credential_fails_at_once_naming_the_variable(sandbox, tool):
    connector = open_tool(sandbox, tool, BAD_CREDENTIALS[tool], credential_env={"api_token": "ZD_TOKEN"})
    stream = next(s for t, s, _, _ in STREAMS if t == tool)
    with pytest.raises(AuthError) as raised:
        list(connector.read(stream))
    message = str(raised.value)
    secret = BAD_CREDENTIALS[tool]["api_token"] if tool == "zendesk" else BAD_CREDENTIALS[tool]
    assert secret not in message and message.startswith(f"{tool}: the API rejected the credentials (HTTP 401")
    credential_key = {"zendesk": "ZD_TOKEN", "stripe": "STRIPE_API_KEY"}
    expected_var = credential_key.get(tool, f"{tool.upper()}_ACCESS_TOKEN")
    assert expected_var in message
    assert connector.stats.requests == 1


def test_salesforce_upsert_by_external_id_round_trips(sandbox):
    salesforce = open_tool(sandbox, "salesforce")
    record = {"External_Id__c": "golden-001", "Email": "ada@example.com", "LastName": "Lovelace"}
    first = salesforce.write("Contact", [record, {"Email": "no-key@example.com"}], key="External_Id__c")
    assert first[0]["ok"] and first[0]["created"] is True
    assert not first[1]["ok"] and "External_Id__c" in first[1]["error"]
    again = salesforce.write("Contact", [{**record, "Title": "Countess"}])
    assert again[0] == {"ok": True, "id": first[0]["id"], "created": False, "error": None}
    stored = [r for r in salesforce.read("Contact") if r["Id"] == first[0]["id"]]
    assert stored[0]["Title"] == "Countess"


def test_hubspot_batch_upsert_by_email_round_trips(sandbox):
    hubspot = open_tool(sandbox, "hubspot")
    first = hubspot.write("contacts", [{"email": "grace@example.com", "firstname": "Grace"}])
    assert first[0]["ok"] and first[0]["created"] is True
    again = hubspot.write("contacts", [{"properties": {"email": "grace@example.com", "lastname": "Hopper"}}])
    assert again[0]["id"] == first[0]["id"] and again[0]["created"] is False
    stored = [r for r in hubspot.read("contacts") if r["id"] == first[0]["id"]]
    assert stored[0]["properties"]["lastname"] == "Hopper"


def test_zendesk_create_or_update_many_maps_job_results_to_inputs(sandbox):
    zendesk = open_tool(sandbox, "zendesk", sleep=lambda seconds: None)
    users = [{"email": "linus@example.com", "name": "Linus T"}, {"email": "ken@example.com", "name": "Ken T"}]
    first = zendesk.write("users", users)
    assert [r["created"] for r in first] == [True, True] and all(r["ok"] for r in first)
    again = zendesk.write("users", [{"email": "ken@example.com", "name": "Ken Thompson"}])
    assert again[0]["id"] == first[1]["id"] and again[0]["created"] is False


def test_hubspot_contact_company_is_its_primary_association_read_and_rewritten_through_v4(sandbox):
    hubspot = open_tool(sandbox, "hubspot", associations={"contacts": ["companies"]})
    live = [r for r in hubspot.read("contacts") if not r["archived"]]
    assert all(set(r["associations"]) == {"companies"} for r in live)
    associated = [r for r in live if r["associations"]["companies"]]
    assert 0 < len(associated) < len(live)  # the data plants contacts without a company too
    assert "associations" not in next(open_tool(sandbox, "hubspot").read("contacts"))  # only when asked for
    contact, old = associated[0]["id"], associated[0]["associations"]["companies"]
    new = next(r["id"] for r in hubspot.read("companies") if not r["archived"] and r["id"] != old)
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    [written] = hubspot.write("contacts", [{"id": contact, "associations": {"companies": new}}], mode="update",
                              key="id")
    assert written == {"ok": True, "id": contact, "created": False, "error": None}
    # the change moves the contact's modification time, so an incremental read sees it, and the old one is gone
    changed = {r["id"]: r["associations"]["companies"] for r in hubspot.read("contacts", since=since)}
    assert changed[contact] == new
    body = requests.post(f"{sandbox.base_url('hubspot')}/crm/v4/associations/contacts/companies/batch/read",
                         json={"inputs": [{"id": contact}]}, timeout=30,
                         headers={"Authorization": f"Bearer {CREDENTIALS['hubspot']['access_token']}"}).json()
    assert [str(to["toObjectId"]) for to in body["results"][0]["to"]] == [new]
    [cleared] = hubspot.write("contacts", [{"id": contact, "associations": {"companies": None}}], mode="update")
    assert cleared["ok"]
    assert next(r for r in hubspot.read("contacts") if r["id"] == contact)["associations"]["companies"] is None
    [refused] = hubspot.write("contacts", [{"id": contact, "associations": {"companies": "999999999"}}],
                              mode="update")
    assert not refused["ok"] and "companies association" in refused["error"]


def test_hubspot_a_failed_association_keeps_the_contacts_company_and_fails_only_that_record(sandbox):
    """One batch sends a contact to a company that does not exist and another to a real one: only the first fails
    and keeps its company; the second loses only the primary company it replaces, not one a person added."""
    hubspot = open_tool(sandbox, "hubspot", associations={"contacts": ["companies"]})
    associated = [r for r in hubspot.read("contacts") if not r["archived"] and r["associations"]["companies"]]
    (first, first_company), (second, second_company) = [(r["id"], r["associations"]["companies"])
                                                        for r in associated[:2]]
    companies = [r["id"] for r in hubspot.read("companies") if not r["archived"]]
    new, added = [c for c in companies if c not in (first_company, second_company)][:2]
    v4 = f"{sandbox.base_url('hubspot')}/crm/v4"
    auth = {"Authorization": f"Bearer {CREDENTIALS['hubspot']['access_token']}"}
    requests.put(f"{v4}/objects/contacts/{second}/associations/default/companies/{added}", headers=auth,
                 timeout=30).raise_for_status()  # a second company a person added: not primary
    refused, written = hubspot.write("contacts", [{"id": first, "associations": {"companies": "999999999"}},
                                                  {"id": second, "associations": {"companies": new}}],
                                     mode="update", key="id")
    assert not refused["ok"] and "999999999" in refused["error"] and written["ok"]
    body = requests.post(f"{v4}/associations/contacts/companies/batch/read", headers=auth, timeout=30,
                         json={"inputs": [{"id": first}, {"id": second}]}).json()
    held = {r["from"]["id"]: {str(to["toObjectId"]) for to in r["to"]} for r in body["results"]}
    assert held == {first: {first_company}, second: {added, new}}


def test_zendesk_user_organization_is_written_and_an_unknown_one_refused(sandbox):
    zendesk = open_tool(sandbox, "zendesk", sleep=lambda seconds: None)
    organizations = [str(r["id"]) for r in zendesk.read("organizations")]
    assert set(organizations) == truth_ids(sandbox, "zendesk", "organizations")
    first, second = sorted(truth_ids(sandbox, "zendesk", "users", live_only=True))[3:5]
    written, refused = zendesk.write("users", [{"id": first, "organization_id": organizations[1]},
                                               {"id": second, "organization_id": "1"}], mode="update", key="id")
    assert written["ok"] and not refused["ok"] and "Organization" in refused["error"]
    stored = {str(r["id"]): r["organization_id"] for r in zendesk.read("users")}
    assert str(stored[first]) == organizations[1] and str(stored[second]) != "1"


def test_salesforce_contact_account_must_name_a_live_account(sandbox):
    salesforce = open_tool(sandbox, "salesforce")
    contact_id = sorted(truth_ids(sandbox, "salesforce", "Contact", live_only=True))[2]
    account = sorted(truth_ids(sandbox, "salesforce", "Account", live_only=True))[1]
    ok, bad = salesforce.write("Contact", [{"Id": contact_id, "AccountId": account},
                                           {"Id": contact_id, "AccountId": "001000000000000AAA"}], mode="update",
                               key="Id")
    assert ok["ok"] and not bad["ok"] and "INVALID_CROSS_REFERENCE_KEY" in bad["error"]
    assert next(r for r in salesforce.read("Contact") if r["Id"] == contact_id)["AccountId"] == account


def test_salesforce_update_goes_through_sobject_collections_in_batches_a_refused_record_failing_alone(
        sandbox, monkeypatch):
    monkeypatch.setattr("sync_pipelines.connectors.salesforce.COLLECTION_CHUNK", 4)  # 200 against the real API
    salesforce = open_tool(sandbox, "salesforce")
    *accounts, deleted = sorted(truth_ids(sandbox, "salesforce", "Account", live_only=True))[:9]
    assert salesforce.delete("Account", [deleted])[0]["ok"]
    contact = sorted(truth_ids(sandbox, "salesforce", "Contact", live_only=True))[0]
    records = [{"Id": account, "Industry": f"Industry {i}"} for i, account in enumerate(accounts)]
    records[5:5] = [{"Id": deleted, "Industry": "Gone"}, {"Id": contact, "Industry": "Not an account"}]
    before = salesforce.stats.requests
    results = salesforce.write("Account", records, mode="update")
    assert salesforce.stats.requests - before == 3  # 10 records: 4, 4, then 2
    refused = [(i, r["error"]) for i, r in enumerate(results) if not r["ok"]]
    assert [i for i, _ in refused] == [5, 6] and "ENTITY_IS_DELETED" in refused[0][1] \
        and "MALFORMED_ID" in refused[1][1]
    assert all(r["id"] == record["Id"] and r["created"] is False for r, record in zip(results, records) if r["ok"])
    industries = {r["Id"]: r["Industry"] for r in salesforce.read("Account")}
    assert all(industries[record["Id"]] == record["Industry"] for record, r in zip(records, results) if r["ok"])
    [missing] = salesforce.write("Account", [{"Industry": "no id"}], mode="update")
    assert not missing["ok"] and "lacks the id field Id" in missing["error"]


def test_hubspot_writes_companies_through_the_batch_api_and_golden_id_is_unique(sandbox):
    hubspot = open_tool(sandbox, "hubspot")
    first, second, third = sorted(truth_ids(sandbox, "hubspot", "companies", live_only=True))[:3]
    written = hubspot.write("companies", [{"id": first, "domain": "first.example", "golden_id": "ent_gold_1"},
                                          {"id": second, "industry": "Retail"}], mode="update")
    assert [r["ok"] for r in written] == [True, True]
    held = {r["id"]: r["properties"] for r in hubspot.read("companies")}
    assert held[first]["domain"] == "first.example" and held[second]["industry"] == "Retail"
    taken, fine = hubspot.write("companies", [{"id": second, "golden_id": "ent_gold_1"},
                                              {"id": third, "industry": "Energy"}], mode="update")
    assert not taken["ok"] and "golden_id" in taken["error"] and fine["ok"]  # only that input fails
    [upserted] = hubspot.write("companies", [{"golden_id": "ent_gold_1", "industry": "Media"}], key="golden_id")
    assert upserted["ok"] and upserted["id"] == first and upserted["created"] is False


def test_asana_creates_then_updates_a_task(sandbox):
    asana = open_tool(sandbox, "asana")
    project = next(iter(asana.read("tasks")))["projects"][0]["gid"]
    created = asana.write("tasks", [{"name": "Onboard Acme", "projects": [project]}])[0]
    assert created["ok"] and created["created"] is True
    updated = asana.write("tasks", [{"gid": created["id"], "notes": "call booked"}])[0]
    assert updated == {"ok": True, "id": created["id"], "created": False, "error": None}
    pinned = open_tool(sandbox, "asana", project=project)
    assert any(t["gid"] == created["id"] and t["notes"] == "call booked" for t in pinned.read("tasks"))


def test_stripe_rerun_of_a_keyed_create_never_makes_a_second_invoice(sandbox):
    """A create that names its intent (`idempotency_key`, as the actions do) happens once however often it is run;
    two unkeyed creates alike are two invoices, as two calls to Stripe would be."""
    stripe = open_tool(sandbox, "stripe")
    customer = stripe.write("customers", [{"email": "barbara@example.com", "name": "Barbara L"}])[0]
    invoice = {"customer": customer["id"], "metadata": {"deal_id": "deal-42"}, "collection_method": "send_invoice",
               "days_until_due": 30}
    first = stripe.write("invoices", [{**invoice, "idempotency_key": "invoice:deal-42"}])[0]
    again = open_tool(sandbox, "stripe").write("invoices", [{**invoice, "idempotency_key": "invoice:deal-42"}])[0]
    assert first["ok"] and again["ok"] and again["id"] == first["id"]
    mine = [i for i in stripe.read("invoices") if i["metadata"].get("deal_id") == "deal-42"]
    assert [i["id"] for i in mine] == [first["id"]]
    twins = stripe.write("invoices", [{**invoice, "metadata": {"deal_id": "deal-43"}}] * 2)
    assert all(t["ok"] for t in twins) and twins[0]["id"] != twins[1]["id"]


def test_stripe_field_set_back_to_an_earlier_value_is_applied(sandbox):
    """Stripe replays its first answer to a repeated Idempotency-Key for 24 hours: keys must not follow the values."""
    stripe = open_tool(sandbox, "stripe")
    customer = stripe.write("customers", [{"email": "a@example.com", "name": "Ann"}])[0]
    for email in ("a@example.com", "b@example.com", "a@example.com"):
        assert stripe.write("customers", [{"id": customer["id"], "email": email}], mode="update")[0]["ok"]
    [stored] = [c for c in stripe.read("customers") if c["id"] == customer["id"]]
    assert stored["email"] == "a@example.com"


def test_slack_posts_and_hides_the_webhook_secret(sandbox):
    webhook = sandbox.url + "/slack/services/T000SANDBOX/B000SANDBOX/sandbox-slack-secret"
    slack = open_tool(sandbox, "slack", {"webhook_url": webhook})
    assert slack.write("messages", [{"text": "sync finished"}]) == [{"ok": True, "id": None, "created": True,
                                                                      "error": None}]
    received = requests.get(sandbox.url + "/_sandbox/slack/messages", timeout=10).json()
    assert "sync finished" in str(received)
    wrong = open_tool(sandbox, "slack", webhook.replace("sandbox-slack-secret", "not-the-secret"))
    with pytest.raises(AuthError) as raised:
        wrong.write("messages", [{"text": "x"}])
    assert "not-the-secret" not in str(raised.value) and "SLACK_WEBHOOK_URL" in str(raised.value)


def test_legacy_erp_csv_read_equals_the_truth(sandbox):
    erp = connect("csv", str(sandbox.state.csv_dir), name="legacy_erp", cursor="modified")
    rows = list(erp.read("customers"))
    assert {r["customer_no"] for r in rows} == truth_ids(sandbox, "legacy_erp", "customers")
    latest = max(r["modified"] for r in rows)
    since = datetime.fromisoformat(latest).replace(tzinfo=timezone.utc)
    assert {r["customer_no"] for r in erp.read("customers", since=since)} == {
        r["customer_no"] for r in rows if r["modified"] == latest}


@pytest.mark.parametrize("tool, stream", [("salesforce", "Contact"), ("hubspot", "contacts"), ("zendesk", "users"),
                                          ("asana", "tasks"), ("stripe", "invoices")])
def test_every_record_exactly_once_under_server_errors_and_broken_pages(sandbox, tool, stream):
    sandbox.set_faults({tool: {"error_rate": 0.2, "malformed_page_rate": 0.1, "page_size": 3}})
    try:
        connector = open_tool(sandbox, tool, sleep=lambda seconds: None, max_retries=10)
        ids = [str(r[ID_FIELD.get(tool, "id")]) for r in connector.read(stream)]
    finally:
        sandbox.set_faults(reset=True)
    assert sorted(ids) == sorted(truth_ids(sandbox, tool, stream, live_only=tool == "stripe"))
    assert connector.stats.retries > 0 and connector.stats.pages > 2


def test_endless_throttling_ends_in_a_rate_limit_error(sandbox):
    sandbox.set_faults({"zendesk": {"rate_limits": {"requests": 1, "per_seconds": 60}}})
    try:
        zendesk = open_tool(sandbox, "zendesk", sleep=lambda seconds: None, max_retries=2)
        list(zendesk.read("users"))
        with pytest.raises(RateLimitError, match="zendesk: .* rate limited \\(HTTP 429"):
            list(zendesk.read("tickets"))
    finally:
        sandbox.set_faults(reset=True)
    assert zendesk.stats.throttled == 3 and zendesk.stats.retries == 2


def test_stripe_incremental_read_sees_a_deleted_customer(sandbox):
    customer_id = sorted(truth_ids(sandbox, "stripe", "customers", live_only=True))[-1]
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    sandbox.mutate("stripe", "customers", customer_id, {"deleted": True})
    changed = list(open_tool(sandbox, "stripe").read("customers", since=since))
    by_id = {r["id"]: r for r in changed}  # other tests may have touched customers in the same seconds
    assert by_id[customer_id]["deleted"] is True
    assert all(r["updated"] >= int(since.timestamp()) for r in changed)


@pytest.mark.parametrize("tool, stream, key, make, calls", [
    ("salesforce", "Contact", "External_Id__c",
     lambda n: {"External_Id__c": f"bulk-{n}", "LastName": f"Bulk {n}", "Email": f"bulk{n}@example.com"}, 3),
    ("hubspot", "contacts", "email", lambda n: {"email": f"bulk{n}@example.com", "lastname": f"Bulk {n}"}, 3),
])
def test_bulk_writes_are_chunked_to_the_vendor_maximum(sandbox, tool, stream, key, make, calls):
    connector = open_tool(sandbox, tool)
    results = connector.write(stream, [make(n) for n in range(450 if tool == "salesforce" else 250)], key=key)
    assert all(r["ok"] and r["created"] for r in results) and len({r["id"] for r in results}) == len(results)
    assert connector.stats.requests == calls


def test_zendesk_bulk_write_runs_one_job_per_hundred_users(sandbox):
    zendesk = open_tool(sandbox, "zendesk", sleep=lambda seconds: None)
    results = zendesk.write("users", [{"email": f"zbulk{n}@example.com", "name": f"Z {n}"} for n in range(150)]
                            + [{"name": "no email"}])
    assert all(r["ok"] for r in results[:150]) and results[150]["ok"] is False
    assert len({r["id"] for r in results[:150]}) == 150


def test_salesforce_update_by_id_changes_only_existing_records(sandbox):
    salesforce = open_tool(sandbox, "salesforce")
    contact_id = sorted(truth_ids(sandbox, "salesforce", "Contact", live_only=True))[1]
    results = salesforce.write("Contact", [{"Id": contact_id, "Title": "Updated by id"},
                                           {"Id": "003000000000000XXX", "Title": "ghost"}], mode="update", key="Id")
    assert results[0] == {"ok": True, "id": contact_id, "created": False, "error": None}
    assert results[1]["ok"] is False and results[1]["error"]
    stored = [r for r in salesforce.read("Contact") if r["Id"] == contact_id]
    assert stored[0]["Title"] == "Updated by id"


def test_stripe_update_by_id(sandbox):
    stripe = open_tool(sandbox, "stripe")
    customer_id = sorted(truth_ids(sandbox, "stripe", "customers", live_only=True))[2]
    results = stripe.write("customers", [{"id": customer_id, "phone": "+15550002222"}, {"phone": "+1"}],
                           mode="update", key="id")
    assert results == [{"ok": True, "id": customer_id, "created": False, "error": None},
                       {"ok": False, "id": None, "created": None, "error": "record lacks id"}]
    assert [c["phone"] for c in stripe.read("customers") if c["id"] == customer_id] == ["+15550002222"]


def test_stripe_incremental_read_includes_changes_in_the_cursors_own_second(sandbox):
    """Stripe times events in whole seconds: reading from a cursor must take in that second (at or after it), or a
    change made later in the same second is lost for good."""
    stripe = open_tool(sandbox, "stripe")
    customer = stripe.write("customers", [{"email": "c@example.com", "name": "Cy"}])[0]
    stripe.write("customers", [{"id": customer["id"], "name": "Cyrus"}], mode="update")
    recently = datetime.now(timezone.utc) - timedelta(days=1)
    [changed] = [c for c in stripe.read("customers", since=recently) if c["id"] == customer["id"]]
    since = datetime.fromtimestamp(changed["updated"], timezone.utc)
    assert customer["id"] in [c["id"] for c in stripe.read("customers", since=since)]



def test_asana_lists_task_gids_alone_and_a_deleted_task_drops_out(sandbox):
    """A deletion scan's listing asks for the gid only, and a task deleted (DELETE /tasks/{gid}, as Asana's API
    does) is listed no more; the listing is what the scan compares with the landed tasks."""
    urls = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: urls.append(response.request.url))
    asana = open_tool(sandbox, "asana", session=session)
    project = next(iter(asana.read("tasks")))["projects"][0]["gid"]
    gid = asana.write("tasks", [{"name": "Short-lived", "projects": [project]}])[0]["id"]
    urls.clear()
    assert set(asana.list_ids("tasks", "gid")) == truth_ids(sandbox, "asana", "tasks", live_only=True) and gid
    assert all("opt_fields=gid&" in url or url.endswith("opt_fields=gid") for url in urls if "/tasks" in url)
    response = requests.delete(f"{sandbox.base_url('asana')}/api/1.0/tasks/{gid}",
                               headers={"Authorization": f"Bearer {CREDENTIALS['asana']['access_token']}"})
    assert (response.status_code, response.json()) == (200, {"data": {}})
    assert gid not in asana.list_ids("tasks", "gid")
    assert requests.delete(f"{sandbox.base_url('asana')}/api/1.0/tasks/{gid}", headers={
        "Authorization": f"Bearer {CREDENTIALS['asana']['access_token']}"}).status_code == 404


def test_stripe_lists_ids_without_deleted_objects(sandbox):
    """Stripe's list endpoints leave deleted objects out: a customer deleted while the sync was off is found by
    the scan even once its event is past the 30 days Stripe keeps."""
    ids = open_tool(sandbox, "stripe").list_ids("customers", "id")
    assert len(ids) == len(set(ids)) and set(ids) == truth_ids(sandbox, "stripe", "customers", live_only=True)
