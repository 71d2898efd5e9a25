"""Stripe API v1: form-encoded requests, newest-first lists, events, and Idempotency-Key semantics."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from .common import ApiError, Call, json_response, now_ms
from .ids import IdScheme
from .limits import Verdict
from .table import Table
from .vendor import Vendor, basic_credentials

API = "/v1"
LIST_MAX = 100
EVENT_TYPES = ("customer.created", "customer.updated", "customer.deleted", "invoice.created", "invoice.updated",
               "invoice.deleted")
STREAM_OF = {"customers": "customer", "invoices": "invoice"}
EVENT_IDS = IdScheme("stripe", "evt")
ITEM_IDS = IdScheme("stripe", "ii")
CUSTOMER_PARAMS = ("email", "name", "phone", "description", "metadata")
INVOICE_PARAMS = ("customer", "currency", "description", "metadata", "auto_advance", "collection_method",
                  "days_until_due")


class EventLog:
    """Events as parallel arrays (time in s, type code, stream code, row); built on first use, appended after."""

    def __init__(self, customers: Table, invoices: Table) -> None:
        parts = []
        for stream_code, table in enumerate((customers, invoices)):
            rows = np.arange(len(table))
            base = 3 * stream_code
            edited = table.modified > table.created
            parts.append((table.created, np.full(len(table), base), rows, stream_code))
            parts.append((table.modified[edited & ~table.deleted], np.full(int((edited & ~table.deleted).sum()),
                                                                           base + 1), rows[edited & ~table.deleted],
                          stream_code))
            parts.append((table.modified[table.deleted], np.full(int(table.deleted.sum()), base + 2),
                          rows[table.deleted], stream_code))
        times = np.concatenate([p[0] for p in parts]) // 1000
        order = np.argsort(times, kind="stable")
        self.created = times[order]
        self.type = np.concatenate([p[1] for p in parts]).astype(np.int8)[order]
        self.stream = np.concatenate([np.full(len(p[0]), p[3]) for p in parts]).astype(np.int8)[order]
        self.row = np.concatenate([p[2] for p in parts]).astype(np.int64)[order]

    def append(self, created_s: int, type_code: int, stream_code: int, row: int) -> None:
        self.created = np.append(self.created, created_s)
        self.type = np.append(self.type, np.int8(type_code))
        self.stream = np.append(self.stream, np.int8(stream_code))
        self.row = np.append(self.row, row)


class Stripe(Vendor):
    tool = "stripe"
    rate_limit = {"requests": 100, "per_seconds": 1}
    default_credential = "sk_test_sandbox"
    drift_fields = {"customers": "phone", "invoices": "amount_due"}

    def __init__(self, state) -> None:
        super().__init__(state)
        self.events = EventLog(self.table("customers"), self.table("invoices"))
        self.idempotency: dict[tuple[str, str], tuple[str, int, bytes]] = {}
        self._invoice_items = 0

    def routes(self):
        return [
            ("GET", f"{API}/customers", lambda call: self.list_objects(call, "customers"), True),
            ("GET", f"{API}/invoices", lambda call: self.list_objects(call, "invoices"), True),
            ("GET", f"{API}/customers/{{id}}", lambda call: self.get_object(call, "customers"), True),
            ("GET", f"{API}/invoices/{{id}}", lambda call: self.get_object(call, "invoices"), True),
            ("GET", f"{API}/events", self.list_events, True),
            ("POST", f"{API}/customers", self.idempotent(self.create_customer), True),
            ("POST", f"{API}/customers/{{id}}", self.idempotent(self.update_customer), True),
            ("DELETE", f"{API}/customers/{{id}}", self.delete_customer, True),
            ("POST", f"{API}/invoices", self.idempotent(self.create_invoice), True),
            ("DELETE", f"{API}/invoices/{{id}}", self.delete_draft_invoice, True),
            ("POST", f"{API}/invoices/{{id}}/void", self.idempotent(self.void_invoice), True),
            ("POST", f"{API}/invoiceitems", self.idempotent(self.create_invoice_item), True),
        ]

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        kind = "api_error" if status >= 500 else extra.pop("type", "invalid_request_error")
        return {"error": {"type": kind, "code": code.lower(), "message": message, **extra}}

    def authorized(self, request: Request, credential: Any) -> bool:
        basic = basic_credentials(request)
        return super().authorized(request, credential) or (basic is not None and basic[0] == credential)

    def unauthorized(self) -> Response:
        return self.error(401, "api_key_invalid", "Invalid API Key provided.")

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(429, "rate_limit", "Request rate limit exceeded. Retry after a short wait.",
                          headers={"Retry-After": str(verdict.retry_after)})

    def on_change(self, table: Table, row: int, kind: str) -> None:
        stream_code = ("customers", "invoices").index(table.name)
        self.events.append(now_ms() // 1000, EVENT_TYPES.index(f"{STREAM_OF[table.name]}.{kind}"), stream_code, row)

    def obj(self, table: Table, row: int) -> dict[str, Any]:
        record_id = table.id(row)
        if table.deleted[row]:
            return {"id": record_id, "object": STREAM_OF[table.name], "deleted": True}
        fields = table.fields(row)
        common = {"id": record_id, "object": STREAM_OF[table.name], "created": int(table.created[row]) // 1000,
                  "livemode": False, "metadata": fields.get("metadata") or {}}
        if table.name == "customers":
            record = {**common, "email": fields.get("email"), "name": fields.get("name"),
                      "phone": fields.get("phone"), "description": fields.get("description"), "balance": 0,
                      "currency": None, "delinquent": False}
        else:
            record = {**common, "customer": fields.get("customer"), "customer_email": fields.get("customer_email"),
                      "amount_due": fields.get("amount_due"),
                      "amount_paid": fields.get("amount_due") if fields.get("status") == "paid" else 0,
                      "currency": fields.get("currency"), "status": fields.get("status"),
                      "description": fields.get("description"), "collection_method": "send_invoice"}
        return self.drift(table.name, record)

    def _page(self, call: Call, order: np.ndarray, ids: IdScheme, url: str, render) -> Response:
        """Newest-first `order` of rows/events, cut by starting_after / ending_before and limit."""
        limit = self.page_size(call.int_param("limit", 10, 1, LIST_MAX))
        after, before = call.query.get("starting_after"), call.query.get("ending_before")
        start, end = 0, len(order)
        for cursor, is_after in ((after, True), (before, False)):
            if not cursor:
                continue
            row = ids.row(cursor)
            hits = np.flatnonzero(order == row) if row is not None else []
            if len(hits) == 0:
                raise ApiError(400, "resource_missing", f"No such object: '{cursor}'",
                               param="starting_after" if is_after else "ending_before")
            start, end = (int(hits[0]) + 1, end) if is_after else (start, int(hits[0]))
        chunk = order[start:end]
        chunk = chunk[-limit:] if before and not after else chunk[:limit]
        return json_response({"object": "list", "url": url, "has_more": len(order[start:end]) > limit,
                              "data": [render(int(i)) for i in chunk.tolist()]})

    def _created_mask(self, call: Call, created_s: np.ndarray) -> np.ndarray:
        mask = np.ones(len(created_s), bool)
        for op, compare in (("gt", np.greater), ("gte", np.greater_equal), ("lt", np.less), ("lte", np.less_equal)):
            raw = call.query.get(f"created[{op}]")
            if raw is not None:
                if not raw.lstrip("-").isdigit():
                    raise ApiError(400, "parameter_invalid_integer", f"Invalid integer: {raw}", param=f"created[{op}]")
                mask &= compare(created_s, int(raw))
        raw = call.query.get("created")
        if raw is not None and raw.isdigit():
            mask &= created_s == int(raw)
        return mask

    def list_objects(self, call: Call, stream: str) -> Response:
        table = self.table(stream)
        mask = self._created_mask(call, table.created // 1000) & ~table.deleted
        filters = {"customers": ("email",), "invoices": ("customer", "status")}[stream]
        for name in filters:
            value = call.query.get(name)
            if value is not None:
                mask &= np.array([table.fields(row).get(name) == value for row in range(len(table))], bool)
        rows = np.flatnonzero(mask)
        order = rows[np.lexsort((-rows, -table.created[rows]))]
        return self._page(call, order, table.ids, f"{API}/{stream}", lambda row: self.obj(table, row))

    def get_object(self, call: Call, stream: str) -> Response:
        table = self.table(stream)
        row = table.row_of(call.params["id"])
        if row is None:
            raise ApiError(404, "resource_missing", f"No such {STREAM_OF[stream]}: '{call.params['id']}'", param="id")
        return json_response(self.obj(table, row))

    def list_events(self, call: Call) -> Response:
        log = self.events
        mask = self._created_mask(call, log.created)
        types = call.query.getlist("types[]") + ([call.query["type"]] if call.query.get("type") else [])
        if types:
            allowed = np.zeros(len(EVENT_TYPES), bool)
            for wanted in types:
                matches = [i for i, t in enumerate(EVENT_TYPES)
                           if t == wanted or (wanted.endswith(".*") and t.startswith(wanted[:-1]))]
                allowed[matches] = True
            mask &= allowed[log.type]
        order = np.flatnonzero(mask)[::-1]
        return self._page(call, order, EVENT_IDS, f"{API}/events", self.event)

    def event(self, seq: int) -> dict[str, Any]:
        log = self.events
        table = self.table(("customers", "invoices")[int(log.stream[seq])])
        return {"id": EVENT_IDS.id(seq), "object": "event", "api_version": "2024-06-20",
                "created": int(log.created[seq]), "type": EVENT_TYPES[int(log.type[seq])], "livemode": False,
                "pending_webhooks": 0, "data": {"object": self.obj(table, int(log.row[seq]))}}

    def idempotent(self, handler):
        """Replay the first response for a repeated Idempotency-Key; refuse the key with other parameters."""
        def wrapped(call: Call) -> Response:
            key = call.request.headers.get("idempotency-key")
            if not key:
                return handler(call)
            params = sorted(parse_qsl(call.body.decode(), keep_blank_values=True))
            fingerprint = hashlib.sha256(json.dumps([call.request.url.path, params]).encode()).hexdigest()
            seen = self.idempotency.get((call.request.url.path, key))
            if seen is not None:
                if seen[0] != fingerprint:
                    raise ApiError(400, "idempotency_key_in_use", "Keys for idempotent requests can only be used "
                                   "with the same parameters they were first used with.", type="idempotency_error")
                return Response(seen[2], seen[1], headers={"Idempotent-Replayed": "true", "Idempotency-Key": key},
                                media_type="application/json")
            response = handler(call)
            if response.status_code < 500:
                self.idempotency[(call.request.url.path, key)] = (fingerprint, response.status_code, response.body)
            response.headers["Idempotency-Key"] = key
            return response
        return wrapped

    def create_customer(self, call: Call) -> Response:
        params = _form(call, CUSTOMER_PARAMS)
        table = self.table("customers")
        row = self.state.write(table, None, {"name": None, "email": None, "phone": None, "metadata": {}, **params})
        return json_response(self.obj(table, row))

    def update_customer(self, call: Call) -> Response:
        table, row = self._live(call, "customers")
        params = _form(call, CUSTOMER_PARAMS)
        if "metadata" in params:
            params["metadata"] = {**(table.fields(row).get("metadata") or {}), **params["metadata"]}
        self.state.write(table, row, params)
        return json_response(self.obj(table, row))

    def delete_customer(self, call: Call) -> Response:
        table, row = self._live(call, "customers")
        self.state.write(table, row, {}, deleted=True)
        return json_response(self.obj(table, row))

    def _live(self, call: Call, stream: str) -> tuple[Table, int]:
        table = self.table(stream)
        row = table.row_of(call.params["id"])
        if row is None or table.deleted[row]:
            raise ApiError(404, "resource_missing", f"No such {STREAM_OF[stream]}: '{call.params['id']}'", param="id")
        return table, row

    def create_invoice(self, call: Call) -> Response:
        params = _form(call, INVOICE_PARAMS)
        customers, invoices = self.table("customers"), self.table("invoices")
        customer_id = params.get("customer")
        if not customer_id:
            raise ApiError(400, "parameter_missing", "Missing required param: customer.", param="customer")
        row = customers.row_of(customer_id)
        if row is None or customers.deleted[row]:
            raise ApiError(400, "resource_missing", f"No such customer: '{customer_id}'", param="customer")
        fields = {"customer": customer_id, "customer_email": customers.fields(row).get("email"), "amount_due": 0,
                  "currency": params.get("currency", "usd"), "status": "draft", "metadata": params.get("metadata", {}),
                  "description": params.get("description")}
        invoice = self.state.write(invoices, None, fields)
        return json_response(self.obj(invoices, invoice))

    def delete_draft_invoice(self, call: Call) -> Response:
        """Stripe deletes only draft invoices: a finalized one must be voided."""
        table, row = self._live(call, "invoices")
        if table.fields(row).get("status") != "draft":
            raise ApiError(400, "invoice_not_editable",
                           f"You can only delete draft invoices. This invoice is {table.fields(row).get('status')}.")
        self.state.write(table, row, {}, deleted=True)
        return json_response({"id": table.id(row), "object": "invoice", "deleted": True})

    def void_invoice(self, call: Call) -> Response:
        """Only an open (finalized, unpaid) or uncollectible invoice can be voided; its status becomes void."""
        table, row = self._live(call, "invoices")
        status = table.fields(row).get("status")
        if status not in ("open", "uncollectible"):
            raise ApiError(400, "invoice_not_editable", f"You can only void open invoices. This invoice is {status}.")
        self.state.write(table, row, {"status": "void"})
        return json_response(self.obj(table, row))

    def create_invoice_item(self, call: Call) -> Response:
        """Adds `amount` to a draft invoice, the way invoice items make up an invoice's total."""
        params = _form(call, ("customer", "amount", "currency", "invoice", "description", "metadata"))
        invoices = self.table("invoices")
        row = invoices.row_of(params.get("invoice", ""))
        if row is None or invoices.fields(row).get("status") != "draft":
            raise ApiError(400, "resource_missing", "invoice must name a draft invoice", param="invoice")
        amount = params.get("amount", "")
        if not str(amount).isdigit():
            raise ApiError(400, "parameter_invalid_integer", f"Invalid integer: {amount}", param="amount")
        total = int(invoices.fields(row).get("amount_due") or 0) + int(amount)
        self.state.write(invoices, row, {"amount_due": total})
        self._invoice_items += 1
        return json_response({"id": ITEM_IDS.id(self._invoice_items), "object": "invoiceitem",
                              "amount": int(amount), "invoice": invoices.id(row), "customer": params.get("customer")})


def _form(call: Call, allowed: tuple[str, ...]) -> dict[str, Any]:
    """Decode a form body with bracket keys (metadata[deal_id]=...) into a dict; unknown params are a 400."""
    if call.request.headers.get("content-type", "").startswith("application/json"):
        raise ApiError(400, "invalid_request", "Stripe requests are form-encoded "
                       "(application/x-www-form-urlencoded), not JSON")
    params: dict[str, Any] = {}
    for key, value in parse_qsl(call.body.decode(), keep_blank_values=True):
        name, _, rest = key.partition("[")
        if name not in allowed:
            raise ApiError(400, "parameter_unknown", f"Received unknown parameter: {name}", param=name)
        if rest:
            params.setdefault(name, {})[rest.rstrip("]")] = value
        else:
            params[name] = value
    return params
