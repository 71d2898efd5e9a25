"""Stripe: `has_more`/`starting_after` lists for full reads, the events feed for incremental ones (Stripe objects
carry no update time, so `updated` is added), and form-encoded writes whose retries an Idempotency-Key makes safe."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from urllib.parse import quote

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, result
from sync_pipelines.connectors.http import Auth, HasMorePaginator, PageRequest, dig

API = "/v1"
PAGE_MAX = 100
EVENT_TYPES = {
    "customers": ("customer.created", "customer.updated", "customer.deleted"),
    "invoices": ("invoice.created", "invoice.updated", "invoice.deleted", "invoice.finalized", "invoice.paid",
                 "invoice.payment_failed", "invoice.voided", "invoice.marked_uncollectible"),
}
ADDED_FIELDS = ("updated", "object")
EVENTS_KEPT = timedelta(days=29)  # Stripe lists the events of the last 30 days: a day's margin for clocks and runs


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


class StripeConnector(ApiConnector):
    kind = "stripe"
    streams = tuple(EVENT_TYPES)
    write_streams = tuple(EVENT_TYPES)
    write_modes = ("upsert", "update")
    spec = ToolSpec(credential_keys=("api_key",), auth=lambda c: Auth.bearer(c["api_key"]),
                    error_code=error_code, page_size=PAGE_MAX)

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        """Objects listed whole on a full read (`updated` is then their `created`); otherwise the events since
        `since`. The events feed reaches back 30 days only: from an older `since` (a sync paused that long), the
        objects are listed whole first, then the events it still has are taken in, so no change in the gap is lost."""
        reach = datetime.now(timezone.utc) - EVENTS_KEPT
        if since is None or since < reach:
            for item in self._list(stream, {}, stream):
                yield {**item, "updated": item.get("created")}
            if since is None:
                return
            since = reach
        newest: dict[str, dict] = {}
        params = {"created[gte]": int(since.timestamp()), "types[]": list(EVENT_TYPES[stream])}
        for event in self._list("events", params, stream):
            item = event["data"]["object"]
            kept = newest.get(item["id"])
            if kept is None or kept["updated"] < event["created"]:
                newest[item["id"]] = {**item, "updated": event["created"],
                                      **({"deleted": True} if event["type"].endswith(".deleted") else {})}
        yield from sorted(newest.values(), key=lambda record: record["updated"])

    def _list_ids(self, stream: str, key: str) -> list:
        """The list endpoint alone, which leaves deleted objects out: so an object deleted while the sync was off,
        whose event is past the 30 days Stripe keeps, is found by a deletion scan too. Stripe takes no field list."""
        return [dig(item, key) for item in self._list(stream, {}, stream)]

    def _list(self, resource: str, params: dict[str, Any], stream: str) -> Iterator[dict]:
        """A list of `resource` (the stream's objects, or its events), paged whole."""
        request = PageRequest("GET", f"{API}/{resource}", params={"limit": min(self.page_size, PAGE_MAX), **params})
        yield from self.http.paginate(request, records_path="data", paginator=HasMorePaginator(), stream=stream)

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """upsert creates records without an `id` and updates the others; update needs the `id`."""
        return [result(False, error="record lacks id") if mode == "update" and not record.get("id")
                else self._write_batch([record], lambda batch: [self._save(stream, batch[0])])[0]
                for record in records]

    def _save(self, stream: str, record: dict) -> dict[str, Any]:
        """Create when the record has no `id`, update otherwise.

        The Idempotency-Key is the record's own `idempotency_key` (a create that must not happen twice across runs
        names its intent, as the actions do), else one made for this call, which the engine's retries of it reuse.
        Stripe answers a key it saw in the last 24 hours with its first answer, so a key derived from the values
        would leave a field set to A, then B, then A again at B, and make two new records alike one."""
        fields = {k: v for k, v in record.items() if k not in ADDED_FIELDS}
        key = fields.pop("idempotency_key", None) or f"sync-pipelines-{uuid.uuid4().hex}"
        object_id = fields.pop("id", None)
        path = f"{API}/{stream}/{quote(str(object_id), safe='')}" if object_id else f"{API}/{stream}"
        body = self.http.request("POST", path, data=form_encode(fields), headers={"Idempotency-Key": key})
        return result(True, body.get("id"), object_id is None)

    def undo_create(self, stream: str, record_id: str) -> str:
        """A draft invoice is deleted and an open one voided, as Stripe allows; a paid one cannot be undone."""
        if stream != "invoices":
            return super().undo_create(stream, record_id)
        path = f"{API}/invoices/{quote(str(record_id), safe='')}"
        status = self.http.request("GET", path).get("status")
        if status == "draft":
            self.http.request("DELETE", path)
            return "deleted (it was a draft)"
        if status in ("open", "uncollectible"):
            self.http.request("POST", f"{path}/void", headers={"Idempotency-Key": f"void:{record_id}"})
            return "voided"
        return f"not undone: the invoice is {status}; refund or credit it in Stripe"

    def find_created(self, stream: str, key: str) -> None:
        """Nothing to look up: a create sent again with its Idempotency-Key is answered with the record the first one
        made (for the 24 hours Stripe keeps keys), so the caller can simply send it again."""
        self._check_stream(stream, self.write_streams, "look up")
        return None
