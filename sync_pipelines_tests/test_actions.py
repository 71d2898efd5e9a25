"""Declarative derived actions (issue 13, item 5): triggers, filters, related records and templates in the stack
file, checked at load, rendered in a sandbox, exactly once against the sandbox."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from sync_pipelines import pipeline
from sync_pipelines.connectors import ConnectorError
from sync_pipelines.core.templates import (
    TemplateProblem,
    Variable,
    check,
    render_fields,
)
from sync_pipelines.resources import SyncResource
from sync_pipelines.stack import load_stack
from sync_pipelines_tests.sandbox_sync import Sync
from sync_pipelines_tests.test_stack_env import _refused, _write

INVOICE, TASK, ALERT = 0, 1, 2  # the sandbox stack's actions


@pytest.mark.parametrize("change, message", [
    (lambda r: r["actions"][INVOICE]["create"]["fields"].update(description="{{ deal.nme }}"),
     "actions[0].create.fields.description: 'deal.nme' is not a field of deals (did you mean name?)"),
    (lambda r: r["actions"][INVOICE]["create"]["fields"]["metadata"].update(deal_id="{{ dael.name }}"),
     ("actions[0].create.fields.metadata.deal_id: 'dael' is not a variable here (did you mean deal?); known: "
      "action, company, deal, source")),
    (lambda r: r["actions"][INVOICE]["create"]["links"]["customer"]["fields"].update(email="{{ contact.mail }}"),
     ("actions[0].create.links.customer.fields.email: 'contact.mail' is not a field of contacts (did you mean "
      "email?)")),
    (lambda r: r["actions"][INVOICE]["create"]["fields"].update(description="{{ company.nam }}"),
     "actions[0].create.fields.description: 'company.nam' is not a field of companies (did you mean name?)"),
    (lambda r: r["actions"][TASK]["create"]["fields"].update(projects=["{{ source.idd }}"]),
     "actions[1].create.fields.projects[0]: 'source.idd' is not a field of source (did you mean id?)"),
    (lambda r: r["actions"][TASK]["create"]["fields"].update(name="{{ contact.email"),
     "actions[1].create.fields.name: not a valid template (line 1): unexpected end of template"),
    (lambda r: r["actions"][TASK]["create"]["fields"].update(name="{{ contact|attr('email') }}"),
     "actions[1].create.fields.name: not a valid template (line 1): No filter named 'attr'"),
    (lambda r: r["actions"][TASK]["create"]["fields"].update(name="{{ ''.__class__ }}"),
     "actions[1].create.fields.name: '__class__': a name starting with _ is refused"),
    (lambda r: r["actions"][TASK]["create"]["fields"].update(
        name="{% for k in contact %}{{ k.__class__.__mro__ }}{% endfor %}"),
     "actions[1].create.fields.name: '__mro__': a name starting with _ is refused"),
    (lambda r: r["actions"][ALERT]["when"].update(filter="stat == 'open'"),
     "actions[2].when.filter: unknown field of entity 'tickets' in the filter: 'stat'"),
    (lambda r: r["actions"][ALERT]["when"].update(filter="status = 'open'"),
     "actions[2].when.filter: found \"status = 'open'\"; at character 8"),
    (lambda r: r["actions"][ALERT]["when"].update(kind="vanishes"), "actions[2].when"),
    (lambda r: r["actions"][ALERT].update(related={"requester": "subject"}),
     "actions[2].related.requester: 'subject' is no reference field of tickets; allowed: requester_source_id"),
    (lambda r: r["actions"][ALERT].update(related={"source": "requester_source_id"}),
     "actions[2].related.source: found 'source'; allowed: a name"),
    (lambda r: r["actions"][ALERT].update(related={"requester": "requester_source_id",
                                                   "company": "requester.company_source_id"}),
     None),  # a chain: the requester's company
    (lambda r: r["actions"][ALERT]["create"].update(stream="channels"),
     "actions[2].create.stream: unknown stream of tool 'slack' to create records in: 'channels'; allowed: messages"),
    (lambda r: r["actions"][INVOICE]["create"]["links"]["customer"].update(linked_to="deal"),
     "actions[0].create.links.customer.through: no field of contacts references deals"),
    (lambda r: r["actions"][INVOICE]["create"]["fields"].update(customer="cus_1"),
     "actions[0].create.links.customer: field 'customer' is also in create.fields"),
    (lambda r: r["entities"]["deals"]["fields"]["company_source_id"].update(references="accounts"),
     "entities.deals.fields.company_source_id.references: unknown entity: 'accounts'"),
])
def test_a_mistake_in_an_action_is_refused_at_load_with_its_key_path(tmp_path, change, message):
    if message is None:
        load_stack(_write(tmp_path, change))
        return
    assert _refused(tmp_path, change).startswith(message)


def test_the_earlier_form_of_a_trigger_still_loads_and_means_becomes(tmp_path):
    stack = load_stack(_write(tmp_path, lambda r: r["actions"][TASK].update(
        when={"entity": "contacts", "field": "lifecycle_stage", "becomes": "customer"},
        create={**r["actions"][TASK]["create"], "fields": {"name": "Onboard {{ record.email }}"}})))
    when = stack.actions[TASK].when
    assert (when.kind, when.watched, when.becomes, when.record) == ("becomes", "lifecycle_stage", "customer", "record")


def test_a_template_cannot_reach_python_internals_when_it_renders():
    """Names are refused at load; what a load-time check cannot see (a key computed at render) the sandbox refuses."""
    context = {"record": {"name": "Ada"}, "key": "__class__"}
    for text in ("{{ record[key] }}", "{{ record[key][key] }}", "{{ (record.name ~ '')[key] }}"):
        check(text, {"record": Variable(("name",), "contacts"), "key": Variable((), "text")})  # a computed key
        with pytest.raises(TemplateProblem, match="SecurityError: access to attribute '__class__' .* unsafe"):
            render_fields(text, context)
    with pytest.raises(TemplateProblem, match="repetition"):
        render_fields("{{ 'x' * 10000000 }}", {})
    with pytest.raises(TemplateProblem, match="power"):
        render_fields("{{ 9 ** 999999 }}", {})
    with pytest.raises(TemplateProblem, match="UndefinedError"):
        render_fields("{{ company.name }}", {"company": None})  # an empty related record must be guarded


def test_templates_render_text_leave_out_empty_fields_and_keep_other_values():
    fields = {"a": "{{ r.name }}", "b": "{{ r.email }}", "n": 30, "flag": True, "m": {"x": "{{ r.name|upper }}"},
              "l": ["{{ r.name }}", 1]}
    assert render_fields(fields, {"r": {"name": "Ada", "email": None}}) == {
        "a": "Ada", "n": 30, "flag": True, "m": {"x": "ADA"}, "l": ["Ada", 1]}


def test_an_edited_template_takes_effect_with_no_code_change(sync, tmp_path, monkeypatch):
    path = _write(tmp_path, lambda r: None)
    monkeypatch.setenv("SYNC_STACK", str(path))
    synced = Sync(sync.box, sync.url)
    assert synced.run()[0].success  # baseline
    raw = yaml.safe_load(path.read_text())
    raw["actions"][TASK]["create"]["fields"]["name"] = "Welcome {{ contact.email }} ({{ contact.lifecycle_stage }})"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # the definitions stay as built: only the file changed
    contacts = synced.warehouse.read_table("stg_hubspot_contacts")
    lead = contacts[(contacts["lifecycle_stage"] != "customer") & ~contacts["_deleted"]].iloc[0]
    synced.box.mutate("hubspot", "contacts", lead["_source_id"], {"lifecyclestage": "customer"})
    tasks = synced.box.state.world.table("asana", "tasks")
    before = len(tasks)
    assert synced.run()[0].success
    assert len(tasks) == before + 1
    crosswalk = synced.warehouse.read_table("crosswalk_contacts")
    entity = crosswalk.loc[(crosswalk["_source"] == "hubspot") & (crosswalk["_source_id"] == lead["_source_id"]),
                           "entity_id"].iloc[0]
    golden = synced.warehouse.read_table("golden_contacts").set_index("entity_id").loc[entity]
    assert tasks.fields(before)["name"] == f"Welcome {golden['email']} (customer)"  # the golden record's email


def _urgent(sync: Sync, count: int, solved: int = 0) -> tuple[list[str], list[str]]:
    """Make ``count`` open tickets urgent, and ``solved`` more urgent and solved at once."""
    tickets = sync.warehouse.read_table("stg_zendesk_tickets")
    open_ = tickets[(tickets["priority"] != "urgent") & ~tickets["_deleted"]
                    & ~tickets["status"].isin(["solved", "closed"])].sort_values("_source_id")
    ids = list(open_["_source_id"][:count + solved])
    for i, ticket in enumerate(ids):
        sync.box.mutate("zendesk", "tickets", int(ticket), {"priority": "urgent", **(
            {"status": "solved"} if i >= count else {})})
    return ids[:count], ids[count:]


def _tickets_unresolved(raw: dict) -> None:
    """Tickets without identity or survivorship rules: no golden tickets, so the action reads their landed rows."""
    for section in ("identity", "survivorship", "quality"):
        raw[section].pop("tickets")


@pytest.mark.parametrize("tickets", ["golden", "landed"])
def test_an_urgent_ticket_posts_one_slack_message_and_the_filter_holds_solved_ones_back(sync, tmp_path, monkeypatch,
                                                                                         tickets):
    if tickets == "landed":
        monkeypatch.setenv("SYNC_STACK", str(_write(tmp_path, _tickets_unresolved)))
        sync = Sync(sync.box, sync.url)
        assert "tickets" not in pipeline.resolved_entities(sync.stack)
    assert sync.run()[0].success  # baseline
    messages = sync.box.state.vendors["slack"].messages
    before = len(messages)
    alerted, solved = _urgent(sync, 2, solved=1)
    for _ in range(2):
        result = sync.run()[0]
        assert result.success
    posted = messages[before:]
    assert len(posted) == len(alerted), posted
    assert sorted(m["text"].split(":")[0] for m in posted) == sorted(f"Urgent ticket {t}" for t in alerted)
    assert all("idempotency_key" not in m for m in posted)  # an incoming webhook takes none
    requesters = sync.warehouse.read_table("stg_zendesk_tickets").set_index("_source_id").loc[
        alerted, "requester_source_id"]
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    golden = sync.warehouse.read_table("golden_contacts").set_index("entity_id")
    for ticket, requester in requesters.items():  # the requester, through the crosswalk, as a golden contact
        entity = crosswalk.loc[(crosswalk["_source"] == "zendesk") & (crosswalk["_source_id"] == requester),
                               "entity_id"].iloc[0]
        [text] = [m["text"] for m in posted if m["text"].startswith(f"Urgent ticket {ticket}:")]
        email = golden.at[entity, "email"]
        assert text.endswith(f", from {email}") if pd.notna(email) else "from" not in text
    ledger = sync.warehouse.read_table("action_ledger")
    assert sorted(ledger.loc[ledger["action"] == "alert_for_urgent_ticket", "_source_id"]) == sorted(alerted)
    assert solved[0] not in set(ledger["_source_id"])


def test_a_slack_post_a_crash_left_unrecorded_is_never_posted_twice(sync, monkeypatch):
    """An incoming webhook keeps nothing to look up: the rerun refuses, naming the intent, instead of guessing."""
    assert sync.run()[0].success
    messages = sync.box.state.vendors["slack"].messages
    before = len(messages)
    _urgent(sync, 1)
    original = pipeline.run_action

    def killed_after_the_post(stack, warehouse, connector, action, **options):
        write = connector.write

        def post_then_die(stream, records, *args, **kwargs):
            write(stream, records, *args, **kwargs)
            raise RuntimeError("killed after the post, before its ledger row")

        connector.write = post_then_die
        return original(stack, warehouse, connector, action, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sync_pipelines.assets.core.run_action", killed_after_the_post)
        assert not sync.run()[0].success
    assert len(messages) == before + 1
    result = sync.run()[0]
    assert not result.success and len(messages) == before + 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
                   and "alert_for_urgent_ticket" in e.step_key)
    assert "action_pending" in str(failure.event_specific_data.error)
    with pytest.raises(ConnectorError, match="action_pending"):
        SyncResource().connector("slack").find_created("messages", "alert_for_urgent_ticket:zendesk:1")


def test_a_won_deal_of_a_company_with_no_stripe_customer_gets_one_created_once(sync_on_each_warehouse):
    """Find or create: no contact of the company is a Stripe customer, so one is created from its first golden
    contact under an idempotency key, and a second deal of the same company won in the same run reuses it."""
    sync = sync_on_each_warehouse
    assert sync.run()[0].success
    deals = sync.warehouse.read_table("stg_salesforce_opportunity")
    deals = deals[~deals["_deleted"]]
    crosswalk = sync.warehouse.read_table("crosswalk_contacts")
    customers = set(crosswalk.loc[crosswalk["_source"] == "stripe", "entity_id"])
    # a contact's company is its golden reference, whichever tool's id (AccountId, association, organization) led there
    references = sync.warehouse.read_table("references_contacts").dropna(subset=["referenced_id"])
    companies = sync.warehouse.read_table("crosswalk_companies")
    golden_company = companies[companies["_source"] == "salesforce"].set_index("_source_id")["entity_id"]
    linked = set(references.loc[references["entity_id"].isin(customers), "referenced_id"])
    has_contacts = set(references["referenced_id"])
    unlinked = deals[deals["company_source_id"].map(golden_company).isin(has_contacts - linked)
                     & (deals["stage"] != "closed_won")]
    company = unlinked["company_source_id"].value_counts().index[0]
    won = list(unlinked.loc[unlinked["company_source_id"] == company, "_source_id"][:2])
    for deal in won:
        sync.box.mutate("salesforce", "Opportunity", deal, {"StageName": "Closed Won"})
    created = []
    original = pipeline.run_action

    def recorded(stack, warehouse, connector, action, **options):
        write = connector.write

        def logged(stream, records, *args, **kwargs):
            results = write(stream, records, *args, **kwargs)
            created.extend((stream, dict(r), res["id"]) for r, res in zip(records, results))
            return results

        connector.write = logged
        return original(stack, warehouse, connector, action, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sync_pipelines.assets.core.run_action", recorded)
        for _ in range(2):
            assert sync.run()[0].success
    new_customers = [(r, i) for s, r, i in created if s == "customers"]
    invoices = [r for s, r, _ in created if s == "invoices"]
    assert len(new_customers) == 1 and len(invoices) == len(won), created
    customer, customer_id = new_customers[0]
    assert {invoice["customer"] for invoice in invoices} == {customer_id}
    assert customer["metadata"] == {"crm_account_id": company}
    assert customer["idempotency_key"].startswith("invoice_for_closed_won:customers:")
    people = references[references["referenced_id"] == golden_company[company]]["entity_id"]
    first = sync.warehouse.read_table("golden_contacts").set_index("entity_id").loc[min(people)]
    name = " ".join(part for part in (first["first_name"], first["last_name"]) if isinstance(part, str) and part)
    assert customer["name"] == name and customer.get("email") == (first["email"] if pd.notna(first["email"]) else None)


def test_a_changed_field_and_a_new_record_trigger_once_each(sync, tmp_path, monkeypatch):
    """The other two trigger kinds, declared in the stack only: a ticket's status changes (to any value), and a
    ticket appears that the action had not seen."""
    def more_actions(raw: dict) -> None:
        message = {"tool": "slack", "stream": "messages"}
        raw["actions"] += [
            {"name": "status_changed", "when": {"kind": "changes", "entity": "tickets", "field": "status"},
             "create": {**message, "fields": {"text": "{{ source.id }} is now {{ record.status }}"}}},
            {"name": "new_ticket", "when": {"kind": "new_record", "entity": "tickets", "as": "ticket"},
             "create": {**message, "fields": {"text": "new {{ source.id }}: {{ ticket.subject }}"}}},
        ]

    monkeypatch.setenv("SYNC_STACK", str(_write(tmp_path, more_actions)))
    synced = Sync(sync.box, sync.url)
    assert synced.run()[0].success  # baseline: every ticket is known, none has changed
    messages = synced.box.state.vendors["slack"].messages
    before = len(messages)
    tickets = synced.warehouse.read_table("stg_zendesk_tickets")
    live = tickets[~tickets["_deleted"] & (tickets["status"] != "pending")].sort_values("_source_id")
    changed = live.iloc[0]
    synced.box.mutate("zendesk", "tickets", int(changed["_source_id"]), {"subject": "Still broken"})  # no trigger
    synced.box.mutate("zendesk", "tickets", int(live.iloc[1]["_source_id"]), {"status": "pending"})
    new = live.iloc[[2]].assign(_source_id="990001", subject="A ticket nobody had seen")
    synced.warehouse.land("zendesk", "tickets", new.drop(columns=["_landed_batch"]))
    for _ in range(2):
        assert synced.run()[0].success
    assert sorted(m["text"] for m in messages[before:]) == sorted([
        f"{live.iloc[1]['_source_id']} is now pending", "new 990001: A ticket nobody had seen"])
