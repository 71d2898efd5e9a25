"""HubSpot CRM v3: object lists with `after` cursors, search (10,000-result ceiling), batch upsert, properties."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlencode

import numpy as np
from starlette.responses import Response

from .common import ApiError, Call, iso_ms, json_response, now_ms, parse_datetime
from .limits import Verdict
from .table import Table
from .vendor import Vendor

API = "/crm/v3"
LIST_MAX = 100
SEARCH_MAX = 200
SEARCH_CEILING = 10_000
UPSERT_MAX = 100
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
PROPERTIES: dict[str, tuple[tuple[str, str], ...]] = {
    "contacts": (("email", "string"), ("firstname", "string"), ("lastname", "string"), ("phone", "string"),
                 ("company", "string"), ("jobtitle", "string"), ("lifecyclestage", "enumeration")),
    "companies": (("name", "string"), ("domain", "string"), ("industry", "enumeration")),
}
DEFAULT_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "createdate", "lastmodifieddate", "hs_object_id"),
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"),
}
READ_ONLY = ("createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_object_id")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
OPERATORS = {"GT": np.greater, "GTE": np.greater_equal, "LT": np.less, "LTE": np.less_equal, "EQ": np.equal,
             "NEQ": np.not_equal}


class HubSpot(Vendor):
    tool = "hubspot"
    default_credential = "sandbox-hubspot-token"
    drift_fields = {"contacts": "phone", "companies": "industry"}

    def routes(self):
        return [
            ("GET", f"{API}/objects/{{object}}", self.list_objects, True),
            ("POST", f"{API}/objects/{{object}}/search", self.search, True),
            ("POST", f"{API}/objects/{{object}}/batch/upsert", self.batch_upsert, True),
            ("GET", f"{API}/objects/{{object}}/{{id}}", self.get_object, True),
            ("GET", f"{API}/properties/{{object}}", self.properties, True),
        ]

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        category = {401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND", 429: "RATE_LIMITS"}.get(
            status, "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR")
        return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category,
                **extra}

    def unauthorized(self) -> Response:
        return self.error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found. This API supports "
                          "OAuth 2.0 authentication.")

    def throttled(self, verdict: Verdict) -> Response:
        body = {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()), "policyName": "TEN_SECONDLY_ROLLING",
                "groupName": "publicapi:private-app-api-calls"}
        headers = {"Retry-After": str(verdict.retry_after), **self.limit_headers(verdict)}
        return json_response(body, 429, headers)

    def limit_headers(self, verdict: Verdict | None) -> dict[str, str]:
        if verdict is None:
            return {}
        return {"X-HubSpot-RateLimit-Max": str(verdict.limit),
                "X-HubSpot-RateLimit-Remaining": str(max(0, verdict.limit - verdict.used)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(verdict.window_s * 1000))}

    def _object(self, name: str) -> Table:
        table = self.table(name)
        if table is None:
            raise ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {name}")
        return table

    def record(self, table: Table, row: int, wanted: tuple[str, ...] | list[str]) -> dict[str, Any]:
        values = table.fields(row)
        created, modified = int(table.created[row]), int(table.modified[row])
        values.update({"createdate": iso_ms(created), MODIFIED_PROPERTY[table.name]: iso_ms(modified),
                       "hs_object_id": str(table.id(row))})
        known = set(values)
        properties = {name: None if values[name] is None else str(values[name]) for name in wanted if name in known}
        record = {"id": str(table.id(row)), "properties": self.drift(table.name, properties),
                  "createdAt": iso_ms(created), "updatedAt": iso_ms(modified), "archived": bool(table.deleted[row])}
        if table.deleted[row]:
            record["archivedAt"] = iso_ms(modified)
        return record

    def _wanted(self, obj: str, requested: Any) -> tuple[str, ...]:
        if isinstance(requested, str):
            requested = [p for p in requested.split(",") if p]
        return tuple(requested) if requested else DEFAULT_PROPERTIES[obj]

    def list_objects(self, call: Call) -> Response:
        obj = call.params["object"]
        table = self._object(obj)
        limit = self.page_size(call.int_param("limit", 10, 1, LIST_MAX))
        archived = call.query.get("archived", "false").lower() == "true"
        wanted = self._wanted(obj, ",".join(call.query.getlist("properties")))
        rows = np.flatnonzero(table.deleted == archived)
        after = call.query.get("after")
        start = 0
        if after:
            if not after.isdigit():
                raise ApiError(400, "VALIDATION_ERROR", f"after must be a paging cursor from a previous page, "
                               f"got {after!r}")
            start = int(np.searchsorted(rows, int(after)))
        chunk = rows[start:start + limit].tolist()
        body: dict[str, Any] = {"results": [self.record(table, row, wanted) for row in chunk]}
        if start + limit < len(rows):
            next_after = str(int(rows[start + limit]))
            query = {k: v for k, v in call.query.multi_items() if k != "after"}
            link = call.absolute(f"{API}/objects/{obj}?{urlencode([*query.items(), ('after', next_after)])}")
            body["paging"] = {"next": {"after": next_after, "link": link}}
        return json_response(body)

    def get_object(self, call: Call) -> Response:
        obj = call.params["object"]
        table = self._object(obj)
        row = table.row_of(call.params["id"])
        archived = call.query.get("archived", "false").lower() == "true"
        if row is None or bool(table.deleted[row]) != archived:
            raise ApiError(404, "OBJECT_NOT_FOUND", "Object not found. objectId are usually numeric.")
        return json_response(self.record(table, row, self._wanted(obj, call.query.get("properties"))))

    def search(self, call: Call) -> Response:
        obj = call.params["object"]
        table = self._object(obj)
        body = call.json() or {}
        if not isinstance(body, dict):
            raise ApiError(400, "VALIDATION_ERROR", "search body must be an object")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 1 <= limit <= SEARCH_MAX:
            raise ApiError(400, "VALIDATION_ERROR", f"limit must be between 1 and {SEARCH_MAX}, got {limit!r}")
        limit = self.page_size(limit)
        after = str(body.get("after") or 0)
        if not after.isdigit():
            raise ApiError(400, "VALIDATION_ERROR", f"after must be a number, got {after!r}")
        offset = int(after)
        if offset + limit > SEARCH_CEILING:
            raise ApiError(400, "VALIDATION_ERROR", f"Search results are limited to {SEARCH_CEILING}: after + limit "
                           f"({offset} + {limit}) goes past it. Narrow the filter (e.g. a later lastmodifieddate).")
        groups = body.get("filterGroups") or []
        mask = np.zeros(len(table), bool) if groups else np.ones(len(table), bool)
        for group in groups:
            group_mask = np.ones(len(table), bool)
            for spec in (group or {}).get("filters", []):
                group_mask &= self._filter(table, spec)
            mask |= group_mask
        rows = np.flatnonzero(mask & ~table.deleted)
        rows = self._sorted(table, rows, body.get("sorts") or [])
        chunk = rows[offset:offset + limit].tolist()
        result: dict[str, Any] = {"total": len(rows), "results": [
            self.record(table, row, self._wanted(obj, body.get("properties"))) for row in chunk]}
        if offset + limit < len(rows):
            result["paging"] = {"next": {"after": str(offset + limit)}}
        return json_response(result)

    def _column(self, table: Table, name: str) -> np.ndarray | None:
        if name == "createdate":
            return table.created
        if name == MODIFIED_PROPERTY[table.name]:
            return table.modified
        if name == "hs_object_id":
            return table.ids.offset + np.arange(len(table), dtype=np.int64)
        return None

    def _filter(self, table: Table, spec: dict[str, Any]) -> np.ndarray:
        name, operator, value = spec.get("propertyName"), str(spec.get("operator", "")).upper(), spec.get("value")
        column = self._column(table, name)
        if operator not in OPERATORS:
            raise ApiError(400, "VALIDATION_ERROR", f"operator {operator!r} is not supported by the sandbox; "
                           f"use one of {', '.join(OPERATORS)}")
        if column is None:
            if operator not in ("EQ", "NEQ") or name not in dict(PROPERTIES[table.name]):
                raise ApiError(400, "VALIDATION_ERROR", f"the sandbox filters on createdate, "
                               f"{MODIFIED_PROPERTY[table.name]}, hs_object_id, or EQ/NEQ on a property; got {name!r}")
            wanted = str(value).strip().lower()
            equal = np.array([str(table.fields(row).get(name) or "").strip().lower() == wanted
                              for row in range(len(table))], bool)
            return equal if operator == "EQ" else ~equal
        text = str(value)
        number = int(text) if text.lstrip("-").isdigit() else parse_datetime(text, f"filter value of {name}")
        return OPERATORS[operator](column, number)

    def _sorted(self, table: Table, rows: np.ndarray, sorts: list[Any]) -> np.ndarray:
        if not sorts:
            return rows
        spec = sorts[0]
        name = spec if isinstance(spec, str) else spec.get("propertyName")
        descending = isinstance(spec, dict) and str(spec.get("direction", "")).upper() == "DESCENDING"
        column = self._column(table, name)
        if column is None:
            raise ApiError(400, "VALIDATION_ERROR", f"the sandbox sorts by createdate, "
                           f"{MODIFIED_PROPERTY[table.name]} or hs_object_id, not {name!r}")
        ordered = rows[np.argsort(column[rows], kind="stable")]
        return ordered[::-1] if descending else ordered

    def batch_upsert(self, call: Call) -> Response:
        obj = call.params["object"]
        table = self._object(obj)
        body = call.json()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(400, "VALIDATION_ERROR", "expected {\"inputs\": [{\"idProperty\", \"id\", \"properties\"}]}")
        if len(inputs) > UPSERT_MAX:
            raise ApiError(400, "VALIDATION_ERROR", f"Batch input of {len(inputs)} exceeds the limit of "
                           f"{UPSERT_MAX} inputs")
        ids = [str(i.get("id", "")).strip().lower() for i in inputs if isinstance(i, dict)]
        if len(set(ids)) != len(ids):
            raise ApiError(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        now = now_ms()
        results, errors = [], []
        for item in inputs:
            plan = self._plan_upsert(table, obj, item)
            if isinstance(plan, str):
                errors.append({"status": "error", "category": "VALIDATION_ERROR", "message": plan,
                               "context": {"id": [str(item.get("id")) if isinstance(item, dict) else None]}})
                continue
            row, properties = plan
            if row is None:
                fields = {name: None for name, _ in PROPERTIES[obj]}
                fields.update(properties)
                row = table.append(fields, now)
            else:
                table.update(row, properties, now)
            results.append({**self.record(table, row, [*dict(PROPERTIES[obj]), *READ_ONLY]), "new": plan[0] is None})
        body = {"status": "COMPLETE", "results": results, "startedAt": iso_ms(now), "completedAt": iso_ms(now_ms())}
        if errors:
            body.update(numErrors=len(errors), errors=errors)
        return json_response(body, 207 if errors else 200)

    def _plan_upsert(self, table: Table, obj: str, item: Any) -> tuple[int | None, dict[str, Any]] | str:
        """(row or None to create, properties), or why the input is refused."""
        if not isinstance(item, dict) or not isinstance(item.get("properties", {}), dict):
            return "each input must be {idProperty, id, properties: {...}}"
        id_property, key = item.get("idProperty") or "hs_object_id", item.get("id")
        properties = {k: None if v is None else str(v) for k, v in (item.get("properties") or {}).items()}
        known = dict(PROPERTIES[obj])
        bad = [name for name in properties if name not in known]
        if bad:
            return f"Property values were not valid: {', '.join(bad)} " + (
                "is read-only" if set(bad) <= set(READ_ONLY) else "does not exist")
        if key in (None, ""):
            return "id is required"
        if id_property == "hs_object_id":
            row = table.row_of(key)
            if row is None:
                return f"No {obj} with hs_object_id {key}"
        elif id_property in known:
            row = table.lookup(id_property, key)
            properties.setdefault(id_property, str(key))
        else:
            return f"idProperty {id_property!r} is not a unique property of {obj}"
        email = properties.get("email")
        if email and not EMAIL.match(email.strip()):
            return f"Property values were not valid: INVALID_EMAIL {email!r}"
        return row, properties

    def properties(self, call: Call) -> Response:
        obj = call.params["object"]
        self._object(obj)
        names = [*PROPERTIES[obj], *((name, "datetime" if "date" in name else "number") for name in READ_ONLY
                                      if name != ("hs_lastmodifieddate" if obj == "contacts" else "lastmodifieddate"))]
        return json_response({"results": [
            {"name": name, "label": name, "type": kind, "fieldType": "date" if kind == "datetime" else "text",
             "groupName": f"{obj[:-1]}information", "modificationMetadata": {"readOnlyValue": name in READ_ONLY}}
            for name, kind in names]})
