"""The SQL warehouse: landing tables per tool stream, extraction cursors and the quarantine, via SQLAlchemy.

SQLite is the embedded default and PostgreSQL the production path; both get idempotent upserts keyed by the
source's id, and a stream's cursor is saved only after its rows are committed, so a crash never skips records.

Rows go in bulk, below SQLAlchemy's per-row processing: PostgreSQL through COPY (upserts COPY into a temporary table,
then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``), SQLite through one prepared ``INSERT ... ON CONFLICT``
run with executemany. Either way a frame is turned into driver values one column at a time, vectorised, with None
for every missing value; timestamps are written as UTC text in the form SQLAlchemy itself reads back.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from sync_pipelines.stack import Stack

_SQL_TYPES = {
    "string": sa.Text, "email": sa.Text, "phone": sa.Text, "date": sa.Text,
    "integer": sa.BigInteger, "number": sa.Float, "boolean": sa.Boolean, "datetime": sa.DateTime(timezone=True),
}
SCHEMA_LOCK = 7_123_409  # advisory lock id serialising schema creation on PostgreSQL
CHUNK_ROWS = 5_000
LOAD_CHUNK_ROWS = 100_000  # rows turned into driver values at a time: bounds the memory of a large load


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
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    """WAL lets readers run beside the writer and NORMAL syncs at checkpoints only (safe under WAL); the driver's
    own transaction handling is switched off so that ``_sqlite_begin`` makes DDL transactional too (``replace``)."""
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
        ``frame`` (as ``DataFrame.to_sql`` would) when it does not exist yet."""
        if not sa.inspect(conn).has_table(name):
            conn.exec_driver_sql(pd.io.sql.get_schema(frame, name, con=conn))
        return sa.Table(name, sa.MetaData(), autoload_with=conn)

    def land(self, tool: str, stream: str, rows: pd.DataFrame) -> int:
        """Upsert a stream's rows by source id: landing the same records twice leaves one row each. The rows are
        stamped with the landing's batch number, so readers downstream take in exactly what is new to them."""
        with self.transaction() as conn:
            batch = self.next_batch(conn, landing_table_name(tool, stream))
            return self._upsert(conn, self.landing[(tool, stream)], rows.assign(_landed_batch=batch))

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
            "record_key": rejects["_source_id"].fillna(rejects["_raw"]).values,
            "_source_id": rejects["_source_id"].values,
            "reason": rejects["_reason"].values,
            "raw": rejects["_raw"].values,
            "quarantined_at": datetime.now(timezone.utc),
        })
        with self.transaction() as conn:
            return self._upsert(conn, self.quarantine, frame.drop_duplicates("record_key", keep="last"))

    def release_from_quarantine(self, entity: str, clean: pd.DataFrame) -> int:
        """Drop quarantine entries whose records now pass: fixed at the source, they flow again."""
        if clean.empty or self.count("quarantine") == 0:
            return 0
        # the quarantine is small and the clean rows many: match them here, then delete only what was fixed
        columns = ["_source", "_source_stream", "record_key"]
        held = self.read_where_in("quarantine", "entity", [entity], columns)
        fixed = held.merge(clean[["_source", "_source_stream", "_source_id"]].rename(
            columns={"_source_id": "record_key"}).drop_duplicates(), on=columns)
        q = self.quarantine
        released = 0
        with self.transaction() as conn:
            for (source, stream), part in fixed.groupby(["_source", "_source_stream"]):
                for start in range(0, len(part), CHUNK_ROWS):
                    keys = part["record_key"].iloc[start:start + CHUNK_ROWS].tolist()
                    released += conn.execute(q.delete().where(
                        q.c.entity == entity, q.c._source == source, q.c._source_stream == stream,
                        q.c.record_key.in_(keys),
                    )).rowcount
        return released

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
        with self.engine.connect() as conn:
            declared = sa.Table(table, sa.MetaData(), autoload_with=conn).columns
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
        frame = pd.DataFrame.from_records(rows, columns=[c.name for c in wanted], coerce_float=True)
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
        return len(frame)

    def append(self, table: str, frame: pd.DataFrame, index: tuple[str, ...] = ()) -> int:
        """Add rows to an audit table (conflicts, volumes, the write ledger)."""
        if frame.empty:
            return 0
        with self.transaction() as conn:
            return self.insert(conn, table, frame, index)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()

    # --- parts of tables, so that an incremental run costs what changed, not what exists -------------------

    def has_table(self, table: str) -> bool:
        return sa.inspect(self.engine).has_table(table)

    def read_where_in(self, table: str, column: str, values, columns: list[str] | None = None) -> pd.DataFrame:
        """The rows whose ``column`` is one of ``values`` (an indexed lookup per chunk of values)."""
        values = pd.unique(pd.Series(list(values), dtype=object).dropna())
        marks = "%s" if self.dialect == "postgresql" else "?"
        quoted = self.engine.dialect.identifier_preparer.quote(column)
        if self.dialect == "postgresql":
            queries = [(f"WHERE {quoted} = ANY({marks})", (values[start:start + CHUNK_ROWS].tolist(),))
                       for start in range(0, len(values), CHUNK_ROWS)]
        else:
            queries = [(f"WHERE {quoted} IN ({', '.join('?' * len(part))})", tuple(part.tolist()))
                       for part in (values[start:start + CHUNK_ROWS] for start in range(0, len(values), CHUNK_ROWS))]
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
        values = pd.unique(pd.Series(list(values), dtype=object).dropna())
        if not len(values) or not sa.inspect(conn).has_table(table):
            return 0
        target = sa.table(table, sa.column(column), *(sa.column(name) for name in equal))
        deleted = 0
        for start in range(0, len(values), CHUNK_ROWS):
            condition = target.c[column].in_(values[start:start + CHUNK_ROWS].tolist())
            for name, value in equal.items():
                condition &= target.c[name] == value
            deleted += conn.execute(target.delete().where(condition)).rowcount
        return deleted

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


