"""Bulk loading round-trips exactly and upserts stay idempotent, on SQLite and the real PostgreSQL (issue: performance
and scale). PostgreSQL's binary COPY fields and SQLite's timestamp text are where values get lost, so the awkward ones
are here."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
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


def test_a_failed_replace_keeps_the_old_content(warehouse, monkeypatch):
    warehouse.replace("golden_test", pd.DataFrame({"entity_id": ["kept"]}))

    def broken(*args, **kwargs):
        raise RuntimeError("the load died half-way")

    monkeypatch.setattr(warehouse_module, "_cells", broken)  # SQLite's values
    monkeypatch.setattr(warehouse_module, "_copy_fields", broken)  # PostgreSQL's COPY fields
    with pytest.raises(RuntimeError, match="half-way"):
        warehouse.replace("golden_test", pd.DataFrame({"entity_id": ["new"]}))
    monkeypatch.undo()
    assert warehouse.read_table("golden_test")["entity_id"].tolist() == ["kept"]


def test_loads_larger_than_one_chunk_arrive_whole(warehouse, monkeypatch):
    monkeypatch.setattr(warehouse_module, "LOAD_CHUNK_ROWS", 7)
    rows = _contacts(30)
    warehouse.land("salesforce", "Contact", rows)
    _assert_same(_landed(warehouse), rows)


def test_keyed_reads_and_deletes_match_exactly_the_given_values(warehouse, monkeypatch):
    """Values spanning several SQLite statements (PostgreSQL takes them as one array), repeats and None among them;
    a read and a delete also hold to their extra column conditions."""
    monkeypatch.setattr(warehouse_module, "CHUNK_ROWS", 4)
    frame = pd.DataFrame({"entity_id": [f"e{i % 10}" for i in range(30)], "tool": ["a", "b", "c"] * 10,
                          "n": range(30)})
    warehouse.replace("keyed_test", frame)
    wanted = ["e1", "e3", None, "e3", "e5", "e7", "e9", "nowhere"]
    read = warehouse.read_where_in("keyed_test", "entity_id", wanted)
    assert sorted(read["n"]) == sorted(frame.loc[frame["entity_id"].isin(wanted), "n"])
    assert warehouse.read_where_in("keyed_test", "entity_id", []).empty
    of_c = warehouse.read_where_in("keyed_test", "entity_id", wanted, ["n"], tool="c")
    assert sorted(of_c["n"]) == sorted(frame.loc[frame["entity_id"].isin(wanted) & (frame["tool"] == "c"), "n"])
    with warehouse.transaction() as conn:
        assert warehouse.delete_where_in(conn, "keyed_test", "entity_id", wanted, tool="b") == 5
        assert warehouse.delete_where_in(conn, "keyed_test", "entity_id", [None]) == 0
        assert warehouse.delete_where_in(conn, "no_such_table", "entity_id", ["e1"]) == 0
    kept = warehouse.read_table("keyed_test")
    gone = frame["entity_id"].isin(wanted) & (frame["tool"] == "b")
    assert sorted(kept["n"]) == sorted(frame.loc[~gone, "n"])


def test_updates_round_trip_the_new_values_exactly(warehouse):
    """Every record landed again with other awkward values (text, missing, timestamps, flags) replaces the stored one
    whole: each text moves to another record, so a value left behind or mangled by the update shows."""
    first = _contacts(40)
    warehouse.land("salesforce", "Contact", first)
    again = _contacts(40)
    for column in ("first_name", "company_name", "_raw"):
        again[column] = np.roll(again[column].to_numpy(), 5)
    again["_updated_at"] = np.roll(again["_updated_at"].to_numpy(), 1)
    again["_deleted"] = ~again["_deleted"]
    again["email"] = [("", None, f"new{i}@example.com")[i % 3] for i in range(40)]  # NULL, empty and text swap
    warehouse.land("salesforce", "Contact", again)
    _assert_same(_landed(warehouse), again)


def test_a_landing_of_some_columns_updates_those_and_keeps_the_others(warehouse):
    """Rows without every column go through a scratch table: the columns given change, the others keep their value."""
    warehouse.land("salesforce", "Contact", _contacts(10).drop(columns=["phone"]))  # only new keys: straight in
    stored = _contacts(10).assign(phone="+14155550100")
    warehouse.land("salesforce", "Contact", stored)
    changed = _contacts(6, title="tab\tnew\nline \\ é", start=6).drop(columns=["phone"])  # 4 stored, 2 new
    warehouse.land("salesforce", "Contact", changed)
    landed = _landed(warehouse)
    assert len(landed) == 12
    assert landed["job_title"].tolist() == ["Engineer"] * 6 + ["tab\tnew\nline \\ é"] * 6
    assert landed["phone"].iloc[:10].tolist() == ["+14155550100"] * 10
    assert landed["phone"].iloc[10:].isna().all()  # the new keys have none
    _assert_same(landed.iloc[6:].reset_index(drop=True).drop(columns="phone"), changed.reset_index(drop=True))


@pytest.mark.parametrize("keys", [["003000000000007", "003000000000099"], ["003000000000099", "003000000000007"],
                                  ["002", "003000000000005"], ["004", "0035"]])
def test_keys_before_among_or_past_the_stored_ones_upsert_alike(warehouse, keys):
    """Whether the keys of a landing sort before, among or past the stored ones (the last skip the lookup of each
    key), a stored key is updated and a new one added, in either order."""
    warehouse.land("salesforce", "Contact", _contacts(10))
    rows = _contacts(len(keys), title="changed").assign(_source_id=keys)
    warehouse.land("salesforce", "Contact", rows)
    landed = _landed(warehouse).set_index("_source_id")
    assert len(landed) == 10 + sum(key not in {f"003{i:012d}" for i in range(10)} for key in keys)
    assert (landed.loc[keys, "job_title"] == "changed").all()


def test_replace_round_trips_every_column_type_pandas_gives_a_table(warehouse):
    """The column types ``to_sql`` derives from pandas dtypes (each width of integer and float, nullable integers and
    flags, naive and nanosecond timestamps, categories) come back with the same values."""
    frame = pd.DataFrame({
        "int32": np.array([1, -2, 2**31 - 1], dtype=np.int32),
        "int16": np.array([1, -2, 2**15 - 1], dtype=np.int16),
        "float32": np.array([1.5, np.nan, -0.25], dtype=np.float32),
        "float64": [0.1, 1 / 3, -1e300],
        "nullable_int": pd.array([2**53 + 1, None, -3], dtype="Int64"),
        "nullable_flag": pd.array([True, None, False], dtype="boolean"),
        "object_flag": [None, True, False],
        "category": pd.Categorical(["a\tb", None, ""]),
        "naive": pd.Series([datetime(2026, 1, 1, 0, 0, 0, 1), None, datetime(1999, 12, 31, 23, 59, 59, 999999)],
                           dtype="datetime64[us]"),
        "nanos": pd.Series([pd.Timestamp("2026-01-01T00:00:00.123456789Z"), pd.NaT,
                            pd.Timestamp("1900-06-01T00:00:00Z")]),
    })
    warehouse.replace("typed_test", frame)
    back = warehouse.read_table("typed_test")
    exact = ["int32", "int16", "float32", "float64", "nullable_flag", "object_flag", "category"]
    _assert_same(back[exact], frame[exact])
    with warehouse.engine.connect() as conn:  # read back raw: read_table hands integers with gaps back as floats
        stored = conn.exec_driver_sql("SELECT nullable_int FROM typed_test").scalars().all()
    assert sorted(stored, key=str) == [-3, 2**53 + 1, None]  # not rounded through a float
    assert back["naive"].tolist()[::2] == [pd.Timestamp("2026-01-01 00:00:00.000001", tz="UTC"),
                                          pd.Timestamp("1999-12-31 23:59:59.999999", tz="UTC")]
    assert back["nanos"].tolist()[::2] == [pd.Timestamp("2026-01-01T00:00:00.123456Z"),
                                          pd.Timestamp("1900-06-01T00:00:00Z")]
    assert back["naive"].isna().tolist() == back["nanos"].isna().tolist() == [False, True, False]


def test_a_landing_table_made_with_other_column_types_takes_rows_as_its_columns_store_them(warehouse_url):
    """A table made before (by hand, an earlier version or stack file) with other types than the model's: values go
    in as its own columns store them, and on PostgreSQL a value its column cannot hold fails the landing instead of
    changing (SQLite keeps any value in any column)."""
    engine = make_engine(warehouse_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE stg_salesforce_contact (_source TEXT NOT NULL, _source_stream TEXT NOT NULL,"
                             " _source_id VARCHAR(40) PRIMARY KEY, _updated_at TIMESTAMP,"
                             " _extracted_at TIMESTAMP NOT NULL, _landed_batch INTEGER NOT NULL,"
                             " _deleted BOOLEAN NOT NULL, _raw TEXT NOT NULL, job_title CHAR(12), email BIGINT)")
    engine.dispose()
    warehouse = Warehouse(load_stack(), warehouse_url)
    try:
        rows = _contacts(6).assign(email=[12, None, -(2**40), 7.0, None, 3], job_title="VP Sales")
        warehouse.land("salesforce", "Contact", rows)
        landed = _landed(warehouse)
        _assert_same(landed.drop(columns=["email", "job_title"]), rows.drop(columns=["email", "job_title"]))
        assert landed["email"].tolist()[::3] == [12, 7]
        assert landed["email"].isna().tolist() == [False, True, False, False, True, False]
        assert landed["job_title"].str.strip().tolist() == ["VP Sales"] * 6  # CHAR pads to its length
        if warehouse.dialect == "postgresql":
            with pytest.raises(pa.ArrowInvalid, match="truncated"):
                warehouse.land("salesforce", "Contact", rows.assign(email=[1.5] * 6))
            assert _landed(warehouse)["email"].tolist()[::3] == [12, 7]  # the failed landing changed nothing
    finally:
        warehouse.engine.dispose()


def test_postgresql_client_encoding_does_not_change_the_text(warehouse_url):
    """Binary COPY hands text over in the client encoding: a connection speaking Latin-1 lands the same text."""
    if not warehouse_url.startswith("postgresql"):
        pytest.skip("client encodings are PostgreSQL's")
    warehouse = Warehouse(load_stack(), f"{warehouse_url}&client_encoding=latin1")
    try:
        rows = _contacts(3).assign(first_name=["Chloé", "Ñandú", "naïve\tcafé"])
        warehouse.land("salesforce", "Contact", rows)
        assert _landed(warehouse)["first_name"].tolist() == ["Chloé", "Ñandú", "naïve\tcafé"]
    finally:
        warehouse.engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path):
    built = Warehouse(load_stack(), f"sqlite:///{tmp_path / 'w.db'}")
    with built.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    built.engine.dispose()


def test_the_write_ahead_log_reaches_the_database_file_without_the_writer_copying_it(tmp_path):
    """The committing connection leaves the log to the checkpoint thread (no auto-checkpoint), which copies it into
    the database file on its own: a load of a few megabytes is in the file soon after its commit."""
    path = tmp_path / "w.db"
    built = Warehouse(load_stack(), f"sqlite:///{path}")
    try:
        with built.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        before = path.stat().st_size
        built.replace("bulk", pd.DataFrame({"text": [f"row {i} " * 20 for i in range(20_000)]}))
        assert Path(f"{path}-wal").stat().st_size > 2_000_000  # the commit wrote the log, not the file
        deadline = time.monotonic() + 10
        while path.stat().st_size < before + 2_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= before + 2_000_000
        assert built.count("bulk") == 20_000
    finally:
        built.engine.dispose()


def _child_checkpoints(url: str, queue) -> None:
    built = Warehouse(load_stack(), url)
    built.engine.dispose(close=False)  # connections made before the fork are the parent's
    built.replace("from_child", pd.DataFrame({"n": [1, 2]}))
    queue.put(sorted(t.name for t in threading.enumerate() if t.name.startswith("sqlite-checkpoint:")))


def test_a_forked_process_copies_its_own_log(tmp_path):
    """A process forked from one that serves a file inherits no thread: its first connection starts its own, so its
    loads never pile up in the log."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    built = Warehouse(load_stack(), url)
    try:
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_child_checkpoints, args=(url, queue))
        child.start()
        threads = queue.get(timeout=60)
        child.join(timeout=60)
        assert child.exitcode == 0 and threads == ["sqlite-checkpoint:w.db"]
        assert built.count("from_child") == 2
    finally:
        built.engine.dispose()


