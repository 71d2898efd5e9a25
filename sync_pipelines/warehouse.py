"""The SQL warehouse: landing tables per tool stream, extraction cursors and the quarantine, via SQLAlchemy.

SQLite is the embedded default and PostgreSQL the production path; both get idempotent upserts keyed by the
source's id, and a stream's cursor is saved only after its rows are committed, so a crash never skips records.

Rows go in bulk, below SQLAlchemy's per-row processing: PostgreSQL through binary COPY (an upsert deletes the rows it
replaces first, or COPies into a temporary table then runs one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``), its
blocks built from whole columns by Arrow and numpy; SQLite through one prepared ``INSERT ... ON CONFLICT`` run with
executemany, a frame turned into driver values one column at a time, vectorised, with None for every missing value
and timestamps as UTC text in the form SQLAlchemy itself reads back; its write-ahead log is copied into the database
by a thread of the process (``_Checkpointer``), never by the connection that commits.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sqlite3
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from sync_pipelines.core.collector import collector_paused
from sync_pipelines.stack import Stack

_SQL_TYPES = {
    "string": sa.Text, "email": sa.Text, "phone": sa.Text, "date": sa.Text,
    "integer": sa.BigInteger, "number": sa.Float, "boolean": sa.Boolean, "datetime": sa.DateTime(timezone=True),
}
SCHEMA_LOCK = 7_123_409  # advisory lock id serialising schema creation on PostgreSQL
CHUNK_ROWS = 5_000  # values bound per SQLite statement, which caps its parameters
LOAD_CHUNK_ROWS = 100_000  # rows turned into driver values at a time: bounds the memory of a large load
SQLITE_CACHE_KIB = 65_536  # page cache per SQLite connection (SQLite's default is 2 MiB)


def landing_table_name(tool: str, stream: str) -> str:
    """``salesforce`` + ``Contact`` → ``stg_salesforce_contact``: one table, one writer, per tool stream."""
    return "stg_" + re.sub(r"[^0-9a-z]+", "_", f"{tool}_{stream}".lower()).strip("_")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; an SQLite file's folder is created so the embedded default just works."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parsed, future=True,
                              connect_args={"timeout": 60} if parsed.get_backend_name() == "sqlite" else {})
    if engine.dialect.name == "sqlite":
        on_file = parsed.database not in (None, "", ":memory:") and not parsed.database.startswith("file:")
        path = Path(parsed.database).resolve() if on_file else None

        def on_connect(dbapi_connection, record) -> None:
            if path is not None:  # at each connection: a process forked from this one starts its own thread
                _Checkpointer.serve(path, engine)
            _sqlite_on_connect(dbapi_connection, record, checkpointed=path is not None)

        sa.event.listen(engine, "connect", on_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


class _Checkpointer:
    """Copies an SQLite file's write-ahead log into the database from a thread of its own, so that the writer
    never does it: left to SQLite, the connection that commits past a thousand pages copies them itself, which
    doubles the time of every large load on the pipeline's thread while the machine's other core waits. One per
    file in a process; it ends when the file is gone or no engine of this process uses it any more."""

    EVERY_S = 0.25
    _running: dict[Path, _Checkpointer] = {}
    _lock = threading.Lock()

    def __init__(self, path: Path):
        self.path, self.engines = path, weakref.WeakSet()

    @classmethod
    def after_fork(cls) -> None:
        """A forked process inherits the registry but not the threads (nor a lock a thread held): it starts anew."""
        cls._running, cls._lock = {}, threading.Lock()

    @classmethod
    def serve(cls, path: Path, engine: Engine) -> None:
        with cls._lock:
            checkpointer = cls._running.get(path)
            if checkpointer is None:
                checkpointer = cls._running[path] = cls(path)
                threading.Thread(target=checkpointer._run, name=f"sqlite-checkpoint:{path.name}",
                                 daemon=True).start()
            checkpointer.engines.add(engine)

    def _run(self) -> None:
        wal, connection, copied = Path(f"{self.path}-wal"), None, None
        try:
            while True:
                time.sleep(self.EVERY_S)
                with self._lock:
                    if not self.engines or not self.path.exists():
                        self._running.pop(self.path, None)
                        return
                try:
                    written = wal.stat()
                except FileNotFoundError:  # no log yet
                    continue
                # a log restarted from its start keeps its size: its modification time tells a write too
                stamp = (written.st_size, written.st_mtime_ns)
                if stamp == copied:  # nothing written since the last copy
                    continue
                try:
                    # rw: never create the file; PASSIVE: never wait for, or hold up, a reader or the writer
                    connection = connection or sqlite3.connect(f"{self.path.as_uri()}?mode=rw", uri=True, timeout=0)
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    copied = stamp
                except sqlite3.Error:  # busy (another process's checkpoint) or the file went away: next round
                    if connection is not None:
                        connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()


os.register_at_fork(after_in_child=_Checkpointer.after_fork)


def _sqlite_on_connect(dbapi_connection, _record, checkpointed: bool = False) -> None:
    """WAL lets readers run beside the writer and NORMAL syncs at checkpoints only (safe under WAL); the driver's
    own transaction handling is switched off so that ``_sqlite_begin`` makes DDL transactional too (``replace``).
    A file's checkpoints are ``_Checkpointer``'s (``checkpointed``); a bigger page cache keeps a large load's
    index pages in memory and sorts for an index are done in memory."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for attempt in range(100):  # switching a new file to WAL needs it alone; SQLite answers "locked" at once
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.05 + random.random() * 0.05)
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA temp_store=MEMORY")
    if checkpointed:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the write lock up front (IMMEDIATE), so a read-then-write transaction waits for another writer
    (the webhook receiver, a second run) instead of failing at once with 'database is locked'."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_write") else "BEGIN")


