"""Golden references: ``references_<entity>`` says, for each golden record and each of its reference fields
(``references: <entity>`` in the stack), the golden id of the record it points at (core/references.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from sync_pipelines.core.changes import KEYS
from sync_pipelines.core.references import UNRESOLVED, VALUE_COLUMNS, resolve_references
from sync_pipelines.pipeline.common import entity_streams, resolved_entities, stack_fingerprint, table
from sync_pipelines.stack import Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name


def reference_fields(stack: Stack, entity: str) -> dict[str, str]:
    """The entity's fields that reference a resolved entity: field -> that entity."""
    resolved = set(resolved_entities(stack))
    return {name: spec.references for name, spec in stack.entities[entity].fields.items()
            if spec.references in resolved}


@dataclass
class References:
    entity: str
    rebuilt: bool = False  # False: neither this entity's golden records nor those it references changed
    # per field: golden records holding a value, and those whose value resolved to a golden id
    holding: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    unresolved_because: dict[str, int] = field(default_factory=dict)  # why -> how many
    unresolved_samples: pd.DataFrame = field(default_factory=pd.DataFrame)


def link_references(stack: Stack, warehouse: Warehouse, entity: str) -> References:
    """Rebuild ``references_<entity>`` when this entity's golden records or those of an entity it references
    changed since the last time (their ``golden_changes`` logs moved), in one transaction with its watermark.

    Every live golden record is resolved again: a merge or split of the referenced entity moves references of
    records that did not change themselves, and a join over the crosswalks costs less than finding those."""
    referenced = reference_fields(stack, entity)
    name, out = f"references_{entity}", table("references", entity)
    involved = sorted({entity, *referenced.values()})
    batches = {e: warehouse.last_batch(table("golden_changes", e)) for e in involved}
    fingerprint = stack_fingerprint(referenced, stack.survivorship[entity].priority)
    mark = warehouse.watermark(name)
    if mark is not None and mark == {"fingerprint": fingerprint, "batches": batches} and warehouse.has_table(out):
        return _summary(warehouse, entity, referenced, rebuilt=False)
    fields = list(referenced)
    golden = warehouse.read_table(table("golden", entity), ["entity_id", "_deleted"])
    live = golden.loc[~golden["_deleted"].astype(bool), "entity_id"]
    provenance = warehouse.read_where_in(table("provenance", entity), "field", fields,
                                         ["entity_id", "field", "tool", "value"])
    winners = provenance[provenance["entity_id"].isin(live)]
    crosswalk = warehouse.read_table(table("crosswalk", entity), ["entity_id", *KEYS])
    staged = warehouse.read_table(table("staged", entity), [*KEYS, *fields])
    members = crosswalk[crosswalk["entity_id"].isin(live)].merge(staged, on=KEYS).melt(
        id_vars=["entity_id", *KEYS], value_vars=fields, var_name="field", value_name="value").rename(
        columns={"_source": "tool"})[VALUE_COLUMNS]
    targets = {e: warehouse.read_table(table("crosswalk", e), ["entity_id", *KEYS]) for e in set(referenced.values())}
    links = resolve_references(winners, members, targets, referenced, stack.survivorship[entity].priority)
    links["unresolved_because"] = _why_unresolved(stack, warehouse, links)
    with warehouse.transaction() as conn:
        warehouse.replace_within(conn, out, links, index=("entity_id",))
        warehouse.save_watermark(conn, name, {"fingerprint": fingerprint, "batches": batches})
    return _summary(warehouse, entity, referenced, rebuilt=True, links=links)


def _why_unresolved(stack: Stack, warehouse: Warehouse, links: pd.DataFrame) -> pd.Series:
    """For each unresolved reference, why the record it names has no golden record: deleted in its tool, held in
    quarantine, or never landed (None for a resolved one). Only the few unresolved ids are read."""
    why = pd.Series(None, index=links.index, dtype=object)
    unresolved = links[links["via"] == UNRESOLVED]
    quarantine = warehouse.read_if_exists("quarantine") if len(unresolved) else None
    for (entity, tool), part in unresolved.groupby(["referenced_entity", "tool"]):
        landed = pd.concat([warehouse.read_where_in(landing_table_name(t, stream), "_source_id", part["source_id"],
                                                    ["_source_id", "_deleted"])
                            for t, stream in entity_streams(stack, entity) if t == tool]
                           or [pd.DataFrame(columns=["_source_id", "_deleted"])], ignore_index=True)
        deleted = set(landed.loc[landed["_deleted"].astype(bool), "_source_id"])
        held = set() if quarantine is None else set(
            quarantine.loc[quarantine["_source"] == tool, "_source_id"].astype(str))
        why[part.index] = [f"deleted in {tool}" if i in deleted else "held in quarantine" if i in held
                           else "not resolved yet" if i in set(landed["_source_id"]) else f"not in {tool}'s data"
                           for i in part["source_id"]]
    return why


def _summary(warehouse: Warehouse, entity: str, referenced: dict[str, str], rebuilt: bool,
             links: pd.DataFrame | None = None) -> References:
    links = warehouse.read_table(table("references", entity)) if links is None else links
    unresolved = links[links["via"] == UNRESOLVED]
    return References(entity, rebuilt=rebuilt,
                      holding={f: int((links["field"] == f).sum()) for f in referenced},
                      resolved={f: int(((links["field"] == f) & (links["via"] != UNRESOLVED)).sum())
                                for f in referenced},
                      unresolved_because={str(k): int(n) for k, n in
                                          unresolved["unresolved_because"].value_counts().items()},
                      unresolved_samples=unresolved.head(10))
