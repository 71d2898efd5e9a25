"""Incremental extraction of one tool stream into its landing table, independent of Dagster.

The stored cursor decides what to read; a window that lies wholly behind the cursor is a backfill, re-pulled without
moving the cursor. Rows are landed in chunks and the cursor moves last, in its own commit, so a crash at any point
re-reads records instead of skipping them.

A stream whose tool sends no deletion marker may declare a deletion scan: when due, the ids the tool lists now are
compared with the live landed ones, and those it no longer lists are flagged deleted, as a marker would flag them.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pandas as pd

from sync_pipelines.core.normalize import apply_transforms, map_records
from sync_pipelines.stack import DeletionScan, Stack, Stream
from sync_pipelines.warehouse import Warehouse

CHUNK_RECORDS = 10_000


class Reader(Protocol):
    stats: dict[str, Any]

    def read(self, stream: str, since: datetime | None = None): ...

    def list_ids(self, stream: str, key: str) -> list: ...


@dataclass
class Scan:
    """A deletion scan's outcome, or the last one's when it is not due (``ran`` False)."""

    ran: bool
    at: datetime  # when the last scan ran (this one, if it ran)
    next_at: datetime
    listed: int = 0  # ids the tool listed
    without_id: int = 0  # records listed without one (the read quarantines them): they stand for no landed record
    landed: int = 0  # live landed records compared with them
    unlisted: int = 0  # of those, the ones the tool no longer lists
    deleted: int = 0  # flagged deleted: the unlisted ones, or none when refused
    refused: bool = False  # more than max_share would have been deleted
    max_share: float = 0.0

    def as_state(self) -> dict:
        return {"at": self.at.isoformat(), "listed": self.listed, "without_id": self.without_id,
                "landed": self.landed, "unlisted": self.unlisted, "deleted": self.deleted, "refused": self.refused}


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
    scan: Scan | None = None  # None: the stream declares no deletion scan


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


def _read_ahead(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """The records in chunks of ``size``, read by a thread of their own while the caller maps and lands the chunk
    before: the API works on the next pages (and the wire carries them) meanwhile, instead of waiting. One chunk is
    read ahead at most; an error while reading is raised here, in order, and the reader stops when the caller does."""
    chunks: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def read() -> None:
        try:
            iterator = itertools.takewhile(lambda _: not stop.is_set(), records)  # stops within a page of the caller
            while not stop.is_set():
                chunk = list(itertools.islice(iterator, size))
                _put(chunks, stop, ("chunk", chunk))
                if not chunk:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed over to the caller, which raises it
            _put(chunks, stop, ("error", exc))

    reader = threading.Thread(target=read, name="extract-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = chunks.get()
            if kind == "error":
                raise value
            if not value:
                return
            yield value
    finally:
        stop.set()
        reader.join()


def _put(chunks: queue.Queue, stop: threading.Event, item: tuple) -> None:
    while not stop.is_set():
        try:
            chunks.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def extract_stream(
    stack: Stack,
    warehouse: Warehouse,
    connector: Reader,
    tool: str,
    stream_name: str,
    window: tuple[datetime, datetime] | None = None,
    repull: bool = False,
    now: datetime | None = None,
) -> Extraction:
    """Read the stream from its cursor and land it, then run its deletion scan if one is declared and due (``now``
    tells when it is due; a full read is itself the listing, so it costs nothing more)."""
    stream = stack.tools[tool].streams[stream_name]
    entity = stack.entities[stream.entity]
    cursor_before = warehouse.cursor(tool, stream_name)
    mode, since = plan_read(cursor_before, window, repull)
    result = Extraction(tool, stream_name, mode, since, cursor_before)
    newest: pd.Timestamp | None = None
    started = datetime.now(timezone.utc)
    lists_all = stream.deletions is not None and mode == "full"
    landed_before = warehouse.last_landing(tool, stream_name) if lists_all else None
    read_ids: list[pd.Series] = []
    with contextlib.closing(_read_ahead(connector.read(stream.reads or stream_name, since=since), CHUNK_RECORDS)) as chunks:
        for chunk in chunks:
            result.records_read += len(chunk)
            rows, rejects = map_records(
                chunk, tool=tool, stream_name=stream_name, stream=stream, entity=entity,
                extracted_at=datetime.now(timezone.utc),
            )
            if lists_all:
                read_ids += [rows["_source_id"].dropna(), rejects["_source_id"].dropna()]
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
        # Never past the read's start: most reads are not snapshots (pages by id, by project), so a record edited
        # after its page was read would be skipped for good if a record edited later, on a later page, set the
        # cursor; and a record dated in the future (a typo'd year) would hold every later read behind it.
        result.cursor_after = min(max(filter(None, (cursor_before, newest.to_pydatetime()))), started)
        warehouse.save_cursor(tool, stream_name, result.cursor_after)
    if stream.deletions is not None:
        # a full read that found nothing lists no id (the share guard keeps that from deleting everything)
        listed = pd.concat(read_ids or [pd.Series([], dtype=object)], ignore_index=True) if lists_all else None
        result.scan = scan_deletions(warehouse, connector, tool, stream_name, stream, now or started, listed,
                                     landed_before)
    result.stats = dict(getattr(connector, "stats", {}) or {})
    return result


def scan_name(tool: str, stream: str) -> str:
    """The watermark keeping a stream's last deletion scan: when it ran and what it found."""
    return f"deletion_scan:{tool}/{stream}"


def scan_deletions(
    warehouse: Warehouse,
    connector: Reader,
    tool: str,
    stream_name: str,
    stream: Stream,
    now: datetime,
    listed: pd.Series | None = None,
    landed_up_to: int | None = None,
) -> Scan:
    """Flag deleted the live landed records the tool no longer lists, if the scan is due (or ``listed``, the ids a
    full read just read, is given). Only rows landed before the listing started count (``landed_up_to``), so a
    record landed by a run meanwhile is never taken for one the listing missed. A scan that would delete more than
    ``max_share`` of the live records deletes none and says so (``refused``): a partial listing must not
    mass-delete. Its time and outcome are kept until the next one is due."""
    spec: DeletionScan = stream.deletions
    every = timedelta(seconds=spec.every_seconds)
    last = warehouse.watermark(scan_name(tool, stream_name))
    last_at = datetime.fromisoformat(last["at"]) if last else None
    if listed is None and last_at is not None and now < last_at + every:
        return Scan(False, last_at, last_at + every, refused=last["refused"], max_share=spec.max_share)
    if listed is None:
        landed_up_to = warehouse.last_landing(tool, stream_name)
        listed = pd.Series(connector.list_ids(stream.reads or stream_name, stream.primary_key), dtype=object)
        listed = apply_transforms(listed, stream.key_transforms).astype(object) if stream.key_transforms else listed
    keyed = listed.notna() & listed.ne("")
    live = warehouse.live_ids(tool, stream_name, landed_up_to)
    held = pd.Index(listed[keyed].astype("str").unique())
    gone = live[held.get_indexer(live) < 0]
    scan = Scan(True, now, now + every, listed=len(held), without_id=int((~keyed).sum()), landed=len(live),
                unlisted=len(gone), refused=len(gone) > spec.max_share * len(live), max_share=spec.max_share)
    with warehouse.transaction() as conn:
        if len(gone) and not scan.refused:
            scan.deleted = warehouse.mark_deleted(conn, tool, stream_name, gone, landed_up_to, now)
        warehouse.save_watermark(conn, scan_name(tool, stream_name), scan.as_state())
    return scan