class Warehouse:
    """Tables derived from the stack file, with bulk idempotent writes."""

    def __init__(self, stack: Stack, url: str):
        self.stack = stack
        self.engine = make_engine(url)
        self.metadata = sa.MetaData()
        self.cursors = sa.Table(
            "sync_cursors", self.metadata,
            sa.Column("tool", sa.Text, primary_key=True),
            sa.Column("stream", sa.Text, primary_key=True),
            sa.Column("cursor", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
        self.quarantine = sa.Table(
            "quarantine", self.metadata,
            sa.Column("entity", sa.Text, primary_key=True),
            sa.Column("_source", sa.Text, primary_key=True),
            sa.Column("_source_stream", sa.Text, primary_key=True),
            sa.Column("record_key", sa.Text, primary_key=True),
            sa.Column("_source_id", sa.Text),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("raw", sa.Text, nullable=False),
            sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
        )
        self.watermarks = sa.Table(
            "sync_watermarks", self.metadata,
            sa.Column("name", sa.Text, primary_key=True),
            sa.Column("value", sa.Text, nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        )
        self.landing: dict[tuple[str, str], sa.Table] = {}
        for tool, _, name, stream in stack.streams():
            fields = stack.entities[stream.entity].fields
            self.landing[(tool, name)] = sa.Table(
                landing_table_name(tool, name), self.metadata,
                *[sa.Column(f, _SQL_TYPES[spec.type]) for f, spec in fields.items()],
                sa.Column("_source", sa.Text, nullable=False),
                sa.Column("_source_stream", sa.Text, nullable=False),
                sa.Column("_source_id", sa.Text, primary_key=True),
                sa.Column("_updated_at", sa.DateTime(timezone=True)),
                sa.Column("_extracted_at", sa.DateTime(timezone=True), nullable=False),
                # the landing that last wrote the row, numbered in commit order: staging reads only later ones
                sa.Column("_landed_batch", sa.BigInteger, nullable=False, index=True),
                sa.Column("_deleted", sa.Boolean, nullable=False),
                sa.Column("_raw", sa.Text, nullable=False),
            )
        with self.transaction() as conn:
            if self.dialect == "postgresql":  # workers starting together must not race on CREATE TABLE
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            self.metadata.create_all(conn)
            self._add_missing_columns(conn)

    def _add_missing_columns(self, conn: Connection) -> None:
        """Bring landing tables made by an earlier version or stack file up to date: a field added to an entity
        becomes an empty column, the landing batch starts at 0 (before any batch), and their indexes are made."""
        inspector, quote = sa.inspect(conn), conn.dialect.identifier_preparer.quote
        for table in self.landing.values():
            present = {column["name"] for column in inspector.get_columns(table.name)}
            for column in (c for c in table.columns if c.name not in present):
                if not column.nullable and not isinstance(column.type, sa.Integer):
                    raise RuntimeError(f"warehouse table {table.name!r} lacks the required column {column.name!r}; "
                                       "it was made by an older version: drop it and re-extract the stream")
                default = " NOT NULL DEFAULT 0" if not column.nullable else ""
                conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} "
                                     f"{column.type.compile(conn.dialect)}{default}")
            for index in table.indexes:
                index.create(conn, checkfirst=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(sqlite_write=True) as conn, conn.begin():
            yield conn

    def _upsert(self, conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
        """Insert or update by primary key; of rows sharing a key the last wins, as if upserted one by one."""
        if frame.empty:
            return 0
        keys = [c.name for c in table.primary_key.columns]
        repeated = frame.duplicated(keys, keep="last")
        if repeated.any():  # PostgreSQL refuses to update one row twice in a statement
            frame = frame[~repeated]
        columns = [c for c in table.columns if c.name in frame.columns]
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in columns)
        updates = [quote(c.name) for c in columns if c.name not in keys]
        on_conflict = f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) " + (
            "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updates) if updates else "DO NOTHING")
        target = conn.dialect.identifier_preparer.format_table(table)
        if self.dialect != "postgresql":
            marks = ", ".join("?" * len(columns))
            _executemany(conn, f"INSERT INTO {target} ({names}) VALUES ({marks}) {on_conflict}", columns, frame)
            return len(frame)
        # One writer at a time (readers go on), so that rows whose keys are all new can be COPied straight in
        conn.exec_driver_sql(f"LOCK TABLE {target} IN SHARE ROW EXCLUSIVE MODE")
        if len(keys) == 1 and len(columns) == len(table.columns):
            # Every column is given: updating a row is replacing it whole, so the stored rows of these keys are
            # deleted and all rows COPied in, with no scratch table to fill and read back
            _delete_keys(conn, table, frame[keys[0]])
            _copy(conn, target, columns, frame)
            return len(frame)
        if len(keys) == 1 and not _any_key_exists(conn, table, frame[keys[0]]):
            _copy(conn, target, columns, frame)
            return len(frame)
        scratch = quote(f"_load_{uuid.uuid4().hex[:12]}")
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {scratch} (LIKE {target} INCLUDING DEFAULTS) ON COMMIT DROP")
        _copy(conn, scratch, columns, frame)
        conn.exec_driver_sql(f"INSERT INTO {target} ({names}) SELECT {names} FROM {scratch} {on_conflict}")
        conn.exec_driver_sql(f"DROP TABLE {scratch}")
        return len(frame)

    def _insert(self, conn: Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        """Plain bulk insert of a frame's columns: COPY on PostgreSQL, executemany on SQLite."""
        columns = [c for c in table.columns if c.name in frame.columns]
        unknown = sorted(set(frame.columns) - {c.name for c in columns})
        if unknown:
            raise ValueError(f"table {table.name!r} has no column(s) {unknown}; it has {[c.name for c in table.columns]}")
        target = conn.dialect.identifier_preparer.format_table(table)
        if self.dialect == "postgresql":
            _copy(conn, target, columns, frame)
        else:
            quote = conn.dialect.identifier_preparer.quote
            names = ", ".join(quote(c.name) for c in columns)
            _executemany(conn, f"INSERT INTO {target} ({names}) VALUES ({', '.join('?' * len(columns))})",
                         columns, frame)

    def _derived_table(self, conn: Connection, name: str, frame: pd.DataFrame) -> sa.Table:
        """A derived table as it is in the database, created first with the column types pandas infers from
        ``frame`` (as ``DataFrame.to_sql`` would) when it does not exist yet; a column an earlier version did not
        write (a ledger's ``before``) is added, empty in the rows it holds, so an upgrade needs no manual step."""
        if not sa.inspect(conn).has_table(name):
            conn.exec_driver_sql(pd.io.sql.get_schema(frame, name, con=conn))
        table = _stored_table(conn, name)
        missing = [column for column in frame.columns if column not in table.c]
        if not missing:
            return table
        quote = conn.dialect.identifier_preparer.quote
        inferred = pd.io.sql.SQLTable(name, pd.io.sql.SQLDatabase(conn), frame=frame[missing], index=False).table
        for column in inferred.columns:
            conn.exec_driver_sql(f"ALTER TABLE {quote(name)} ADD COLUMN {quote(column.name)} "
                                 f"{column.type.compile(conn.dialect)}")
        return _stored_table(conn, name)

    def land(self, tool: str, stream: str, rows: pd.DataFrame) -> int:
        """Upsert a stream's rows by source id: landing the same records twice leaves one row each. The rows are
        stamped with the landing's batch number, so readers downstream take in exactly what is new to them."""
        with self.transaction() as conn:
            batch = self.next_batch(conn, landing_table_name(tool, stream))
            return self._upsert(conn, self.landing[(tool, stream)], rows.assign(_landed_batch=batch))

    def last_landing(self, tool: str, stream: str) -> int:
        """The number of a stream's last committed landing (0 before any): rows landed later have a greater one."""
        return self.watermark(f"sequence:{landing_table_name(tool, stream)}") or 0

    def live_ids(self, tool: str, stream: str, up_to_landing: int) -> pd.Series:
        """The source ids of a stream's rows not deleted, landed up to ``up_to_landing``."""
        quote, mark = self.engine.dialect.identifier_preparer.quote, "%s" if self.dialect == "postgresql" else "?"
        where = f"WHERE {quote('_deleted')} = {mark} AND {quote('_landed_batch')} <= {mark}"
        return self._read(landing_table_name(tool, stream), [(where, (False, up_to_landing))],
                          ["_source_id"])["_source_id"]

    def mark_deleted(self, conn: Connection, tool: str, stream: str, ids: pd.Series, up_to_landing: int,
                     at: datetime) -> int:
        """Within a caller's transaction, flag the live rows of ``ids`` landed up to ``up_to_landing`` deleted, as
        one landing (a row landed since is newer news of its record and stays): staging takes them in as it takes
        in the deletions a tool sends."""
        table = self.landing[(tool, stream)]
        batch = self.next_batch(conn, table.name)
        values = {"_deleted": True, "_landed_batch": batch, "_extracted_at": at, "_updated_at": at}
        return sum(conn.execute(table.update().values(values).where(
            table.c._source_id.in_(part.tolist()), table.c._deleted.is_(False),
            table.c._landed_batch <= up_to_landing)).rowcount
            for part in (ids.iloc[start:start + CHUNK_ROWS] for start in range(0, len(ids), CHUNK_ROWS)))

    def save_cursor(self, tool: str, stream: str, cursor: datetime) -> None:
        """Called only after the rows up to ``cursor`` are committed, so the cursor never passes unsaved data."""
        row = {"tool": tool, "stream": stream, "cursor": cursor, "updated_at": datetime.now(timezone.utc)}
        with self.transaction() as conn:
            self._upsert(conn, self.cursors, pd.DataFrame([row]))

    def cursor(self, tool: str, stream: str) -> datetime | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(self.cursors.c.cursor).where(self.cursors.c.tool == tool, self.cursors.c.stream == stream)
            ).scalar()
        if value is not None and value.tzinfo is None:  # SQLite stores naive UTC
            value = value.replace(tzinfo=timezone.utc)
        return value

    def put_in_quarantine(self, entity: str, rejects: pd.DataFrame) -> int:
        """Keep rejected records whole, with their reason, until they are fixed at the source."""
        if rejects.empty:
            return 0
        frame = pd.DataFrame({
            "entity": entity,
            "_source": rejects["_source"].values,
            "_source_stream": rejects["_source_stream"].values,
            "record_key": rejects["_source_id"].fillna(rejects["_raw"].map(_raw_digest)).values,
            "_source_id": rejects["_source_id"].values,
            "reason": rejects["_reason"].values,
            "raw": rejects["_raw"].values,
            "quarantined_at": datetime.now(timezone.utc),
        })
        with self.transaction() as conn:
            return self._upsert(conn, self.quarantine, frame.drop_duplicates("record_key", keep="last"))

    def release_from_quarantine(self, entity: str, clean: pd.DataFrame) -> int:
        """Drop quarantine entries whose records now pass: fixed at the source, they flow again.

        Only a version extracted after the entry was made releases it: restaging an older landed copy (a full
        restage) must not release a newer version that extraction refused and the source still sends."""
        if clean.empty or self.count("quarantine") == 0:
            return 0
        # the quarantine is small and the clean rows many: match them here, then delete only what was fixed
        columns = ["_source", "_source_stream", "record_key"]
        held = self.read_where_in("quarantine", "entity", [entity], [*columns, "quarantined_at"])
        fixed = held.merge(clean[["_source", "_source_stream", "_source_id", "_extracted_at"]].rename(
            columns={"_source_id": "record_key"}), on=columns)
        fixed = fixed[pd.to_datetime(fixed["_extracted_at"], utc=True) > fixed["quarantined_at"]].drop_duplicates(
            columns)
        with self.transaction() as conn:
            return sum(self.delete_where_in(conn, "quarantine", "record_key", part["record_key"], entity=entity,
                                            _source=source, _source_stream=stream)
                       for (source, stream), part in fixed.groupby(["_source", "_source_stream"]))

    def quarantined_by_source(self, entity: str) -> dict[str, int]:
        """How many of an entity's records each tool has in quarantine now."""
        q = self.quarantine
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(q.c._source, sa.func.count()).where(q.c.entity == entity)
                                .group_by(q.c._source)).all()
        return {str(source): int(count) for source, count in rows}

    def read_table(self, table: str, columns: list[str] | None = None) -> pd.DataFrame:
        """A whole table, with every timestamp as tz-aware UTC (SQLite hands them back as naive text).

        Rows come straight from the driver and are typed column by column from the table's declared types, as
        ``pandas.read_sql_table`` would type them, without SQLAlchemy's per-value processing.
        """
        return self._read(table, [("", ())], columns)

    def _read(self, table: str, queries: list[tuple[str, tuple]], columns: list[str] | None = None) -> pd.DataFrame:
        """The rows of ``table`` matched by each (WHERE clause, driver parameters) query, typed as declared."""
        with collector_paused(), self.engine.connect() as conn:
            declared = _stored_table(conn, table).columns
            wanted = [c for c in declared if columns is None or c.name in columns]
            quote = conn.dialect.identifier_preparer.quote
            select = f"SELECT {', '.join(quote(c.name) for c in wanted)} FROM {quote(table)}"
            rows: list = []
            cursor = conn.connection.driver_connection.cursor()
            try:
                for where, params in queries:
                    cursor.execute(f"{select} {where}", params)
                    rows += cursor.fetchall()
            finally:
                cursor.close()
            names = [c.name for c in wanted]
            frame = _frame_of(rows, names)
            for column in wanted:
                frame[column.name] = _typed(frame[column.name], column.type)
        return frame

    def read_if_exists(self, table: str) -> pd.DataFrame | None:
        """A derived table from an earlier run, or None on the first run."""
        return self.read_table(table) if sa.inspect(self.engine).has_table(table) else None

    def replace(self, table: str, frame: pd.DataFrame, index: tuple[str, ...] = ()) -> int:
        """Swap a derived table's content in one transaction: readers see the old or the new, never half.
        ``index`` names the columns later runs look rows up by (each gets its own index)."""
        with self.transaction() as conn:
            return self.replace_within(conn, table, frame, index)

    def replace_within(self, conn: Connection, table: str, frame: pd.DataFrame, index: tuple[str, ...] = ()) -> int:
        """``replace`` inside a caller's transaction, beside the other writes it must commit with."""
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table)}")
        self._insert(conn, self._derived_table(conn, table, frame), frame)
        for column in index:
            conn.exec_driver_sql(f"CREATE INDEX {quote(f'ix_{table}_{column}')} ON {quote(table)} ({quote(column)})")
        if self.dialect == "postgresql":
            # a new table has no statistics until autovacuum gets to it (never, where it is off): the planner would
            # scan it whole for a few keys; a sample of its rows costs about 0.1 s
            conn.exec_driver_sql(f"ANALYZE {quote(table)}")
        return len(frame)

    def append(self, table: str, frame: pd.DataFrame, index: tuple[str, ...] = ()) -> int:
        """Add rows to an audit table (conflicts, volumes, the write ledger)."""
        if frame.empty:
            return 0
        with self.transaction() as conn:
            return self.insert(conn, table, frame, index)

    def count(self, table: str, **equal: Any) -> int:
        """The rows of ``table``, or of those whose columns equal ``equal``."""
        query = sa.select(sa.func.count()).select_from(sa.table(table, *map(sa.column, equal)))
        for name, value in equal.items():
            query = query.where(sa.column(name) == value)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    # --- parts of tables, so that an incremental run costs what changed, not what exists -------------------

    def has_table(self, table: str) -> bool:
        return sa.inspect(self.engine).has_table(table)

    def read_where_in(self, table: str, column: str, values, columns: list[str] | None = None,
                      **equal: str) -> pd.DataFrame:
        """The rows whose ``column`` is one of ``values`` (and whose other columns equal ``equal``): one statement on
        PostgreSQL, chunks on SQLite."""
        queries = [(f"WHERE {where}", params) for where, params in self._matching(column, values, **equal)]
        frame = self._read(table, queries or [("WHERE 1 = 0", ())], columns)
        return frame.drop_duplicates(ignore_index=True) if len(queries) > 1 else frame

    def read_keys(self, table: str, keys: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
        """The rows of ``table`` with one of the (``_source``, ``_source_id``) pairs in ``keys``."""
        rows = self.read_where_in(table, "_source_id", keys["_source_id"], columns)
        wanted = keys[["_source", "_source_id"]].drop_duplicates()
        return rows.merge(wanted, on=["_source", "_source_id"], how="inner")

    def read_after(self, table: str, column: str, after: int, columns: list[str] | None = None) -> pd.DataFrame:
        """The rows whose (indexed, integer) ``column`` is greater than ``after``: what a reader has not seen."""
        quoted = self.engine.dialect.identifier_preparer.quote(column)
        mark = "%s" if self.dialect == "postgresql" else "?"
        return self._read(table, [(f"WHERE {quoted} > {mark}", (int(after),))], columns)

    def delete_where_in(self, conn: Connection, table: str, column: str, values, **equal: str) -> int:
        """Within a caller's transaction, delete the rows whose ``column`` is one of ``values`` (and whose other
        columns equal ``equal``); a table that does not exist yet has nothing to delete."""
        queries = self._matching(column, values, **equal)
        if not queries or not sa.inspect(conn).has_table(table):
            return 0
        quote = conn.dialect.identifier_preparer.quote
        return sum(conn.exec_driver_sql(f"DELETE FROM {quote(table)} WHERE {where}", params).rowcount
                   for where, params in queries)

    def _matching(self, column: str, values, **equal: str) -> list[tuple[str, tuple]]:
        """Conditions, with their driver parameters, that together match the rows whose ``column`` is one of
        ``values`` (None and repeats ignored; none at all for no values) and whose other columns equal ``equal``.
        PostgreSQL takes any number of values as one array parameter, so one statement scans or probes the table
        once; SQLite caps a statement's parameters, so it gets chunks of them."""
        # a pandas column as a list in one step: iterating Arrow-backed strings costs a Python step per value
        listed = values.tolist() if isinstance(values, (pd.Series, pd.Index)) else list(values)
        values = pd.unique(pd.Series(listed, dtype=object).dropna())
        preparer = self.engine.dialect.identifier_preparer
        quoted, mark = preparer.quote(column), "%s" if self.dialect == "postgresql" else "?"
        also = "".join(f" AND {preparer.quote(name)} = {mark}" for name in equal)
        if self.dialect == "postgresql":
            return [(f"{quoted} = ANY(%s){also}", (values.tolist(), *equal.values()))] if len(values) else []
        return [(f"{quoted} IN ({', '.join('?' * len(part))}){also}", (*part.tolist(), *equal.values()))
                for part in (values[start:start + CHUNK_ROWS] for start in range(0, len(values), CHUNK_ROWS))]

    def delete_keys(self, conn: Connection, table: str, keys: pd.DataFrame) -> int:
        """Within a caller's transaction, delete the rows of the (``_source``, ``_source_id``) pairs in ``keys``."""
        return sum(self.delete_where_in(conn, table, "_source_id", part["_source_id"], _source=source)
                   for source, part in keys.groupby("_source"))

    def insert(self, conn: Connection, table: str, frame: pd.DataFrame, index: tuple[str, ...] = ()) -> int:
        """Within a caller's transaction, add rows to a derived table (created from the frame if new), with an index
        on each ``index`` column that later runs look rows up by."""
        if frame.empty:
            return 0
        self._insert(conn, self._derived_table(conn, table, frame), frame)
        quote = conn.dialect.identifier_preparer.quote
        for column in index:
            conn.exec_driver_sql(
                f"CREATE INDEX IF NOT EXISTS {quote(f'ix_{table}_{column}')} ON {quote(table)} ({quote(column)})")
        return len(frame)

    def watermark(self, name: str) -> dict | None:
        """How far an incremental step got (JSON saved with the data it covers), or None before its first run."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(self.watermarks.c.value).where(self.watermarks.c.name == name)).scalar()
        return None if value is None else json.loads(value)

    def save_watermark(self, conn: Connection, name: str, value: Any) -> None:
        """Within the transaction that writes the data it covers, so the two never disagree after a crash."""
        insert = (postgresql_insert if self.dialect == "postgresql" else sqlite_insert)(self.watermarks).values(
            name=name, value=json.dumps(value, default=str), updated_at=datetime.now(timezone.utc))
        # a row lock, not _upsert's table lock: landings of different streams must not wait for each other
        conn.execute(insert.on_conflict_do_update(index_elements=["name"], set_={
            "value": insert.excluded.value, "updated_at": insert.excluded.updated_at}))

    def next_batch(self, conn: Connection, sequence: str) -> int:
        """The next number of a sequence (landings of a table, batches of a change log), in commit order: its
        writers take turns until they commit (SQLite's IMMEDIATE transactions; a transaction-scoped advisory lock
        per sequence on PostgreSQL), so a reader that saw batch n never later finds a smaller one committed."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql(
                f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK}, {zlib.crc32(sequence.encode()) & 0x7FFFFFFF})")
        name = f"sequence:{sequence}"
        current = conn.execute(sa.select(self.watermarks.c.value).where(self.watermarks.c.name == name)).scalar()
        batch = (json.loads(current) if current is not None else 0) + 1
        self.save_watermark(conn, name, batch)
        return batch

    def last_batch(self, sequence: str) -> int:
        """The latest number ``next_batch`` gave out for ``sequence`` (0: none yet)."""
        return int(self.watermark(f"sequence:{sequence}") or 0)

    def prune_log(self, conn: Connection, log: str, up_to_batch: int) -> None:
        """Within a caller's transaction, drop a change log's batches its reader has taken in."""
        if sa.inspect(conn).has_table(log):
            conn.execute(sa.table(log, sa.column("batch")).delete().where(sa.column("batch") <= up_to_batch))

    def read_log(self, log: str, after_batch: int) -> pd.DataFrame | None:
        """A change log's batches after ``after_batch``; None if nothing was ever logged."""
        if not self.has_table(log):
            return None
        mark = "%s" if self.dialect == "postgresql" else "?"
        return self._read(log, [(f"WHERE batch > {mark}", (after_batch,))])


