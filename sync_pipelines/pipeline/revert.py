"""Undo one run: write back the values its write-backs overwrote, except where a field changed again since.

The write ledger keeps, per field written, the run that wrote it, the value it wrote and the value it overwrote.
What each tool holds now is read from the tool itself (its records changed since the run's first write; the others
still hold what the run wrote), so a field edited after the run, by a person or a later run, is a conflict: listed,
never overwritten. A revert's own writes are ledger rows of its own run id, so a revert can itself be reverted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from sync_pipelines.connectors.errors import ConnectorError
from sync_pipelines.core.normalize import get_path, map_records
from sync_pipelines.core.plan import CLEAR, writable_fields
from sync_pipelines.pipeline.writeback import LEDGER, send_changes
from sync_pipelines.stack import Stack
from sync_pipelines.warehouse import Warehouse

REVERT_LOG = "revert_log"
ACTION_LEDGER = "action_ledger"
# What a dry run says of a created record: --apply asks its tool to undo it (``Connector.undo_create``), which
# voids or deletes it only where that is safe and says plainly what it could not undo.
ON_APPLY = "on --apply: voided or deleted where the tool allows it, else listed as not undone"


class RevertError(ValueError):
    """A revert refused before anything was written: an unknown run, or one still running."""


@dataclass
class Revert:
    run_id: str
    applied: bool
    restores: pd.DataFrame  # tool, stream, source_id, field, restore (None: empty it), written
    conflicts: pd.DataFrame  # the same, plus now: the value the tool holds since
    created: list[dict] = field(default_factory=list)  # tool, stream, id, undo: what becomes of it
    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def revert(stack: Stack, warehouse: Warehouse, connectors, run_id: str, apply: bool = False,
           revert_run_id: str | None = None, run_status: str | None = None) -> Revert:
    """What undoing ``run_id`` restores (``apply``: restore it, logged under ``revert_run_id``).

    ``connectors(tool)`` gives a tool's connector; ``run_status`` is the run's status in the Dagster instance
    (None: not known there). A run still in progress, or one neither the instance nor the ledgers know, is refused
    before anything is read from a tool or written."""
    if run_status is not None and run_status not in ("SUCCESS", "FAILURE", "CANCELED"):
        raise RevertError(f"run {run_id} is {run_status.lower()}: revert it once it has finished")
    ledger = _rows_of(warehouse, LEDGER, run_id)
    created = _rows_of(warehouse, ACTION_LEDGER, run_id)
    if run_status is None and ledger.empty and created.empty:
        raise RevertError(f"run {run_id} is unknown: no write-back or action of it is in the ledger")
    unknown = sorted({(t, s) for t, s in zip(ledger["tool"], ledger["stream"])}
                     - {(d.tool, d.stream) for d in stack.destinations})
    if unknown:
        raise RevertError(f"run {run_id} wrote to {', '.join(f'{t} {s}' for t, s in unknown)}, no destination of the "
                          "stack any more: add it back to revert that run")
    # a field the run wrote twice: restore what it held before the first write, compare with the last one
    keys = ["tool", "stream", "source_id", "field"]
    ledger = ledger.sort_values("written_at", kind="stable")
    first = ledger.drop_duplicates(keys, keep="first").set_index(keys)["before"]
    ledger = ledger.drop_duplicates(keys, keep="last")
    ledger["before"] = first.reindex(pd.MultiIndex.from_frame(ledger[keys])).to_numpy()
    restores, conflicts = [], []
    for (tool, stream_name), rows in ledger.groupby(["tool", "stream"], sort=True):
        now = _held_now(stack, connectors(tool), tool, stream_name, rows)
        changed = _changed_since(now, writable_fields(stack.tools[tool].streams[stream_name]))
        conflicts.append(now[changed])
        restores.append(now[~changed].drop(columns="now"))
    columns = ["tool", "stream", "source_id", "entity_id", "field", "restore", "written", "written_at"]
    outcome = Revert(run_id, apply, _concat(restores, columns), _concat(conflicts, [*columns, "now"]))
    outcome.created = [{"tool": row.created_tool, "stream": row.created_stream, "id": row.created_id,
                        "undo": ON_APPLY} for row in created.itertuples()]
    if apply:
        _apply(stack, warehouse, connectors, outcome, revert_run_id)
    return outcome


def _rows_of(warehouse: Warehouse, name: str, run_id: str) -> pd.DataFrame:
    """A ledger's rows of one run (none before the ledger exists)."""
    if not warehouse.has_table(name):
        return pd.DataFrame(columns=["tool", "stream", "source_id", "entity_id", "field", "value", "before",
                                     "written_at", "run_id"])
    return warehouse.read_where_in(name, "run_id", [run_id])


