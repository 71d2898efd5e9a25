"""Deleting records one call each, the documented way of the CRMs and the support desk."""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

from sync_pipelines.connectors.base import result
from sync_pipelines.connectors.errors import ApiError


def delete_each(connector, ids: list[str], path: Callable[[str], str]) -> list[dict[str, Any]]:
    """DELETE ``path(id)`` for each id (quoted as one path segment): one result each, a refusal that record's; one
    the tool no longer has is done."""
    outcomes = []
    for record_id in ids:
        try:
            connector.http.request("DELETE", path(quote(str(record_id), safe="")), expect_json=False)
            outcomes.append(result(True, record_id))
        except ApiError as exc:  # a 404 is a record already gone (deleted in the tool, or by an earlier run)
            outcomes.append(result(True, record_id) if exc.status == 404 else result(False, record_id, error=str(exc)))
    return outcomes
