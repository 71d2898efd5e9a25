"""Bulk loading round-trips exactly and upserts stay idempotent, on SQLite and the real PostgreSQL (issue: performance
and scale). COPY's text escaping and SQLite's timestamp text are where values get lost, so the awkward ones are here."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from sync_pipelines import warehouse as warehouse_module
from sync_pipelines.stack import load_stack
from sync_pipelines.warehouse import Warehouse, landing_table_name, make_engine

AWKWARD_TEXTS = ["plain", "tab\there", "new\nline", "cr\rreturn", "back\\slash", "\\N", 'quote "double"',
                 "quote 'single'", "comma, semicolon;", "ünïcødé — 東京 🚀", "", "  padded  ", "\\t literal"]
T0 = datetime(2026, 3, 1, 12, 30, 45, 123456, tzinfo=timezone.utc)


@pytest.fixture
def warehouse(warehouse_url):
    built = Warehouse(load_stack(), warehouse_url)
    yield built
    built.engine.dispose()


def _contacts(n: int, *, title: str = "Engineer", start: int = 0) -> pd.DataFrame:
    """Rows shaped like the Salesforce contact landing table, texts cycling through the awkward ones."""
    ids = [f"003{i:012d}" for i in range(start, start + n)]
    texts = [AWKWARD_TEXTS[i % len(AWKWARD_TEXTS)] for i in range(n)]
    return pd.DataFrame({
        "email": [f"p{i}@example.com" if i % 5 else None for i in range(start, start + n)],
        "first_name": texts,
        "last_name": [np.nan if i % 7 == 0 else f"Last {i}" for i in range(n)],
        "phone": pd.Series([None] * n, dtype="object"),
        "company_name": texts[::-1],
        "job_title": title,
        "lifecycle_stage": "customer",
        "company_source_id": None,
        "_source": "salesforce",
        "_source_stream": "Contact",
        "_source_id": ids,
        "_updated_at": pd.Series([T0 + timedelta(minutes=i) if i % 3 else pd.NaT for i in range(n)],
                                 dtype="datetime64[us, UTC]"),
        "_extracted_at": pd.Timestamp(T0),
        "_deleted": [i % 4 == 0 for i in range(n)],
        "_raw": [f'{{"Id": "{i}", "note": "{t}"}}' for i, t in zip(ids, texts)],
    })


def _landed(warehouse: Warehouse) -> pd.DataFrame:
    return warehouse.read_table(landing_table_name("salesforce", "Contact")).sort_values("_source_id").reset_index(
        drop=True)


def _assert_same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal value for value, with every kind of missing read back as missing and timestamps to the microsecond."""
    for column in expected.columns:
        got, want = actual[column].tolist(), expected[column].tolist()
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            if pd.isna(w):
                assert pd.isna(g), (column, index, g)
            else:
                assert g == w, (column, index, g, w)


def test_landing_round_trips_missing_values_times_booleans_and_awkward_text(warehouse):
    rows = _contacts(40)
    assert warehouse.land("salesforce", "Contact", rows) == 40
    landed = _landed(warehouse)
    _assert_same(landed, rows)
    assert str(landed["_updated_at"].dt.tz) == "UTC"
    assert landed["_updated_at"].iloc[1] == pd.Timestamp(T0 + timedelta(minutes=1))  # microseconds kept
    assert landed["_updated_at"].isna().sum() == rows["_updated_at"].isna().sum()
    assert landed["_deleted"].astype(bool).tolist() == rows["_deleted"].tolist()


def test_a_timestamp_in_another_zone_lands_as_the_same_instant(warehouse):
    rows = _contacts(2)
    rows["_updated_at"] = rows["_updated_at"].dt.tz_convert("America/New_York")
    warehouse.land("salesforce", "Contact", rows)
    assert _landed(warehouse)["_updated_at"].iloc[1] == pd.Timestamp(T0 + timedelta(minutes=1))


def test_upserts_are_idempotent_and_the_last_version_of_a_record_wins(warehouse):
    warehouse.land("salesforce", "Contact", _contacts(30))
    warehouse.land("salesforce", "Contact", _contacts(30))
    assert warehouse.count(landing_table_name("salesforce", "Contact")) == 30

    changed = _contacts(10, title="Director", start=25)  # 5 existing records change, 5 new ones arrive
    twice = pd.concat([changed.assign(job_title="stale"), changed])  # the same key twice in one load: last wins
    warehouse.land("salesforce", "Contact", twice)
    landed = _landed(warehouse).set_index("_source_id")
    assert len(landed) == 35
    assert (landed["job_title"] == "Director").sum() == 10
    assert landed.loc["003000000000000", "job_title"] == "Engineer"

    warehouse.land("salesforce", "Contact", _contacts(5, start=100))  # only new keys: straight in, beside the rest
    assert warehouse.count(landing_table_name("salesforce", "Contact")) == 40


def test_cursors_keep_their_instant_and_move_forward(warehouse):
    assert warehouse.cursor("hubspot", "contacts") is None
    warehouse.save_cursor("hubspot", "contacts", T0)
    later = T0 + timedelta(hours=2)
    warehouse.save_cursor("hubspot", "contacts", later.astimezone(timezone(timedelta(hours=5))))
    assert warehouse.cursor("hubspot", "contacts") == later
    assert warehouse.cursor("hubspot", "contacts").tzinfo is not None
    assert warehouse.count("sync_cursors") == 1