def _stored_table(conn: Connection, name: str) -> sa.Table:
    """A table's columns and their types as the database holds them now. Only the columns: reflecting the whole
    table (keys, indexes, constraints, comments) takes several catalog queries, and a step reads tens of times."""
    columns = sa.inspect(conn).get_columns(name)
    return sa.Table(name, sa.MetaData(), *(sa.Column(c["name"], c["type"]) for c in columns))


def _raw_digest(raw: str) -> str:
    """The quarantine key of a record without an id: a digest of its payload, which identifies it as well as the
    payload itself while fitting an index entry (PostgreSQL refuses a key of more than about 2.7 kB)."""
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def _sqlite_rows(frame: pd.DataFrame, columns: list[sa.Column]) -> Iterator[Iterator[tuple]]:
    """The frame's rows as SQLite driver tuples, ``LOAD_CHUNK_ROWS`` at a time (PostgreSQL gets COPY blocks)."""
    for start in range(0, len(frame), LOAD_CHUNK_ROWS):
        part = frame.iloc[start:start + LOAD_CHUNK_ROWS]
        yield zip(*(_cells(part[c.name], c.type, "sqlite") for c in columns))


def _any_key_exists(conn: Connection, table: sa.Table, keys: pd.Series) -> bool:
    """Whether any of ``keys`` is in ``table`` already (PostgreSQL): one index probe per key, as one statement
    (none when ``_reaching`` tells that every key is past the stored ones)."""
    preparer, key = conn.dialect.identifier_preparer, table.c[keys.name]
    target, name = preparer.format_table(table), preparer.quote(key.name)
    statement = (f"WITH {_key_rows(conn, key)} SELECT {_reaching(target, name)} "
                 f"AND EXISTS (SELECT FROM {target} WHERE {name} IN (SELECT key FROM keys))")
    return conn.exec_driver_sql(statement, {"keys": _key_json(keys, key)}).scalar()


