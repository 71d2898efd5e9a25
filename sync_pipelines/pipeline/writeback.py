"""Write-back: golden values sent to each destination, only what differs, logged in the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from sync_pipelines.core.plan import plan_writes, to_tool_record, writable_fields
from sync_pipelines.pipeline.common import stack_fingerprint, table
from sync_pipelines.stack import Destination, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

WRITE_BATCH = 500


@dataclass
class WriteBack:
    tool: str
    stream: str
    updates: int = 0
    unchanged: int = 0
    duplicates: int = 0
    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    planned_entities: int = 0  # golden records compared with the tool's records: the changed ones, or all


def plan_destination(stack: Stack, warehouse: Warehouse, dest: Destination,
                     entity_ids: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The plan for one destination (for the entities ``entity_ids``, or all) and the golden records it uses: those
    linked to a record of the tool."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    writable = writable_fields(stream)
    fields = sorted({f for canonical in writable.values() for f in canonical})
    golden_table, crosswalk_table = table("golden", dest.entity), table("crosswalk", dest.entity)
    landing = landing_table_name(dest.tool, dest.stream)
    held = ["_source_id", "_updated_at", "_extracted_at", "_deleted", *fields]  # not the raw payload
    if entity_ids is None:  # this tool's links only
        crosswalk = warehouse.read_where_in(crosswalk_table, "_source", [dest.tool])
        current = warehouse.read_table(landing, held)
    else:
        crosswalk = warehouse.read_where_in(crosswalk_table, "entity_id", entity_ids)
        crosswalk = crosswalk[crosswalk["_source"] == dest.tool]
        current = warehouse.read_where_in(landing, "_source_id", crosswalk["_source_id"], held)
    # only the golden records the tool holds a record of, and only the columns written
    golden = warehouse.read_where_in(golden_table, "entity_id", crosswalk["entity_id"], ["entity_id", *fields])
    ledger = None
    if warehouse.has_table("writeback_ledger"):
        ledger = (warehouse.read_where_in("writeback_ledger", "tool", [dest.tool]) if entity_ids is None else
                  warehouse.read_where_in("writeback_ledger", "source_id", current["_source_id"]))
        ledger = ledger[(ledger["tool"] == dest.tool) & (ledger["stream"] == dest.stream)]
    golden = golden.set_index("entity_id")
    composed = [canonical for canonical in writable.values() if len(canonical) > 1]
    return plan_writes(golden, crosswalk, current, fields, dest.tool, ledger=ledger, composed=composed), golden


def write_back(stack: Stack, warehouse: Warehouse, connector, dest: Destination,
               now: datetime | None = None) -> WriteBack:
    """Send only the planned changes, in batches, and log each successful write in the ledger as it lands.

    Plans only the entities the golden step rebuilt since this destination's last complete write-back (all of
    them on the first run, after a full rebuild or once the stream's mapping changed): an entity the golden step
    left alone has neither a new golden value nor a changed record in the tool. The watermark moves only when
    every planned write succeeded, so a failed or interrupted write-back is planned again."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    name, log_table = f"writeback_{dest.tool}_{dest.stream}", table("golden_changes", dest.entity)
    fingerprint = stack_fingerprint(stream, dest)
    mark = warehouse.watermark(name)
    valid = mark is not None and mark["fingerprint"] == fingerprint
    log = warehouse.read_log(log_table, mark["batch"] if valid else 0)
    last_batch = int(log["batch"].max()) if log is not None and len(log) else (mark or {}).get("batch", 0)
    incremental = valid and log is not None and not log["entity_id"].isna().any()
    plan, golden = plan_destination(stack, warehouse, dest, set(log["entity_id"]) if incremental else None)
    outcome = WriteBack(dest.tool, dest.stream, unchanged=int((plan["action"] == "unchanged").sum()),
                        updates=int((plan["action"] == "update").sum()),
                        duplicates=int((plan["action"] == "duplicate").sum()), planned_entities=len(golden))
    todo = plan[plan["action"] == "update"].reset_index(drop=True)
    writable = writable_fields(stream)
    sources = golden.loc[todo["entity_id"], sorted({f for fs in writable.values() for f in fs})].to_dict("records")
    # one ledger row per field sent, carrying the change time of the value it copies (its provenance)
    sent = pd.DataFrame([(i, field_name, value) for i, change in enumerate(todo["changes"])
                         for field_name, value in change.items()], columns=["position", "field", "value"])
    sent = sent.assign(source_id=todo["source_id"].to_numpy()[sent["position"]],
                       entity_id=todo["entity_id"].to_numpy()[sent["position"]])
    provenance = warehouse.read_where_in(table("provenance", dest.entity), "entity_id", todo["entity_id"],
                                         ["entity_id", "field", "changed_at"])
    sent = sent.merge(provenance, on=["entity_id", "field"], how="left").rename(
        columns={"changed_at": "origin_changed_at"})
    for start in range(0, len(todo), WRITE_BATCH):
        batch = todo.iloc[start:start + WRITE_BATCH]
        records = [{stream.primary_key: source_id, **to_tool_record(change, source, writable)}
                   for source_id, change, source in zip(batch["source_id"], batch["changes"],
                                                        sources[start:start + WRITE_BATCH])]
        results = connector.write(dest.stream, records, mode="update", key=stream.primary_key)
        written_at = now or datetime.now(timezone.utc)
        landed = []
        for position, source_id, res in zip(batch.index, batch["source_id"], results):
            if res.get("ok"):
                landed.append(position)
            else:
                outcome.errors.append(f"{source_id}: {res.get('error')}")
        outcome.written += len(landed)
        outcome.failed += len(batch) - len(landed)
        ledger = sent[sent["position"].isin(landed)]
        warehouse.append("writeback_ledger", index=("source_id",), frame=pd.DataFrame({
            "tool": dest.tool, "stream": dest.stream, "source_id": ledger["source_id"],
            "entity_id": ledger["entity_id"], "field": ledger["field"], "value": ledger["value"],
            "origin_changed_at": pd.to_datetime(ledger["origin_changed_at"], utc=True).fillna(written_at),
            "written_at": written_at}))
    if not outcome.failed:
        with warehouse.transaction() as conn:
            warehouse.save_watermark(conn, name, {"fingerprint": fingerprint, "batch": last_batch})
    return outcome


