"""HubSpot CRM v3: object lists with `after` cursors, search (10,000-result ceiling), batch upsert and update,
properties; CRM v4 associations between records (batch read, default associate, archive)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import numpy as np
from starlette.responses import Response

from .common import EMAIL, ApiError, Call, iso_ms, json_response, now_ms, parse_datetime
from .limits import Verdict
from .table import Table
from .vendor import Vendor
from .webhooks import AssociationChange

API = "/crm/v3"
LIST_MAX = 100
SEARCH_MAX = 200
SEARCH_CEILING = 10_000
BATCH_MAX = 100
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
PROPERTIES: dict[str, tuple[tuple[str, str], ...]] = {
    "contacts": (("email", "string"), ("firstname", "string"), ("lastname", "string"), ("phone", "string"),
                 ("company", "string"), ("jobtitle", "string"), ("lifecyclestage", "enumeration")),
    "companies": (("name", "string"), ("domain", "string"), ("industry", "enumeration"), ("golden_id", "string")),
}
DEFAULT_PROPERTIES = {
    "contacts": ("firstname", "lastname", "email", "createdate", "lastmodifieddate", "hs_object_id"),
    "companies": ("name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"),
}
# Properties HubSpot lets a batch upsert/update match on (hs_object_id is not one: it is the record id).
UNIQUE_PROPERTIES = {"contacts": ("email",), "companies": ("golden_id",)}
# Custom properties created with hasUniqueValue (an external id): a value another live record holds is refused.
HAS_UNIQUE_VALUE = {"contacts": (), "companies": ("golden_id",)}
# Object type id and the name HubSpot uses for the object in batch errors.
OBJECT_TYPES = {"contacts": ("0-1", "CONTACT"), "companies": ("0-2", "COMPANY")}
READ_ONLY = ("createdate", "lastmodifieddate", "hs_lastmodifieddate", "hs_object_id")
ASSOCIATIONS_API = "/crm/v4"
# Object pair -> (the table code naming each record's planted association, primary type id, unlabeled type id).
ASSOCIATION_TYPES = {("contacts", "companies"): ("company_record", 1, 279)}
ASSOCIATION_BATCH_MAX = 1000
OPERATORS = {"GT": np.greater, "GTE": np.greater_equal, "LT": np.less, "LTE": np.less_equal, "EQ": np.equal,
             "NEQ": np.not_equal}


class HubSpot(Vendor):
    tool = "hubspot"
    rate_limit = {"requests": 100, "per_seconds": 10}
    default_credential = "sandbox-hubspot-token"
    drift_fields = {"contacts": "phone", "companies": "industry"}

    def __init__(self, state) -> None:
        super().__init__(state)
        # (from object, to object) -> from row -> to row -> association type ids, for the records whose
        # associations were written; the others keep the ones the data planted
        self.associations: dict[tuple[str, str], dict[int, dict[int, set[int]]]] = {}

    def routes(self):
        v4 = f"{ASSOCIATIONS_API}/associations/{{from_object}}/{{to_object}}/batch"
        single = f"{ASSOCIATIONS_API}/objects/{{from_object}}/{{from_id}}/associations"
        return [
            ("POST", f"{v4}/read", self.read_associations, True),
            ("POST", f"{v4}/associate/default", self.associate_default, True),
            ("POST", f"{v4}/archive", self.archive_associations, True),
            ("PUT", f"{single}/default/{{to_object}}/{{to_id}}", self.associate_one, True),
            ("DELETE", f"{single}/{{to_object}}/{{to_id}}", self.archive_one, True),
            ("GET", f"{API}/objects/{{object}}", self.list_objects, True),
            ("POST", f"{API}/objects/{{object}}/search", self.search, True),
            ("POST", f"{API}/objects/{{object}}/batch/upsert", self.batch_upsert, True),
            ("POST", f"{API}/objects/{{object}}/batch/update", self.batch_update, True),
            ("GET", f"{API}/objects/{{object}}/{{id}}", self.get_object, True),
            ("DELETE", f"{API}/objects/{{object}}/{{id}}", self.archive, True),
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

    def archive(self, call: Call) -> Response:
        """Archive the record (listed again with archived=true); 204 with no body, also for one archived already."""
        table = self._object(call.params["object"])
        row = table.row_of(call.params["id"])
        if row is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", "Object not found. objectId are usually numeric.")
        if not table.deleted[row]:
            self.state.write(table, row, {}, deleted=True)
        return Response(status_code=204)

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
        """Create or update by a unique property (`idProperty` required): hs_object_id is refused, as HubSpot does."""
        return self._batch_write(call, create=True)

    def batch_update(self, call: Call) -> Response:
        """Update by record id, or by a unique property when `idProperty` is given; unknown ids land in `errors`."""
        return self._batch_write(call, create=False)

    def _batch_write(self, call: Call, create: bool) -> Response:
        obj = call.params["object"]
        table = self._object(obj)
        inputs = self._batch_inputs(call, obj, create)
        now = now_ms()
        results, errors, missing = [], [], []
        for item in inputs:
            plan = self._plan_write(table, obj, item)
            if isinstance(plan, str):
                errors.append({"status": "error", "category": "VALIDATION_ERROR", "message": plan,
                               "context": {"ids": [str(item.get("id"))]}})
                continue
            row, properties = plan
            if row is None and not create:
                missing.append(str(item["id"]))
                continue
            if row is None:
                written = self.state.write(table, None, {**{name: None for name, _ in PROPERTIES[obj]}, **properties},
                                           now)
            else:
                written = self.state.write(table, row, properties, now)
            record = self.record(table, written, [*dict(PROPERTIES[obj]), *READ_ONLY])
            results.append({**record, "new": row is None} if create else record)
        if missing:
            errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                           "message": f"Could not get some {OBJECT_TYPES[obj][1]} objects, they may be deleted or "
                                      f"not exist. Check that ids are valid.", "context": {"ids": missing}})
        body = {"status": "COMPLETE", "results": results, "startedAt": iso_ms(now), "completedAt": iso_ms(now_ms())}
        if errors:
            body.update(numErrors=len(errors), errors=errors)
        return json_response(body, 207 if errors else 200)

    def _batch_inputs(self, call: Call, obj: str, create: bool) -> list[dict[str, Any]]:
        """The batch's inputs, or a 400 for the whole batch: too many, malformed, duplicated or a bad idProperty."""
        body = call.json()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        shape = "{idProperty, id, properties}" if create else "{id, properties}"
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(400, "VALIDATION_ERROR", f"expected {{\"inputs\": [{shape}, ...]}}")
        if len(inputs) > BATCH_MAX:
            raise ApiError(400, "VALIDATION_ERROR", f"Batch input of {len(inputs)} exceeds the limit of "
                           f"{BATCH_MAX} inputs")
        for index, item in enumerate(inputs):
            if not isinstance(item, dict) or not isinstance(item.get("properties", {}), dict):
                raise ApiError(400, "VALIDATION_ERROR", f"inputs[{index}] must be {shape} with properties an object")
            if item.get("id") in (None, ""):
                raise ApiError(400, "VALIDATION_ERROR", f"inputs[{index}].id is required")
            id_property = item.get("idProperty")
            if id_property is None and create:
                raise ApiError(400, "VALIDATION_ERROR", f"inputs[{index}].idProperty is required: upsert matches "
                               f"by a unique property ({', '.join(UNIQUE_PROPERTIES[obj]) or 'none on ' + obj})")
            if id_property is not None and id_property not in UNIQUE_PROPERTIES[obj]:
                raise ApiError(400, "VALIDATION_ERROR", f"Unable to perform update/upsert by non-unique "
                               f"{OBJECT_TYPES[obj][0]} property {id_property}")
        ids = [str(item["id"]).strip().lower() for item in inputs]
        duplicates = sorted({key for key in ids if ids.count(key) > 1})
        if duplicates:
            raise ApiError(400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicates}")
        return inputs

    def _plan_write(self, table: Table, obj: str, item: dict[str, Any]) -> tuple[int | None, dict[str, Any]] | str:
        """(live row, or None when no live record matches, and properties), or why the input is refused."""
        id_property, key = item.get("idProperty"), item["id"]
        properties = {k: None if v is None else str(v) for k, v in (item.get("properties") or {}).items()}
        known = dict(PROPERTIES[obj])
        bad = [name for name in properties if name not in known]
        if bad:
            return f"Property values were not valid: {', '.join(bad)} " + (
                "is read-only" if set(bad) <= set(READ_ONLY) else "does not exist")
        email = properties.get("email")
        if email and not EMAIL.match(email.strip()):
            return f"Property values were not valid: INVALID_EMAIL {email!r}"
        row = table.live(table.row_of(key) if id_property is None else table.lookup(id_property, key))
        if id_property is not None:
            properties.setdefault(id_property, str(key))
        for name in HAS_UNIQUE_VALUE[obj]:
            holder = table.live(table.lookup(name, properties[name])) if properties.get(name) else None
            if holder is not None and holder != row:
                return (f"Property values were not valid: {name} {properties[name]!r} already exists on "
                        f"{OBJECT_TYPES[obj][1]} {table.id(holder)}")
        return row, properties

    def _pair(self, call: Call) -> tuple[str, str, Table, Table]:
        pair = (call.params["from_object"], call.params["to_object"])
        if pair not in ASSOCIATION_TYPES:
            known = ", ".join(f"{a} to {b}" for a, b in ASSOCIATION_TYPES)
            raise ApiError(400, "VALIDATION_ERROR", f"the sandbox associates {known}, not {pair[0]} to {pair[1]}")
        return (*pair, self._object(pair[0]), self._object(pair[1]))

    def associated(self, pair: tuple[str, str], source: Table, row: int) -> dict[int, set[int]]:
        """The rows ``row`` is associated with, each with its type ids (live records only)."""
        written = self.associations.get(pair, {})
        if row in written:
            found = written[row]
        else:
            code, primary, unlabeled = ASSOCIATION_TYPES[pair]
            planted = int(source.codes[code][row]) if code in source.codes else -1
            found = {planted: {primary, unlabeled}} if planted >= 0 else {}
        target = self._object(pair[1])
        return {to: set(types) for to, types in found.items() if not target.deleted[to]}

    def _live_row(self, table: Table, record_id: Any, obj: str) -> int:
        row = table.live(table.row_of(str(record_id)))
        if row is None:
            raise ApiError(404, "OBJECT_NOT_FOUND", f"No {obj} with ID {record_id} exists")
        return row

    def _batch(self, call: Call) -> list[dict[str, Any]]:
        body = call.json()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs or not all(isinstance(item, dict) for item in inputs):
            raise ApiError(400, "VALIDATION_ERROR", "expected {\"inputs\": [...]} with at least one input")
        if len(inputs) > ASSOCIATION_BATCH_MAX:
            raise ApiError(400, "VALIDATION_ERROR", f"Batch input of {len(inputs)} exceeds the limit of "
                           f"{ASSOCIATION_BATCH_MAX} inputs")
        return inputs

    def read_associations(self, call: Call) -> Response:
        """Each input's associated records with their types; an input with none is left out of the results."""
        from_obj, to_obj, source, target = self._pair(call)
        primary = ASSOCIATION_TYPES[(from_obj, to_obj)][1]
        results = []
        for item in self._batch(call):
            row = source.live(source.row_of(str(item.get("id"))))
            found = self.associated((from_obj, to_obj), source, row) if row is not None else {}
            if found:
                results.append({"from": {"id": str(item["id"])}, "to": [
                    {"toObjectId": int(target.id(to)), "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": type_id,
                         "label": "Primary" if type_id == primary else None} for type_id in sorted(types)]}
                    for to, types in sorted(found.items())]})
        now = iso_ms(now_ms())
        return json_response({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now})

    def _associate(self, pair: tuple[str, str], source: Table, row: int, to: int) -> None:
        """The default (unlabeled) association, also primary when the record has no primary one yet, as HubSpot
        makes a contact's first company its primary; the record's modification time moves, so a search finds it."""
        _, primary, unlabeled = ASSOCIATION_TYPES[pair]
        found = self.associated(pair, source, row)
        types = found.setdefault(to, set())
        types.add(unlabeled)
        if not any(primary in held for held in found.values()):
            types.add(primary)
        self.associations.setdefault(pair, {})[row] = found
        self.state.write(source, row, {}, association=self._association_change(pair, to, removed=False))

    def _archive(self, pair: tuple[str, str], source: Table, row: int, to: int) -> None:
        found = self.associated(pair, source, row)
        if found.pop(to, None) is not None:
            self.associations.setdefault(pair, {})[row] = found
            self.state.write(source, row, {}, association=self._association_change(pair, to, removed=True))

    def _association_change(self, pair: tuple[str, str], to: int, removed: bool) -> AssociationChange:
        return AssociationChange(f"{OBJECT_TYPES[pair[0]][1]}_TO_{OBJECT_TYPES[pair[1]][1]}",
                                 int(self._object(pair[1]).id(to)), removed)

    def _association_result(self, pair: tuple[str, str], source: Table, row: int, target: Table,
                            to: int) -> dict[str, Any]:
        return {"associationSpec": {"associationCategory": "HUBSPOT_DEFINED",
                                    "associationTypeId": ASSOCIATION_TYPES[pair][2]},
                "from": {"id": str(source.id(row))}, "to": {"id": str(target.id(to))}}

    def associate_default(self, call: Call) -> Response:
        """Each input on its own, as HubSpot answers: the pairs made in ``results``, each failed one in ``errors``
        naming its id in ``context``, and 207 Multi-Status when any failed."""
        from_obj, to_obj, source, target = self._pair(call)
        pair, results, errors = (from_obj, to_obj), [], []
        for item in self._batch(call):
            ends = {"fromObjectId": ((item.get("from") or {}).get("id"), source, from_obj),
                    "toObjectId": ((item.get("to") or {}).get("id"), target, to_obj)}
            rows = {}
            for side, (record_id, table, obj) in ends.items():
                try:
                    rows[side] = self._live_row(table, record_id, obj)
                except ApiError as exc:
                    errors.append({"status": "error", "category": exc.code, "message": exc.message,
                                   "context": {side: [str(record_id)]}})
                    break
            else:
                self._associate(pair, source, rows["fromObjectId"], rows["toObjectId"])
                results.append(self._association_result(pair, source, rows["fromObjectId"], target,
                                                        rows["toObjectId"]))
        now = iso_ms(now_ms())
        body = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
        return json_response(body, status=207 if errors else 200)

    def archive_associations(self, call: Call) -> Response:
        """Remove every association between each input's record and the records listed in its ``to``."""
        from_obj, to_obj, source, target = self._pair(call)
        for item in self._batch(call):
            row = self._live_row(source, (item.get("from") or {}).get("id"), from_obj)
            for other in item.get("to") or []:
                to = target.row_of(str((other or {}).get("id")))
                if to is not None:
                    self._archive((from_obj, to_obj), source, row, to)
        return Response(status_code=204)

    def associate_one(self, call: Call) -> Response:
        from_obj, to_obj, source, target = self._pair(call)
        row = self._live_row(source, call.params["from_id"], from_obj)
        to = self._live_row(target, call.params["to_id"], to_obj)
        self._associate((from_obj, to_obj), source, row, to)
        now = iso_ms(now_ms())
        return json_response({"status": "COMPLETE", "startedAt": now, "completedAt": now,
                              "results": [self._association_result((from_obj, to_obj), source, row, target, to)]})

    def archive_one(self, call: Call) -> Response:
        from_obj, to_obj, source, target = self._pair(call)
        row = self._live_row(source, call.params["from_id"], from_obj)
        to = target.row_of(call.params["to_id"])
        if to is not None:
            self._archive((from_obj, to_obj), source, row, to)
        return Response(status_code=204)

    def properties(self, call: Call) -> Response:
        obj = call.params["object"]
        self._object(obj)
        names = [*PROPERTIES[obj], *((name, "datetime" if "date" in name else "number") for name in READ_ONLY
                                      if name != ("hs_lastmodifieddate" if obj == "contacts" else "lastmodifieddate"))]
        return json_response({"results": [
            {"name": name, "label": name, "type": kind, "fieldType": "date" if kind == "datetime" else "text",
             "groupName": f"{obj[:-1]}information", "modificationMetadata": {"readOnlyValue": name in READ_ONLY}}
            for name, kind in names]})
