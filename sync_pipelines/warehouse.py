"""The SQL warehouse: landing tables per tool stream, extraction cursors and the quarantine, via SQLAlchemy.

SQLite is the embedded default and PostgreSQL the production path; both get idempotent upserts keyed by the
source's id, and a stream's cursor is saved only after its rows are committed, so a crash never skips records.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from sync_pipelines.stack import Stack

_SQL_TYPES = {
    "string": sa.Text, "email": sa.Text, "phone": sa.Text, "date": sa.Text,
    "integer": sa.BigInteger, "number": sa.Float, "boolean": sa.Boolean, "datetime": sa.DateTime(timezone=True),
}
CHUNK_ROWS = 5_000


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
    return sa.create_engine(parsed, future=True)


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
                sa.Column("_deleted", sa.Boolean, nullable=False),
                sa.Column("_raw", sa.Text, nullable=False),
            )
        self.metadata.create_all(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _upsert(self, conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
        """Insert or update by primary key, in chunks, with the dialect's native ON CONFLICT."""
        if frame.empty:
            return 0
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        keys = [c.name for c in table.primary_key.columns]
        columns = [c.name for c in table.columns if c.name in frame.columns]
        statement = insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={c: statement.excluded[c] for c in columns if c not in keys}
        )
        rows = _records(frame[columns])
        for start in range(0, len(rows), CHUNK_ROWS):
            conn.execute(statement, rows[start:start + CHUNK_ROWS])
        return len(rows)

    def land(self, tool: str, stream: str, rows: pd.DataFrame) -> int:
        """Upsert a stream's rows by source id: landing the same records twice leaves one row each."""
        with self.transaction() as conn:
            return self._upsert(conn, self.landing[(tool, stream)], rows)

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
        q = self.quarantine
        released = 0
        with self.transaction() as conn:
            for (source, stream), part in clean.groupby(["_source", "_source_stream"]):
                for start in range(0, len(part), CHUNK_ROWS):
                    keys = part["_source_id"].iloc[start:start + CHUNK_ROWS].tolist()
                    released += conn.execute(q.delete().where(
                        q.c.entity == entity, q.c._source == source, q.c._source_stream == stream,
                        q.c.record_key.in_(keys),
                    )).rowcount
        return released

    def read_table(self, table: str) -> pd.DataFrame:
        """A whole table, with every timestamp as tz-aware UTC (SQLite hands them back naive)."""
        with self.engine.connect() as conn:
            frame = pd.read_sql_table(table, conn)
        for column in frame.columns:
            if pd.api.types.is_datetime64_any_dtype(frame[column]) and frame[column].dt.tz is None:
                frame[column] = frame[column].dt.tz_localize("UTC")
        return frame

    def read_if_exists(self, table: str) -> pd.DataFrame | None:
        """A derived table from an earlier run, or None on the first run."""
        return self.read_table(table) if sa.inspect(self.engine).has_table(table) else None

    def replace(self, table: str, frame: pd.DataFrame) -> int:
        """Swap a derived table's content in one transaction: readers see the old or the new, never half."""
        with self.transaction() as conn:
            frame.to_sql(table, conn, if_exists="replace", index=False, chunksize=CHUNK_ROWS)
        return len(frame)

    def append(self, table: str, frame: pd.DataFrame) -> int:
        """Add rows to an audit table (conflicts, volumes, the write ledger)."""
        if frame.empty:
            return 0
        with self.transaction() as conn:
            frame.to_sql(table, conn, if_exists="append", index=False, chunksize=CHUNK_ROWS)
        return len(frame)

    def count(self, table: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


def _records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as dicts with None for every kind of missing value (NaN, NaT, pd.NA)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [dict(zip(clean.columns, row)) for row in clean.itertuples(index=False, name=None)]
