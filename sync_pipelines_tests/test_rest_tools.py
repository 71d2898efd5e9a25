"""The two tools the sandbox stack describes with ``kind: rest`` alone (a Jira-style tracker, a Mailchimp-style
audience): every record lands once, reads are incremental and within the rate limits, golden contacts reach the
audience through a destination, an urgent ticket creates an issue through a declared action, and each stream rides
out the reliability matrix's faults with nothing lost and nothing landed twice."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pytest
import yaml

from sync_pipelines.connectors import AuthError, ConnectorError, ResponseError, connect
from sync_pipelines.extract import extract_stream
from sync_pipelines.resources import rest_spec
from sync_pipelines.sandbox import running_sandbox, sandbox_env
from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

FAST_BACKOFF = 0.01
AUDIENCE = 60  # members written into the audience before a reliability case reads it


def live_ids(box, tool: str, stream: str) -> set[str]:
    return {str(r["id"]) for r in box.truth("records", tool=tool, stream=stream) if not r["deleted"]}


def test_rest_tools_land_once_read_incrementally_and_take_golden_contacts_and_actions(sync):
    result, written = sync.run()
    assert result.success
    issues = sync.warehouse.read_table(landing_table_name("jira", "issues"))
    assert issues["_source_id"].is_unique and set(issues["_source_id"]) == live_ids(sync.box, "jira", "issues")
    golden = sync.warehouse.read_table("golden_contacts")
    wanted = golden[golden["lifecycle_stage"].isin(["lead", "customer"]) & golden["email"].notna()
                    & ~golden["_deleted"].astype(bool)]
    assert written["mailchimp/contacts_writeback"] == len(wanted) > 0

    result, written = sync.run()  # the audience read back: exactly the golden leads and customers, nothing rewritten
    assert result.success and written["mailchimp/contacts_writeback"] == 0
    staged = sync.warehouse.read_table("staged_contacts")
    audience = staged[staged["_source"] == "mailchimp"]
    assert audience["_source_id"].is_unique and set(audience["_source_id"]) == live_ids(sync.box, "mailchimp",
                                                                                           "members")
    assert set(audience["email"]) == set(wanted["email"])

    # nothing changed: one page of each, and no write; a read from the newest change time includes the records
    # changed in that second (timestamps are to the second), which a batch of creates shares
    members = sync.warehouse.read_table(landing_table_name("mailchimp", "members"))
    boundary = int((members["_updated_at"] == members["_updated_at"].max()).sum())
    page = sync.stack.tools["mailchimp"].client.page_size
    sync.box.stats(reset=True)
    assert sync.run()[0].success
    stats = sync.box.stats()
    assert (stats["jira"]["requests"], stats["mailchimp"]["requests"]) == (1, max(1, -(-boundary // page))), stats
    assert stats["jira"]["throttled"] == stats["mailchimp"]["throttled"] == 0

    # an urgent ticket: the declared action creates one Jira issue, once
    tickets = sync.warehouse.read_table("staged_tickets")
    calm = tickets[(tickets["priority"] != "urgent") & ~tickets["status"].isin(["solved", "closed"])].iloc[0]
    sync.box.mutate("zendesk", "tickets", int(calm["_source_id"]), {"priority": "urgent"})
    before = len(live_ids(sync.box, "jira", "issues"))
    assert sync.run()[0].success and sync.run()[0].success
    assert len(live_ids(sync.box, "jira", "issues")) == before + 1
    tasks = sync.warehouse.read_table("staged_tasks")
    [created] = tasks.loc[tasks["name"].str.contains(f"Urgent ticket {calm['_source_id']}:", regex=False,
                                                     na=False), "_source"].tolist()
    assert created == "jira"


@pytest.fixture
def box(tmp_path, monkeypatch):
    with running_sandbox(scale=0.3, csv_dir=tmp_path / "csv") as sandbox:
        for key, value in sandbox_env(sandbox.url, tmp_path / "csv").items():
            monkeypatch.setenv(key, value)
        yield sandbox


def connector(box, tool: str, **options: Any):
    """The connector the Dagster resource builds for a rest tool, with a short backoff."""
    stack = load_stack()
    spec = stack.tools[tool]
    credentials = {key: os.environ[env] for key, env in spec.credentials.items()}
    return connect("rest", spec.base_url, credentials, name=tool, credential_env=dict(spec.credentials),
                   rest=rest_spec(spec), backoff_base=FAST_BACKOFF, **options)


def _fill_audience(box) -> None:
    with connector(box, "mailchimp") as mailchimp:
        results = mailchimp.write("members", [
            {"email_address": f"member{k}@example.com", "merge_fields": {"FNAME": f"Member{k}"}}
            for k in range(AUDIENCE)], mode="upsert", key="email_address")
    assert all(r["ok"] for r in results)


def test_an_action_create_carries_its_key_so_that_one_a_crash_cut_off_is_found_again(box):
    with connector(box, "jira") as jira:
        [made] = jira.write("issues", [{"summary": "Urgent ticket 42: login down",
                                        "idempotency_key": "jira_issue_for_urgent_ticket:issues:zendesk:42"}],
                            mode="create")
        assert made["ok"] and made["created"]
        assert jira.find_created("issues", "jira_issue_for_urgent_ticket:issues:zendesk:42") == str(made["id"])
        assert jira.find_created("issues", "jira_issue_for_urgent_ticket:issues:zendesk:43") is None
        assert jira.write("issues", [{"summary": "the same again, by hand",
                                      "idempotency_key": "jira_issue_for_urgent_ticket:issues:zendesk:42"}],
                          mode="create")[0]["ok"]
        with pytest.raises(ConnectorError, match="2 issues records hold the idempotency key"):
            jira.find_created("issues", "jira_issue_for_urgent_ticket:issues:zendesk:42")
    with connector(box, "mailchimp") as mailchimp, pytest.raises(ConnectorError, match="cannot tell whether"):
        mailchimp.find_created("members", "any")  # its create declares no key: it refuses to guess


CASES = {
    "429 storm": {"rate_limits": {"requests": 3, "per_seconds": 1}, "page_size": 10},
    "5xx burst": {"error_rate": 0.3, "page_size": 10},
    "malformed page": {"malformed_page_rate": 0.3, "page_size": 10},
}


@pytest.mark.parametrize("tool, stream", [("jira", "issues"), ("mailchimp", "members")])
@pytest.mark.parametrize("case", list(CASES))
def test_rest_streams_ride_out_the_fault_matrix_exactly_once(box, tmp_path, tool, stream, case):
    """Throttling and server errors are retried through; a page truncated again and again fails the read naming the
    tool, with no cursor moved. Then a rerun without the fault lands every record once."""
    if tool == "mailchimp":
        _fill_audience(box)
    stack = load_stack()
    warehouse = Warehouse(stack, f"sqlite:///{tmp_path / 'warehouse.db'}")
    box.set_faults({tool: CASES[case]})
    box.stats(reset=True)
    try:
        result = extract_stream(stack, warehouse, connector(box, tool, max_retries=8), tool, stream)
    except ResponseError as error:
        assert case == "malformed page" and str(error).startswith(f"{tool}: ") and "not JSON" in str(error)
        assert warehouse.cursor(tool, stream) is None
    else:
        server = box.stats()[tool]
        faults = {"429 storm": server["throttled"], "5xx burst": server["server_errors"]}.get(case)
        assert result.stats["retries"] >= (faults or 0) and result.stats["retries"] > 0  # met, and retried
    box.set_faults(reset=True)
    extract_stream(stack, warehouse, connector(box, tool), tool, stream)
    landed = warehouse.read_table(landing_table_name(tool, stream))
    assert landed["_source_id"].is_unique, "a record landed twice"
    assert set(landed["_source_id"]) == live_ids(box, tool, stream), "a record was lost"


@pytest.mark.parametrize("tool, stream, variable", [("jira", "issues", "JIRA_API_TOKEN"),
                                                    ("mailchimp", "members", "MAILCHIMP_API_KEY")])
def test_an_expired_credential_fails_at_once_naming_the_variable_and_never_the_value(box, tmp_path, monkeypatch,
                                                                                   tool, stream, variable):
    monkeypatch.setenv(variable, "expired-credential-0001")
    stack = load_stack()
    warehouse = Warehouse(stack, f"sqlite:///{tmp_path / 'warehouse.db'}")
    with pytest.raises(AuthError) as refused:
        extract_stream(stack, warehouse, connector(box, tool), tool, stream)
    assert variable in str(refused.value) and "expired-credential-0001" not in str(refused.value)
    assert box.stats()[tool]["requests"] == 1  # refused credentials are not retried


def _jira(raw):
    return raw["tools"]["jira"]


@pytest.mark.parametrize("change, path, message", [
    (lambda r: _jira(r)["streams"]["issues"]["request"]["paginator"].update(type="tokens"),
     "tools.jira.streams.issues.request.paginator.type", "found 'tokens'; allowed: 'cursor', 'offset', "
                                                        "'page_number', 'next_url', 'link_header', 'none'"),
    (lambda r: _jira(r)["client"]["auth"].update(type="digest"), "tools.jira.client.auth.type",
     "found 'digest'; allowed: 'bearer', 'basic', 'api_key', 'oauth2_client_credentials', 'none'"),
    (lambda r: _jira(r)["client"]["auth"].update(password="token"), "tools.jira.client.auth",
     "names credential key(s) token, which tools.jira.credentials does not declare; declared: api_token, email"),
    (lambda r: _jira(r)["writes"]["issues"]["create"].update(path="/rest/api/3/issue/{summery}"),
     "tools.jira.writes.issues.create.path", "{summery} is no field the stream maps"),
    (lambda r: _jira(r)["writes"]["issues"]["create"].pop("id_path"), "tools.jira.writes.issues",
     "create needs id_path"),
    (lambda r: _jira(r).pop("client"), "tools.jira.client", "a rest tool needs client"),
    (lambda r: _jira(r)["streams"]["issues"].pop("request"), "tools.jira.streams.issues",
     "a rest tool's stream needs request"),
    (lambda r: r["tools"]["asana"].update(client={"auth": {"type": "none"}}), "tools.asana.client",
     "only a rest tool takes client"),
    (lambda r: _jira(r)["streams"]["issues"]["request"]["incremental"].update(format="julian"),
     "tools.jira.streams.issues.request.incremental", "format 'julian'"),
    (lambda r: _jira(r)["writes"].update(comments={"create": {"method": "POST", "path": "/c", "id_path": "id"}}),
     "tools.jira.writes.comments", "unknown stream 'comments'"),
])
def test_a_rest_tool_that_cannot_work_is_refused_at_load_with_its_key_path(tmp_path, change, path, message):
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    change(raw)
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(StackError) as error:
        load_stack(file)
    assert any(at == path and message in problem for at, problem in error.value.problems), error.value.problems


# The built-in kinds whose reads are plain REST, described as a rest tool would be: the same records land.
AS_REST = {
    "zendesk": {"client": {"auth": {"type": "basic", "username": "email", "password": "api_token"}},
                "reads": {stream: {"endpoint": {"path": path, "params": {"start_time": 0}}, "records_path": stream,
                                   "paginator": {"type": "cursor", "cursor_path": cursor, "param": param,
                                                 "stop_path": "end_of_stream", "drop_params": drop},
                                   "incremental": {"param": "start_time", "format": "epoch_seconds"}}
                          for stream, path, cursor, param, drop in (
                              ("users", "/api/v2/incremental/users/cursor.json", "after_cursor", "cursor",
                               ["start_time"]),
                              ("organizations", "/api/v2/incremental/organizations.json", "end_time", "start_time",
                               []))}},
    "asana": {"client": {"auth": {"type": "bearer", "token": "access_token"}},
              "reads": {"tasks": {"endpoint": {"path": "/api/1.0/tasks", "params": {
                  "project": "1200000000000101", "limit": 100, "opt_fields": "gid,name,notes,completed,completed_at,"
                  "due_on,due_at,created_at,modified_at,assignee.email,assignee.name,projects.name,workspace.name,"
                  "permalink_url"}}, "records_path": "data", "id_field": "gid",
                  "paginator": {"type": "cursor", "cursor_path": "next_page.offset", "param": "offset"},
                  "incremental": {"param": "modified_since", "format": "iso_z"}}}},
}


@pytest.mark.parametrize("tool, stream", [("zendesk", "users"), ("zendesk", "organizations"), ("asana", "tasks")])
def test_a_built_in_read_described_as_a_rest_tool_lands_the_same_rows(box, tmp_path, tool, stream):
    stack = load_stack()
    spec = stack.tools[tool]
    credentials = {key: os.environ[env] for key, env in spec.credentials.items()}
    described = dict(credentials)
    if tool == "zendesk":  # Zendesk's API-token user is the email followed by /token
        described["email"] += "/token"
    landed = []
    for kind, credentials, options in (("rest", described, {"rest": AS_REST[tool]}),
                                       (tool, credentials, {"project": "1200000000000101"} if tool == "asana" else {})):
        warehouse = Warehouse(stack, f"sqlite:///{tmp_path / f'{kind}.db'}")
        with connect(kind, spec.base_url, credentials, name=tool, **options) as reader:
            extract_stream(stack, warehouse, reader, tool, stream)
        rows = warehouse.read_table(landing_table_name(tool, stream))
        landed.append(rows.drop(columns=[c for c in rows.columns if c.startswith("_extracted")]).sort_values(
            "_source_id").reset_index(drop=True))
    assert len(landed[0]) > 10
    pd.testing.assert_frame_equal(landed[0], landed[1])
