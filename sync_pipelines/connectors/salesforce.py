"""Salesforce REST: SOQL through queryAll (deleted rows included); writes through sObject Collections, an upsert
by external id or an update by record id."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Iterator
from urllib.parse import quote

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, chunked, result
from sync_pipelines.connectors.deletes import delete_each
from sync_pipelines.connectors.errors import ConnectorError
from sync_pipelines.connectors.http import Auth, NextUrlPaginator, PageRequest

API = "/services/data/v60.0"
CURSOR_FIELD = "LastModifiedDate"
ALWAYS_FIELDS = ("Id", CURSOR_FIELD, "IsDeleted")  # every replicable sObject has them
UNQUERYABLE_TYPES = {"base64"}  # a base64 field shrinks query pages to one record each
COLLECTION_CHUNK = 200  # the most records one sObject Collections call takes
# An sObject's or a field's API name: what may go into SOQL and URL paths (`../x` would reach another REST path).
API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def error_code(body: Any) -> str | None:
    """Salesforce answers errors as a list of `{message, errorCode}`."""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return body[0].get("errorCode")
    return None


def describe_errors(item: dict) -> str | None:
    return "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in item.get("errors") or []) or None


def soql_datetime(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SalesforceConnector(ApiConnector):
    kind = "salesforce"
    write_modes = ("upsert", "update")
    spec = ToolSpec(credential_keys=("access_token",), auth=lambda c: Auth.bearer(c["access_token"]),
                    error_code=error_code, rate_limit_codes=frozenset({"REQUEST_LIMIT_EXCEEDED"}), page_size=2000)

    def _api_name(self, value: Any, what: str) -> str:
        """``value`` checked to be an API name, so it can only name an sObject or a field in SOQL or a URL path."""
        if not isinstance(value, str) or not API_NAME.fullmatch(value):
            raise ConnectorError(f"{self.name}: {what} {value!r} is not a Salesforce API name (letters, digits "
                                 "and _, starting with a letter)")
        return value

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        self._api_name(stream, "stream")
        chosen = [self._api_name(f, "field") for f in self.fields_for(stream) or ()]
        selected = list(dict.fromkeys([*ALWAYS_FIELDS, *chosen])) if chosen else self._describe(stream)
        where = f" WHERE {CURSOR_FIELD} >= {soql_datetime(since)}" if since else ""
        soql = f"SELECT {', '.join(selected)} FROM {stream}{where} ORDER BY {CURSOR_FIELD} ASC"
        request = PageRequest("GET", f"{API}/queryAll", params={"q": soql})
        for record in self.http.paginate(request, records_path="records", paginator=NextUrlPaginator("nextRecordsUrl"),
                                         stream=stream, id_field="Id"):
            record.pop("attributes", None)
            yield record

    def _describe(self, stream: str) -> list[str]:
        body = self.http.request("GET", f"{API}/sobjects/{quote(stream, safe='')}/describe")
        return [f["name"] for f in body.get("fields", []) if f.get("type") not in UNQUERYABLE_TYPES]

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """upsert matches on an external id field (default External_Id__c); update matches on `Id` (sObject
        Collections update). Batches of up to 200; a record Salesforce refuses fails alone."""
        if mode == "update" and key not in (None, "Id"):
            raise ConnectorError(f"{self.name}: update matches {stream} records by Id, not {key}; "
                                 "use mode='upsert' to match on an external id field")
        external_id = self._api_name("Id" if mode == "update" else key or "External_Id__c", "external id field")
        self._api_name(stream, "stream")
        missing = f"record lacks the {'id' if mode == 'update' else 'external id'} field {external_id}"
        results: list[dict[str, Any]] = [result(False, error=missing) for _ in records]
        keyed = [i for i, r in enumerate(records) if r.get(external_id) not in (None, "")]
        send = self._update if mode == "update" else (lambda b: self._upsert(stream, external_id, b))
        for indexes in chunked(keyed, COLLECTION_CHUNK):
            batch = [self._collection_record(stream, records[i], mode) for i in indexes]
            sent = self._write_batch(batch, send)
            for index, outcome in zip(indexes, sent):
                results[index] = outcome
        return results

    @staticmethod
    def _collection_record(stream: str, record: dict, mode: str) -> dict:
        """A record as sObject Collections takes it: its type in ``attributes``; an update names it by ``id``."""
        fields = {k: v for k, v in record.items() if k != "attributes" and not (mode == "update" and k == "Id")}
        return {"attributes": {"type": stream}, **({"id": record["Id"]} if mode == "update" else {}), **fields}

    def delete(self, stream: str, ids: list[str]) -> list[dict[str, Any]]:
        """Delete records by Id (DELETE /sobjects/{stream}/{id}): they go to the recycle bin, IsDeleted."""
        self._api_name(stream, "stream")
        return delete_each(self, ids, lambda record_id: f"{API}/sobjects/{quote(stream, safe='')}/{record_id}")

    def _upsert(self, stream: str, external_id: str, batch: list[dict]) -> list[dict[str, Any]]:
        # Record ids travel in the body, never in the path; the path's names are API names, quoted all the same.
        return self._save_results(self.http.request(
            "PATCH", f"{API}/composite/sobjects/{quote(stream, safe='')}/{quote(external_id, safe='')}",
            json={"allOrNone": False, "records": batch}))

    def _update(self, batch: list[dict]) -> list[dict[str, Any]]:
        return [{**outcome, "created": False if outcome["ok"] else None} for outcome in self._save_results(
            self.http.request("PATCH", f"{API}/composite/sobjects", json={"allOrNone": False, "records": batch}))]

    @staticmethod
    def _save_results(body: Any) -> list[dict[str, Any]]:
        """Salesforce answers one SaveResult per record, in the order sent."""
        return [result(bool(item.get("success")), item.get("id"), item.get("created"), describe_errors(item))
                for item in body]
