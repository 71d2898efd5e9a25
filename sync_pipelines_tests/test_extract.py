"""Extraction into the warehouse with a scripted connector, on SQLite and on the real PostgreSQL."""

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from sync_pipelines.extract import extract_stream, plan_read
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse

STACK = load_stack()
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


class ScriptedConnector:
    """Serves a list of Salesforce-shaped contacts, filtered by ``since`` like the real API; can crash midway."""

    def __init__(self, records, crash_after=None):
        self.records, self.crash_after, self.calls, self.stats = records, crash_after, [], {"requests": 1}

    def read(self, stream, since=None):
        self.calls.append(since)
        for n, record in enumerate(r for r in self.records if since is None or r["_t"] >= since):
            if self.crash_after is not None and n >= self.crash_after:
                raise ConnectionError("connection reset mid-extraction")
            yield {k: v for k, v in record.items() if k != "_t"} | {
                "LastModifiedDate": record["_t"].strftime("%Y-%m-%dT%H:%M:%S.000+0000")}


def contact(i, t, email=None):
    return {"Id": f"003{i:015d}", "Email": email or f"p{i}@example.com", "FirstName": f"P{i}", "_t": t,
            "IsDeleted": False}


@pytest.fixture
def warehouse(warehouse_url):
    return Warehouse(STACK, warehouse_url)


def test_full_then_incremental_reads_only_changes(warehouse):
    records = [contact(i, T0 + timedelta(hours=i)) for i in range(120)]
    source = ScriptedConnector(records)
    first = extract_stream(STACK, warehouse, source, "salesforce", "Contact")
    assert (first.mode, first.records_read, first.rows_landed) == ("full", 120, 120)
    assert warehouse.cursor("salesforce", "Contact") == T0 + timedelta(hours=119)

    second = extract_stream(STACK, warehouse, source, "salesforce", "Contact")
    assert second.mode == "incremental" and second.since == T0 + timedelta(hours=119)
    assert second.records_read == 1  # the boundary record, re-read on purpose (>= cursor) and upserted

    records[5] = contact(5, T0 + timedelta(days=30), email="changed@example.com")
    third = extract_stream(STACK, warehouse, source, "salesforce", "Contact")
    assert third.records_read == 2  # the changed record and the boundary one
    table = warehouse.read_table("stg_salesforce_contact")
    assert len(table) == 120 and table["_source_id"].is_unique
    assert table.set_index("_source_id").loc["003000000000000005", "email"] == "changed@example.com"


def test_the_cursor_never_passes_the_reads_start(warehouse):
    """A record edited during the read, after its page (its time is past the read's start), or dated in the future
    must not carry the cursor past the start: the next read would skip edits made in between, or never move."""
    now = datetime.now(timezone.utc)
    records = [contact(1, now - timedelta(hours=1)), contact(2, now + timedelta(days=365 * 36))]  # a typo'd year
    first = extract_stream(STACK, warehouse, ScriptedConnector(records), "salesforce", "Contact")
    assert now <= first.cursor_after <= datetime.now(timezone.utc)
    records.append(contact(3, now + timedelta(seconds=1), email="edited@example.com"))  # after the cursor
    second = extract_stream(STACK, warehouse, ScriptedConnector(records), "salesforce", "Contact")
    assert second.mode == "incremental" and "003000000000000003" in set(
        warehouse.read_table("stg_salesforce_contact")["_source_id"])


def test_crash_mid_extraction_keeps_cursor_and_rerun_lands_each_record_once(warehouse, monkeypatch):
    monkeypatch.setattr("sync_pipelines.extract.CHUNK_RECORDS", 10)
    records = [contact(i, T0 + timedelta(minutes=i)) for i in range(50)]
    with pytest.raises(ConnectionError):
        extract_stream(STACK, warehouse, ScriptedConnector(records, crash_after=35), "salesforce", "Contact")
    assert warehouse.cursor("salesforce", "Contact") is None  # 30 rows landed, but the cursor did not move
    assert warehouse.count("stg_salesforce_contact") == 30
    rerun = extract_stream(STACK, warehouse, ScriptedConnector(records), "salesforce", "Contact")
    assert rerun.mode == "full" and warehouse.count("stg_salesforce_contact") == 50


def test_backfill_window_behind_the_cursor_is_repulled_without_moving_it(warehouse):
    records = [contact(i, T0 + timedelta(hours=6 * i)) for i in range(40)]  # 10 days
    source = ScriptedConnector(records)
    extract_stream(STACK, warehouse, source, "salesforce", "Contact")
    cursor = warehouse.cursor("salesforce", "Contact")
    window = (T0 + timedelta(days=2), T0 + timedelta(days=3))
    backfill = extract_stream(STACK, warehouse, source, "salesforce", "Contact", window=window)
    assert backfill.mode == "backfill" and source.calls[-1] == window[0]
    assert backfill.rows_landed == 4 and backfill.rows_outside_window == 28
    assert warehouse.cursor("salesforce", "Contact") == cursor


def test_rejected_records_go_to_quarantine_with_reason(warehouse):
    records = [contact(1, T0), {**contact(2, T0), "Id": None}]
    result = extract_stream(STACK, warehouse, ScriptedConnector(records), "salesforce", "Contact")
    assert (result.rows_landed, result.rows_quarantined) == (1, 1)
    quarantine = warehouse.read_table("quarantine")
    assert list(quarantine["reason"]) == ["missing primary key 'Id'"] and "p2@example.com" in quarantine["raw"][0]