def _chunks(frame: pd.DataFrame, columns: list[sa.Column], dialect: str) -> Iterator[Iterator[tuple]]:
    """The frame's rows as driver-ready tuples, ``LOAD_CHUNK_ROWS`` at a time."""
    for start in range(0, len(frame), LOAD_CHUNK_ROWS):
        part = frame.iloc[start:start + LOAD_CHUNK_ROWS]
        yield zip(*(_cells(part[c.name], c.type, dialect) for c in columns))


def _any_key_exists(conn: Connection, table: sa.Table, keys: pd.Series) -> bool:
    """Whether any of ``keys`` is in ``table`` already (PostgreSQL): one index probe per key, as one statement."""
    key = table.c[keys.name]
    statement = (f"SELECT EXISTS (SELECT FROM {conn.dialect.identifier_preparer.format_table(table)} "
                 f"WHERE {conn.dialect.identifier_preparer.quote(key.name)} IN "
                 f"(SELECT unnest(CAST(%(keys)s AS {key.type.compile(conn.dialect)}[]))))")
    return conn.exec_driver_sql(statement, {"keys": _cells(keys, key.type, "postgresql")}).scalar()


def _delete_keys(conn: Connection, table: sa.Table, keys: pd.Series) -> None:
    """Delete the rows of ``table`` whose key is one of ``keys`` (PostgreSQL), as one statement."""
    key = table.c[keys.name]
    conn.exec_driver_sql(f"DELETE FROM {conn.dialect.identifier_preparer.format_table(table)} "
                         f"WHERE {conn.dialect.identifier_preparer.quote(key.name)} = "
                         f"ANY(CAST(%(keys)s AS {key.type.compile(conn.dialect)}[]))",
                         {"keys": _cells(keys, key.type, "postgresql")})


def _executemany(conn: Connection, statement: str, columns: list[sa.Column], frame: pd.DataFrame) -> None:
    cursor = conn.connection.driver_connection.cursor()
    try:
        for rows in _chunks(frame, columns, "sqlite"):
            cursor.executemany(statement, rows)
    finally:
        cursor.close()


def _copy(conn: Connection, target: str, columns: list[sa.Column], frame: pd.DataFrame) -> None:
    """COPY in text format; psycopg escapes each value (tabs, newlines, backslashes) and sends None as NULL."""
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in columns)
    with conn.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy:
            for rows in _chunks(frame, columns, "postgresql"):
                for row in rows:
                    copy.write_row(row)


def _cells(values: pd.Series, sql_type: sa.types.TypeEngine, dialect: str) -> list:
    """One column as plain Python values the driver takes as they are, with None for NaN, NaT, pd.NA and None."""
    if isinstance(sql_type, sa.DateTime):
        return _utc_texts(values, dialect)
    if isinstance(sql_type, sa.Integer) and pd.api.types.is_float_dtype(values.dtype):
        values = values.astype("Int64")  # integers that went through a float column to hold NaN
    if not values.hasnans:
        return values.tolist()
    return values.astype(object).where(values.notna(), None).tolist()


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
    stamps = pd.to_datetime(values, utc=True)
    micros = stamps.dt.tz_localize(None).to_numpy("datetime64[us]")
    if dialect == "postgresql":
        texts = np.datetime_as_string(micros, unit="us", timezone="UTC")
    else:
        texts = np.datetime_as_string(micros, unit="us")
        texts.view(np.uint32).reshape(len(texts), -1)[:, 10] = ord(" ")  # the ISO "T" → SQLAlchemy's space
    cells = texts.astype(object)
    cells[np.isnat(micros)] = None
    return cells.tolist()
