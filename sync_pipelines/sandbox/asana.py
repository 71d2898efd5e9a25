"""Asana API 1.0: workspaces, projects, tasks with offset pagination and modified_since, task create/update/delete,
and custom external data (a task's `external` gid stands for its gid as `external:<gid>`)."""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import urlencode

import numpy as np
from starlette.responses import Response

from . import names as N
from .common import ApiError, Call, iso_ms, json_response, parse_datetime
from .data import PROJECTS, WORKSPACE, team_member
from .limits import Verdict
from .table import Table
from .vendor import Vendor

API = "/api/1.0"
PAGE_MAX = 100
UNPAGINATED_MAX = 1000
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TASK_FIELDS = ("name", "notes", "completed", "due_on", "assignee")
EXTERNAL_LIMITS = {"gid": 1024, "data": 32768}  # characters, as Asana documents them


class Asana(Vendor):
    tool = "asana"
    rate_limit = {"requests": 150, "per_seconds": 60}
    default_credential = "sandbox-asana-token"
    drift_fields = {"tasks": "notes"}

    def __init__(self, state) -> None:
        super().__init__(state)
        self.external_rows: dict[str, int] = {}  # external gid -> row

    def routes(self):
        return [
            ("GET", f"{API}/workspaces", self.workspaces, True),
            ("GET", f"{API}/projects", self.projects, True),
            ("GET", f"{API}/tasks", self.list_tasks, True),
            ("POST", f"{API}/tasks", self.create_task, True),
            ("GET", f"{API}/tasks/{{gid}}", self.get_task, True),
            ("PUT", f"{API}/tasks/{{gid}}", self.update_task, True),
            ("DELETE", f"{API}/tasks/{{gid}}", self.delete_task, True),
        ]

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        return {"errors": [{"message": message, "help": "See the Asana API reference.", **extra}]}

    def unauthorized(self) -> Response:
        return self.error(401, "NOT_AUTHORIZED", "Not Authorized")

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(429, "RATE_LIMITED", "You have made too many requests recently. Please, be chill.",
                          headers={"Retry-After": str(verdict.retry_after)})

    def workspaces(self, call: Call) -> Response:
        return json_response({"data": [{"gid": WORKSPACE[0], "name": WORKSPACE[1], "resource_type": "workspace"}],
                              "next_page": None})

    def projects(self, call: Call) -> Response:
        workspace = call.query.get("workspace")
        if workspace and workspace != WORKSPACE[0]:
            raise ApiError(404, "NOT_FOUND", f"workspace: Unknown object: {workspace}")
        return json_response({"data": [_project(i) for i in range(len(PROJECTS))], "next_page": None})

    def task(self, table: Table, row: int, opt_fields: list[str] | None) -> dict[str, Any]:
        fields = table.fields(row)
        full = {"gid": str(table.id(row)), "resource_type": "task", "resource_subtype": "default_task",
                "name": fields.get("name"), "notes": fields.get("notes"), "completed": bool(fields.get("completed")),
                "due_on": fields.get("due_on"), "assignee": fields.get("assignee"),
                **({"external": fields["external"]} if fields.get("external") else {}),
                "created_at": iso_ms(int(table.created[row])), "modified_at": iso_ms(int(table.modified[row])),
                "projects": [_project(_project_index(gid)) for gid in fields.get("projects") or []],
                "workspace": {"gid": WORKSPACE[0], "name": WORKSPACE[1], "resource_type": "workspace"}}
        if full["assignee"]:
            full["assignee"] = {**full["assignee"], "resource_type": "user"}
        if opt_fields is None:
            record = {k: full[k] for k in ("gid", "name", "resource_type", "resource_subtype")}
        else:
            record = {"gid": full["gid"], **{k: full[k] for k in opt_fields if k in full}}
        return self.drift("tasks", record)

    def list_tasks(self, call: Call) -> Response:
        table = self.table("tasks")
        project = call.query.get("project")
        if not project:
            raise ApiError(400, "INVALID_REQUEST", "Must specify exactly one of project, tag, section, user "
                           "task list, or assignee + workspace (the sandbox supports project)")
        index = _project_index(project)
        mask = table.codes["project"] == index
        since = call.query.get("modified_since")
        if since:
            mask &= table.modified >= parse_datetime(since, "modified_since")
        rows = np.flatnonzero(mask & ~table.deleted)
        opt_fields = _opt_fields(call)
        has_limit = bool(call.query.get("limit"))
        limit = self.page_size(call.int_param("limit", PAGE_MAX, 1, PAGE_MAX))
        if not has_limit and not self.state.faults.get(self.tool, "page_size"):
            if len(rows) > UNPAGINATED_MAX:
                raise ApiError(400, "TOO_LARGE", "The result is too large. You should use pagination (may require "
                               "specifying a limit).")
            return json_response({"data": [self.task(table, row, opt_fields) for row in rows.tolist()]})
        start = 0
        offset = call.query.get("offset")
        if offset:
            start = int(np.searchsorted(rows, _decode_offset(offset)))
        chunk = rows[start:start + limit].tolist()
        next_page = None
        if start + limit < len(rows):
            token = _encode_offset(int(rows[start + limit]))
            query = [(k, v) for k, v in call.query.multi_items() if k != "offset"] + [("offset", token)]
            path = f"/tasks?{urlencode(query)}"
            next_page = {"offset": token, "path": path, "uri": call.absolute(f"{API}{path}")}
        return json_response({"data": [self.task(table, row, opt_fields) for row in chunk], "next_page": next_page})

    def live_row(self, table: Table, gid: str) -> int:
        """The row of a task gid or of `external:<external gid>`; 404 for an unknown or deleted task."""
        row = self.external_rows.get(gid[len("external:"):]) if gid.startswith("external:") else table.row_of(gid)
        if row is None or table.deleted[row]:
            raise ApiError(404, "NOT_FOUND", f"task: Unknown object: {gid}")
        return row

    def get_task(self, call: Call) -> Response:
        table = self.table("tasks")
        row = self.live_row(table, call.params["gid"])
        return json_response({"data": self.task(table, row, _opt_fields(call) or list(TASK_FIELDS) + [
            "created_at", "modified_at", "projects", "workspace", "resource_type", "external"])})

    def create_task(self, call: Call) -> Response:
        data = _data(call)
        table = self.table("tasks")
        projects = data.get("projects") or []
        if isinstance(projects, str):
            projects = [projects]
        workspace = data.get("workspace")
        if not projects and not workspace:
            raise ApiError(400, "INVALID_REQUEST", "You should specify one of workspace, parent, projects")
        if workspace and workspace != WORKSPACE[0]:
            raise ApiError(404, "NOT_FOUND", f"workspace: Unknown object: {workspace}")
        indexes = [_project_index(gid) for gid in projects]
        fields = {"name": data.get("name", ""), "notes": data.get("notes", ""), "completed": False, "due_on": None,
                  "assignee": None, "projects": [PROJECTS[i][0] for i in indexes]}
        fields.update(_task_changes(data))
        row = self.state.write(table, None, fields, codes={"project": indexes[0] if indexes else -1})
        self.index_external(row, None, fields.get("external"))
        full = list(TASK_FIELDS) + ["created_at", "modified_at", "projects", "workspace", "resource_type", "external"]
        return json_response({"data": self.task(table, row, full)}, 201)

    def update_task(self, call: Call) -> Response:
        table = self.table("tasks")
        row = self.live_row(table, call.params["gid"])
        changes, old = _task_changes(_data(call)), table.fields(row).get("external")
        self.state.write(table, row, changes)
        if "external" in changes:
            self.index_external(row, old, changes["external"])
        return json_response({"data": self.task(table, row, list(TASK_FIELDS) + ["modified_at", "external"])})

    def delete_task(self, call: Call) -> Response:
        """The task goes to the trash: no list or lookup shows it any more (and Asana sends no marker of it); the
        answer is an empty data record."""
        table = self.table("tasks")
        self.state.write(table, self.live_row(table, call.params["gid"]), {}, deleted=True)
        return json_response({"data": {}})

    def index_external(self, row: int, old: dict | None, new: dict | None) -> None:
        """Keep `external:<gid>` resolving to the task that holds that external gid now."""
        if old and old.get("gid") and self.external_rows.get(old["gid"]) == row:
            del self.external_rows[old["gid"]]
        if new and new.get("gid"):
            self.external_rows.setdefault(new["gid"], row)