def _delete_keys(conn: Connection, table: sa.Table, keys: pd.Series) -> None:
    """Delete the rows of ``table`` whose key is one of ``keys`` (PostgreSQL), as one statement: one index probe per
    key, none when ``_reaching`` tells that every key is past the stored ones."""
    preparer, key = conn.dialect.identifier_preparer, table.c[keys.name]
    target, name = preparer.format_table(table), preparer.quote(key.name)
    conn.exec_driver_sql(f"WITH {_key_rows(conn, key)} DELETE FROM {target} "
                         f"WHERE {_reaching(target, name)} AND {name} = ANY(ARRAY(SELECT key FROM keys))",
                         {"keys": _key_json(keys, key)})


def _key_rows(conn: Connection, key: sa.Column) -> str:
    """SQL naming ``keys`` the rows (``key``) of the JSON array passed as the ``keys`` parameter by ``_key_json``."""
    return (f"keys AS (SELECT CAST(value AS {key.type.compile(conn.dialect)}) AS key "
            f"FROM json_array_elements_text(CAST(%(keys)s AS json)))")


def _reaching(target: str, name: str) -> str:
    """SQL for "the stored keys reach the smallest of ``keys``": false when every key is past the greatest stored
    key (new records of a source that numbers them in order), which one probe of the key's index tells; a
    condition on no column, so PostgreSQL checks it once, before it looks up any key."""
    return f"(SELECT max({name}) FROM {target}) >= (SELECT min(key) FROM keys)"