def _held_now(stack: Stack, connector, tool: str, stream_name: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The run's writes to one stream with the value each field holds now where the tool changed the record
    since the run's first write (``now``: None where it did not, "" where it is empty now)."""
    stream = stack.tools[tool].streams[stream_name]
    since = pd.to_datetime(rows["written_at"], utc=True).min().to_pydatetime()
    wanted = set(rows["source_id"])
    raw = [record for record in connector.read(stream_name, since=since)
           if str(get_path(record, stream.primary_key)) in wanted]
    held, _ = map_records(raw, tool=tool, stream_name=stream_name, stream=stream,
                          entity=stack.entities[stream.entity], extracted_at=datetime.now(timezone.utc))
    fields = sorted({f for canonical in writable_fields(stream).values() for f in canonical})
    current = held.drop_duplicates("_source_id", keep="last").melt(
        id_vars="_source_id", value_vars=fields, var_name="field", value_name="now").rename(
        columns={"_source_id": "source_id"})
    current["now"] = current["now"].astype("string").fillna("").astype(object)
    merged = rows.rename(columns={"value": "written", "before": "restore"}).merge(
        current, on=["source_id", "field"], how="left")
    merged["written"] = merged["written"].astype(object).where(merged["written"].notna(), None)
    merged["restore"] = merged["restore"].astype(object).where(merged["restore"].notna(), None)
    merged["now"] = merged["now"].astype(object).where(merged["now"].notna(), None)
    return merged[["tool", "stream", "source_id", "entity_id", "field", "restore", "written", "written_at", "now"]]


def _changed_since(now: pd.DataFrame, writable: dict[str, list[str]]) -> pd.Series:
    """Which written fields the tool changed since the run. Parts of a value the tool holds whole (a full name)
    compare joined, as write-back compares them: read back, the whole splits where it will ("Mary Ann" and
    "Williams" come back as "Mary" and "Ann Williams"), which is no change."""
    changed = now["now"].notna() & (now["now"] != now["written"].fillna(""))
    for parts in (fields for fields in writable.values() if len(fields) > 1):
        mine = now[now["field"].isin(parts)]
        if mine.empty:
            continue
        written = mine["written"].fillna(mine["now"]).fillna("")
        held = mine["now"].fillna(mine["written"]).fillna("")
        joined = pd.DataFrame({"source_id": mine["source_id"], "written": written, "held": held}).groupby(
            "source_id").agg(" ".join)
        whole_same = joined["written"].str.split().str.join(" ") == joined["held"].str.split().str.join(" ")
        changed[mine.index] = ~whole_same.reindex(mine["source_id"]).to_numpy()
    return changed


def _apply(stack: Stack, warehouse: Warehouse, connectors, outcome: Revert, revert_run_id: str | None) -> None:
    """Write the restores back through the write-back's own path, each logged as a ledger row of this revert,
    then log the revert itself."""
    for (tool, stream_name), rows in outcome.restores.groupby(["tool", "stream"], sort=True):
        dest = next(d for d in stack.destinations if d.tool == tool and d.stream == stream_name)
        rows = rows.reset_index(drop=True)
        todo = rows.groupby("source_id", sort=True).agg(entity_id=("entity_id", "first")).reset_index()
        todo["changes"] = [dict(zip(part["field"], part["restore"].map(lambda v: CLEAR if v is None else v)))
                           for _, part in rows.groupby("source_id", sort=True)]
        position = pd.Series(range(len(todo)), index=todo["source_id"])

        def ledger_rows(positions, written_at, rows=rows, position=position):
            done = rows[position.reindex(rows["source_id"]).isin(positions).to_numpy()]
            # a restored value keeps the time it was overwritten: never newer than the write it undoes
            return pd.DataFrame({"source_id": done["source_id"], "entity_id": done["entity_id"],
                                 "field": done["field"], "value": done["restore"], "before": done["written"],
                                 "origin_changed_at": pd.to_datetime(done["written_at"], utc=True)})

        written, failed, errors, _ = send_changes(stack, warehouse, connectors(tool), dest, todo, None, revert_run_id,
                                               ledger_rows)
        outcome.written += written
        outcome.failed += failed
        outcome.errors += errors
    for record in outcome.created:
        try:
            record["undo"] = connectors(record["tool"]).undo_create(record["stream"], record["id"])
        except ConnectorError as exc:
            record["undo"] = f"not undone: {exc}"
            outcome.errors.append(f"{record['tool']} {record['stream']} {record['id']}: {exc}")
    warehouse.append(REVERT_LOG, pd.DataFrame([{
        "revert_run_id": revert_run_id, "reverted_run_id": outcome.run_id, "reverted_at": datetime.now(timezone.utc),
        "restored": outcome.written, "failed": outcome.failed, "conflicts": len(outcome.conflicts),
        "created_listed": len(outcome.created)}]))


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [part[columns] for part in parts if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
