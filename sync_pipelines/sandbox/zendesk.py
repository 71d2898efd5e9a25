"""Zendesk Support API v2: cursor-based incremental exports (users, tickets), the time-based one of organizations,
create_or_update_many and update_many with job statuses."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from .common import EMAIL, ApiError, Call, iso_s, json_response, now_ms
from .limits import Verdict
from .table import Table
from .vendor import Vendor, basic_credentials

API = "/api/v2"
PAGE_MAX = 1000
WRITE_MAX = 100
USER_FIELDS = ("name", "email", "phone", "external_id", "organization_id")


class Zendesk(Vendor):
    tool = "zendesk"
    rate_limit = {"requests": 10, "per_seconds": 60}  # incremental exports' budget (the only reads here)
    default_credential = {"email": "sync@sandbox.example", "api_token": "sandbox-zendesk-token"}
    drift_fields = {"users": "phone", "tickets": "priority"}

    def __init__(self, state) -> None:
        super().__init__(state)
        self.jobs: dict[str, dict[str, Any]] = {}

    def routes(self):
        return [
            ("GET", f"{API}/incremental/organizations.json", self.export_organizations, True),
            ("GET", f"{API}/incremental/{{stream}}/cursor.json", self.export, True),
            ("POST", f"{API}/users/create_or_update_many.json", self.create_or_update_many, False),
            ("PUT", f"{API}/users/update_many.json", self.update_many, False),
            ("GET", f"{API}/job_statuses/{{id}}.json", self.job_status, False),
            ("GET", f"{API}/users/{{id}}.json", self.get_user, False),
            ("DELETE", f"{API}/users/{{id}}.json", self.delete_user, False),
        ]

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        return {"error": code, "description": message, **extra}

    def authorized(self, request: Request, credential: Any) -> bool:
        token = credential["api_token"] if isinstance(credential, dict) else str(credential)
        if request.headers.get("authorization", "") == f"Bearer {token}":
            return True
        basic = basic_credentials(request)
        email = credential.get("email") if isinstance(credential, dict) else None
        return basic is not None and basic[1] == token and (email is None or basic[0] == f"{email}/token")

    def unauthorized(self) -> Response:
        return json_response({"error": "Couldn't authenticate you"}, 401)

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(429, "APIRateLimitExceeded", "Number of allowed incremental export API requests per "
                          "minute exceeded", headers={"Retry-After": str(verdict.retry_after)})

    def record(self, call: Call, table: Table, row: int) -> dict[str, Any]:
        fields = table.fields(row)
        record_id = table.id(row)
        record: dict[str, Any] = {"id": record_id, "url": call.absolute(f"{API}/{table.name}/{record_id}.json")}
        if table.name == "users":
            record.update(name=fields.get("name"), email=fields.get("email"), phone=fields.get("phone"),
                          role="end-user", active=not bool(table.deleted[row]), verified=True,
                          external_id=fields.get("external_id"), time_zone="UTC",
                          organization_id=fields.get("organization_id"))
        elif table.name == "organizations":
            record.update(name=fields.get("name"), domain_names=list(fields.get("domain_names") or []),
                          external_id=None, details="", notes="", group_id=None, shared_tickets=False,
                          shared_comments=False, tags=[], organization_fields={}, deleted_at=None)
        else:
            record.update(fields, type=None)
            if table.deleted[row]:
                record["status"] = "deleted"
        record.update(created_at=iso_s(int(table.created[row])), updated_at=iso_s(int(table.modified[row])))
        return self.drift(table.name, record)

    def export_organizations(self, call: Call) -> Response:
        """Time-based export: the organizations changed at or after ``start_time`` (epoch seconds), oldest first, a
        page at a time; ``end_time`` is the next page's ``start_time``, and a page shorter than ``per_page`` ends the
        stream (a boundary second comes again on the next page, as Zendesk documents)."""
        table = self.table("organizations")
        start_time = call.int_param("start_time", -1, 0, 2**40)
        if start_time < 0:
            raise ApiError(400, "InvalidValue", "start_time is required")
        if start_time * 1000 > now_ms() - 60_000:
            raise ApiError(400, "InvalidValue", "Too recent start_time. Use a start_time older than 1 minute")
        size = self.page_size(call.int_param("per_page", PAGE_MAX, 1, PAGE_MAX))
        rows, times = table.by_modified()
        position = int(np.searchsorted(times, start_time * 1000, "left"))
        chunk = rows[position:position + size].tolist()
        end_of_stream = len(chunk) < size
        end_time = int(table.modified[chunk[-1]]) // 1000 if chunk else start_time
        if not end_of_stream and end_time == start_time:
            end_time += 1  # a full page inside one second: move on rather than serve it again
        return json_response({
            "organizations": [self.record(call, table, row) for row in chunk], "count": len(chunk),
            "end_time": end_time, "end_of_stream": end_of_stream,
            "next_page": call.absolute(f"{API}/incremental/organizations.json?start_time={end_time}")})

    def export(self, call: Call) -> Response:
        stream = call.params["stream"]
        table = self.table(stream)
        if table is None:
            raise ApiError(404, "InvalidEndpoint", f"incremental export of {stream!r} is not available")
        size = self.page_size(call.int_param("per_page", PAGE_MAX, 1, PAGE_MAX))
        cursor = call.query.get("cursor")
        if cursor:
            after_ms, after_row = _decode(cursor)
        else:
            start_time = call.int_param("start_time", -1, 0, 2**40)
            if start_time < 0:
                raise ApiError(400, "InvalidValue", "start_time or cursor is required")
            if start_time * 1000 > now_ms() - 60_000:
                raise ApiError(400, "InvalidValue", "Too recent start_time. Use a start_time older than 1 minute")
            after_ms, after_row = start_time * 1000, -1
        rows, _ = table.by_modified()
        position = table.after_position(after_ms, after_row)
        chunk = rows[position:position + size].tolist()
        if chunk:
            last = chunk[-1]
            after_cursor = _encode(int(table.modified[last]), last)
            before_cursor = _encode(int(table.modified[chunk[0]]), chunk[0] - 1)
        else:
            after_cursor, before_cursor = _encode(after_ms, after_row), None
        base = f"{API}/incremental/{stream}/cursor.json?"
        per_page = f"&per_page={call.query['per_page']}" if call.query.get("per_page") else ""
        return json_response({
            stream: [self.record(call, table, row) for row in chunk],
            "after_cursor": after_cursor,
            "after_url": call.absolute(f"{base}cursor={after_cursor}{per_page}"),
            "before_cursor": before_cursor,
            "before_url": call.absolute(f"{base}cursor={before_cursor}{per_page}") if before_cursor else None,
            "end_of_stream": position + len(chunk) >= len(rows),
        })

    def get_user(self, call: Call) -> Response:
        table = self.table("users")
        row = table.row_of(call.params["id"])
        if row is None:
            raise ApiError(404, "RecordNotFound", "Not found")
        return json_response({"user": self.record(call, table, row)})

    def delete_user(self, call: Call) -> Response:
        """Soft-delete the user (active false in the export from then on) and answer it, as Zendesk does."""
        table = self.table("users")
        row = table.row_of(call.params["id"])
        if row is None or table.deleted[row]:
            raise ApiError(404, "RecordNotFound", "Not found")
        self.state.write(table, row, {}, deleted=True)
        return json_response({"user": self.record(call, table, row)})

    def create_or_update_many(self, call: Call) -> Response:
        """Match each user by external_id, then email (live users only), and update it or create one."""
        users = _users(call, "{\"users\": [{\"email\", \"name\", ...}]}")
        now = now_ms()
        return self._queue_job(call, [self._create_or_update(index, user, now) for index, user in enumerate(users)])

    def update_many(self, call: Call) -> Response:
        """Update each user named by `id` with its own fields; unknown or deleted ids fail in the job's results."""
        users = _users(call, "{\"users\": [{\"id\", ...fields}]}")
        now = now_ms()
        return self._queue_job(call, [self._update(index, user, now) for index, user in enumerate(users)])

    def _queue_job(self, call: Call, results: list[dict[str, Any]]) -> Response:
        """The work is already done; the job answers `queued` now and `completed` with the results when polled."""
        job_id = uuid.UUID(int=self.state.random.getrandbits(128)).hex
        url = call.absolute(f"{API}/job_statuses/{job_id}.json")
        self.jobs[job_id] = {"id": job_id, "url": url, "total": len(results), "progress": len(results),
                             "status": "completed", "message": f"Completed at {iso_s(now_ms())}", "results": results}
        return json_response({"job_status": {"id": job_id, "url": url, "total": len(results), "progress": None,
                                             "status": "queued", "message": None, "results": None}})

    def _create_or_update(self, index: int, user: Any, now: int) -> dict[str, Any]:
        if not isinstance(user, dict):
            return _failed(index, "create", None, "InvalidValue", "each user must be an object")
        table = self.table("users")
        email, external_id = user.get("email"), user.get("external_id")
        row = table.live(table.lookup("external_id", external_id)) if external_id else None
        if row is None and email:
            row = table.live(table.lookup("email", email))
        action = "create" if row is None else "update"
        changes = {k: user[k] for k in USER_FIELDS if k in user}
        failure = _invalid(changes, creating=row is None) or self._unknown_organization(changes)
        if failure:
            return {**_failed(index, action, None, "RecordInvalid", failure), "email": email}
        written = self.state.write(table, row, changes if row is not None else
                                   {k: changes.get(k) for k in USER_FIELDS}, now)
        return {"index": index, "id": table.id(written), "action": action,
                "status": "Created" if action == "create" else "Updated", "success": True, "email": email}

    def _update(self, index: int, user: Any, now: int) -> dict[str, Any]:
        if not isinstance(user, dict) or user.get("id") in (None, ""):
            return _failed(index, "update", None, "InvalidValue", "each user must be an object with an id")
        table = self.table("users")
        user_id = user["id"]
        row = table.row_of(user_id)
        if row is None:
            return _failed(index, "update", user_id, "RecordNotFound", f"User {user_id} not found")
        if table.deleted[row]:
            return _failed(index, "update", user_id, "RecordInvalid", f"User {user_id} is deleted")
        changes = {k: user[k] for k in USER_FIELDS if k in user}
        failure = _invalid(changes, creating=False) or self._unknown_organization(changes)
        if failure:
            return _failed(index, "update", user_id, "RecordInvalid", failure)
        self.state.write(table, row, changes, now)
        return {"index": index, "id": table.id(row), "action": "update", "status": "Updated", "success": True}

    def _unknown_organization(self, changes: dict[str, Any]) -> str | None:
        """Why an ``organization_id`` is refused (no such organization), or None; a valid one is kept as the integer
        Zendesk shows."""
        if "organization_id" not in changes:
            return None
        value = changes["organization_id"]
        if value in (None, ""):
            changes["organization_id"] = None
            return None
        organizations = self.table("organizations")
        row = organizations.row_of(value) if organizations is not None and str(value).isdigit() else None
        if row is None or organizations.deleted[row]:
            return f"Organization: {value} does not exist"
        changes["organization_id"] = int(organizations.id(row))
        return None

    def job_status(self, call: Call) -> Response:
        job = self.jobs.get(call.params["id"])
        if job is None:
            raise ApiError(404, "RecordNotFound", "Not found")
        return json_response({"job_status": job})