def _key_json(keys: pd.Series, key: sa.Column) -> str:
    """Keys as one JSON array: encoded in C, where psycopg would adapt a list of them one key at a time in Python."""
    return json.dumps(_cells(keys, key.type, "postgresql"), ensure_ascii=False)


def _executemany(conn: Connection, statement: str, columns: list[sa.Column], frame: pd.DataFrame) -> None:
    cursor = conn.connection.driver_connection.cursor()
    try:
        with collector_paused():
            for rows in _sqlite_rows(frame, columns):
                cursor.executemany(statement, rows)
    finally:
        cursor.close()


_BYTES = pa.large_binary()  # 64-bit offsets: a block's column may pass 2 GiB
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, no flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_NULL_FIELD = pa.scalar(b"\xff\xff\xff\xff", _BYTES)  # length -1
_JOINED = pa.scalar(b"", _BYTES)  # the separator of parts joined into one field or one row
_POSTGRES_EPOCH = np.datetime64("2000-01-01", "us")  # PostgreSQL counts timestamps from here
_COPY_TEXTS = {"text", "varchar", "bpchar"}
_COPY_TIMESTAMPS = {"timestamp", "timestamptz"}
_COPY_NUMBERS = {"bool": pa.bool_(), "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(),
                 "float4": pa.float32(), "float8": pa.float64()}  # the width binary COPY sends each type in