def test_a_column_holding_text_and_numbers_reads_back_each_value_as_stored(tmp_path):
    """SQLite lets a column without a declared type hold several kinds of value: it is read as objects, each value
    as it is stored, while the typed columns beside it keep their dtype."""
    built = Warehouse(load_stack(), f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with built.transaction() as conn:
            conn.exec_driver_sql("CREATE TABLE mixed (value, number REAL, label TEXT)")
            conn.exec_driver_sql("INSERT INTO mixed VALUES ('a', 1.5, 'x'), (7, NULL, 'y'), (NULL, 3, NULL)")
        back = built.read_table("mixed")
        assert back["value"].tolist() == ["a", 7, None]
        assert back["number"].dtype == "float64" and back["number"].tolist()[::2] == [1.5, 3.0]
        assert str(back["label"].dtype) == "str" and back["label"].tolist()[:2] == ["x", "y"]
    finally:
        built.engine.dispose()


def test_quarantine_round_trip_and_release(warehouse):
    rejects = _contacts(3).assign(_reason="invalid email")
    assert warehouse.put_in_quarantine("contacts", rejects) == 3
    assert warehouse.put_in_quarantine("contacts", rejects) == 3
    held = warehouse.read_table("quarantine").sort_values("record_key")
    assert held["raw"].tolist() == rejects["_raw"].tolist()
    # an older copy of the record (a full restage of what was landed before) releases nothing
    assert warehouse.release_from_quarantine("contacts", rejects.iloc[:2]) == 0
    fixed = rejects.iloc[:2].assign(_extracted_at=pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=1))
    assert warehouse.release_from_quarantine("contacts", fixed) == 2
    assert warehouse.count("quarantine") == 1
    with warehouse.engine.connect() as conn:
        assert sa.inspect(conn).has_table("quarantine")


