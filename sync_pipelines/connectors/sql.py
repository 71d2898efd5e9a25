"""Any SQLAlchemy database: a table per stream, an optional cursor column for incremental reads, upsert by key."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Iterator

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError, NoSuchTableError, SQLAlchemyError

from sync_pipelines.connectors.base import Connector, Options, result
from sync_pipelines.connectors.errors import ConnectorError
from sync_pipelines.connectors.files import cursor_column, parse_timestamp

logger = logging.getLogger("sync_pipelines.connectors")
FETCH_BATCH = 1000


class SqlConnector(Connector):
    """Reads rows as dicts; writes one transaction per record so one bad row fails alone."""

    kind = "sql"
    write_modes = ("upsert", "update", "append")
    extra_options = frozenset({"cursor"})

    def __init__(self, base_url: str, credentials: Any, options: Options) -> None:
        super().__init__(options)
        try:
            url = sa.make_url(base_url)
        except ArgumentError:
            raise ConnectorError(f"{self.name}: base_url is not an SQLAlchemy URL: {self.redact(base_url)}") from None
        if url.password:
            self.redact.add(str(url.password))
        try:
            self.engine = sa.create_engine(url)
        except (ArgumentError, ImportError) as exc:
            raise ConnectorError(self.redact(f"{self.name}: cannot open {url!r}: {exc}")) from None
        self._tables: dict[str, sa.Table] = {}

    def table(self, stream: str) -> sa.Table:
        if stream not in self._tables:
            schema, _, name = stream.rpartition(".")
            try:
                self._tables[stream] = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=self.engine)
            except NoSuchTableError:
                raise ConnectorError(f"{self.name}: table {stream!r} does not exist") from None
            except SQLAlchemyError as exc:
                raise ConnectorError(self.redact(f"{self.name}: cannot open table {stream!r}: {exc}")) from None
        return self._tables[stream]

    def column(self, table: sa.Table, name: str) -> sa.Column:
        if name not in table.c:
            raise ConnectorError(f"{self.name}: table {table.name!r} has no column {name!r}; "
                                 f"columns: {list(table.c.keys())}")
        return table.c[name]

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        table = self.table(stream)
        query = sa.select(table)
        cursor = cursor_column(self.options.extra.get("cursor"), stream, self.name)
        if cursor:
            column = self.column(table, cursor)
            query = query.order_by(column)
            if since:
                query = query.where(column >= self._bound(column, since))
        elif since:
            logger.info("%s: no cursor column for %s, reading every row although since was given", self.name, stream)
        self.stats.requests += 1
        with self.engine.connect() as connection:
            for partition in connection.execution_options(yield_per=FETCH_BATCH).execute(query).mappings().partitions():
                self.stats.pages += 1
                yield from (dict(row) for row in partition)

    def _list_ids(self, stream: str, key: str) -> list:
        """``SELECT key FROM table``: the ids alone."""
        table = self.table(stream)
        self.stats.requests += 1
        with self.engine.connect() as connection:
            return connection.execute(sa.select(self.column(table, key))).scalars().all()

    @staticmethod
    def _bound(column: sa.Column, since: datetime) -> Any:
        """`since` in the column's own terms: naive UTC for zone-less DateTime, ISO text for strings."""
        if isinstance(column.type, sa.DateTime):
            return since if column.type.timezone else since.replace(tzinfo=None)
        if isinstance(column.type, sa.Date):
            return since.date()
        return since.isoformat()

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        table = self.table(stream)
        if mode != "append":
            if not key:
                raise ConnectorError(f"{self.name}: {mode} into {stream} needs key=<column>")
            self.column(table, key)
        return [self._save(table, record, mode, key) for record in records]

    def _save(self, table: sa.Table, record: dict, mode: str, key: str | None) -> dict[str, Any]:
        unknown = [name for name in record if name not in table.c]
        if unknown:
            return result(False, error=f"table {table.name!r} has no column(s) {unknown}")
        identity = record.get(key) if key else None
        if mode != "append" and identity in (None, ""):
            return result(False, error=f"record lacks the key column {key}")
        try:
            values = {name: self._coerce(table.c[name], value, name) for name, value in record.items()}
            with self.engine.begin() as connection:
                self.stats.requests += 1
                if mode != "append" and connection.execute(
                        sa.select(table.c[key]).where(table.c[key] == identity)).first() is not None:
                    connection.execute(table.update().where(table.c[key] == identity).values(values))
                    return result(True, identity, False)
                if mode == "update":
                    return result(False, identity, error=f"no row with {key}={identity}")
                inserted = connection.execute(table.insert().values(values))
            primary = inserted.inserted_primary_key
            return result(True, identity if identity is not None else (primary[0] if primary else None), True)
        except (SQLAlchemyError, ConnectorError) as exc:
            return result(False, error=self.redact(f"{type(exc).__name__}: {exc}".splitlines()[0]))

    def _coerce(self, column: sa.Column, value: Any, name: str) -> Any:
        """ISO strings into date/datetime columns, which some drivers (SQLite) refuse as text."""
        if isinstance(value, str) and isinstance(column.type, (sa.DateTime, sa.Date)):
            moment = parse_timestamp(value, f"{self.name}: column {name}")
            if isinstance(column.type, sa.DateTime):
                return moment if column.type.timezone else moment.replace(tzinfo=None)
            return moment.date()
        return value

    def close(self) -> None:
        self.engine.dispose()