def _copy(conn: Connection, target: str, columns: list[sa.Column], frame: pd.DataFrame) -> None:
    """COPY in binary format, ``LOAD_CHUNK_ROWS`` rows at a time sent as one block that Arrow and numpy build from
    whole columns: no Python runs per row or per value, text needs no escaping and PostgreSQL parses nothing.

    Binary values must have the very type of their column, so the types are the table's own, asked of PostgreSQL,
    not the model's, which a table made by an earlier version or stack file need not match."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in columns)
    with conn.connection.driver_connection.cursor() as cursor:
        cursor.execute("SELECT attname, typname FROM pg_attribute JOIN pg_type ON pg_type.oid = atttypid "
                       "WHERE attrelid = CAST(%s AS regclass) AND attnum > 0 AND NOT attisdropped", (target,))
        stored = dict(cursor.fetchall())
        if cursor.connection.info.encoding != "utf-8":  # binary COPY takes text in the client encoding: UTF-8 here
            cursor.execute("SET LOCAL client_encoding TO 'UTF8'")
        count = pa.scalar(len(columns).to_bytes(2, "big"), _BYTES)  # each row starts with its number of fields
        with cursor.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(_COPY_HEADER)
            for start in range(0, len(frame), LOAD_CHUNK_ROWS):
                part = frame.iloc[start:start + LOAD_CHUNK_ROWS]
                fields = [_copy_fields(part[c.name], stored[c.name]) for c in columns]
                copy.write(_values_bytes(pc.binary_join_element_wise(count, *fields, _JOINED)))
            copy.write(_COPY_TRAILER)


def _copy_fields(values: pd.Series, stored: str) -> pa.Array:
    """One column as binary COPY fields: each value's length then its bytes as PostgreSQL receives the ``stored``
    type (UTF-8 text, big-endian numbers, UTC timestamps in microseconds since 2000); length -1 for NaN, NaT, pd.NA
    and None. Values are cast as the column needs: integers that went through a float column to hold NaN become
    integers again, while a fraction meant for an integer column fails the load."""
    if stored in _COPY_TIMESTAMPS:
        micros = _utc_micros(values)
        fields = _fixed_fields((micros - _POSTGRES_EPOCH).astype(np.int64), ~np.isnat(micros))
    else:
        try:
            cells = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            if stored not in _COPY_TEXTS:
                raise
            # an object column mixing types (a ledger's values of several fields): each value's text
            cells = pa.array([None if v is None else str(v) for v in _cells(values, sa.Text(), "postgresql")],
                             pa.large_string())
        if isinstance(cells, pa.ChunkedArray):
            cells = cells.combine_chunks()
        if stored in _COPY_TEXTS:
            texts = pc.cast(pc.cast(cells, pa.large_string()), _BYTES)
            lengths = _fixed_width(np.diff(_offsets(texts)).astype(">i4"))
            fields = pc.binary_join_element_wise(lengths, texts, _JOINED)  # null where the text is
        elif stored in _COPY_NUMBERS:
            numbers = pc.cast(cells, _COPY_NUMBERS[stored])
            fields = _fixed_fields(numbers.fill_null(pa.scalar(0).cast(numbers.type)).to_numpy(zero_copy_only=False),
                                   pc.is_valid(numbers).to_numpy(zero_copy_only=False))
        else:
            raise TypeError(f"the warehouse cannot COPY values into a column of type {stored}")
    return pc.fill_null(fields, _NULL_FIELD)


def _fixed_fields(numbers: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Fields of fixed-width values: the width then the big-endian value; null where not ``valid``."""
    cells = np.empty(len(numbers), [("length", ">i4"), ("value", numbers.dtype.newbyteorder(">"))])
    cells["length"], cells["value"] = numbers.dtype.itemsize, numbers
    return _fixed_width(cells, None if valid.all() else pa.array(valid).buffers()[1])


