"""The Mailchimp emulator's writes: a member found by the MD5 of its lower-cased email whatever wrote it, and the
batch subscribe, which writes or refuses each member on its own and says which."""

from __future__ import annotations

import hashlib

import requests

from sync_pipelines.sandbox.mailchimp import BATCH_MAX, DATA_CENTRE, LIST_ID, Mailchimp

AUTH = ("anystring", Mailchimp.default_credential)


def _url(sandbox, path: str = "") -> str:
    return f"{sandbox.url}/mailchimp/{DATA_CENTRE}/3.0/lists/{LIST_ID}{path}"


def _digest(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


def test_batch_subscribe_creates_new_members_and_refuses_each_bad_one_with_its_reason(sandbox):
    first = requests.post(_url(sandbox), auth=AUTH, json={"members": [
        {"email_address": "Ann@Example.com", "status": "subscribed", "merge_fields": {"FNAME": "Ann"}},
        {"email_address": "not-an-email", "status": "subscribed"},
        {"email_address": "bo@example.com"},  # a new member needs a status
        {"email_address": "cy@example.com", "status": "subscribed", "merge_fields": {"NICKNAME": "C"}},
    ]}, timeout=10)
    assert first.status_code == 200
    answer = first.json()
    assert [m["id"] for m in answer["new_members"]] == [_digest("ann@example.com")]
    assert [e["email_address"] for e in answer["errors"]] == ["not-an-email", "bo@example.com", "cy@example.com"]
    assert "NICKNAME" in answer["errors"][2]["error"] and answer["error_count"] == 3
    again = requests.post(_url(sandbox), auth=AUTH, json={"members": [
        {"email_address": "ann@example.com", "status": "unsubscribed", "merge_fields": {"FNAME": "Annie"}}],
        "update_existing": False}, timeout=10).json()
    assert again["errors"][0]["error_code"] == "ERROR_CONTACT_EXISTS" and not again["updated_members"]
    member = requests.get(_url(sandbox, f"/members/{_digest('ANN@example.com')}"), auth=AUTH, timeout=10).json()
    assert (member["status"], member["merge_fields"]["FNAME"]) == ("subscribed", "Ann")  # left as it was
    updated = requests.post(_url(sandbox), auth=AUTH, json={"members": [
        {"email_address": "ann@example.com", "merge_fields": {"FNAME": "Annie"}}], "update_existing": True},
        timeout=10).json()
    assert [m["merge_fields"]["FNAME"] for m in updated["updated_members"]] == ["Annie"]
    too_many = [{"email_address": f"m{k}@example.com", "status": "subscribed"} for k in range(BATCH_MAX + 1)]
    refused = requests.post(_url(sandbox), auth=AUTH, json={"members": too_many}, timeout=10)
    assert refused.status_code == 400 and str(BATCH_MAX) in refused.json()["detail"]


def test_a_member_is_found_by_its_hash_after_its_email_changed(sandbox):
    put = requests.put(_url(sandbox, f"/members/{_digest('dee@example.com')}"), auth=AUTH,
                       json={"email_address": "dee@example.com", "status_if_new": "subscribed"}, timeout=10)
    assert put.status_code == 200
    moved = requests.patch(_url(sandbox, f"/members/{_digest('dee@example.com')}"), auth=AUTH,
                           json={"email_address": "dee@work.example.com"}, timeout=10)
    assert moved.json()["id"] == _digest("dee@work.example.com")
    assert requests.get(_url(sandbox, f"/members/{_digest('dee@example.com')}"), auth=AUTH,
                        timeout=10).status_code == 404
    assert requests.get(_url(sandbox, f"/members/{_digest('dee@work.example.com')}"), auth=AUTH,
                        timeout=10).json()["email_address"] == "dee@work.example.com"
