"""Incremental extraction of one tool stream into its landing table, independent of Dagster.

The stored cursor decides what to read; a window that lies wholly behind the cursor is a backfill, re-pulled without
moving the cursor. Rows are landed in chunks and the cursor moves last, in its own commit, so a crash at any point
re-reads records instead of skipping them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import pandas as pd

from sync_pipelines.core.normalize import map_records
from sync_pipelines.stack import Stack
from sync_pipelines.warehouse import Warehouse

CHUNK_RECORDS = 50_000


class Reader(Protocol):
    stats: dict[str, Any]

    def read(self, stream: str, since: datetime | None = None): ...


@dataclass
class Extraction:
    tool: str
    stream: str
    mode: str  # "full", "incremental" or "backfill"
    since: datetime | None
    cursor_before: datetime | None
    cursor_after: datetime | None = None
    records_read: int = 0
    rows_landed: int = 0
    rows_outside_window: int = 0
    rows_quarantined: int = 0
    deleted: int = 0
    absent_fields: set[str] = field(default_factory=set)
    stats: dict[str, Any] = field(default_factory=dict)


def plan_read(
    cursor: datetime | None, window: tuple[datetime, datetime] | None, repull: bool = False
) -> tuple[str, datetime | None]:
    """Decide how to read: everything, from the cursor, or a backfill of a window.

    A window wholly behind the cursor is re-pulled without moving the cursor. A normal run reads from the cursor:
    everything before it is already landed, so that is complete and costs only what changed. A backfill
    (``repull``) whose window reaches past the cursor reads from the window's start and moves the cursor on.
    """
    if cursor is None:
        return "full", None
    if window is not None and window[1] <= cursor:
        return "backfill", window[0]
    if repull and window is not None and window[0] < cursor:
        return "incremental", window[0]
    return "incremental", cursor


def extract_stream(
    stack: Stack,
    warehouse: Warehouse,
    connector: Reader,
    tool: str,
    stream_name: str,
    window: tuple[datetime, datetime] | None = None,
    repull: bool = False,
) -> Extraction:
    stream = stack.tools[tool].streams[stream_name]
    entity = stack.entities[stream.entity]
    cursor_before = warehouse.cursor(tool, stream_name)
    mode, since = plan_read(cursor_before, window, repull)
    result = Extraction(tool, stream_name, mode, since, cursor_before)
    newest: pd.Timestamp | None = None
    records = iter(connector.read(stream_name, since=since))
    while chunk := list(itertools.islice(records, CHUNK_RECORDS)):
        result.records_read += len(chunk)
        rows, rejects = map_records(
            chunk, tool=tool, stream_name=stream_name, stream=stream, entity=entity,
            extracted_at=datetime.now(timezone.utc),
        )
        if mode == "backfill":
            inside = rows["_updated_at"].isna() | (rows["_updated_at"] < pd.Timestamp(window[1]))
            result.rows_outside_window += int((~inside).sum())
            rows = rows[inside]
        if not rows.empty and rows["_updated_at"].notna().any():
            top = rows["_updated_at"].max()
            newest = top if newest is None else max(newest, top)
        result.deleted += int(rows["_deleted"].sum())
        result.absent_fields |= set(rows.attrs.get("absent_fields", ()))
        result.rows_landed += warehouse.land(tool, stream_name, rows)
        result.rows_quarantined += warehouse.put_in_quarantine(stream.entity, rejects)
    result.cursor_after = cursor_before
    if mode != "backfill" and newest is not None:
        result.cursor_after = max(filter(None, (cursor_before, newest.to_pydatetime())))
        warehouse.save_cursor(tool, stream_name, result.cursor_after)
    result.stats = dict(getattr(connector, "stats", {}) or {})
    return result