def _fixed_width(values: np.ndarray, validity: pa.Buffer | None = None) -> pa.Array:
    """A binary array of the items of ``values`` (each item's bytes), without copying them."""
    width = values.dtype.itemsize
    offsets = np.arange(0, width * (len(values) + 1), width, dtype=np.int64)
    return pa.LargeBinaryArray.from_buffers(_BYTES, len(values), [validity, pa.py_buffer(offsets),
                                                                   pa.py_buffer(values)])


def _offsets(values: pa.Array) -> np.ndarray:
    """Where each value of a (large) binary array starts in its data buffer, and where the last one ends."""
    return np.frombuffer(values.buffers()[1], np.int64)[values.offset:values.offset + len(values) + 1]


def _values_bytes(values: pa.Array) -> memoryview:
    """The bytes of a (large) binary array's values, end to end, without copying them."""
    offsets = _offsets(values)
    return memoryview(values.buffers()[2])[offsets[0]:offsets[-1]]


def _cells(values: pd.Series, sql_type: sa.types.TypeEngine, dialect: str) -> list:
    """One column as plain Python values the driver takes as they are, with None for NaN, NaT, pd.NA and None."""
    if isinstance(sql_type, sa.DateTime):
        return _utc_texts(values, dialect)
    if isinstance(sql_type, sa.Integer) and pd.api.types.is_float_dtype(values.dtype):
        values = values.astype("Int64")  # integers that went through a float column to hold NaN
    if isinstance(values.array, pd.arrays.ArrowStringArray):  # Arrow makes the list itself, None where missing
        return pa.array(values.array).to_pylist()
    if not values.hasnans:
        return values.tolist()
    return values.astype(object).where(values.notna(), None).tolist()