def test_plan_read():
    cursor = T0 + timedelta(days=5)
    assert plan_read(None, (T0, T0 + timedelta(days=1))) == ("full", None)
    assert plan_read(cursor, (T0, T0 + timedelta(days=1))) == ("backfill", T0)
    assert plan_read(cursor, (cursor - timedelta(hours=1), cursor + timedelta(days=1))) == ("incremental", cursor)
    assert plan_read(cursor, (cursor + timedelta(hours=1), cursor + timedelta(days=1))) == ("incremental", cursor)
    straddling = (cursor - timedelta(hours=3), cursor + timedelta(hours=21))
    assert plan_read(cursor, straddling, repull=True) == ("incremental", straddling[0])


def test_read_ahead_keeps_order_raises_errors_in_place_and_stops_with_the_caller():
    import contextlib
    import itertools
    import threading

    from sync_pipelines.extract import _read_ahead

    def failing():
        yield from range(25)
        raise ConnectionError("reset")

    chunks = _read_ahead(failing(), 10)
    assert next(chunks) == list(range(10)) and next(chunks) == list(range(10, 20))
    with pytest.raises(ConnectionError):
        next(chunks)  # the 5 records read before the failure are not landed as a chunk

    pulled = itertools.count()
    endless = (next(pulled) for _ in itertools.count())
    with contextlib.closing(_read_ahead(endless, 10)) as chunks:
        assert next(chunks) == list(range(10))
    assert not any(t.name == "extract-read-ahead" and t.is_alive() for t in threading.enumerate())
    assert next(pulled) <= 31  # one chunk read ahead, and at most one record more, then the reader stopped


def test_nul_characters_land_stripped_alike_on_both_warehouses_and_a_nul_id_is_quarantined(warehouse):
    """PostgreSQL text cannot hold NUL: one in one first name failed the whole stream's landing there (SQLite stored
    it). Values land without their NULs on both, the raw payload keeps them escaped, and a record whose id holds
    one waits in quarantine with the key named, instead of failing the stream."""
    records = [{**contact(1, T0), "FirstName": "Ad\x00a", "Email": "ada\x00@example.com", "Title": "\x00"},
               {**contact(2, T0), "Last\x00Name": "Lovelace"},
               {**contact(3, T0), "Id": "003\x00000000000000003"},
               contact(4, T0)]
    result = extract_stream(STACK, warehouse, ScriptedConnector(records), "salesforce", "Contact")
    assert (result.rows_landed, result.rows_quarantined) == (3, 1)
    table = warehouse.read_table("stg_salesforce_contact").set_index("_source_id")
    first, second = table.loc["003000000000000001"], table.loc["003000000000000002"]
    assert (first["first_name"], first["email"]) == ("Ada", "ada@example.com") and pd.isna(first["job_title"])
    assert json.loads(first["_raw"])["FirstName"] == "Ad\x00a" and json.loads(second["_raw"])["Last\x00Name"]
    [held] = warehouse.read_table("quarantine").to_dict("records")
    assert held["reason"] == "primary key 'Id' holds a NUL character, which cannot be stored"
    assert held["record_key"].startswith("sha256:") and json.loads(held["raw"])["Id"] == "003\x00000000000000003"
    assert warehouse.cursor("salesforce", "Contact") == T0


def test_unpaired_surrogates_land_as_replacements_alike_on_both_warehouses_and_a_surrogate_id_is_quarantined(
        warehouse):
    """A lone surrogate (the JSON escape \\ud800 with no partner) cannot be UTF-8: one in one first name failed the
    whole stream on SQLite and PostgreSQL alike. Values land with U+FFFD in its place, the raw payload keeps it
    escaped (text both take), and a record whose id holds one waits in quarantine with the key named."""
    records = [{**contact(1, T0), "FirstName": "A\ud800", "Email": "\udc00ada@example.com", "Title": "\ud83d\ude00"},
               {**contact(2, T0), "Last\udc00Name": "Lovelace"},
               {**contact(3, T0), "Id": "003\ud800000000000000003"},
               contact(4, T0)]
    result = extract_stream(STACK, warehouse, ScriptedConnector(records), "salesforce", "Contact")
    assert (result.rows_landed, result.rows_quarantined) == (3, 1)
    table = warehouse.read_table("stg_salesforce_contact").set_index("_source_id")
    first, second = table.loc["003000000000000001"], table.loc["003000000000000002"]
    assert (first["first_name"], first["email"], first["job_title"]) == ("A\ufffd", "\ufffdada@example.com", "\U0001F600")
    assert '"A\\ud800"' in first["_raw"] and json.loads(first["_raw"])["FirstName"] == "A\ud800"
    assert json.loads(second["_raw"])["Last\udc00Name"] == "Lovelace"
    [held] = warehouse.read_table("quarantine").to_dict("records")
    assert held["reason"] == "primary key 'Id' holds an unpaired surrogate, which cannot be stored"
    assert held["record_key"].startswith("sha256:") and json.loads(held["raw"])["Id"] == "003\ud800000000000000003"
    assert warehouse.cursor("salesforce", "Contact") == T0