def _users(call: Call, shape: str) -> list[Any]:
    body = call.json()
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list) or not users:
        raise ApiError(400, "InvalidValue", f"expected {shape}")
    if len(users) > WRITE_MAX:
        raise ApiError(400, "TooManyValues", f"{len(users)} users given; at most {WRITE_MAX} per request")
    return users


def _invalid(changes: dict[str, Any], creating: bool) -> str | None:
    """Why Zendesk would refuse these user fields, or None."""
    email = changes.get("email")
    if email is not None and not EMAIL.match(str(email).strip()):
        return f"Email: {email} is not properly formatted"
    if (creating or "name" in changes) and not str(changes.get("name") or "").strip():
        return "Name: is too short (minimum one character)"
    return None


def _failed(index: int, action: str, user_id: Any, error: str, details: str) -> dict[str, Any]:
    return {"index": index, "id": user_id, "action": action, "status": "Failed", "success": False, "error": error,
            "details": details}


def _encode(modified_ms: int, row: int) -> str:
    return base64.urlsafe_b64encode(f"{modified_ms}.{row}".encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        modified_ms, row = text.split(".")
        return int(modified_ms), int(row)
    except ValueError:
        raise ApiError(400, "InvalidCursor", f"cursor {cursor!r} was not issued by this export") from None