def _frame_of(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    """Driver rows as a frame, typed as ``DataFrame.from_records(coerce_float=True)`` types them, but built column
    by column by Arrow, which makes a column of one kind of value (text, numbers, None for missing) in one pass
    where pandas goes row by row; a column of several kinds (SQLite lets a column hold any) stays objects. The
    drivers hand back text, numbers, booleans, None and (psycopg) datetimes: no column type needs ``coerce_float``'s
    Decimal conversion."""
    if not rows:
        return pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
    data = {}
    for name, values in zip(names, zip(*rows)):
        try:
            data[name] = pa.array(values).to_pandas()
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def _typed(values: pd.Series, sql_type: sa.types.TypeEngine) -> pd.Series:
    """A column read back raw, with the dtype its SQL type calls for: UTC timestamps, booleans (object when some
    are missing), floats; other columns keep the dtype pandas inferred from the values."""
    if isinstance(sql_type, sa.DateTime):
        return pd.to_datetime(values, utc=True, format="ISO8601")
    if isinstance(sql_type, sa.Boolean):
        return values.astype(bool) if not values.hasnans else values.map(lambda v: None if pd.isna(v) else bool(v))
    if isinstance(sql_type, sa.Float):
        return values.astype("float64")
    return values


def _utc_texts(values: pd.Series, dialect: str) -> list:
    """Timestamps as UTC text: SQLAlchemy's SQLite storage form ``2026-01-02 03:04:05.000006`` there (naive, so
    that its readers and string comparisons keep working), ISO 8601 with ``Z`` for PostgreSQL. Naive input is
    taken as UTC, the warehouse's convention."""
    micros = _utc_micros(values)
    if dialect == "postgresql":
        texts = np.datetime_as_string(micros, unit="us", timezone="UTC")
    else:
        texts = np.datetime_as_string(micros, unit="us")
        texts.view(np.uint32).reshape(len(texts), -1)[:, 10] = ord(" ")  # the ISO "T" → SQLAlchemy's space
    cells = texts.astype(object)
    cells[np.isnat(micros)] = None
    return cells.tolist()


def _utc_micros(values: pd.Series) -> np.ndarray:
    """Timestamps as naive UTC to the microsecond (``datetime64[us]``, NaT where missing); naive input is UTC."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy("datetime64[us]")
