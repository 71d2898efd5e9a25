"""Asana: tasks gathered project by project across workspaces (a task in several projects comes once);
writes create or update one task per call, since Asana has no batch upsert."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator
from urllib.parse import quote

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, result
from sync_pipelines.connectors.errors import ApiError
from sync_pipelines.connectors.http import Auth
from sync_pipelines.connectors.rest import CursorPages, Endpoint, Incremental, RestRead, read_pages

API = "/api/1.0"
PAGE_MAX = 100
TASK_FIELDS = ("gid", "name", "notes", "completed", "completed_at", "due_on", "due_at", "created_at", "modified_at",
               "assignee.email", "assignee.name", "projects.name", "workspace.name", "permalink_url")
OFFSET_PAGES = CursorPages(type="cursor", cursor_path="next_page.offset", param="offset")
# A project's tasks are a plain REST read; what is special is going over every project (a task in several comes once)
TASKS = RestRead(endpoint=Endpoint(path=f"{API}/tasks"), records_path="data", paginator=OFFSET_PAGES,
                 incremental=Incremental(param="modified_since", format="iso_z"), page_size_param="limit",
                 id_field="gid")


def error_code(body: Any) -> str | None:
    """Asana errors are `{"errors": [{"message": ...}]}` with no code; the message is the best we have."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors and isinstance(errors[0], dict):
        return str(errors[0].get("message", ""))[:120] or None
    return None


class AsanaConnector(ApiConnector):
    kind = "asana"
    streams = ("tasks",)
    write_streams = ("tasks",)
    write_modes = ("upsert", "update")
    extra_options = frozenset({"project"})
    spec = ToolSpec(credential_keys=("access_token",), auth=lambda c: Auth.bearer(c["access_token"]),
                    error_code=error_code, page_size=PAGE_MAX)

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        fields = ",".join(self.fields_for(stream) or TASK_FIELDS)
        seen: set[str] = set()
        for project in self._project_gids():
            for task in read_pages(self.http, TASKS, since, stream=stream, page_size=min(self.page_size, PAGE_MAX),
                                   params={"opt_fields": fields, "project": project}):
                if task["gid"] not in seen:
                    seen.add(task["gid"])
                    yield task

    def _project_gids(self) -> Iterator[str]:
        pinned = self.options.extra.get("project")
        if pinned:
            yield str(pinned)
            return
        for workspace in self._list(f"{API}/workspaces", {}, "workspaces"):
            for project in self._list(f"{API}/projects", {"workspace": workspace["gid"]}, "projects"):
                yield project["gid"]

    def _list(self, path: str, params: dict[str, Any], stream: str) -> Iterator[dict]:
        listing = RestRead(endpoint=Endpoint(path=path), records_path="data", paginator=OFFSET_PAGES,
                           page_size_param="limit", id_field="gid")
        yield from read_pages(self.http, listing, None, stream=stream, page_size=min(self.page_size, PAGE_MAX),
                              params=params)

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """upsert creates tasks without a `gid` and updates the others; update needs the `gid`."""
        return [result(False, error="record lacks gid") if mode == "update" and not record.get("gid")
                else self._write_batch([record], self._save)[0] for record in records]

    def _save(self, batch: list[dict]) -> list[dict[str, Any]]:
        """A record with a `gid` updates that task; one without creates a task (in the pinned project if any).
        Creation is not idempotent, so it is only retried when the API surely did nothing (429); a create's
        `idempotency_key` becomes the task's external gid, by which `find_created` finds it after a crash."""
        data = dict(batch[0])
        gid, key = data.pop("gid", None), data.pop("idempotency_key", None)
        if gid:
            body = self.http.request("PUT", f"{API}/tasks/{quote(str(gid), safe='')}", json={"data": data})
            return [result(True, body["data"]["gid"], False)]
        pinned = self.options.extra.get("project")
        if pinned and not data.get("projects") and not data.get("workspace"):
            data["projects"] = [str(pinned)]
        if key:
            data["external"] = {"gid": key}
        body = self.http.request("POST", f"{API}/tasks", json={"data": data}, idempotent=False)
        return [result(True, body["data"]["gid"], True)]

    def find_created(self, stream: str, key: str) -> str | None:
        """The gid of the task created with idempotency key `key` (Asana resolves `external:<gid>` wherever a task
        gid goes), or None when no such task exists."""
        self._check_stream(stream, self.write_streams, "look up")
        try:
            body = self.http.request("GET", f"{API}/tasks/external:{quote(key, safe='')}",
                                     params={"opt_fields": "gid"})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return body["data"]["gid"]
