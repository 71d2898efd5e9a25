"""Write-back: golden values sent to each destination, only what differs, logged in the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from sync_pipelines.core.conditions import columns as condition_columns
from sync_pipelines.core.plan import (
    CLEAR, REFERENCE_HOLD_COLUMNS, hold_back_references, plan_creates, plan_writes, to_tool_record,
    translate_references, writable_fields,
)
from sync_pipelines.pipeline.common import StepMark, table
from sync_pipelines.stack import Destination, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

WRITE_BATCH = 500
LEDGER = "writeback_ledger"
# the key value each create was sent with, committed before it is sent and removed once the tool has answered
INTENTS = "writeback_intents"
CREATES_HELD_BACK = "creates_held_back"  # a plan's attrs: golden records the tool lacks and was not sent, by reason


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
    archived: int = 0  # records of deleted golden records deleted in the tool (on_delete: archive)
    creates: int = 0  # golden records the tool lacks, planned to be created (mode upsert or create)
    creates_held_back: dict[str, int] = field(default_factory=dict)  # golden records not created, by reason
    created_ids: list[str] = field(default_factory=list)


class CapExceeded(RuntimeError):
    """A run would pass one of the destination's caps: nothing was deleted or written."""


class DeleteCapExceeded(CapExceeded):
    """More records to delete than the destination's max_deletes_per_run."""


class WriteCapExceeded(CapExceeded):
    """More records to create and update than the destination's max_per_run."""


