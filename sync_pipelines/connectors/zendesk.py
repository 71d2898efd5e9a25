"""Zendesk Support: cursor-based incremental export (users, tickets), the time-based one for organizations (which
has no cursor-based export), and users written through create_or_update_many, a background job polled until
done."""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from typing import Any, Iterator

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, chunked, result
from sync_pipelines.connectors.deletes import delete_each
from sync_pipelines.connectors.errors import ConnectorError, ResponseError
from sync_pipelines.connectors.http import Auth
from sync_pipelines.connectors.rest import CursorPages, Endpoint, RestRead, read_pages

API = "/api/v2"
WRITE_CHUNK = 100
EXPORT_PAGE_MAX = 1000
MIN_START_AGE_SECONDS = 61
JOB_DONE = ("completed", "failed", "killed")
JOB_POLL_SECONDS = (1, 2, 4, 5)
JOB_TIMEOUT_SECONDS = 600
# The exports are plain REST, described as a rest tool's would be: cursor-based for users and tickets, time-based for
# organizations (each page's end_time is the next one's start_time). What is special is only the start time.
EXPORTS = {
    stream: RestRead(endpoint=Endpoint(path=f"{API}/incremental/{stream}/cursor.json"), records_path=stream,
                     paginator=CursorPages(type="cursor", cursor_path="after_cursor", param="cursor",
                                           stop_path="end_of_stream", drop_params=("start_time",)),
                     page_size_param="per_page")
    for stream in ("users", "tickets")
} | {
    "organizations": RestRead(endpoint=Endpoint(path=f"{API}/incremental/organizations.json"),
                              records_path="organizations", page_size_param="per_page",
                              paginator=CursorPages(type="cursor", cursor_path="end_time", param="start_time",
                                                    stop_path="end_of_stream")),
}


def error_code(body: Any) -> str | None:
    """Zendesk errors are `{"error": "Code"}` or `{"error": {"title", "message"}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error.get("title") or error.get("message")
    return error if isinstance(error, str) else None


class ZendeskConnector(ApiConnector):
    kind = "zendesk"
    streams = tuple(EXPORTS)
    write_streams = ("users",)
    write_modes = ("upsert", "update")
    spec = ToolSpec(credential_keys=("email", "api_token"),
                    auth=lambda c: Auth.basic(f"{c['email']}/token", c["api_token"]),
                    error_code=error_code, page_size=EXPORT_PAGE_MAX,
                    # Documented: incremental exports allow 10 requests a minute, whatever the plan's own limit.
                    endpoint_limits={f"{API}/incremental/": {"requests": 10, "per_seconds": 60}})

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        size = min(self.page_size, EXPORT_PAGE_MAX) if self.options.page_size else None
        yield from read_pages(self.http, EXPORTS[stream], None, stream=stream, page_size=size,
                              params={"start_time": self._start_time(since)})

    @staticmethod
    def _start_time(since: datetime | None) -> int:
        """Zendesk refuses a start_time within the last minute, so a later `since` starts a minute back (a
        superset: the few records changed in that minute come again, which upserts downstream absorb)."""
        if since is None:
            return 0
        return min(int(since.timestamp()), int(time.time()) - MIN_START_AGE_SECONDS)

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """upsert: create_or_update_many, which matches users by email or external_id; update: update_many by
        `id`, so a user's email can change. Both run a background job, polled until it ends."""
        if mode == "update" and key not in (None, "id"):
            raise ConnectorError(f"{self.name}: update matches users by id, not {key}; use mode='upsert' to match "
                                 "by email or external_id")
        id_field = "id" if mode == "update" else key or "email"
        method, path = ("PUT", "update_many") if mode == "update" else ("POST", "create_or_update_many")
        results: list[dict[str, Any]] = [result(False, error=f"record lacks {id_field}") for _ in records]
        keyed = [i for i, r in enumerate(records) if r.get(id_field) not in (None, "")]
        for indexes in chunked(keyed, WRITE_CHUNK):
            batch = [records[i] for i in indexes]
            for index, outcome in zip(indexes, self._write_batch(batch, lambda b: self._run_job(method, path, b))):
                results[index] = outcome
        return results

    def delete(self, stream: str, ids: list[str]) -> list[dict[str, Any]]:
        """Delete users by id (DELETE /api/v2/users/{id}.json): Zendesk soft-deletes them (active false)."""
        self._check_stream(stream, self.write_streams, "delete")
        return delete_each(self, ids, lambda record_id: f"{API}/users/{record_id}.json")

    def _run_job(self, method: str, action: str, batch: list[dict]) -> list[dict[str, Any]]:
        body = self.http.request(method, f"{API}/users/{action}.json", json={"users": batch})
        job = self._wait_for_job(body["job_status"]["id"])
        outcomes = job.get("results") or []
        if job.get("status") != "completed" or len(outcomes) != len(batch):
            message = (job.get("message")
                       or f"job {job.get('id')} ended {job.get('status')} with {len(outcomes)} results")
            return [result(False, error=f"{self.name}: {message}") for _ in batch]
        # Zendesk keeps the results in the order of the submitted users.
        return [self._outcome(item) for item in outcomes]

    def _outcome(self, item: dict) -> dict[str, Any]:
        status = str(item.get("status", "")).lower()
        if status == "failed" or item.get("error"):
            return result(False, item.get("id"), error=f"{item.get('error')}: {item.get('details')}")
        return result(True, item.get("id"), item.get("action") == "create" or status == "created")

    def _wait_for_job(self, job_id: str) -> dict:
        waited = 0.0
        for attempt in itertools.count():
            job = self.http.request("GET", f"{API}/job_statuses/{job_id}.json")["job_status"]
            if job.get("status") in JOB_DONE:
                return job
            if waited >= JOB_TIMEOUT_SECONDS:
                break
            pause = JOB_POLL_SECONDS[min(attempt, len(JOB_POLL_SECONDS) - 1)]
            self.options.sleep(pause)
            waited += pause
        raise ResponseError(f"{self.name}: job {job_id} did not finish within {JOB_TIMEOUT_SECONDS} s", tool=self.name)
