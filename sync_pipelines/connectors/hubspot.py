"""HubSpot CRM v3: list (live then archived) for full reads, search for incremental ones (records changed in a window
ending at the newest change when the read starts, paged by id); batch upsert by an id property.

A record's associations are no property: with the ``associations`` option ({stream: [object type, ...]}), each
live record read carries ``associations.<object type>``, the id of its primary associated record of that type (the
only one when none is primary, else None), read through the v4 associations API; a record written with
``associations.<object type>`` is associated with that record in place of its primary one of that type."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Iterator

from sync_pipelines.connectors.base import ApiConnector, ToolSpec, batches, chunked, result
from sync_pipelines.connectors.deletes import delete_each
from sync_pipelines.connectors.errors import ApiError
from sync_pipelines.connectors.http import Auth, CursorPaginator, PageRequest, dig

API = "/crm/v3"
ASSOCIATIONS_API = "/crm/v4/associations"
ASSOCIATIONS = "associations"
ASSOCIATION_BATCH_MAX = 1000
LIST_PAGE_MAX = 100
SEARCH_PAGE_MAX = 200
WRITE_CHUNK = 100
RECORD_METADATA = ("id", "properties", "createdAt", "updatedAt", "archived", "archivedAt", ASSOCIATIONS)


def error_code(body: Any) -> str | None:
    """HubSpot errors carry a `category` (e.g. INVALID_AUTHENTICATION); 429s a `policyName`."""
    if isinstance(body, dict):
        return body.get("category") or body.get("policyName") or body.get("errorType")
    return None


def cursor_property(stream: str) -> str:
    """Contacts keep their modification time in `lastmodifieddate`, every other object in `hs_lastmodifieddate`."""
    return "lastmodifieddate" if stream == "contacts" else "hs_lastmodifieddate"


def epoch_ms(value: Any) -> int | None:
    """HubSpot datetimes come as ISO strings or epoch milliseconds, depending on the endpoint."""
    if value in (None, ""):
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


@dataclass
class IdKeysetPaginator:
    """The next page of a search sorted by `hs_object_id`: the same filters plus "id after the last one read", from
    offset 0 every time. Offsets (`paging.next.after`) shift when a record leaves or joins the results mid-read, and
    cannot pass the search endpoint's 10,000-result ceiling; a key never shifts."""

    def next_request(self, request: PageRequest, payload: Any, records: list) -> PageRequest | None:
        if not records or dig(payload, "paging.next.after") in (None, ""):
            return None
        [group] = request.json["filterGroups"]
        filters = [f for f in group["filters"] if f["propertyName"] != "hs_object_id"]
        after_id = {"propertyName": "hs_object_id", "operator": "GT", "value": str(records[-1]["id"])}
        return replace(request, json={**request.json, "filterGroups": [{"filters": [*filters, after_id]}]})