def _project(index: int) -> dict[str, str]:
    return {"gid": PROJECTS[index][0], "name": PROJECTS[index][1], "resource_type": "project"}


def _project_index(gid: str) -> int:
    for index, (project_gid, _) in enumerate(PROJECTS):
        if project_gid == str(gid):
            return index
    raise ApiError(404, "NOT_FOUND", f"project: Unknown object: {gid}")


def _opt_fields(call: Call) -> list[str] | None:
    raw = call.query.get("opt_fields")
    return None if not raw else list(dict.fromkeys(part.split(".")[0] for part in raw.split(",") if part))


def _data(call: Call) -> dict[str, Any]:
    body = call.json()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise ApiError(400, "INVALID_REQUEST", "expected a JSON body {\"data\": {...}}")
    return data


def _task_changes(data: dict[str, Any]) -> dict[str, Any]:
    """Writable task fields from a request; the assignee may be a gid, an email or null."""
    changes = {k: data[k] for k in ("name", "notes", "completed", "due_on") if k in data}
    if "due_on" in changes and changes["due_on"] is not None and not DATE.match(str(changes["due_on"])):
        raise ApiError(400, "INVALID_REQUEST", f"due_on: {changes['due_on']!r} is not a date in YYYY-MM-DD")
    if "assignee" in data:
        changes["assignee"] = None if data["assignee"] is None else _team_member(str(data["assignee"]))
    if "external" in data:
        changes["external"] = _external(data["external"])
    return changes


def _external(value: Any) -> dict[str, str] | None:
    """Custom external data: an object of an optional `gid` and `data`, strings within Asana's lengths; null
    clears it."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(EXTERNAL_LIMITS):
        raise ApiError(400, "INVALID_REQUEST", "external: expected an object with gid and/or data")
    for key, limit in EXTERNAL_LIMITS.items():
        if key in value and (not isinstance(value[key], str) or len(value[key]) > limit):
            raise ApiError(400, "INVALID_REQUEST", f"external.{key}: expected a string of at most {limit} characters")
    return {key: value[key] for key in EXTERNAL_LIMITS if key in value} or None


def _team_member(key: str) -> dict[str, str]:
    for index in range(len(N.TEAM)):
        member = team_member(index)
        if key in (member["gid"], member["email"]):
            return member
    raise ApiError(400, "INVALID_REQUEST", f"assignee: Not a recognized ID or email: {key}")


def _encode_offset(row: int) -> str:
    return base64.urlsafe_b64encode(f"row:{row}".encode()).decode().rstrip("=")


def _decode_offset(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        return int(text.removeprefix("row:"))
    except ValueError:
        raise ApiError(400, "INVALID_REQUEST", "offset: Your pagination token is invalid.") from None
