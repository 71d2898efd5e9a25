"""What every step shares: table names, the entity's streams, landed rows since a batch, a fingerprint of
the stack settings a step's stored results depend on."""

from __future__ import annotations

import hashlib
import json
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


