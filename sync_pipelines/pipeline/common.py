"""What every step shares: table names, the entity's streams, landed rows since a batch, and the protocol of an
incremental step (``StepMark``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from sync_pipelines.core.changes import KEYS
from sync_pipelines.resolve import IdentityRules
from sync_pipelines.stack import ENTITY_TABLE_KINDS, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name

METADATA = ["_source", "_source_stream", "_source_id", "_updated_at", "_extracted_at"]
RELEASE_COLUMNS = ["_source", "_source_stream", "_source_id", "_extracted_at"]  # what a quarantine release matches


def table(kind: str, entity: str) -> str:
    """One of an entity's tables (``ENTITY_TABLE_KINDS``, which the stack loader checks for collisions)."""
    if kind not in ENTITY_TABLE_KINDS:
        raise ValueError(f"{kind!r} is not a kind of entity table; known: {', '.join(ENTITY_TABLE_KINDS)}")
    return f"{kind}_{entity}"


def entity_streams(stack: Stack, entity: str) -> list[tuple[str, str]]:
    return [(tool, name) for tool, _, name, stream in stack.streams() if stream.entity == entity]


def resolved_entities(stack: Stack) -> list[str]:
    """Entities that get golden records: those with identity and survivorship rules."""
    return [e for e in stack.entities if e in stack.identity and e in stack.survivorship]


def stack_fingerprint(*parts: Any) -> str:
    """A digest of the stack settings a step's stored results depend on: when they change, it starts over."""
    text = json.dumps([getattr(part, "model_dump", lambda p=part: p)() for part in parts], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class StepMark:
    """The protocol every incremental step follows. Its watermark holds a fingerprint of the stack settings its
    stored results depend on and how far it has read; the step starts over (``valid`` False) on its first run, when
    those settings changed, or when a table it keeps is gone; it commits its new position in the transaction that
    writes its data, so after a crash the two never disagree."""

    name: str
    fingerprint: str
    stored: dict | None  # what the last run committed; None before the first
    valid: bool

    @classmethod
    def read(cls, warehouse: Warehouse, name: str, settings: Iterable[Any], keeps: Iterable[str] = ()) -> StepMark:
        fingerprint = stack_fingerprint(*settings)
        stored = warehouse.watermark(name)
        valid = (stored is not None and stored.get("fingerprint") == fingerprint
                 and all(warehouse.has_table(kept) for kept in keeps))
        return cls(name, fingerprint, stored, valid)

    def position(self, key: str, default: Any = None) -> Any:
        """How far the last run got, ``default`` when the step starts over."""
        return self.stored.get(key, default) if self.valid else default

    def log_since(self, warehouse: Warehouse, log: str) -> tuple[pd.DataFrame | None, int]:
        """The batches of the change log ``log`` this step has not taken in (all of them when it starts over; None
        if nothing was ever logged), and the batch to commit once it has."""
        rows = warehouse.read_log(log, self.position("batch", 0))
        last = int(rows["batch"].max()) if rows is not None and len(rows) else (self.stored or {}).get("batch", 0)
        return rows, last

    def commit(self, warehouse: Warehouse, conn, **position: Any) -> None:
        """Store the new position within the transaction that writes the step's data."""
        warehouse.save_watermark(conn, self.name, {"fingerprint": self.fingerprint, **position})


def identity_fields(stack: Stack, entity: str) -> list[str]:
    fields = list(stack.entities[entity].fields)
    return sorted(IdentityRules.from_spec(stack.identity[entity]).fields(fields)) if entity in stack.identity else []


def landed_after(warehouse: Warehouse, tool: str, stream: str, batch: int | None,
                  wanted: list[str] | None = None) -> tuple[pd.DataFrame, int | None]:
    """A stream's landed rows, all (``batch`` None) or those landed after ``batch``, without their raw payload
    (the widest column, needed only for quarantined rows: see `_with_raw`), or only the ``wanted`` columns (with
    the keys, the deleted flag and the batch); and the last batch seen."""
    landing = landing_table_name(tool, stream)
    needed = None if wanted is None else {*KEYS, "_deleted", "_landed_batch", *wanted}
    columns = [c.name for c in warehouse.landing[(tool, stream)].columns
               if c.name != "_raw" and (needed is None or c.name in needed)]
    rows = (warehouse.read_table(landing, columns) if batch is None
            else warehouse.read_after(landing, "_landed_batch", batch, columns))
    return rows, int(rows["_landed_batch"].max()) if len(rows) else batch


