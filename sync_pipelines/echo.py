"""Our own write-backs coming back as webhooks: every record we update in a tool is announced by the tool like a
person's edit, and a run for it would read back what we wrote and write nothing.

An event is our echo when the values it carries, mapped through its stream's field mapping like an extraction,
equal what the write-back ledger says we wrote to that record around the time the event arrived (fields we did not
write must equal what we last read). An event saying a value was taken away (an association removed) is our echo
when we wrote that field, to another value: replacing a reference removes the one it held. An event that carries no values (a creation, a deletion, a Zendesk event naming
no field) or names a record we did not just write is never an echo: it starts a run as before. Comparing with the
tool's current record instead (fetched by id) would cost a request per event inside the sensor's tick, and a run
costs little more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from sync_pipelines.core.normalize import get_path, map_records
from sync_pipelines.core.plan import tool_text, writable_fields
from sync_pipelines.pipeline.writeback import LEDGER
from sync_pipelines.stack import Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name
from sync_pipelines.webhooks import SCHEMES

# How far from our write a tool's event about it counts as its echo: vendors deliver within seconds and retry failed
# deliveries for minutes; the ledger is stamped once a batch returns, after the tool may have sent its events.
ECHO_WINDOW = timedelta(minutes=10)
_ABSENT = object()


def echoes(stack: Stack, warehouse: Warehouse, events: list[dict[str, Any]]) -> set[int]:
    """The inbox ids (of ``events``, rows of ``read_inbox``) that are the echo of our own write-backs.

    An event counts only when every stack tool of its vendor that reads its stream is a write-back destination
    whose ledger shows the write: a tool we only read from has no echo."""
    found: set[int] = set()
    by_stream: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in events:
        scheme = SCHEMES.get(event["tool"])
        stream = scheme.streams.get(event["object_type"]) if scheme else None
        if stream is not None:
            by_stream.setdefault((event["tool"], stream), []).append(event)
    for (kind, stream), group in by_stream.items():
        tools = [name for name, tool in stack.tools.items() if tool.kind == kind and stream in tool.streams]
        verdicts = [_echoed(stack, warehouse, name, stream, group) for name in tools]
        found |= set.intersection(*verdicts) if verdicts else set()
    return found


def _echoed(stack: Stack, warehouse: Warehouse, tool: str, stream_name: str,
            events: list[dict[str, Any]]) -> set[int]:
    """The events of one tool's stream whose carried values are what we just wrote to their record."""
    if not any(d.tool == tool and d.stream == stream_name for d in stack.destinations):
        return set()
    carried = [(event, changed) for event in events
               if (changed := SCHEMES[event["tool"]].changed(event["payload"])) is not None]
    removes = [SCHEMES[event["tool"]].removes(event["payload"]) for event, _ in carried]
    if not carried or not warehouse.has_table(LEDGER):
        return set()
    stream = stack.tools[tool].streams[stream_name]
    ids = sorted({str(event["object_id"]) for event, _ in carried})
    ledger = warehouse.read_where_in(LEDGER, "source_id", ids, ["tool", "stream", "source_id", "field", "value",
                                                                 "written_at"])
    ledger = ledger[(ledger["tool"] == tool) & (ledger["stream"] == stream_name)]
    if ledger.empty:
        return set()
    # each event's fragment under a key of its own: map_records keeps one row per key, and HubSpot sends one
    # event per changed property of the same record
    rows, _ = map_records([_keyed(changed, stream.primary_key, str(i)) for i, (_, changed) in enumerate(carried)],
                          tool=tool, stream_name=stream_name, stream=stream,
                          entity=stack.entities[stream.entity], extracted_at=datetime.now(timezone.utc))
    mapped = rows.set_index("_source_id")
    groups = list(writable_fields(stream).values())  # a field we never write can only match what we last read
    groups += [[m.to] for m in stream.fields if not any(m.to in group for group in groups)]
    fields = [f for group in groups for f in group]
    landed = _landed(warehouse, tool, stream_name, ids, fields)
    written = ledger.assign(written_at=pd.to_datetime(ledger["written_at"], utc=True))
    found = set()
    for i, (event, changed) in enumerate(carried):
        if str(i) not in mapped.index:  # refused by the mapping (a value of the wrong type): not ours
            continue
        sent = written[(written["source_id"] == str(event["object_id"]))
                       & ((written["written_at"] - event["received_at"]).abs() <= ECHO_WINDOW)]
        latest = sent.sort_values("written_at").drop_duplicates("field", keep="last").set_index("field")["value"]
        held = landed.get(str(event["object_id"]), {})
        expected = {f: latest[f] if f in latest.index else held.get(f) for f in fields}
        present = [group for group in groups
                   if any(get_path(changed, m.source, _ABSENT) is not _ABSENT
                          for m in stream.fields if m.to in group)]
        if present and any(f in latest.index for group in present for f in group) and all(
                (_joined(mapped.loc[str(i)], group) == _joined(expected, group)) != removes[i] for group in present):
            found.add(event["id"])
    return found


def _keyed(fragment: dict, path: str, key: str) -> dict:
    """A copy of ``fragment`` with ``key`` at the dotted ``path`` (a stream's primary key)."""
    record = dict(fragment)
    node = record
    *parents, leaf = path.split(".")
    for parent in parents:
        node[parent] = node = dict(node.get(parent) or {})
    node[leaf] = key
    return record


def _landed(warehouse: Warehouse, tool: str, stream: str, ids: list[str],
            fields: list[str]) -> dict[str, dict[str, Any]]:
    """What we last read of these records: a field we did not write must still hold it for an event to be ours."""
    table = landing_table_name(tool, stream)
    if not warehouse.has_table(table):
        return {}
    rows = warehouse.read_where_in(table, "_source_id", ids, ["_source_id", *fields])
    return {str(row.pop("_source_id")): row for row in rows.to_dict("records")}


def _joined(values: Mapping[str, Any] | pd.Series, group: Iterable[str]) -> str | None:
    """A tool value as the canonical fields composing it read, joined (a full name of first and last), compared as
    text like write-back compares: a name split differently on reading is the same name."""
    return " ".join(part for f in group if (part := tool_text(values.get(f)))) or None
