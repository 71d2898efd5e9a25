"""One emulated stream: numpy columns for what queries filter on, records rendered only when a page needs them."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .ids import IdScheme

INVALID_REASONS = ("", "bad_email", "missing_email", "missing_id")


class Table:
    """Rows of one tool's stream.

    Generated rows keep only integer code columns and are rendered by `render_base`; rows written later keep their
    fields as dicts. `overrides` holds changed fields of any row. Times are epoch milliseconds.
    """

    def __init__(
        self,
        tool: str,
        name: str,
        ids: IdScheme,
        created: np.ndarray,
        modified: np.ndarray,
        person: np.ndarray,
        render_base: Callable[["Table", int], dict[str, Any]],
        deleted: np.ndarray | None = None,
        invalid: np.ndarray | None = None,
        codes: dict[str, np.ndarray] | None = None,
        present: dict[str, np.ndarray] | None = None,
    ) -> None:
        n = len(created)
        self.tool, self.name, self.ids = tool, name, ids
        self.created = created.astype(np.int64)
        self.modified = modified.astype(np.int64)
        self.person = person.astype(np.int32)
        self.deleted = np.zeros(n, bool) if deleted is None else deleted.astype(bool)
        self.invalid = np.zeros(n, np.int8) if invalid is None else invalid.astype(np.int8)
        self.codes = codes or {}
        self.present = present or {}
        self.render_base = render_base
        self.n_base = n
        self.extra: list[dict[str, Any]] = []
        self.overrides: dict[int, dict[str, Any]] = {}
        self.version = 0
        self._indexes: dict[str, dict[str, int]] = {}
        self._buffers: dict[str, np.ndarray] = {}  # room for appended rows, per column (`_appended`)
        self._order_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    @property
    def key(self) -> str:
        return f"{self.tool}/{self.name}"

    def __len__(self) -> int:
        return len(self.created)

    def id(self, row: int) -> Any:
        return self.ids.id(row)

    # how the tool shows a record's id, where it is not the id scheme's (a hash of a field: Mailchimp's members)
    shown_id: Callable[["Table", int], Any] | None = None

    def public_id(self, row: int) -> Any:
        return self.shown_id(self, row) if self.shown_id else self.id(row)

    def row_of(self, record_id: object) -> int | None:
        row = self.ids.row(record_id)
        return row if row is not None and row < len(self) else None

    def live(self, row: int | None) -> int | None:
        """The row unless it is missing or deleted: vendors match writes against live records only."""
        return row if row is not None and not self.deleted[row] else None

    def fields(self, row: int) -> dict[str, Any]:
        """The row's current field values (generated or written, then changed)."""
        base = self.render_base(self, row) if row < self.n_base else dict(self.extra[row - self.n_base])
        changes = self.overrides.get(row)
        if changes:
            base.update(changes)
        return base

    def touched(self, row: int) -> bool:
        """True when the row's fields no longer follow its code columns (written or changed)."""
        return row >= self.n_base or row in self.overrides

    def update(self, row: int, changes: dict[str, Any], now_ms: int) -> None:
        for field, index in self._indexes.items():
            if field in changes:
                old = _index_key(self.fields(row).get(field))
                if index.get(old) == row:
                    del index[old]
                new = _index_key(changes[field])
                if new is not None:
                    index.setdefault(new, row)
        self.overrides.setdefault(row, {}).update(changes)
        self.touch(row, now_ms)

    def touch(self, row: int, now_ms: int) -> None:
        self.modified[row] = max(now_ms, int(self.modified[row]) + 1)
        self.version += 1

    def set_deleted(self, row: int, deleted: bool, now_ms: int) -> None:
        self.deleted[row] = deleted
        self.touch(row, now_ms)

    def append(self, fields: dict[str, Any], now_ms: int, codes: dict[str, int] | None = None) -> int:
        """Add a written record; returns its row."""
        row = len(self)
        self.created = self._appended("created", self.created, now_ms)
        self.modified = self._appended("modified", self.modified, now_ms)
        self.person = self._appended("person", self.person, -1)
        self.deleted = self._appended("deleted", self.deleted, False)
        self.invalid = self._appended("invalid", self.invalid, 0)
        for name, column in self.codes.items():
            self.codes[name] = self._appended(f"codes.{name}", column, (codes or {}).get(name, -1))
        self.extra.append(dict(fields))
        for field, index in self._indexes.items():
            key = _index_key(fields.get(field))
            if key is not None:
                index.setdefault(key, row)
        self.version += 1
        return row

    def _appended(self, name: str, values: np.ndarray, value: Any) -> np.ndarray:
        """``values`` and ``value`` after it, as a view of a buffer that doubles when full: appending row after row
        (a batch of creates) costs what it adds, where copying the column for each row grew with its length. A
        column replaced since (the world's build does) starts a buffer of its own."""
        count, buffer = len(values), self._buffers.get(name)
        if buffer is None or values.base is not buffer or len(buffer) <= count:
            buffer = np.empty(max(64, 2 * (count + 1)), values.dtype)
            buffer[:count] = values
            self._buffers[name] = buffer
        buffer[count] = value
        return buffer[:count + 1]

    def lookup(self, field: str, value: object) -> int | None:
        """Row whose `field` equals `value` (case- and space-insensitive), preferring live rows; built on first use."""
        index = self._indexes.get(field)
        if index is None:
            index = {}
            for row in np.argsort(self.deleted, kind="stable").tolist():
                key = _index_key(self.fields(row).get(field))
                if key is not None:
                    index.setdefault(key, row)
            self._indexes[field] = index
        key = _index_key(value)
        return None if key is None else index.get(key)

    def by_modified(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows sorted by (modified, row) and their modified times; cached until the table changes."""
        if self._order_cache is None or self._order_cache[0] != self.version:
            rows = np.lexsort((np.arange(len(self)), self.modified))
            self._order_cache = (self.version, rows, self.modified[rows])
        return self._order_cache[1], self._order_cache[2]

    def after_position(self, modified_ms: int, row: int) -> int:
        """Position in `by_modified()` of the first row after (modified_ms, row)."""
        rows, times = self.by_modified()
        lo = int(np.searchsorted(times, modified_ms, "left"))
        hi = int(np.searchsorted(times, modified_ms, "right"))
        return lo + int(np.searchsorted(np.sort(rows[lo:hi]), row, "right"))

    def counts(self) -> dict[str, int]:
        return {
            "total": len(self),
            "live": int((~self.deleted).sum()),
            "deleted": int(self.deleted.sum()),
            "invalid": int((self.invalid > 0).sum()),
        }


def _index_key(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None