class HubSpotConnector(ApiConnector):
    kind = "hubspot"
    write_streams = ("contacts", "companies")
    write_modes = ("upsert", "update")
    extra_options = frozenset({ASSOCIATIONS})
    spec = ToolSpec(credential_keys=("access_token",), auth=lambda c: Auth.bearer(c["access_token"]),
                    error_code=error_code, page_size=LIST_PAGE_MAX)

    def _associated_types(self, stream: str) -> list[str]:
        return list((self.options.extra.get(ASSOCIATIONS) or {}).get(stream, ()))

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        properties = self.fields_for(stream) or self._properties(stream)
        live = self._list(stream, properties, archived=False) if since is None else \
            self._search(stream, properties, since)
        types = self._associated_types(stream)
        if types:  # the list and search pages carry no associations: read them a page of records at a time
            for page in batches(live, self.page_size):
                yield from self._with_associations(stream, types, list(page))
        else:
            yield from live
        since_ms = int(since.timestamp() * 1000) if since else None
        for record in self._list(stream, properties, archived=True):
            changed = epoch_ms(record.get("archivedAt") or record.get("updatedAt"))
            if since_ms is None or changed is None or changed >= since_ms:
                yield {**record, "archived": True}

    def _with_associations(self, stream: str, types: list[str], records: list[dict]) -> list[dict]:
        for to_type in types:
            primary = {from_id: self._primary(targets)
                       for from_id, targets in self._associations(stream, to_type, [r["id"] for r in records]).items()}
            for record in records:
                record.setdefault(ASSOCIATIONS, {})[to_type] = primary.get(str(record["id"]))
        return records

    def _associations(self, stream: str, to_type: str, ids: list) -> dict[str, list[dict]]:
        """Record id -> its associated records of ``to_type`` (v4 batch read: ``toObjectId`` and
        ``associationTypes``); a record with none is missing."""
        found: dict[str, list[dict]] = {}
        for part in chunked([str(i) for i in ids], ASSOCIATION_BATCH_MAX):
            body = self.http.request("POST", f"{ASSOCIATIONS_API}/{stream}/{to_type}/batch/read",
                                     json={"inputs": [{"id": i} for i in part]}) or {}
            for item in body.get("results") or []:
                found.setdefault(str(dig(item, "from.id")), []).extend(item.get("to") or [])
        return found

    @staticmethod
    def _primary(targets: list[dict]) -> str | None:
        """The primary associated record's id; the only one when none is labeled primary; None when ambiguous."""
        ids = list(dict.fromkeys(str(t["toObjectId"]) for t in targets))
        primary = [str(t["toObjectId"]) for t in targets if any(
            str(kind.get("label") or "").lower() == "primary" for kind in t.get("associationTypes") or [])]
        return primary[0] if primary else ids[0] if len(ids) == 1 else None

    def _properties(self, stream: str) -> list[str]:
        body = self.http.request("GET", f"{API}/properties/{stream}")
        return [p["name"] for p in body.get("results", [])]

    def _list(self, stream: str, properties: list[str], archived: bool) -> Iterator[dict]:
        params = {"limit": min(self.page_size, LIST_PAGE_MAX), "properties": ",".join(properties),
                  "archived": "true" if archived else "false"}
        yield from self.http.paginate(PageRequest("GET", f"{API}/objects/{stream}", params=params),
                                      records_path="results", paginator=CursorPaginator("paging.next.after", "after"),
                                      stream=stream)

    def _search(self, stream: str, properties: list[str], since: datetime) -> Iterator[dict]:
        """Records changed at or after `since` and at or before the newest change when the read starts, in id
        order. A record changed during the read leaves the window (its new time is later) and is read by the next
        run, whose cursor, the newest time read here, stays at or before the window's end; paging by id, its leaving
        shifts nothing, so no other record is skipped (a search sorted by time and paged by offset would skip one)."""
        cursor = cursor_property(stream)
        floor = {"propertyName": cursor, "operator": "GTE", "value": str(int(since.timestamp() * 1000))}
        newest = self.http.request("POST", f"{API}/objects/{stream}/search", json={
            "filterGroups": [{"filters": [floor]}], "sorts": [{"propertyName": cursor, "direction": "DESCENDING"}],
            "properties": [cursor], "limit": 1}).get("results") or []
        if not newest:
            return
        end = epoch_ms(dig(newest[0], f"properties.{cursor}") or newest[0].get("updatedAt"))
        window = [floor, {"propertyName": cursor, "operator": "LTE", "value": str(end)}]
        body = {"filterGroups": [{"filters": window}], "sorts": [{"propertyName": "hs_object_id",
                                                                  "direction": "ASCENDING"}],
                "properties": list(dict.fromkeys([*properties, cursor])),
                "limit": min(self.page_size * 2, SEARCH_PAGE_MAX)}
        yield from self.http.paginate(PageRequest("POST", f"{API}/objects/{stream}/search", json=body),
                                      records_path="results", paginator=IdKeysetPaginator(), stream=stream)

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        """upsert: `batch/upsert` by a unique property (default email); update: `batch/update` by HubSpot's
        record id (`key` id/hs_object_id/None, which HubSpot refuses as an upsert idProperty) or a unique property."""
        id_property = None if mode == "update" and key in (None, "id", "hs_object_id") else (key or "email")
        missing = f"record lacks {'its id' if id_property is None else 'the id property ' + id_property}"
        results: list[dict[str, Any]] = [result(False, error=missing) for _ in records]
        inputs = {}
        for index, record in enumerate(records):
            if id_property is None and not record.get("properties") and record.get("id") not in (None, "") and \
                    not set(record) - {"id", ASSOCIATIONS}:  # only associations change: no property to write
                results[index] = result(True, record["id"], False)
                continue
            # HubSpot empties a property sent as "" (a null is ignored)
            properties = {k: "" if v is None else v for k, v in (record.get("properties") or
                          {k: v for k, v in record.items() if k not in RECORD_METADATA}).items()}
            identity = record.get("id") if id_property is None else properties.get(id_property)
            if identity not in (None, ""):
                inputs[index] = {"id": str(identity), "properties": properties,
                                 **({"idProperty": id_property} if id_property else {})}
        for indexes in chunked(list(inputs), WRITE_CHUNK):
            batch = [inputs[i] for i in indexes]
            sent = self._write_batch(batch, lambda b: self._send_batch(stream, mode, id_property, b))
            for index, outcome in zip(indexes, sent):
                results[index] = outcome
        self._write_associations(stream, records, results)
        return results

    def _write_associations(self, stream: str, records: list[dict], results: list[dict[str, Any]]) -> None:
        """Associate each written record that carries ``associations.<type>`` with that record (v4 default
        association), then remove the association it replaces, the primary one read before (v4 batch archive), only
        where the new one was made: a failed association leaves the record's company as it was, and other
        associations people made stay. None removes the primary one. A failure marks that record's result failed."""
        wanted: dict[str, dict[int, str | None]] = {}
        for index, (record, outcome) in enumerate(zip(records, results)):
            if outcome["ok"] and isinstance(record.get(ASSOCIATIONS), dict):
                for to_type, target in record[ASSOCIATIONS].items():
                    wanted.setdefault(to_type, {})[index] = None if target in (None, "") else str(target)
        for to_type, targets in wanted.items():
            for indexes in chunked(list(targets), WRITE_CHUNK):
                ids = {index: results[index]["id"] for index in indexes}
                try:
                    held = self._associations(stream, to_type, list(ids.values()))
                    have = {i: {str(t["toObjectId"]) for t in held.get(ids[i], [])} for i in indexes}
                    previous = {i: self._primary(held.get(ids[i], [])) for i in indexes}
                    new = [i for i in indexes if targets[i] is not None and targets[i] not in have[i]]
                    failed = self._associate(stream, to_type, [(ids[i], targets[i]) for i in new])
                    for i, error in zip(new, failed):
                        if error is not None:
                            results[i] = result(False, ids[i], error=f"{to_type} association: {error}")
                    stale = [{"from": {"id": ids[i]}, "to": [{"id": previous[i]}]} for i in indexes
                             if results[i]["ok"] and previous[i] not in (None, targets[i])]
                    if stale:
                        self.http.request("POST", f"{ASSOCIATIONS_API}/{stream}/{to_type}/batch/archive",
                                          json={"inputs": stale}, expect_json=False)
                except ApiError as exc:
                    for index in indexes:
                        if results[index]["ok"]:
                            results[index] = result(False, ids[index], error=f"{to_type} association: {exc}")

    def _associate(self, stream: str, to_type: str, pairs: list[tuple[str, str]]) -> list[str | None]:
        """Each (from id, to id) pair's error, None when associated: the v4 batch answers per input, its
        ``results`` naming the pairs made and its ``errors`` (207 Multi-Status) naming the failed ids."""
        if not pairs:
            return []
        body = self.http.request("POST", f"{ASSOCIATIONS_API}/{stream}/{to_type}/batch/associate/default",
                                 json={"inputs": [{"from": {"id": f}, "to": {"id": t}} for f, t in pairs]}) or {}
        made = {(str(dig(item, "from.id")), str(dig(item, "to.id"))) for item in body.get("results") or []}
        reasons: dict[str, str] = {}
        for error in body.get("errors") or []:
            for failed in (ids for ids in (error.get("context") or {}).values() if isinstance(ids, list)):
                for named in failed:
                    reasons.setdefault(str(named), f"{error.get('category')}: {error.get('message')}")
        return [None if pair in made else reasons.get(pair[1]) or reasons.get(pair[0])
                or "HubSpot returned no result for this association" for pair in pairs]

    def delete(self, stream: str, ids: list[str]) -> list[dict[str, Any]]:
        """Archive records by id (DELETE /crm/v3/objects/{stream}/{id}): HubSpot keeps them, listed as archived."""
        self._check_stream(stream, self.write_streams, "delete")
        return delete_each(self, ids, lambda record_id: f"{API}/objects/{stream}/{record_id}")

    def _send_batch(self, stream: str, mode: str, id_property: str | None, batch: list[dict]) -> list[dict[str, Any]]:
        """Map results back by record id or id-property value: HubSpot does not keep input order, and lowers emails."""
        body = self.http.request("POST", f"{API}/objects/{stream}/batch/{mode}", json={"inputs": batch}) or {}

        def identity(item: dict) -> str:
            value = item.get("id") if id_property is None else dig(item, f"properties.{id_property}")
            return str(value or "").lower()

        by_identity = {identity(item): item for item in body.get("results", [])}
        failures = {}
        for error in body.get("errors", []):
            for failed in dig(error, "context.ids") or dig(error, "context.id") or []:
                failures[str(failed).lower()] = f"{error.get('category')}: {error.get('message')}"
        outcomes = []
        for entry in batch:
            item = by_identity.get(entry["id"].lower())
            if item is not None:
                outcomes.append(result(True, item.get("id"), bool(item.get("new"))))
            else:
                outcomes.append(result(False, error=failures.get(entry["id"].lower())
                                       or "HubSpot returned no result for this record"))
        return outcomes
