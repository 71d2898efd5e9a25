"""Stripe: `has_more`/`starting_after` lists for full reads, the events feed for incremental ones (Stripe objects
carry no update time, so `updated` is added), and form-encoded writes made safe to repeat by an Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Iterator

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, result
from sync_pipelines.connectors.http import Auth, HasMorePaginator, PageRequest

API = "/v1"
PAGE_MAX = 100
EVENT_TYPES = {
    "customers": ("customer.created", "customer.updated", "customer.deleted"),
    "invoices": ("invoice.created", "invoice.updated", "invoice.deleted", "invoice.finalized", "invoice.paid",
                 "invoice.payment_failed", "invoice.voided", "invoice.marked_uncollectible"),
}
ADDED_FIELDS = ("updated", "object")


def error_code(body: Any) -> str | None:
    """Stripe errors are `{"error": {"type", "code", "message"}}`; `code` is the precise one when present."""
    error = body.get("error") if isinstance(body, dict) else None
    return (error.get("code") or error.get("type")) if isinstance(error, dict) else None


def form_encode(values: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: nested dicts as `metadata[deal_id]`, lists as `items[0][price]`, booleans as
    `true`/`false`, and None as an empty string (which unsets the field)."""
    pairs: list[tuple[str, str]] = []
    for key, value in values.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict):
            pairs += form_encode(value, name)
        elif isinstance(value, (list, tuple)):
            pairs += form_encode({str(i): item for i, item in enumerate(value)}, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, "" if value is None else str(value)))
    return pairs


def idempotency_key(stream: str, object_id: str | None, fields: dict[str, Any]) -> str:
    """The same record always yields the same key, so a retried or re-run write cannot create a twin."""
    digest = hashlib.sha256(json.dumps([stream, object_id, fields], sort_keys=True, default=str).encode())
    return f"sync-pipelines-{digest.hexdigest()[:40]}"


class StripeConnector(ApiConnector):
    kind = "stripe"
    streams = tuple(EVENT_TYPES)
    write_streams = tuple(EVENT_TYPES)
    write_modes = ("upsert", "update")
    spec = ToolSpec(credential_keys=("api_key",), auth=lambda c: Auth.bearer(c["api_key"]),
                    error_code=error_code, page_size=PAGE_MAX)

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        if since is None:
            for item in self._list(stream, {}):
                yield {**item, "updated": item.get("created")}
            return
        newest: dict[str, dict] = {}
        params = {"created[gt]": int(since.timestamp()), "types[]": list(EVENT_TYPES[stream])}
        for event in self._list("events", params):
            item = event["data"]["object"]
            kept = newest.get(item["id"])
            if kept is None or kept["updated"] < event["created"]:
                newest[item["id"]] = {**item, "updated": event["created"],
                                      **({"deleted": True} if event["type"].endswith(".deleted") else {})}
        yield from sorted(newest.values(), key=lambda record: record["updated"])

    def _list(self, resource: str, params: dict[str, Any]) -> Iterator[dict]:
        request = PageRequest("GET", f"{API}/{resource}", params={"limit": min(self.page_size, PAGE_MAX), **params})
        yield from self.http.paginate(request, records_path="data", paginator=HasMorePaginator())

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """upsert creates records without an `id` and updates the others; update needs the `id`."""
        return [result(False, error="record lacks id") if mode == "update" and not record.get("id")
                else self._write_batch([record], lambda batch: [self._save(stream, batch[0])])[0]
                for record in records]

    def _save(self, stream: str, record: dict) -> dict[str, Any]:
        """Create when the record has no `id`, update otherwise; `idempotency_key` in the record overrides ours."""
        fields = {k: v for k, v in record.items() if k not in ADDED_FIELDS}
        key = fields.pop("idempotency_key", None)
        object_id = fields.pop("id", None)
        key = key or idempotency_key(stream, object_id, fields)
        path = f"{API}/{stream}/{object_id}" if object_id else f"{API}/{stream}"
        body = self.http.request("POST", path, data=form_encode(fields), headers={"Idempotency-Key": key})
        return result(True, body.get("id"), object_id is None)
