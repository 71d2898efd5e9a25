from __future__ import annotations

import time

import requests

from .conftest import AUTH

API = "/zendesk/api/v2"


def export(sandbox, stream: str, start_time: int = 0) -> tuple[list[dict], dict]:
    response = requests.get(f"{sandbox.url}{API}/incremental/{stream}/cursor.json",
                            params={"start_time": start_time}, headers=AUTH["zendesk"])
    records = []
    while True:
        body = response.json()
        records += body[stream]
        assert len(body[stream]) <= 1000
        if body["end_of_stream"]:
            return records, body
        response = requests.get(body["after_url"], headers=AUTH["zendesk"])


def test_export_walks_every_record_including_deleted(sandbox):
    sandbox.set_faults(zendesk={"page_size": 40})
    counts = sandbox.truth()["streams"]
    users, last = export(sandbox, "users")
    assert len(users) == counts["zendesk/users"]["total"]
    assert sum(not u["active"] for u in users) == counts["zendesk/users"]["deleted"]
    assert [u["updated_at"] for u in users] == sorted(u["updated_at"] for u in users)
    assert last["after_cursor"] and last["after_url"]
    tickets, _ = export(sandbox, "tickets")
    assert sum(t["status"] == "deleted" for t in tickets) == counts["zendesk/tickets"]["deleted"]


def test_cursor_resumes_with_later_changes_only(sandbox):
    _, last = export(sandbox, "users")
    user_id = sandbox.truth("records", tool="zendesk", stream="users")[0]["id"]
    sandbox.mutate("zendesk", "users", user_id, {"email": "changed@example.com"})
    later = requests.get(f"{sandbox.url}{API}/incremental/users/cursor.json", params={"cursor": last["after_cursor"]},
                         headers=AUTH["zendesk"]).json()
    assert [u["id"] for u in later["users"]] == [user_id]
    assert later["users"][0]["email"] == "changed@example.com" and later["end_of_stream"] is True


def test_start_time_filters_and_too_recent_is_refused(shared_sandbox):
    everything, _ = export(shared_sandbox, "users")
    stamps = sorted(u["updated_at"] for u in everything)
    from datetime import datetime
    cut = int(datetime.fromisoformat(stamps[len(stamps) // 2].replace("Z", "+00:00")).timestamp())
    later, _ = export(shared_sandbox, "users", start_time=cut)
    assert len(later) == sum(int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()) >= cut
                             for s in stamps)
    recent = requests.get(f"{shared_sandbox.url}{API}/incremental/users/cursor.json",
                          params={"start_time": int(time.time())}, headers=AUTH["zendesk"])
    assert recent.status_code == 400 and recent.json()["error"] == "InvalidValue"


def test_export_rate_limit_then_retry_after(sandbox):
    sandbox.set_faults(zendesk={"rate_limits": True})
    statuses = [requests.get(f"{sandbox.url}{API}/incremental/tickets/cursor.json", params={"start_time": 0},
                             headers=AUTH["zendesk"]) for _ in range(11)]
    assert [r.status_code for r in statuses] == [200] * 10 + [429]
    assert int(statuses[-1].headers["Retry-After"]) >= 1
    assert statuses[-1].json()["error"] == "APIRateLimitExceeded"


def test_bad_credentials(shared_sandbox):
    response = requests.get(f"{shared_sandbox.url}{API}/incremental/users/cursor.json", params={"start_time": 0},
                            auth=("sync@sandbox.example/token", "wrong"))
    assert response.status_code == 401 and response.json() == {"error": "Couldn't authenticate you"}
    bearer = requests.get(f"{shared_sandbox.url}{API}/incremental/users/cursor.json", params={"start_time": 0},
                          headers={"Authorization": "Bearer sandbox-zendesk-token"})
    assert bearer.status_code == 200


def test_create_or_update_many_and_job_status(sandbox):
    users, _ = export(sandbox, "users")
    existing = next(u for u in users if u["email"] and u["active"])
    body = {"users": [{"email": existing["email"].strip().upper(), "phone": "+14155550000"},
                      {"email": "brand.new@example.com", "name": "Brand New"},
                      {"email": "jane@@example", "name": "Jane"}]}
    job = requests.post(f"{sandbox.url}{API}/users/create_or_update_many.json", json=body,
                        headers=AUTH["zendesk"]).json()["job_status"]
    assert job["status"] == "queued"
    done = requests.get(job["url"], headers=AUTH["zendesk"]).json()["job_status"]
    assert done["status"] == "completed"
    results = done["results"]
    assert [r["action"] for r in results] == ["update", "create", "create"]
    assert [r["status"] for r in results] == ["Updated", "Created", "Failed"]
    assert results[0]["id"] == existing["id"]
    after, _ = export(sandbox, "users")
    assert len(after) == len(users) + 1
    assert next(u for u in after if u["id"] == existing["id"])["phone"] == "+14155550000"
    too_many = requests.post(f"{sandbox.url}{API}/users/create_or_update_many.json", headers=AUTH["zendesk"],
                             json={"users": [{"email": f"u{i}@x.com", "name": "U"} for i in range(101)]})
    assert too_many.status_code == 400
