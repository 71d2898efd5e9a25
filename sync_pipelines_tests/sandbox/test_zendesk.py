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


def run_job(sandbox, method: str, action: str, users: list[dict]) -> dict:
    response = requests.request(method, f"{sandbox.url}{API}/users/{action}.json", json={"users": users},
                                headers=AUTH["zendesk"])
    assert response.status_code == 200, response.text
    job = response.json()["job_status"]
    assert job["status"] == "queued" and job["url"].endswith(f"/job_statuses/{job['id']}.json")
    done = requests.get(job["url"], headers=AUTH["zendesk"]).json()["job_status"]
    assert done["status"] == "completed"
    return done


def test_update_many_is_seen_by_exports_and_truth(sandbox):
    _, last = export(sandbox, "users")
    record = next(r for r in sandbox.truth("records", tool="zendesk", stream="users")
                  if r["person"] and not r["deleted"] and not r["invalid"])
    before = requests.get(f"{sandbox.url}{API}/users/{record['id']}.json", headers=AUTH["zendesk"]).json()["user"]
    done = run_job(sandbox, "PUT", "update_many", [
        {"id": record["id"], "name": "Ada Lovelace", "email": " Ada.Lovelace@Example.COM ", "phone": "415.555.0142"}])
    assert done["results"] == [{"index": 0, "id": record["id"], "action": "update", "status": "Updated",
                                "success": True}]
    later = requests.get(f"{sandbox.url}{API}/incremental/users/cursor.json", params={"cursor": last["after_cursor"]},
                         headers=AUTH["zendesk"]).json()
    [user] = later["users"]
    assert user["id"] == record["id"] and user["updated_at"] > before["updated_at"]
    assert (user["name"], user["email"], user["phone"]) == ("Ada Lovelace", " Ada.Lovelace@Example.COM ",
                                                           "415.555.0142")
    person = sandbox.truth("people")[record["person"]]
    assert (person["first_name"], person["last_name"], person["email"], person["phone"]) == (
        "Ada", "Lovelace", "ada.lovelace@example.com", "+14155550142")


def test_update_many_reports_unknown_deleted_and_invalid_users(sandbox):
    records = sandbox.truth("records", tool="zendesk", stream="users")
    live = next(r["id"] for r in records if not r["deleted"])
    deleted = next(r["id"] for r in records if r["deleted"])
    total = sandbox.truth()["streams"]["zendesk/users"]["total"]
    done = run_job(sandbox, "PUT", "update_many", [
        {"id": 1, "name": "Nobody"}, {"id": live, "phone": "+14155550000"}, {"id": deleted, "name": "Lazarus"},
        {"id": live, "email": "jane@@example"}, {"name": "no id"}])
    results = done["results"]
    assert [r["status"] for r in results] == ["Failed", "Updated", "Failed", "Failed", "Failed"]
    assert [r.get("error") for r in results] == ["RecordNotFound", None, "RecordInvalid", "RecordInvalid",
                                                "InvalidValue"]
    assert results[0]["id"] == 1 and results[0]["success"] is False and results[0]["action"] == "update"
    assert sandbox.truth()["streams"]["zendesk/users"]["total"] == total
    users = {u["id"]: u for u in export(sandbox, "users")[0]}
    assert users[live]["phone"] == "+14155550000" and users[deleted]["name"] != "Lazarus"


def test_update_many_limit_is_one_hundred(sandbox):
    ids = [r["id"] for r in sandbox.truth("records", tool="zendesk", stream="users")]
    too_many = requests.put(f"{sandbox.url}{API}/users/update_many.json", headers=AUTH["zendesk"],
                            json={"users": [{"id": i, "name": "U"} for i in ids[:101]]})
    assert too_many.status_code == 400 and too_many.json()["error"] == "TooManyValues"
    done = run_job(sandbox, "PUT", "update_many", [{"id": i, "name": "U"} for i in ids[:100]])
    assert len(done["results"]) == 100 and done["total"] == 100
    wrong_shape = requests.put(f"{sandbox.url}{API}/users/update_many.json", headers=AUTH["zendesk"],
                               json={"user": {"name": "U"}})
    assert wrong_shape.status_code == 400 and wrong_shape.json()["error"] == "InvalidValue"
