"""Mailchimp Marketing API 3.0, an audience's members: the data centre in the URL (``/{dc}/3.0``, which must be
the one the API key ends with), basic auth with any user name and the API key, members listed with ``count`` and
``offset`` and ``total_items`` and filtered by ``since_last_changed``, and added or updated by
``PUT /lists/{list_id}/members/{subscriber_hash}``, the hash being the MD5 of the lower-cased email, or up to 500
at a time by the batch subscribe ``POST /lists/{list_id}`` (``members``, ``update_existing``; answered with
``new_members``, ``updated_members`` and per-member ``errors``). Errors are problem documents (``type``,
``title``, ``status``, ``detail``, ``instance``). The audience starts empty: its members are those a sync writes."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import numpy as np
from starlette.responses import Response

from .common import ApiError, Call, iso_offset, json_response, parse_datetime
from .limits import Verdict
from .vendor import Vendor, basic_credentials

LIST_ID = "5a1b0c9d3e"
DATA_CENTRE = "us21"
PAGE_DEFAULT, PAGE_MAX = 10, 1000
BATCH_MAX = 500  # members a batch subscribe takes
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
MERGE_FIELDS = ("FNAME", "LNAME", "PHONE")
ERRORS = "https://mailchimp.com/developer/marketing/docs/errors/"


def subscriber_hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


class Mailchimp(Vendor):
    tool = "mailchimp"
    rate_limit = {"requests": 1000, "per_seconds": 10}  # 10 connections at once: a sequential client never waits
    default_credential = f"sandbox-mailchimp-key-{DATA_CENTRE}"
    drift_fields = {"members": "merge_fields"}

    def routes(self):
        members = "/{dc}/3.0/lists/{list_id}/members"
        return [
            ("GET", members, self.list_members, True),
            ("GET", members + "/{hash}", self.get_member, True),
            ("PUT", members + "/{hash}", self.put_member, True),
            ("PATCH", members + "/{hash}", self.patch_member, True),
            ("POST", "/{dc}/3.0/lists/{list_id}", self.batch_subscribe, True),
        ]

    def authorized(self, request, credential) -> bool:
        found = basic_credentials(request)
        return found is not None and found[1] == credential

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        titles = {400: "Invalid Resource", 401: "API Key Invalid", 404: "Resource Not Found",
                  429: "Too Many Requests"}
        return {"type": ERRORS, "title": titles.get(status, "Internal Server Error"), "status": status,
                "detail": message, "instance": str(uuid.uuid4()), **extra}

    def unauthorized(self) -> Response:
        return self.error(401, "API_KEY_INVALID", "Your API key may be invalid, or you've attempted to access the "
                                                  "wrong datacenter.")

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(429, "TOO_MANY_REQUESTS", "You have exceeded the limit of simultaneous connections.",
                          headers={"Retry-After": str(verdict.retry_after)})

    def _audience(self, call: Call):
        key = self.state.credentials[self.tool]
        if call.params["dc"] != key.rsplit("-", 1)[-1]:
            raise ApiError(401, "API_KEY_INVALID", "Your API key may be invalid, or you've attempted to access the "
                                                   "wrong datacenter.")
        if call.params["list_id"] != LIST_ID:
            raise ApiError(404, "NOT_FOUND", "The requested resource could not be found.")
        return self.table("members")

    def member(self, table, row: int) -> dict[str, Any]:
        fields = table.fields(row)
        return self.drift("members", {
            "id": subscriber_hash(fields["email_address"]), "email_address": fields["email_address"],
            "unique_email_id": f"{int(table.id(row)):010x}", "status": fields.get("status", "subscribed"),
            "merge_fields": {name: fields.get("merge_fields", {}).get(name, "") for name in MERGE_FIELDS},
            "last_changed": iso_offset(int(table.modified[row])), "list_id": LIST_ID,
        })

    def list_members(self, call: Call) -> Response:
        table = self._audience(call)
        count = self.page_size(call.int_param("count", PAGE_DEFAULT, 1, PAGE_MAX))
        offset = call.int_param("offset", 0, 0, 10**9)
        mask = ~table.deleted
        since = call.query.get("since_last_changed")
        if since:
            mask = mask & (table.modified >= parse_datetime(since, "since_last_changed"))
        rows = np.flatnonzero(mask)
        return json_response({"members": [self.member(table, int(row)) for row in rows[offset:offset + count]],
                              "list_id": LIST_ID, "total_items": int(len(rows)), "_links": []})

    def _row(self, table, digest: str) -> int | None:
        """The live member whose email hashes to ``digest``: each write stores the hash beside the email, so the
        table's field index finds it without a scan."""
        return table.live(table.lookup("hash", digest.strip().lower()))

    def get_member(self, call: Call) -> Response:
        table = self._audience(call)
        row = self._row(table, call.params["hash"])
        if row is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource could not be found.")
        return json_response(self.member(table, row))

    def patch_member(self, call: Call) -> Response:
        """Update a member the audience holds (404 otherwise); a new email moves it to that email's hash."""
        table = self._audience(call)
        row = self._row(table, call.params["hash"])
        if row is None:
            raise ApiError(404, "NOT_FOUND", "The requested resource could not be found.")
        body = call.json()
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID", "The resource submitted could not be validated.")
        current = table.fields(row)
        email = str(body.get("email_address") or current["email_address"]).strip()
        changes = self._changes(body, email, current)
        if any(current.get(k) != v for k, v in changes.items()):
            self.state.write(table, row, changes)
        return json_response(self.member(table, row))

    def _changes(self, body: dict[str, Any], email: str, current: dict[str, Any]) -> dict[str, Any]:
        if not EMAIL.match(email):
            raise ApiError(400, "INVALID", "The resource submitted could not be validated. For field-specific "
                                           "details, see the 'errors' array.",
                           errors=[{"field": "email_address", "message": "This value should be a valid email."}])
        merge = body.get("merge_fields") or {}
        unknown = sorted(set(merge) - set(MERGE_FIELDS)) if isinstance(merge, dict) else ["merge_fields"]
        if unknown:
            raise ApiError(400, "INVALID", f"Your merge fields were invalid: {', '.join(unknown)} (this audience "
                                           f"has {', '.join(MERGE_FIELDS)}).")
        status = body.get("status")
        if status is not None and status not in STATUSES:
            raise ApiError(400, "INVALID", f"status: {status!r} is not one of {', '.join(STATUSES)}.")
        changes = {"email_address": email, "hash": subscriber_hash(email),
                   "merge_fields": {**current.get("merge_fields", {}), **{k: str(v) for k, v in merge.items()}}}
        return {**changes, **({"status": status} if status else {})}

    def put_member(self, call: Call) -> Response:
        """Add or update a member: the body's email must hash to the path's subscriber hash; a new member needs
        ``status_if_new`` (or ``status``)."""
        table = self._audience(call)
        body = call.json()
        if not isinstance(body, dict):
            raise ApiError(400, "INVALID", "The resource submitted could not be validated.")
        email = str(body.get("email_address") or "").strip()
        if EMAIL.match(email) and subscriber_hash(email) != call.params["hash"].lower():
            raise ApiError(400, "INVALID", f"The subscriber hash does not match {email!r}: use the MD5 of the "
                                           "lower-cased email address.")
        row = self._row(table, call.params["hash"])
        current = table.fields(row) if row is not None else {}
        changes = self._changes(body, email, current)
        if row is None:
            status = body.get("status") or body.get("status_if_new")
            if status is None:
                raise ApiError(400, "INVALID", "status_if_new is required to add a new member.")
            if status not in STATUSES:
                raise ApiError(400, "INVALID", f"status_if_new: {status!r} is not one of {', '.join(STATUSES)}.")
            row = self.state.write(table, None, {**changes, "status": status})
        elif any(current.get(k) != v for k, v in changes.items()):
            self.state.write(table, row, changes)
        return json_response(self.member(table, row))

    def batch_subscribe(self, call: Call) -> Response:
        """Add (and with ``update_existing``, update) up to ``BATCH_MAX`` members: each is written or refused on its
        own, and the answer says which (200 even when some were refused)."""
        table = self._audience(call)
        body = call.json()
        members = body.get("members") if isinstance(body, dict) else None
        if not isinstance(members, list):
            raise ApiError(400, "INVALID", "The resource submitted could not be validated: members must be a list.")
        if len(members) > BATCH_MAX:
            raise ApiError(400, "INVALID", f"A batch takes at most {BATCH_MAX} members; got {len(members)}.")
        update_existing = bool(body.get("update_existing"))
        created, updated, errors = [], [], []
        for member in members:
            email = str(member.get("email_address") or "").strip() if isinstance(member, dict) else ""
            try:
                if not isinstance(member, dict):
                    raise ApiError(400, "INVALID", "A member must be an object.")
                row = self._row(table, subscriber_hash(email)) if email else None
                if row is not None and not update_existing:
                    raise ApiError(400, "ERROR_CONTACT_EXISTS", f"{email} is already a list member. Use PUT to "
                                                                "insert or update list members.")
                current = table.fields(row) if row is not None else {}
                changes = self._changes(member, email, current)
                if row is None:
                    if member.get("status") not in STATUSES:
                        raise ApiError(400, "INVALID", f"status: give one of {', '.join(STATUSES)}.")
                    created.append(self.member(table, self.state.write(table, None, changes)))
                else:
                    if any(current.get(k) != v for k, v in changes.items()):
                        self.state.write(table, row, changes)
                    updated.append(self.member(table, row))
            except ApiError as refused:
                errors.append({"email_address": email, "error": refused.message, "error_code": refused.code})
        return json_response({"new_members": created, "updated_members": updated, "errors": errors,
                              "total_created": len(created), "total_updated": len(updated),
                              "error_count": len(errors), "_links": []})