def test_replace_and_append_round_trip_derived_tables(warehouse):
    frame = pd.DataFrame({
        "entity_id": ["e1", "e2", "e3"],
        "text": ["a\tb", None, "c\\d\ne"],
        "score": [1.5, np.nan, -0.25],
        "big": [2**62, -(2**63), 7],
        "flag": [True, False, True],
        "maybe_flag": [True, None, False],
        "at": pd.Series([T0, pd.NaT, T0 + timedelta(days=400)], dtype="datetime64[us, UTC]"),
    })
    assert warehouse.replace("golden_test", frame) == 3
    back = warehouse.read_table("golden_test")
    _assert_same(back, frame)
    assert back["big"].tolist() == [2**62, -(2**63), 7]

    assert warehouse.replace("golden_test", frame.iloc[:1]) == 1  # the old content is gone, not added to
    assert warehouse.append("golden_test", frame.iloc[1:]) == 2
    assert warehouse.append("golden_test", frame.iloc[0:0]) == 0
    _assert_same(warehouse.read_table("golden_test").sort_values("entity_id").reset_index(drop=True), frame)

    assert warehouse.append("ledger_test", frame) == 3  # append creates the table it needs
    assert warehouse.count("ledger_test") == 3


def test_replace_with_an_empty_frame_leaves_an_empty_table(warehouse):
    warehouse.replace("golden_empty", pd.DataFrame({"entity_id": ["e1"]}))
    warehouse.replace("golden_empty", pd.DataFrame({"entity_id": pd.Series([], dtype="object")}))
    assert warehouse.count("golden_empty") == 0


def test_appending_a_column_the_table_lacks_names_it(warehouse):
    warehouse.append("ledger_test", pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match=r"'ledger_test' has no column\(s\) \['b'\]"):
        warehouse.append("ledger_test", pd.DataFrame({"a": [2], "b": [3]}))
    assert warehouse.count("ledger_test") == 1  # the failed append left nothing behind


def test_a_failed_replace_keeps_the_old_content(warehouse, monkeypatch):
    warehouse.replace("golden_test", pd.DataFrame({"entity_id": ["kept"]}))

    def broken(*args, **kwargs):
        raise RuntimeError("the load died half-way")

    monkeypatch.setattr(warehouse_module, "_cells", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        warehouse.replace("golden_test", pd.DataFrame({"entity_id": ["new"]}))
    monkeypatch.undo()
    assert warehouse.read_table("golden_test")["entity_id"].tolist() == ["kept"]


def test_loads_larger_than_one_chunk_arrive_whole(warehouse, monkeypatch):
    monkeypatch.setattr(warehouse_module, "LOAD_CHUNK_ROWS", 7)
    rows = _contacts(30)
    warehouse.land("salesforce", "Contact", rows)
    _assert_same(_landed(warehouse), rows)


def test_sqlite_runs_in_wal_mode(tmp_path):
    built = Warehouse(load_stack(), f"sqlite:///{tmp_path / 'w.db'}")
    with built.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    built.engine.dispose()


def test_quarantine_round_trip_and_release(warehouse):
    rejects = _contacts(3).assign(_reason="invalid email")
    assert warehouse.put_in_quarantine("contacts", rejects) == 3
    assert warehouse.put_in_quarantine("contacts", rejects) == 3
    held = warehouse.read_table("quarantine").sort_values("record_key")
    assert held["raw"].tolist() == rejects["_raw"].tolist()
    assert warehouse.release_from_quarantine("contacts", rejects.iloc[:2]) == 2
    assert warehouse.count("quarantine") == 1
    with warehouse.engine.connect() as conn:
        assert sa.inspect(conn).has_table("quarantine")


def test_workers_creating_the_warehouse_at_once_do_not_race(warehouse_url):
    """Celery workers start together and each opens the warehouse: schema creation must be serialised."""
    import threading

    from sync_pipelines.stack import load_stack
    from sync_pipelines.warehouse import Warehouse

    stack, errors = load_stack(), []

    def open_it():
        try:
            Warehouse(stack, warehouse_url)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_landing_tables_of_an_earlier_version_get_the_columns_they_lack(warehouse_url):
    """A warehouse made before the landing batch existed, or before a field was added to the stack, keeps working:
    the columns are added (empty; batch 0) and its rows are kept."""
    stack = load_stack()
    engine = make_engine(warehouse_url)
    with engine.begin() as conn:
        conn.exec_driver_sql('CREATE TABLE stg_salesforce_contact (_source TEXT NOT NULL, _source_stream TEXT NOT NULL,'
                             ' _source_id TEXT PRIMARY KEY, _updated_at TIMESTAMP, _extracted_at TIMESTAMP NOT NULL,'
                             ' _deleted BOOLEAN NOT NULL, _raw TEXT NOT NULL, email TEXT)')
        conn.exec_driver_sql("INSERT INTO stg_salesforce_contact VALUES ('salesforce', 'Contact', '003A', NULL, "
                             "'2026-01-01 00:00:00', FALSE, '{}', 'old@example.com')")
    engine.dispose()
    warehouse = Warehouse(stack, warehouse_url)
    try:
        kept = warehouse.read_table("stg_salesforce_contact")
        assert kept[["_source_id", "email", "_landed_batch"]].to_dict("records") == [
            {"_source_id": "003A", "email": "old@example.com", "_landed_batch": 0}]
        assert kept["last_name"].isna().all()  # a field the old table did not have, now an empty column
        frame = kept.assign(_source_id="003B", email="new@example.com")
        assert warehouse.land("salesforce", "Contact", frame) == 1
        assert warehouse.read_after("stg_salesforce_contact", "_landed_batch", 0)["_source_id"].tolist() == ["003B"]
    finally:
        warehouse.engine.dispose()
