"""CSV files in a folder, one file per stream (`<folder>/<stream>.csv`), for tools that can only export files."""

from __future__ import annotations

import csv
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from sync_pipelines.connectors.base import Connector, Options, result
from sync_pipelines.connectors.errors import ConnectorError
from sync_pipelines.connectors.files import cursor_column, parse_timestamp

logger = logging.getLogger("sync_pipelines.connectors")


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class CsvConnector(Connector):
    """Reads every value as a string (empty cells as None); writes append or upsert by key, atomically."""

    kind = "csv"
    write_modes = ("upsert", "update", "append")
    extra_options = frozenset({"cursor"})

    def __init__(self, base_url: str, credentials: Any, options: Options) -> None:
        super().__init__(options)
        if not isinstance(base_url, str) or not base_url:
            raise ConnectorError(f"{self.name}: base_url must be a folder path, got {base_url!r}")
        self.folder = Path(base_url.removeprefix("file://"))

    def path(self, stream: str) -> Path:
        if "/" in stream or "\\" in stream or stream.startswith("."):
            raise ConnectorError(f"{self.name}: stream {stream!r} must be a plain file name, without folders")
        return self.folder / f"{stream}.csv"

    def _read(self, stream: str, since: datetime | None) -> Iterator[dict]:
        path = self.path(stream)
        if not path.is_file():
            raise ConnectorError(f"{self.name}: {path} does not exist (stream {stream!r} of folder {self.folder})")
        cursor = cursor_column(self.options.extra.get("cursor"), stream, self.name)
        if since and not cursor:
            logger.info("%s: no cursor column for %s, reading every row although since was given", self.name, path)
        self.stats.pages += 1
        yield from self._rows(path, cursor if since else None, since)

    def _rows(self, path: Path, cursor: str | None, since: datetime | None) -> Iterator[dict]:
        """Rows as dicts; a row whose width differs from the header is an error naming file and line."""
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader, None)
                if header is None:
                    return
                if len(set(header)) != len(header) or "" in header:
                    raise ConnectorError(f"{self.name}: {path} line 1: the header has empty or repeated column names")
                if cursor and cursor not in header:
                    raise ConnectorError(f"{self.name}: {path} has no cursor column {cursor!r}; columns: {header}")
                for row in reader:
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise ConnectorError(f"{self.name}: {path} line {reader.line_num}: expected {len(header)} "
                                             f"values (as in the header), found {len(row)}")
                    record = {name: value if value != "" else None for name, value in zip(header, row)}
                    if cursor and record[cursor] is not None and since is not None and parse_timestamp(
                            record[cursor], f"{self.name}: {path} line {reader.line_num}") < since:
                        continue
                    yield record
            except csv.Error as exc:
                raise ConnectorError(f"{self.name}: {path} line {reader.line_num}: {exc}") from None

    def _write(self, stream: str, records: list[dict], mode: str, key: str | None) -> list[dict[str, Any]]:
        if mode != "append" and not key:
            raise ConnectorError(f"{self.name}: {mode} into {stream}.csv needs key=<column>; use mode='append' "
                                 "to add rows without one")
        path = self.path(stream)
        header: list[str] = []
        rows: list[dict] = []
        if path.is_file():
            rows = list(self._rows(path, None, None))
            with path.open(newline="", encoding="utf-8-sig") as handle:
                header = next(csv.reader(handle), [])
        position = {row[key]: i for i, row in enumerate(rows)} if key else {}
        results = []
        for record in records:
            values = {str(k): cell(v) for k, v in record.items()}
            header += [column for column in values if column not in header]
            identity = values.get(key) if key else None
            if mode != "append" and not identity:
                results.append(result(False, error=f"record lacks the key column {key}"))
            elif mode != "append" and identity in position:
                rows[position[identity]].update(values)
                results.append(result(True, identity, False))
            elif mode == "update":
                results.append(result(False, identity, error=f"no row with {key}={identity}"))
            else:
                position[identity] = len(rows)
                rows.append(values)
                results.append(result(True, identity, True))
        self._replace(path, header, rows)
        return results

    def _replace(self, path: Path, header: list[str], rows: list[dict]) -> None:
        """Write a temporary file then rename it, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".csv.tmp")
        with os.fdopen(handle, "w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=header)
            writer.writeheader()
            writer.writerows({column: cell(row.get(column)) for column in header} for row in rows)
        os.replace(temporary, path)
