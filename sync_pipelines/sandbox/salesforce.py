"""Salesforce REST API v60.0: SOQL query/queryAll with query locators, describe, sObject Collections upsert (by an
external id) and update (by id)."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import numpy as np
from starlette.responses import Response

from .common import EMAIL, ApiError, Call, json_response, now_ms, parse_datetime, sf_datetime
from .limits import Verdict
from .table import Table
from .vendor import Vendor

API = "/services/data/v60.0"
PAGE_MAX = 2000
UPSERT_MAX = 200
SYSTEM_FIELDS = ("Id", "CreatedDate", "LastModifiedDate", "SystemModstamp", "IsDeleted")
DATE_FIELDS = {"CreatedDate": "created", "LastModifiedDate": "modified", "SystemModstamp": "modified"}
# Object -> (field, describe type) in describe order; system fields are added to each.
OBJECT_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "Contact": (("FirstName", "string"), ("LastName", "string"), ("Email", "email"), ("Phone", "phone"),
                ("Title", "string"), ("AccountId", "reference"), ("External_Id__c", "string")),
    "Account": (("Name", "string"), ("Website", "url"), ("Industry", "picklist"), ("External_Id__c", "string")),
    "Opportunity": (("Name", "string"), ("AccountId", "reference"), ("Amount", "currency"),
                    ("StageName", "picklist"), ("CloseDate", "date"), ("External_Id__c", "string")),
}
REQUIRED_ON_CREATE = {"Contact": ("LastName",), "Account": ("Name",), "Opportunity": ("Name", "StageName", "CloseDate")}
EXTERNAL_ID_FIELDS = {obj: ("External_Id__c",) for obj in OBJECT_FIELDS}
# A reference field -> the object whose live record it must name.
REFERENCE_TARGETS = {"AccountId": "Account"}
SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?"
    r"(?:\s+ORDER\s+BY\s+(?P<order>\w+)(?:\s+(?P<direction>ASC|DESC))?)?"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$", re.I | re.S)
CONDITION = re.compile(r"^\s*(\w+)\s*(>=|<=|!=|=|>|<)\s*(\S+)\s*$")
COMPARE = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal, "=": np.equal,
           "!=": np.not_equal}


class Salesforce(Vendor):
    tool = "salesforce"
    rate_limit = {"requests": 100_000, "per_seconds": 86_400}  # the daily API budget
    default_credential = "sandbox-salesforce-token"
    drift_fields = {"Contact": "Phone", "Account": "Industry", "Opportunity": "Amount"}

    def __init__(self, state) -> None:
        super().__init__(state)
        self.used = 0
        self.locators: OrderedDict[str, tuple[str, list[str], np.ndarray]] = OrderedDict()
        self._next_locator = 0

    def routes(self):
        return [
            ("GET", f"{API}/query", lambda call: self.query(call, include_deleted=False), True),
            ("GET", f"{API}/queryAll", lambda call: self.query(call, include_deleted=True), True),
            ("GET", f"{API}/query/{{locator}}", self.more, True),
            ("GET", f"{API}/queryAll/{{locator}}", self.more, True),
            ("GET", f"{API}/sobjects/{{object}}/describe", self.describe, True),
            ("GET", f"{API}/sobjects/{{object}}/{{id}}", self.get_record, True),
            ("DELETE", f"{API}/sobjects/{{object}}/{{id}}", self.delete_record, True),
            ("PATCH", f"{API}/composite/sobjects", self.update_collection, True),
            ("PATCH", f"{API}/composite/sobjects/{{object}}/{{field}}", self.upsert, True),
        ]

    def error_body(self, status: int, code: str, message: str, **extra: Any) -> Any:
        generic = {"SERVER_ERROR": "SERVER_UNAVAILABLE" if status >= 502 else "UNKNOWN_EXCEPTION",
                   "INTERNAL_ERROR": "UNKNOWN_EXCEPTION", "INVALID_JSON": "JSON_PARSER_ERROR",
                   "INVALID_DATETIME": "MALFORMED_QUERY", "INVALID_PARAMETER": "MALFORMED_QUERY"}
        return [{"message": message, "errorCode": generic.get(code, code), **extra}]

    def unauthorized(self) -> Response:
        return self.error(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def throttled(self, verdict: Verdict) -> Response:
        return self.error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                          headers={"Retry-After": str(verdict.retry_after)})

    def limit_headers(self, verdict: Verdict | None) -> dict[str, str]:
        self.used += 1
        limit = verdict.limit if verdict else int(self.rate_limit["requests"])
        return {"Sforce-Limit-Info": f"api-usage={verdict.used if verdict else self.used}/{limit}"}

    def _object(self, name: str) -> Table:
        table = self.table(name)
        if table is None:
            raise ApiError(400, "INVALID_TYPE", f"sObject type '{name}' is not supported.")
        return table

    def field_names(self, obj: str) -> list[str]:
        return ["Id", *(name for name, _ in OBJECT_FIELDS[obj]), *SYSTEM_FIELDS[1:]]

    def record(self, table: Table, row: int, fields: list[str]) -> dict[str, Any]:
        values = table.fields(row)
        values.update(Id=table.id(row), CreatedDate=sf_datetime(int(table.created[row])),
                      LastModifiedDate=sf_datetime(int(table.modified[row])),
                      SystemModstamp=sf_datetime(int(table.modified[row])), IsDeleted=bool(table.deleted[row]))
        record = {"attributes": {"type": table.name, "url": f"{API}/sobjects/{table.name}/{values['Id']}"}}
        record.update({name: values.get(name) for name in fields})
        return self.drift(table.name, record)

    def query(self, call: Call, include_deleted: bool) -> Response:
        soql = call.query.get("q")
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string must be provided in the q parameter.")
        match = SOQL.match(soql)
        if not match:
            raise ApiError(400, "MALFORMED_QUERY", f"unexpected token in query; the sandbox understands "
                           f"SELECT f1, f2 FROM Object [WHERE ...] [ORDER BY f [ASC|DESC]] [LIMIT n]: {soql}")
        obj = match["object"]
        table = self._object(obj)
        known = self.field_names(obj)
        lookup = {name.lower(): name for name in known}
        fields = []
        for name in (f.strip() for f in match["fields"].split(",")):
            if name.lower() not in lookup:
                raise ApiError(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj}'.")
            fields.append(lookup[name.lower()])
        mask = np.ones(len(table), bool) if include_deleted else ~table.deleted
        if match["where"]:
            for condition in re.split(r"\s+AND\s+", match["where"], flags=re.I):
                mask &= self._condition(table, condition, lookup)
        rows = np.flatnonzero(mask)
        if match["order"]:
            rows = self._ordered(table, rows, match["order"], (match["direction"] or "ASC").upper(), lookup)
        if match["limit"]:
            rows = rows[: int(match["limit"])]
        token = f"01gSBX{self._next_locator:09d}"
        self._next_locator += 1
        self.locators[token] = (obj, fields, rows)
        while len(self.locators) > 200:
            self.locators.popitem(last=False)
        return self._page(call, token, 0)

    def _condition(self, table: Table, condition: str, lookup: dict[str, str]) -> np.ndarray:
        match = CONDITION.match(condition)
        field = lookup.get(match[1].lower()) if match else None
        if not match or field is None:
            raise ApiError(400, "MALFORMED_QUERY", f"unsupported condition {condition.strip()!r}: the sandbox "
                           "filters on CreatedDate, LastModifiedDate, SystemModstamp (datetime) and IsDeleted")
        operator, literal = match[2], match[3]
        if field in DATE_FIELDS:
            value = parse_datetime(literal, f"value of {field}")
            return COMPARE[operator](getattr(table, DATE_FIELDS[field]), value)
        if field == "IsDeleted" and operator in ("=", "!=") and literal.lower() in ("true", "false"):
            return COMPARE[operator](table.deleted, literal.lower() == "true")
        raise ApiError(400, "MALFORMED_QUERY", f"unsupported condition {condition.strip()!r}")

    def _ordered(self, table: Table, rows: np.ndarray, field_name: str, direction: str,
                 lookup: dict[str, str]) -> np.ndarray:
        field = lookup.get(field_name.lower())
        if field == "Id":
            ordered = rows
        elif field in DATE_FIELDS:
            ordered = rows[np.argsort(getattr(table, DATE_FIELDS[field])[rows], kind="stable")]
        else:
            raise ApiError(400, "MALFORMED_QUERY", f"the sandbox orders by Id or a datetime field, not {field_name!r}")
        return ordered[::-1] if direction == "DESC" else ordered

    def more(self, call: Call) -> Response:
        token, _, position = call.params["locator"].partition("-")
        if token not in self.locators or not position.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(call, token, int(position))

    def _page(self, call: Call, token: str, position: int) -> Response:
        obj, fields, rows = self.locators[token]
        table = self._object(obj)
        size = PAGE_MAX
        options = call.request.headers.get("sforce-query-options", "")
        batch = re.search(r"batchSize=(\d+)", options)
        if batch:
            size = min(PAGE_MAX, max(200, int(batch[1])))
        size = self.page_size(size)
        chunk = rows[position:position + size].tolist()
        end = position + len(chunk)
        body: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows),
                                "records": [self.record(table, row, fields) for row in chunk]}
        if not body["done"]:
            kind = "queryAll" if "/queryAll" in call.request.url.path else "query"
            body["nextRecordsUrl"] = f"{API}/{kind}/{token}-{end}"
        return json_response(body)

    def describe(self, call: Call) -> Response:
        obj = call.params["object"]
        if obj not in OBJECT_FIELDS or self.table(obj) is None:
            raise ApiError(404, "NOT_FOUND", f"The requested resource does not exist: sObject {obj}")
        types = {"Id": "id", "CreatedDate": "datetime", "LastModifiedDate": "datetime", "SystemModstamp": "datetime",
                 "IsDeleted": "boolean", **dict(OBJECT_FIELDS[obj])}
        external = EXTERNAL_ID_FIELDS.get(obj, ())
        fields = [{"name": name, "label": name.replace("__c", "").replace("_", " "), "type": types[name],
                   "nillable": name not in SYSTEM_FIELDS and name not in REQUIRED_ON_CREATE[obj],
                   "externalId": name in external, "idLookup": name in external or name == "Id",
                   "updateable": name not in SYSTEM_FIELDS, "createable": name not in SYSTEM_FIELDS}
                  for name in self.field_names(obj)]
        return json_response({"name": obj, "label": obj, "queryable": True, "createable": True, "updateable": True,
                              "fields": fields, "urls": {"describe": f"{API}/sobjects/{obj}/describe"}})

    def get_record(self, call: Call) -> Response:
        obj = call.params["object"]
        table = self._object(obj)
        row = table.row_of(call.params["id"])
        if row is None or table.deleted[row]:
            raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
        return json_response(self.record(table, row, self.field_names(obj)))

    def delete_record(self, call: Call) -> Response:
        """Move the record to the recycle bin (IsDeleted, still listed by queryAll); 204 with no body."""
        table = self._object(call.params["object"])
        row = table.row_of(call.params["id"])
        if row is None or table.deleted[row]:
            raise ApiError(404, "ENTITY_IS_DELETED" if row is not None else "NOT_FOUND",
                           "entity is deleted" if row is not None else "The requested resource does not exist")
        self.state.write(table, row, {}, deleted=True)
        return Response(status_code=204)

    def upsert(self, call: Call) -> Response:
        obj, key_field = call.params["object"], call.params["field"]
        table = self._object(obj)
        if key_field != "Id" and key_field not in EXTERNAL_ID_FIELDS.get(obj, ()):
            raise ApiError(400, "INVALID_FIELD", f"Field name provided, {key_field} is not an External ID or "
                           f"indexed field for {obj}")
        records, all_or_none = self._collection(call)
        plans = [self._plan_upsert(table, obj, key_field, record) for record in records]
        return self._save([table] * len(plans), plans, all_or_none, upsert=True)

    def update_collection(self, call: Call) -> Response:
        """sObject Collections update: each record names its object in ``attributes.type`` and itself by ``id``
        (Salesforce reads field names case-insensitively); one SaveResult per record, in the order sent."""
        records, all_or_none = self._collection(call)
        tables, plans = [], []
        for record in records:
            obj = ((record.get("attributes") or {}).get("type") if isinstance(record, dict) else None)
            if not isinstance(obj, str) or not obj:
                raise ApiError(400, "INVALID_TYPE", "No SObject Type defined in attributes")
            table = self._object(obj)
            ids = [key for key in record if key.lower() == "id"]
            fields = {k: v for k, v in record.items() if k not in ids}
            record_id = record[ids[0]] if ids else None
            if record_id in (None, ""):
                plan: Any = [_error("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])]
            elif not str(record_id).startswith(table.ids.prefix):
                plan = [_error("MALFORMED_ID", f"{obj} ID: id value of incorrect type: {record_id}", ["Id"])]
            else:
                plan = self._plan_upsert(table, obj, "Id", {**fields, "Id": record_id})
            tables.append(table)
            plans.append(plan)
        return self._save(tables, plans, all_or_none, upsert=False)

    def _collection(self, call: Call) -> tuple[list[Any], bool]:
        """An sObject Collections body's records and allOrNone; a malformed or oversized body fails whole (400)."""
        body = call.json()
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            raise ApiError(400, "JSON_PARSER_ERROR", "expected {\"allOrNone\": bool, \"records\": [...]}")
        if len(records) > UPSERT_MAX:
            raise ApiError(400, "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {UPSERT_MAX} "
                           f"records into this call")
        return records, bool(body.get("allOrNone"))

    def _save(self, tables: list[Table], plans: list[Any], all_or_none: bool, upsert: bool) -> Response:
        """Write each planned record and answer one SaveResult per record (an upsert's also says ``created``); a
        record's errors fail only it, unless allOrNone rolls every record back."""
        created = (lambda value: {"created": value}) if upsert else (lambda value: {})
        if all_or_none and any(isinstance(plan, list) for plan in plans):
            rollback = [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back "
                         "because not all records were valid and the request was using AllOrNone header",
                         "fields": []}]
            return json_response([{"id": None, "success": False, **created(None),
                                   "errors": plan if isinstance(plan, list) else rollback} for plan in plans])
        results = []
        now = now_ms()
        for table, plan in zip(tables, plans):
            if isinstance(plan, list):
                results.append({"id": None, "success": False, "errors": plan, **created(None)})
                continue
            row, changes = plan
            fields = changes if row is not None else {**{name: None for name, _ in OBJECT_FIELDS[table.name]},
                                                      **changes}
            written = self.state.write(table, row, fields, now)
            results.append({"id": table.id(written), "success": True, "errors": [], **created(row is None)})
        return json_response(results)

    def _plan_upsert(self, table: Table, obj: str, key_field: str,
                     record: Any) -> tuple[int | None, dict[str, Any]] | list[dict[str, Any]]:
        """(row or None to create, field changes), or the record's errors."""
        if not isinstance(record, dict):
            return [_error("JSON_PARSER_ERROR", "each record must be an object", [])]
        changes = {k: v for k, v in record.items() if k != "attributes"}
        writable = {name for name, _ in OBJECT_FIELDS[obj]}
        key = changes.pop(key_field, None) if key_field == "Id" else changes.get(key_field)
        if key in (None, ""):
            return [_error("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])]
        errors = []
        for name in changes:
            if name in SYSTEM_FIELDS:
                errors.append(_error("INVALID_FIELD_FOR_INSERT_UPDATE", f"Unable to create/update fields: {name}. "
                                     "Please check the security settings of this field.", [name]))
            elif name not in writable:
                errors.append(_error("INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}", [name]))
        email = changes.get("Email")
        if email not in (None, "") and not EMAIL.match(str(email).strip()):
            errors.append(_error("INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {email}", ["Email"]))
        for name, target in REFERENCE_TARGETS.items():
            value = changes.get(name)
            referenced = self.table(target) if name in writable and value not in (None, "") else None
            if referenced is not None and referenced.live(referenced.row_of(value)) is None:
                errors.append(_error("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [name]))
        # Deleted records sit in the recycle bin: an external id no longer matches them, an Id is refused.
        row = table.row_of(key) if key_field == "Id" else table.live(table.lookup(key_field, key))
        if key_field == "Id":
            if row is None:
                errors.append(_error("NOT_FOUND", f"Provided external ID field does not exist or is not accessible: "
                                     f"{key}", ["Id"]))
            elif table.deleted[row]:
                errors.append(_error("ENTITY_IS_DELETED", "entity is deleted", ["Id"]))
        elif row is None:
            missing = [name for name in REQUIRED_ON_CREATE[obj] if changes.get(name) in (None, "")]
            if missing:
                errors.append(_error("REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}", missing))
        return errors or (row, changes)


def _error(code: str, message: str, fields: list[str]) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": fields}
