"""Jira Cloud REST v3, the part an issue sync uses: enhanced search by JQL (``/rest/api/3/search/jql``, GET or POST)
paged by ``nextPageToken`` until ``isLast``, issue create (``POST /rest/api/3/issue`` with ``fields``), read and
edit, basic auth with an account's email and API token, errors as ``{"errorMessages": [...], "errors": {...}}`` and
429 with Retry-After. JQL is understood as far as a sync writes it: ``project = KEY``, ``labels = "name"``,
``updated >= "yyyy-MM-dd HH:mm"`` (or ``created``), joined by AND, and ``ORDER BY updated|created|key
[ASC|DESC]``."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
from starlette.responses import Response

from .common import ApiError, Call, json_response, sf_datetime
from .limits import Verdict
from .vendor import Vendor, basic_credentials

API = "/rest/api/3"
PROJECT = ("10000", "SUP", "Support escalations")
PAGE_DEFAULT, PAGE_MAX = 50, 100
ID_OFFSET = 10_001
STATUSES = (("To Do", "new"), ("In Progress", "indeterminate"), ("Done", "done"))
PRIORITIES = ("Highest", "High", "Medium", "Low", "Lowest")
ISSUE_TYPES = ("Task", "Bug", "Story")
_CLAUSE = re.compile(r"""^\s*(?:(project)\s*=\s*"?([A-Za-z0-9_]+)"?|(updated|created)\s*(>=|>|<=|<)\s*["']"""
                     r"""(\d{4}[-/]\d{2}[-/]\d{2}(?:\s+\d{2}:\d{2})?)["'])\s*$""", re.IGNORECASE)
_LABEL = re.compile(r"""^\s*labels\s*=\s*["']([^"']+)["']\s*$""", re.IGNORECASE)
_ORDER = re.compile(r"\s+ORDER\s+BY\s+(updated|created|key)(?:\s+(ASC|DESC))?\s*$", re.IGNORECASE)


class Jira(Vendor):
    tool = "jira"
    rate_limit = {"requests": 100, "per_seconds": 10}  # Jira Cloud's are cost-based: a burst budget stands for them
    default_credential = ("sync@sandbox.example", "sandbox-jira-token")
    drift_fields = {"issues": "summary"}

    def routes(self):
        return [
            ("GET", f"{API}/search/jql", self.search, True),
            ("POST", f"{API}/search/jql", self.search, True),
            ("POST", f"{API}/issue", self.create_issue, True),
            ("GET", f"{API}/issue/{{key}}", self.get_issue, True),
            ("PUT", f"{API}/issue/{{key}}", self.edit_issue, True),
        ]

    def authorized(self, request, credential) -> bool:
        return basic_credentials(request) == tuple(credential)

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        return {"errorMessages": [message] if message else [], "errors": extra.get("errors", {})}

    def unauthorized(self) -> Response:
        return self.error(401, "UNAUTHORIZED", "You are not authenticated. Authentication required to perform "
                                               "this operation.")

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(429, "RATE_LIMITED", "Rate limit exceeded.",
                          headers={"Retry-After": str(verdict.retry_after)})

    # ------------------------------------------------------------------------------------------ search

    def search(self, call: Call) -> Response:
        body = call.json() if call.request.method == "POST" else None
        arguments = body if isinstance(body, dict) else dict(call.query)
        jql = str(arguments.get("jql") or "")
        table = self.table("issues")
        rows = self._matching(table, jql)
        size = arguments.get("maxResults", PAGE_DEFAULT)
        try:
            size = self.page_size(int(size))
        except (TypeError, ValueError):
            raise ApiError(400, "INVALID", f"maxResults: {size!r} is not a number") from None
        size = min(max(size, 1), PAGE_MAX)
        start = _decode_token(arguments.get("nextPageToken")) if arguments.get("nextPageToken") else 0
        chunk = rows[start:start + size]
        page: dict[str, Any] = {"issues": [self.issue(table, int(row), call) for row in chunk],
                                "isLast": start + size >= len(rows)}
        if not page["isLast"]:
            page["nextPageToken"] = _encode_token(start + size)
        return json_response(page)

    def _matching(self, table, jql: str) -> np.ndarray:
        """The live rows a JQL query selects, in its order (by update time, then id, by default)."""
        order_match = _ORDER.search(" " + jql)
        where = (" " + jql)[: order_match.start()] if order_match else jql
        mask = ~table.deleted
        for clause in filter(str.strip, re.split(r"\s+AND\s+", where.strip(), flags=re.IGNORECASE)):
            label = _LABEL.match(clause)
            if label:
                mask &= np.array([label.group(1) in (table.fields(row).get("labels") or [])
                                  for row in range(len(table))], dtype=bool)
                continue
            found = _CLAUSE.match(clause)
            if not found:
                raise ApiError(400, "JQL", f"Error in the JQL Query: the sandbox does not understand {clause!r} "
                                           "(it knows project = KEY, labels = \"name\" and updated/created >= "
                                           "\"yyyy-MM-dd HH:mm\").")
            if found.group(1):
                if found.group(2).upper() not in (PROJECT[1], PROJECT[0]):
                    raise ApiError(400, "JQL", f"The value '{found.group(2)}' does not exist for the field "
                                               "'project'.")
                continue
            times = table.modified if found.group(3).lower() == "updated" else table.created
            bound = _jql_time(found.group(5))
            mask &= {">=": times >= bound, ">": times > bound + 59_999, "<=": times <= bound + 59_999,
                     "<": times < bound}[found.group(4)]
        rows = np.flatnonzero(mask)
        column, direction = (order_match.group(1).lower(), (order_match.group(2) or "ASC").upper()) \
            if order_match else ("updated", "ASC")
        keys = {"updated": table.modified, "created": table.created, "key": np.arange(len(table))}[column][rows]
        ordered = rows[np.lexsort((rows, keys))]
        return ordered[::-1] if direction == "DESC" else ordered

    # ------------------------------------------------------------------------------------------ issues

    def issue(self, table, row: int, call: Call) -> dict[str, Any]:
        fields = table.fields(row)
        issue_id = str(table.id(row))
        status, category = fields["status"]
        rendered = {
            "summary": fields.get("summary"), "issuetype": {"name": fields.get("issuetype", "Task")},
            "project": {"id": PROJECT[0], "key": PROJECT[1], "name": PROJECT[2]},
            "status": {"name": status, "statusCategory": {"key": category}},
            "priority": {"name": fields.get("priority") or "Medium"},
            "assignee": fields.get("assignee"), "duedate": fields.get("duedate"),
            "labels": list(fields.get("labels") or []),
            "created": sf_datetime(int(table.created[row])), "updated": sf_datetime(int(table.modified[row])),
        }
        return self.drift("issues", {"id": issue_id, "key": f"{PROJECT[1]}-{int(issue_id) - ID_OFFSET + 1}",
                                     "self": call.absolute(f"{API}/issue/{issue_id}"), "fields": rendered})

    def _row(self, table, key: str) -> int:
        row = table.row_of(key)
        if row is None and key.upper().startswith(f"{PROJECT[1]}-") and key[len(PROJECT[1]) + 1:].isdigit():
            row = table.row_of(str(int(key[len(PROJECT[1]) + 1:]) - 1 + ID_OFFSET))
        if row is None or table.deleted[row]:
            raise ApiError(404, "NOT_FOUND", "Issue does not exist or you do not have permission to see it.")
        return row

    def get_issue(self, call: Call) -> Response:
        table = self.table("issues")
        return json_response(self.issue(table, self._row(table, call.params["key"]), call))

    def create_issue(self, call: Call) -> Response:
        fields = _fields(call)
        project = fields.get("project") or {}
        errors = {}
        if not isinstance(project, dict) or str(project.get("key") or project.get("id") or "").upper() not in (
                PROJECT[1], PROJECT[0]):
            errors["project"] = "Specify a valid project ID or key"
        if not str(fields.get("summary") or "").strip():
            errors["summary"] = "You must specify a summary of the issue."
        kind = (fields.get("issuetype") or {}).get("name") if isinstance(fields.get("issuetype"), dict) else None
        if kind not in ISSUE_TYPES:
            errors["issuetype"] = "Specify an issue type"
        changes = self._changes(fields, errors)
        if errors:
            raise ApiError(400, "INVALID", "", errors=errors)
        table = self.table("issues")
        row = self.state.write(table, None, {"status": STATUSES[0], "priority": "Medium", "assignee": None,
                                             "duedate": None, "labels": [], "issuetype": kind, **changes})
        issue_id = str(table.id(row))
        return json_response({"id": issue_id, "key": f"{PROJECT[1]}-{int(issue_id) - ID_OFFSET + 1}",
                              "self": call.absolute(f"{API}/issue/{issue_id}")}, 201)

    def edit_issue(self, call: Call) -> Response:
        table = self.table("issues")
        row = self._row(table, call.params["key"])
        errors: dict[str, str] = {}
        changes = self._changes(_fields(call), errors)
        if errors:
            raise ApiError(400, "INVALID", "", errors=errors)
        self.state.write(table, row, changes)
        return Response(status_code=204)

    @staticmethod
    def _changes(fields: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "summary" in fields:
            changes["summary"] = str(fields["summary"])
        if "priority" in fields:
            name = (fields["priority"] or {}).get("name") if isinstance(fields["priority"], dict) else None
            if name not in PRIORITIES:
                errors["priority"] = f"The priority selected is invalid: {name!r}; one of {', '.join(PRIORITIES)}"
            changes["priority"] = name
        if "duedate" in fields:
            if fields["duedate"] is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(fields["duedate"])):
                errors["duedate"] = "Error parsing date string: use yyyy-MM-dd"
            changes["duedate"] = fields["duedate"]
        if "labels" in fields:
            changes["labels"] = [str(label) for label in fields["labels"] or []]
        if "description" in fields:
            changes["description"] = fields["description"]
        return changes


def _fields(call: Call) -> dict[str, Any]:
    body = call.json()
    fields = body.get("fields") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        raise ApiError(400, "INVALID", "The request body must be an object with fields.")
    return fields


def _jql_time(text: str) -> int:
    value = text.replace("/", "-")
    parsed = datetime.strptime(value, "%Y-%m-%d %H:%M" if " " in value else "%Y-%m-%d")
    return int(parsed.replace(tzinfo=timezone.utc).timestamp() * 1000)


def _encode_token(position: int) -> str:
    return base64.urlsafe_b64encode(f"jira:{position}".encode()).decode().rstrip("=")


def _decode_token(token: Any) -> int:
    try:
        text = base64.urlsafe_b64decode(str(token) + "=" * (-len(str(token)) % 4)).decode()
        return int(text.removeprefix("jira:"))
    except ValueError:
        raise ApiError(400, "INVALID", "The nextPageToken is invalid or has expired.") from None
