from __future__ import annotations

import requests

from .conftest import AUTH

API = "/asana/api/1.0"


def walk(sandbox, project: str, **params) -> list[dict]:
    url, query, tasks = f"{sandbox.url}{API}/tasks", {"project": project, "limit": 50, **params}, []
    while True:
        body = requests.get(url, params=query, headers=AUTH["asana"]).json()
        tasks += body["data"]
        if body["next_page"] is None:
            return tasks
        assert body["next_page"]["path"].startswith("/tasks?")
        url, query = body["next_page"]["uri"], None


def projects(sandbox) -> list[str]:
    workspace = requests.get(f"{sandbox.url}{API}/workspaces", headers=AUTH["asana"]).json()["data"][0]["gid"]
    body = requests.get(f"{sandbox.url}{API}/projects", params={"workspace": workspace}, headers=AUTH["asana"]).json()
    return [p["gid"] for p in body["data"]]


def test_tasks_across_projects_add_up_to_truth(shared_sandbox):
    fields = "name,notes,completed,due_on,modified_at,created_at,assignee.email"
    tasks = [t for gid in projects(shared_sandbox) for t in walk(shared_sandbox, gid, opt_fields=fields)]
    assert len(tasks) == shared_sandbox.truth()["streams"]["asana/tasks"]["total"]
    assert len({t["gid"] for t in tasks}) == len(tasks)
    assigned = next(t for t in tasks if t["assignee"])
    assert set(assigned["assignee"]) >= {"gid", "name", "email"}
    assert set(tasks[0]) == {"gid", "name", "notes", "completed", "due_on", "modified_at", "created_at", "assignee"}


def test_modified_since_filters(shared_sandbox):
    project = projects(shared_sandbox)[0]
    every = walk(shared_sandbox, project, opt_fields="modified_at")
    cut = sorted(t["modified_at"] for t in every)[len(every) // 2]
    later = walk(shared_sandbox, project, opt_fields="modified_at", modified_since=cut)
    assert len(later) == sum(t["modified_at"] >= cut for t in every) and 0 < len(later) < len(every)


def test_compact_records_without_opt_fields_and_errors(shared_sandbox):
    task = walk(shared_sandbox, projects(shared_sandbox)[0])[0]
    assert set(task) == {"gid", "name", "resource_type", "resource_subtype"}
    missing = requests.get(f"{shared_sandbox.url}{API}/tasks", headers=AUTH["asana"])
    assert missing.status_code == 400 and "errors" in missing.json()
    unauthorized = requests.get(f"{shared_sandbox.url}{API}/workspaces", headers={"Authorization": "Bearer x"})
    assert unauthorized.status_code == 401 and unauthorized.json()["errors"][0]["message"] == "Not Authorized"


def test_create_task_then_read_it(sandbox):
    project = projects(sandbox)[1]
    before = walk(sandbox, project)
    created = requests.post(f"{sandbox.url}{API}/tasks", headers=AUTH["asana"], json={"data": {
        "name": "Invoice follow-up", "projects": [project], "assignee": "ava.lindgren@sandboxco.com",
        "due_on": "2026-12-01"}})
    assert created.status_code == 201
    task = created.json()["data"]
    assert task["assignee"]["email"] == "ava.lindgren@sandboxco.com"
    after = walk(sandbox, project, opt_fields="name")
    assert len(after) == len(before) + 1 and after[-1]["gid"] == task["gid"]


def test_rate_limit_answers_429_with_retry_after(sandbox):
    sandbox.set_faults(asana={"rate_limits": {"requests": 2, "per_seconds": 1}})
    statuses = [requests.get(f"{sandbox.url}{API}/workspaces", headers=AUTH["asana"]) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert statuses[2].headers["Retry-After"] == "1"


def test_a_task_created_with_an_external_gid_is_found_by_it(sandbox):
    """Custom external data: `external:<gid>` stands for the task's own gid (how a crashed create is found again)."""
    project = projects(sandbox)[0]
    unknown = requests.get(f"{sandbox.url}{API}/tasks/external:onboarding:hubspot:1", headers=AUTH["asana"])
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["message"].startswith("task: Unknown object")
    created = requests.post(f"{sandbox.url}{API}/tasks", headers=AUTH["asana"], json={"data": {
        "name": "Onboard Ann", "projects": [project], "external": {"gid": "onboarding:hubspot:1", "data": "{}"}}})
    assert created.status_code == 201
    assert created.json()["data"]["external"] == {"gid": "onboarding:hubspot:1", "data": "{}"}
    found = requests.get(f"{sandbox.url}{API}/tasks/external:onboarding%3Ahubspot%3A1",
                         params={"opt_fields": "gid,name,external"}, headers=AUTH["asana"])
    assert found.status_code == 200
    assert found.json()["data"] == {"gid": created.json()["data"]["gid"], "name": "Onboard Ann",
                                    "external": {"gid": "onboarding:hubspot:1", "data": "{}"}}
    plain = walk(sandbox, project, opt_fields="name")[-1]
    assert "external" not in plain  # only returned where set and asked for
    bad = requests.post(f"{sandbox.url}{API}/tasks", headers=AUTH["asana"], json={"data": {
        "name": "x", "projects": [project], "external": {"gid": "x" * 1025}}})
    assert bad.status_code == 400 and "external.gid" in bad.json()["errors"][0]["message"]