def plan_destination(stack: Stack, warehouse: Warehouse, dest: Destination,
                     entity_ids: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The plan for one destination (for the entities ``entity_ids``, or all) and the golden records it uses: those
    linked to a record of the tool, and under ``upsert`` or ``create`` those it lacks (planned ``create``; the ones
    held back are counted by reason in ``plan.attrs[CREATES_HELD_BACK]``)."""
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
    golden = warehouse.read_where_in(golden_table, "entity_id", crosswalk["entity_id"],
                                     ["entity_id", *fields, "_deleted"])
    ledger = None
    if warehouse.has_table(LEDGER):  # only the columns the plan compares
        compared = ["source_id", "field", "value", "written_at"]
        ledger = (warehouse.read_where_in(LEDGER, "tool", [dest.tool], compared, stream=dest.stream)
                  if entity_ids is None else
                  warehouse.read_where_in(LEDGER, "source_id", current["_source_id"], compared, tool=dest.tool,
                                          stream=dest.stream))
    golden = golden.set_index("entity_id")
    golden, held_references = _own_references(stack, warehouse, dest, golden, crosswalk, current)
    composed = [canonical for canonical in writable.values() if len(canonical) > 1]
    plan = plan_writes(golden, crosswalk, current, fields, dest.tool, ledger=ledger, composed=composed,
                       policies=dest.fields,
                       cleared=_golden_clears(warehouse, dest.entity, golden, crosswalk, current, fields))
    plan = hold_back_references(plan, held_references)
    if not dest.updates:  # create only: what the tool holds is left as it is
        plan = plan.iloc[:0]
    held_creates = {}
    if dest.creates:
        creates, lacking, held_creates = _plan_creates(stack, warehouse, dest, crosswalk, current, fields, entity_ids,
                                                       key_field(stream, dest))
        if len(creates):
            plan = pd.concat([plan, creates], ignore_index=True)
            golden = pd.concat([golden, lacking.loc[creates["entity_id"], golden.columns]])
    # a deleted golden record is never written: its records the tool still holds are deleted under archive
    gone = golden["_deleted"].astype(bool).reindex(plan["entity_id"]).to_numpy(bool)
    if dest.on_delete != "archive":
        plan = plan[~gone].reset_index(drop=True)
    else:
        plan.loc[gone, "action"] = "delete"
        for column in ("changes", "before", "held_back"):
            plan.loc[gone, column] = pd.Series([{} for _ in range(int(gone.sum()))], index=plan.index[gone],
                                               dtype=object)
    plan.attrs[CREATES_HELD_BACK] = held_creates
    return plan, golden


def key_field(stream, dest: Destination) -> str | None:
    """The canonical field whose value a create is matched on (the field mapped from the tool's ``key``, directly
    or as the last part of a nested path such as ``properties.email``); None when the stack maps no field to it:
    the key is then ours to fill, with the golden record's id."""
    for mapping in stream.fields:
        if mapping.source == dest.key or mapping.source.endswith(f".{dest.key}"):
            return mapping.to
    return None


def _plan_creates(stack: Stack, warehouse: Warehouse, dest: Destination, crosswalk: pd.DataFrame,
                  current: pd.DataFrame, fields: list[str], entity_ids: set[str] | None,
                  key: str | None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The creates of a destination that may create, the golden records they use (references in the tool's own
    ids), and how many were held back by reason: the golden records (``entity_ids``, or all) of which the tool holds
    no record. A record made by an earlier run is in the crosswalk at once, so it is never planned again, even
    before the tool is re-read."""
    golden_table = table("golden", dest.entity)
    if entity_ids is None:
        candidates = warehouse.read_table(golden_table, ["entity_id"])["entity_id"]
    else:
        candidates = pd.Series(sorted(entity_ids), dtype=object)
    linked = pd.Index(crosswalk.loc[crosswalk["_source"] == dest.tool, "entity_id"].unique())
    candidates = candidates[linked.get_indexer(candidates) < 0]
    read = list(dict.fromkeys(["entity_id", *fields, *(condition_columns(dest.condition) if dest.condition else ()),
                               "_deleted"]))
    lacking = warehouse.read_where_in(golden_table, "entity_id", candidates, read).set_index("entity_id")
    lacking, held_references = _own_references(stack, warehouse, dest, lacking, crosswalk, current)
    taken = None
    if key is not None:  # the key values the tool's live records hold: an upsert on one would overwrite it
        landed = warehouse.read_table(landing_table_name(dest.tool, dest.stream), [key, "_deleted"])
        taken = pd.Index(landed.loc[~landed["_deleted"].astype(bool), key].dropna().astype(str).str.casefold())
    creates, held = plan_creates(lacking, linked, fields, dest.fields, dest.condition, key, taken)
    return hold_back_references(creates, held_references), lacking, held


def _own_references(stack: Stack, warehouse: Warehouse, dest: Destination, golden: pd.DataFrame,
                    crosswalk: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The golden records with their reference fields in the destination's own ids, and the references held back
    (core/plan.py ``translate_references``). Only the stored references of these records and the referenced
    records' crosswalk rows of this tool are read."""
    specs = stack.entities[dest.entity].fields
    referenced = {name: specs[name].references for name in golden.columns
                  if name in specs and specs[name].references is not None}
    if not referenced:
        return golden, pd.DataFrame(columns=REFERENCE_HOLD_COLUMNS)
    links_table = table("references", dest.entity)
    columns = ["entity_id", "field", "referenced_entity", "referenced_id"]
    # no references yet (the referenced entity is not resolved): every reference is held back, none sent raw
    references = warehouse.read_where_in(links_table, "entity_id", golden.index, columns) \
        if warehouse.has_table(links_table) else pd.DataFrame(columns=columns)
    targets = [warehouse.read_where_in(table("crosswalk", entity), "entity_id",
                                       references["referenced_id"].dropna().unique(), ["entity_id", "_source_id"],
                                       _source=dest.tool).assign(referenced_entity=entity)
               for entity in sorted(set(referenced.values())) if warehouse.has_table(table("crosswalk", entity))]
    targets = pd.concat(targets, ignore_index=True) if targets else pd.DataFrame(
        columns=["referenced_entity", "entity_id", "_source_id"])
    held = crosswalk[["entity_id", "_source_id"]].merge(current[["_source_id", *referenced]], on="_source_id").melt(
        id_vars=["entity_id"], value_vars=list(referenced), var_name="field", value_name="value")
    return translate_references(golden, references, targets, held, referenced, dest.tool)


def _golden_clears(warehouse: Warehouse, entity: str, golden: pd.DataFrame, crosswalk: pd.DataFrame,
                   current: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
    """The (entity, field) pairs a source cleared: an empty golden value whose provenance names the record that
    emptied it. An empty value without provenance is a gap (no tool ever had it) and is never sent as a clear.
    Only entities whose golden record is empty where this tool holds a value can need one: only theirs are read."""
    held = crosswalk[["entity_id", "_source_id"]].merge(current[["_source_id", *fields]], on="_source_id")
    held = held[golden.index.get_indexer(held["entity_id"]) >= 0]
    gaps = golden.reindex(held["entity_id"])[fields].isna().to_numpy() & held[fields].notna().to_numpy()
    candidates = held.loc[gaps.any(axis=1), "entity_id"].unique()
    provenance = warehouse.read_where_in(table("provenance", entity), "entity_id", candidates,
                                         ["entity_id", "field", "value"])
    return provenance.loc[provenance["value"].isna(), ["entity_id", "field"]]


def write_back(stack: Stack, warehouse: Warehouse, connector, dest: Destination,
               now: datetime | None = None, run_id: str | None = None) -> WriteBack:
    """Send only the planned changes, in batches, and log each successful write in the ledger as it lands, with
    the value it overwrote and the run that wrote it (what ``revert`` restores).

    Plans only the entities the golden step rebuilt since this destination's last complete write-back (all of
    them on the first run, after a full rebuild or once the stream's mapping changed): an entity the golden step
    left alone has neither a new golden value nor a changed record in the tool. The watermark moves only when
    every planned write succeeded, so a failed or interrupted write-back is planned again."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    mark = StepMark.read(warehouse, f"writeback_{dest.tool}_{dest.stream}", (stream, dest))
    log, last_batch = mark.log_since(warehouse, table("golden_changes", dest.entity))
    incremental = mark.valid and log is not None and not log["entity_id"].isna().any()
    plan, golden = plan_destination(stack, warehouse, dest, set(log["entity_id"]) if incremental else None)
    outcome = WriteBack(dest.tool, dest.stream, unchanged=int((plan["action"] == "unchanged").sum()),
                        updates=int((plan["action"] == "update").sum()),
                        creates=int((plan["action"] == "create").sum()),
                        creates_held_back=plan.attrs.get(CREATES_HELD_BACK, {}),
                        duplicates=int((plan["action"] == "duplicate").sum()), planned_entities=len(golden))
    _check_write_cap(outcome, dest)
    doomed = _to_delete(plan, dest)
    todo = plan[plan["action"].isin(["update", "create"])].sort_values("action", kind="stable",
                                                                       ascending=False).reset_index(drop=True)
    todo = _replay_intents(warehouse, dest, todo, key_field(stream, dest))
    # one ledger row per field sent, with what it overwrote and the change time of the value it copies
    sent = pd.DataFrame([(i, field_name, None if value == CLEAR else value, before.get(field_name))
                         for i, (change, before) in enumerate(zip(todo["changes"], todo["before"]))
                         for field_name, value in change.items()], columns=["position", "field", "value", "before"])
    sent = sent.assign(source_id=todo["source_id"].to_numpy()[sent["position"]],
                       entity_id=todo["entity_id"].to_numpy()[sent["position"]])
    sent = sent.merge(_origins(warehouse, dest.entity, sent), on=["entity_id", "field"], how="left").rename(
        columns={"changed_at": "origin_changed_at"})
    by_position = sent["position"].to_numpy()

    def ledger_rows(positions: list[int], written_at: datetime) -> pd.DataFrame:
        # ``sent`` is in position order: a batch's rows are one slice of it
        rows = sent.iloc[np.searchsorted(by_position, positions[0]):
                         np.searchsorted(by_position, positions[-1], side="right")] if positions else sent.iloc[:0]
        return rows[rows["position"].isin(positions)].assign(
            origin_changed_at=lambda f: pd.to_datetime(f["origin_changed_at"], utc=True).fillna(written_at))

    outcome.written, outcome.failed, outcome.errors, outcome.created_ids = send_changes(
        stack, warehouse, connector, dest, todo, now, run_id, ledger_rows)
    if doomed:
        for res in connector.delete(dest.stream, doomed):
            if res["ok"]:
                outcome.archived += 1
            else:
                outcome.failed += 1
                outcome.errors.append(f"{res['id']}: {res['error']}")
    if not outcome.failed:
        with warehouse.transaction() as conn:
            mark.commit(warehouse, conn, batch=last_batch)
    return outcome


def _origins(warehouse: Warehouse, entity: str, sent: pd.DataFrame) -> pd.DataFrame:
    """The provenance change time of each (entity, field) in ``sent``: only the fields sent of each entity are read,
    not its whole provenance."""
    provenance = table("provenance", entity)
    parts = [warehouse.read_where_in(provenance, "entity_id", part["entity_id"], ["entity_id", "field", "changed_at"],
                                     field=name) for name, part in sent.groupby("field", sort=True)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["entity_id", "field", "changed_at"])


def _check_write_cap(outcome: WriteBack, dest: Destination) -> None:
    """More records to create and update than ``max_per_run`` is refused before anything is written: a filter that
    lets a flood through must not reach the tool."""
    planned = outcome.updates + outcome.creates
    if dest.max_per_run is not None and planned > dest.max_per_run:
        raise WriteCapExceeded(
            f"{dest.tool} {dest.stream}: {outcome.creates} records to create and {outcome.updates} to update, more "
            f"than max_per_run ({dest.max_per_run}) of destinations[{dest.tool}]: nothing was written; check the "
            "plan (`sync-pipelines plan`), then narrow the filter or raise the cap in the stack file")


def _to_delete(plan: pd.DataFrame, dest: Destination) -> list[str]:
    """The tool's records of golden records the golden step deleted (planned ``delete`` under ``on_delete:
    archive``); more than ``max_deletes_per_run`` of them is refused before anything is written (a bad deletion
    must not spread)."""
    doomed = plan.loc[plan["action"] == "delete", "source_id"].tolist()
    if len(doomed) > dest.max_deletes_per_run:
        raise DeleteCapExceeded(
            f"{dest.tool} {dest.stream}: {len(doomed)} records of deleted golden {dest.entity} to delete, more than "
            f"max_deletes_per_run ({dest.max_deletes_per_run}) of destinations[{dest.tool}]: nothing was deleted or "
            "written; check the deletions, then raise the cap in the stack file if they are right")
    return doomed


def send_changes(stack: Stack, warehouse: Warehouse, connector, dest: Destination, todo: pd.DataFrame, now: datetime | None,
                 run_id: str | None, ledger_rows) -> tuple[int, int, list[str], list[str]]:
    """Send each ``todo`` row's ``changes`` in batches: an ``update`` to the record the tool holds, by its id; a
    ``create`` matched on the destination's key, so that a create a crash cut off before its ledger row is matched
    again, not made twice. Each batch, as it lands, logs in the ledger the rows ``ledger_rows(positions,
    written_at)`` gives for the records written, and enters every created record in the crosswalk in the same
    commit. The writes, how many were refused, the errors and the ids of the records created."""
    stream = stack.tools[dest.tool].streams[dest.stream]
    writable = writable_fields(stream)
    held = _parts_held(warehouse, dest, todo, writable)
    key = key_field(stream, dest)  # None: no field maps to the key, which holds the golden record's id
    written, errors, created = 0, [], []
    todo = todo if "action" in todo.columns else todo.assign(action="update")
    for action, rows in todo.groupby("action", sort=False):
        creating = action == "create"
        for start in range(0, len(rows), WRITE_BATCH):
            batch = rows.iloc[start:start + WRITE_BATCH]
            if creating:
                records = [{**to_tool_record(change, {}, writable), **({dest.key: entity_id} if key is None else {})}
                           for entity_id, change in zip(batch["entity_id"].tolist(), batch["changes"])]
                _note_intents(warehouse, dest, batch, key)
                results = connector.write(dest.stream, records, mode="upsert", key=dest.key)
            else:
                records = [{stream.primary_key: source_id, **to_tool_record(change, held.get(source_id, {}), writable)}
                           for source_id, change in zip(batch["source_id"].tolist(), batch["changes"])]
                results = connector.write(dest.stream, records, mode="update", key=stream.primary_key)
            written_at = now or datetime.now(timezone.utc)
            landed, made = [], {}
            for position, entity_id, res in zip(batch.index.tolist(), batch["entity_id"].tolist(), results):
                problem = res.get("error") or "the tool answered no id"
                if creating and res.get("ok") and res.get("id") in made.values():  # two golden records, one record
                    res, problem = {"ok": False}, f"the tool matched it to the record {res['id']} of another create"
                if res.get("ok") and (not creating or res.get("id")):
                    landed.append(position)
                    if creating:
                        made[position] = res["id"]
                else:
                    errors.append(f"{'create for golden ' + entity_id if creating else batch.at[position, 'source_id']}"
                                  f": {problem}")
            written += len(landed)
            ledger = ledger_rows(landed, written_at)
            if creating:
                ledger = ledger.assign(source_id=ledger["position"].map(made))
            with warehouse.transaction() as conn:
                warehouse.insert(conn, LEDGER, index=("source_id",), frame=pd.DataFrame({
                    "tool": dest.tool, "stream": dest.stream, "source_id": ledger["source_id"],
                    "entity_id": ledger["entity_id"], "field": ledger["field"], "value": ledger["value"].astype(object),
                    "before": ledger["before"].astype(object), "origin_changed_at": ledger["origin_changed_at"],
                    "written_at": written_at, "run_id": run_id}))
                if creating:  # answered: a record made is linked now, one refused was not made
                    warehouse.delete_where_in(conn, INTENTS, "entity_id", batch["entity_id"], tool=dest.tool,
                                              stream=dest.stream)
                if made:
                    _enter_created(warehouse, conn, dest, batch.loc[list(made), "entity_id"], list(made.values()))
            created += list(made.values())
    return written, len(todo) - written, errors, created


def _note_intents(warehouse: Warehouse, dest: Destination, batch: pd.DataFrame, key: str | None) -> None:
    """Commit, before a batch of creates is sent, the key value each is sent with: should the process die after the
    tool made the records and before their links are committed, the rerun sends the same key again (see
    ``_replay_intents``), even if the golden value changed in between. A key that is the golden id cannot change."""
    if key is None:
        return
    rows = pd.DataFrame({"tool": dest.tool, "stream": dest.stream, "entity_id": batch["entity_id"].to_numpy(object),
                         "key_value": [change.get(key) for change in batch["changes"]]})
    with warehouse.transaction() as conn:
        warehouse.delete_where_in(conn, INTENTS, "entity_id", rows["entity_id"], tool=dest.tool, stream=dest.stream)
        warehouse.insert(conn, INTENTS, rows, index=("entity_id",))


def _replay_intents(warehouse: Warehouse, dest: Destination, todo: pd.DataFrame, key: str | None) -> pd.DataFrame:
    """Creates a crash cut off after they were sent, sent again with the key value they were first sent with: the
    tool matches the record it made instead of making a second one under a key that changed since. Once linked,
    the record's key is updated by id like any other field."""
    creates = todo.index[todo["action"] == "create"]
    if key is None or creates.empty or not warehouse.has_table(INTENTS):
        return todo
    intents = warehouse.read_where_in(INTENTS, "entity_id", todo.loc[creates, "entity_id"],
                                      ["entity_id", "key_value"], tool=dest.tool, stream=dest.stream)
    sent_with = dict(zip(intents["entity_id"], intents["key_value"]))
    replayed = [position for position in creates if todo.at[position, "entity_id"] in sent_with
                and sent_with[todo.at[position, "entity_id"]] is not None]
    if not replayed:
        return todo
    todo = todo.copy()
    todo.loc[replayed, "changes"] = pd.Series(
        {position: {**todo.at[position, "changes"], key: sent_with[todo.at[position, "entity_id"]]}
         for position in replayed}, dtype=object)
    return todo


def _enter_created(warehouse: Warehouse, conn, dest: Destination, entity_ids: pd.Series, source_ids: list[str]) -> None:
    """Link each created record to its golden record at once: the next plan sees it held, and the golden step keeps
    it with that record when it is read back, instead of taking it for a new one. A record the tool matched on the
    key that another golden record held moves to this one."""
    rows = pd.DataFrame({"entity_id": entity_ids.to_numpy(object), "_source": dest.tool,
                         "_source_id": pd.Series(source_ids, dtype=object).to_numpy(object)})
    crosswalk = table("crosswalk", dest.entity)
    warehouse.delete_keys(conn, crosswalk, rows[["_source", "_source_id"]])
    warehouse.insert(conn, crosswalk, rows)


def _parts_held(warehouse: Warehouse, dest: Destination, todo: pd.DataFrame,
                writable: dict[str, list[str]]) -> dict[str, dict]:
    """Source id → what the tool holds of the fields of a composed path, for the ``todo`` rows that change only some
    of its parts (a last name without the first): ``to_tool_record`` takes the other parts from it. Only those
    records are read; every other change carries all it writes."""
    composed = [set(canonical) for canonical in writable.values() if len(canonical) > 1]
    partial = [source_id for source_id, change in zip(todo["source_id"].tolist(), todo["changes"])
               if any(0 < len(canonical & change.keys()) < len(canonical) for canonical in composed)]
    if not partial:
        return {}
    fields = sorted({f for canonical in composed for f in canonical})
    rows = warehouse.read_where_in(landing_table_name(dest.tool, dest.stream), "_source_id", partial,
                                   ["_source_id", *fields])
    return rows.drop_duplicates("_source_id").set_index("_source_id").to_dict("index")
