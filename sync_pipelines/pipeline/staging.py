"""Staging: an entity's landed rows validated, quarantined or staged, and the changes logged."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import pandas as pd

from sync_pipelines.core.changes import ALL_FIELDS, KEYS, changed_records
from sync_pipelines.core.quality import SAMPLE_SIZE, QualityReport, split_quarantine, validate
from sync_pipelines.pipeline.common import (
    METADATA, RELEASE_COLUMNS, StepMark, entity_streams, identity_fields, landed_after, table,
)
from sync_pipelines.stack import Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name


@dataclass(frozen=True)
class Held:
    """A tool's records of the entity in quarantine now, from this run or earlier ones: what its check reports,
    since an incremental run validates only the rows that changed and would otherwise see nothing wrong."""

    records: int
    by_reason: pd.DataFrame  # stream, reason, records: how many each stream holds for each reason, most first
    samples: pd.DataFrame  # stream, source_id, reason, quarantined_at: up to SAMPLE_SIZE records, newest first


def _held(warehouse: Warehouse, entity: str) -> dict[str, Held]:
    """Per tool, the entity's records in quarantine now (their reasons, not their raw payloads)."""
    rows = warehouse.read_where_in("quarantine", "entity", [entity],
                                   ["_source", "_source_stream", "_source_id", "reason", "quarantined_at"])
    rows = rows.rename(columns={"_source_stream": "stream", "_source_id": "source_id"})
    held = {}
    for tool, part in rows.groupby("_source", sort=True):
        by_reason = (part.groupby(["stream", "reason"]).size().rename("records").reset_index()
                     .sort_values(["records", "stream", "reason"], ascending=[False, True, True]))
        samples = part.sort_values(["quarantined_at", "stream", "source_id"], ascending=[False, True, True])
        held[str(tool)] = Held(len(part), by_reason.reset_index(drop=True),
                               samples.head(SAMPLE_SIZE).drop(columns="_source").reset_index(drop=True))
    return held


@dataclass
class Staging:
    entity: str
    rows: int
    quarantined: int
    released: int
    reports: dict[str, list[QualityReport]]  # per tool, one per stream of the entity
    changed: int = 0
    full: bool = True
    held: dict[str, Held] = field(default_factory=dict)  # per tool with records in quarantine now
    read: int = 0  # landed rows read: all on a full restage, else those landed since the last one

    @property
    def in_quarantine(self) -> dict[str, int]:
        """How many records each tool has in quarantine now."""
        return {tool: held.records for tool, held in self.held.items()}


def _with_raw(warehouse: Warehouse, tool: str, stream: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with the raw payload each was landed with, kept in quarantine beside the reason."""
    if rows.empty:
        return rows.assign(_raw=pd.Series(dtype=object))
    raw = warehouse.read_where_in(landing_table_name(tool, stream), "_source_id", rows["_source_id"],
                                  ["_source_id", "_raw"])
    return rows.merge(raw, on="_source_id", how="left")


def stage(stack: Stack, warehouse: Warehouse, entity: str, now: datetime | None = None) -> Staging:
    """Union the entity's landing rows extracted since the last staging, run each tool's quality checks on them,
    quarantine the rows that fail, and log which staged records changed for the golden step.

    The first run (and any run after the entity's fields, expectations or streams changed in the stack file, or
    after landed rows were removed by hand) stages every landed row; later runs read only the rows of landings
    committed since (re-reading a row with unchanged values, as webhooks and boundary reads do, is no change)."""
    now = now or datetime.now(timezone.utc)
    fields = list(stack.entities[entity].fields)
    expectations = stack.quality[entity].expectations if entity in stack.quality else []
    streams = entity_streams(stack, entity)
    name, staged_table = f"staged_{entity}", table("staged", entity)
    mark = StepMark.read(warehouse, name, (fields, expectations, streams), keeps=[staged_table])
    # landing tables only grow (deletions arrive as flagged rows): fewer rows means someone removed some by hand
    landed_rows = {f"{tool}/{stream}": warehouse.count(landing_table_name(tool, stream)) for tool, stream in streams}
    counted = mark.position("landed_rows", {})
    full = not mark.valid or any(landed_rows[key] < counted.get(key, 0) for key in landed_rows)
    seen = {} if full else dict(mark.position("landed_batch"))
    clean_parts, bad_parts, removed_parts, gone_parts, reports, rows_read = [], [], [], [], {}, 0
    for tool, stream in streams:
        landed, seen[f"{tool}/{stream}"] = landed_after(warehouse, tool, stream, seen.get(f"{tool}/{stream}"))
        rows_read += len(landed)
        deleted = landed["_deleted"].astype(bool)
        live = landed[~deleted].reset_index(drop=True)
        report = validate(live, entity, expectations, source=tool)
        clean, bad = split_quarantine(live, report)
        reports.setdefault(tool, []).append(report)
        clean_parts.append(clean[fields + METADATA])
        bad_parts.append(_with_raw(warehouse, tool, stream, bad))
        removed_parts += [landed.loc[deleted, KEYS], bad.loc[bad["_source_id"].notna(), KEYS]]
        gone_parts.append(landed.loc[deleted, RELEASE_COLUMNS])
    clean = pd.concat(clean_parts, ignore_index=True)
    quarantined = pd.concat(bad_parts, ignore_index=True)
    removed = pd.concat(removed_parts, ignore_index=True)
    log = table("staged_changes", entity)
    previous = None if full else warehouse.read_keys(staged_table, pd.concat([clean[KEYS], removed]))
    with warehouse.transaction() as conn:
        batch = warehouse.next_batch(conn, log)
        if full:
            warehouse.replace_within(conn, staged_table, clean, index=("_source_id",))
            changes = pd.DataFrame([{"_source": None, "_source_id": None, "removed": False,
                                     "identity_changed": ALL_FIELDS}])  # one row saying: everything changed
        else:
            changes = changed_records(previous, clean, removed, fields + ["_source_stream", "_updated_at"],
                                      identity_fields(stack, entity))
            warehouse.delete_keys(conn, staged_table, changes)
            upserted = clean.merge(changes.loc[~changes["removed"], KEYS], on=KEYS)
            warehouse.insert(conn, staged_table, upserted)
        warehouse.insert(conn, log, changes.assign(batch=batch, staged_at=now))
        mark.commit(warehouse, conn, landed_batch=seen, landed_rows=landed_rows)
    put_in = warehouse.put_in_quarantine(entity, quarantined)
    # a record fixed at the source leaves the quarantine, and so does one deleted there: nothing is left to fix
    released = warehouse.release_from_quarantine(entity, pd.concat([clean[RELEASE_COLUMNS], *gone_parts]))
    return Staging(entity, warehouse.count(staged_table), put_in, released, reports,
                   changed=len(clean) if full else len(changes), full=full,
                   held=_held(warehouse, entity), read=rows_read)