def test_a_large_record_without_an_id_is_quarantined_once_under_a_digest(warehouse):
    """Keyed by its payload's digest, not the payload: PostgreSQL refuses index entries of more than about 2.7 kB."""
    raw = '{"note": "' + "".join(chr(0x41 + (i * 7919) % 58) for i in range(20_000)) + '"}'
    rejects = pd.DataFrame({"_source": ["hubspot"] * 2, "_source_stream": ["contacts"] * 2,
                            "_source_id": [None, "101"], "_raw": [raw, raw], "_reason": ["no id", "bad email"]})
    assert warehouse.put_in_quarantine("contacts", rejects) == 2
    warehouse.put_in_quarantine("contacts", rejects.iloc[:1])
    held = warehouse.read_table("quarantine").sort_values("record_key").reset_index(drop=True)
    assert held["record_key"][0] == "101"
    assert held["record_key"][1].startswith("sha256:") and len(held["record_key"][1]) == 7 + 64
    assert held["raw"].tolist() == [raw, raw]


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


def test_a_column_mixing_types_is_stored_as_text(warehouse):
    """A write ledger's values come from fields of several types: on either database each is stored as its text."""
    frame = pd.DataFrame({"field": ["email", "employees", "vip", "note"],
                          "value": pd.Series(["a@b.co", 250, True, None], dtype=object)})
    warehouse.append("mixed_values", frame)
    stored = warehouse.read_table("mixed_values")
    assert stored["value"].tolist()[:2] == ["a@b.co", "250"] and stored["value"].isna().tolist()[3]


def test_an_audit_table_an_earlier_version_made_gains_the_columns_written_now(warehouse):
    """A ledger made before a column existed (``before``, ``run_id``) keeps its rows and takes the new ones."""
    warehouse.append("writeback_ledger", pd.DataFrame({"tool": ["hubspot"], "value": ["a@b.co"]}))
    later = pd.DataFrame({"tool": ["hubspot"], "value": ["c@d.co"], "before": ["a@b.co"], "run_id": ["r1"],
                          "written_at": pd.to_datetime(["2026-12-01T00:00:00Z"], utc=True)})
    warehouse.append("writeback_ledger", later)
    stored = warehouse.read_table("writeback_ledger").sort_values("value", ignore_index=True)
    assert stored["before"].isna().tolist() == [True, False] and stored.loc[1, "run_id"] == "r1"
    assert stored.loc[1, "written_at"] == pd.Timestamp("2026-12-01T00:00:00Z")
