"""Golden references: ``references_<entity>`` says, for each golden record and each of its reference fields
(``references: <entity>`` in the stack, or ``references: {entity, by, via}``, a matching key), the golden id of the
record it points at (core/references.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from sync_pipelines.core.changes import KEYS
from sync_pipelines.core.references import (
    AMBIGUOUS, KEY_REFERENCE_COLUMNS, UNRESOLVED, VALUE_COLUMNS, resolve_key_references, resolve_references,
)
from sync_pipelines.pipeline.common import StepMark, entity_streams, resolved_entities, table
from sync_pipelines.stack import KeyReference, Stack
from sync_pipelines.warehouse import Warehouse, landing_table_name


def reference_fields(stack: Stack, entity: str) -> dict[str, str]:
    """The entity's fields that hold a tool's id of a resolved entity's record: field -> that entity."""
    resolved = set(resolved_entities(stack))
    return {name: spec.references for name, spec in stack.entities[entity].fields.items()
            if spec.references in resolved}


def key_reference_fields(stack: Stack, entity: str) -> dict[str, KeyReference]:
    """The entity's fields that name a resolved entity's record by a matching key: field -> how."""
    resolved = set(resolved_entities(stack))
    return {name: spec.key_reference for name, spec in stack.entities[entity].fields.items()
            if spec.key_reference is not None and spec.key_reference.entity in resolved}


def referenced_entities(stack: Stack, entity: str) -> set[str]:
    """The entities the entity's references point at, by id or by key (empty: no references asset)."""
    return {*reference_fields(stack, entity).values(), *(k.entity for k in key_reference_fields(stack, entity).values())}


@dataclass
class References:
    entity: str
    rebuilt: bool = False  # False: neither this entity's golden records nor those it references changed
    # per field: golden records holding a value, and those whose value resolved to a golden id
    holding: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)
    ambiguous: dict[str, int] = field(default_factory=dict)  # per key reference field: keys two records hold
    unresolved_because: dict[str, int] = field(default_factory=dict)  # why -> how many
    unresolved_samples: pd.DataFrame = field(default_factory=pd.DataFrame)


# An incremental run resolves again only the records a change can reach; past this share of the live golden
# records it resolves them all (one join over the crosswalks costs less than reading that many by id).
FULL_RELINK_SHARE = 0.3


def link_references(stack: Stack, warehouse: Warehouse, entity: str) -> References:
    """Bring ``references_<entity>`` up to date with this entity's golden records and those it references, in one
    transaction with its watermark.

    The first run (and one after the reference fields or the tool priority changed) resolves every live golden
    record; later runs only those whose own golden record changed since, those pointing at a referenced golden
    record that changed (a merge or split there moves references of records that did not change), those whose
    reference names a tool record of such a changed one, and those still unresolved; nothing when neither log moved."""
    referenced, keyed = reference_fields(stack, entity), key_reference_fields(stack, entity)
    name, out = f"references_{entity}", table("references", entity)
    involved = sorted({entity, *referenced_entities(stack, entity)})
    batches = {e: warehouse.last_batch(table("golden_changes", e)) for e in involved}
    mark = StepMark.read(warehouse, name, (referenced, stack.survivorship[entity].priority, keyed), keeps=[out])
    if mark.valid and mark.position("batches") == batches:
        return _summary(warehouse, entity, list(referenced), list(keyed), rebuilt=False)
    golden_table = table("golden", entity)
    scope = _scope(warehouse, entity, referenced, keyed, mark.position("batches")) if mark.valid else None
    if scope is not None and len(scope) > FULL_RELINK_SHARE * max(warehouse.count(golden_table, _deleted=False), 1):
        scope = None
    # the live golden records to resolve: all of them, or those of the scope, read by id
    golden = warehouse.read_table(golden_table, ["entity_id", "_deleted"]) if scope is None else \
        warehouse.read_where_in(golden_table, "entity_id", scope, ["entity_id", "_deleted"])
    ids = set(golden.loc[~golden["_deleted"].astype(bool), "entity_id"].tolist())
    links = _resolve(stack, warehouse, entity, referenced, ids, full=scope is None)
    with warehouse.transaction() as conn:
        if scope is None:
            warehouse.replace_within(conn, out, links, index=("entity_id",))
        else:
            warehouse.delete_where_in(conn, out, "entity_id", scope)
            warehouse.insert(conn, out, links)
        mark.commit(warehouse, conn, batches=batches)
    return _summary(warehouse, entity, list(referenced), list(keyed), rebuilt=True)


def _scope(warehouse: Warehouse, entity: str, referenced: dict[str, str], keyed: dict[str, KeyReference],
           seen: dict[str, int]) -> set[str] | None:
    """The golden ids of ``entity`` whose references a change since the batches ``seen`` can reach; None when a
    log says everything changed (a full rebuild there)."""
    def changed(of: str) -> set[str] | None:
        log = warehouse.read_log(table("golden_changes", of), int(seen.get(of, 0)))
        if log is None or log["entity_id"].isna().any():
            return None
        return set(log["entity_id"])

    scope = changed(entity)
    if scope is None:
        return None
    out, wanted = table("references", entity), ["entity_id", "referenced_entity", "tool", "source_id"]
    scope |= set(warehouse.read_where_in(out, "via", [UNRESOLVED], ["entity_id"])["entity_id"])
    for target in sorted({*referenced.values(), *(k.entity for k in keyed.values())}):
        moved = changed(target)
        if moved is None:
            return None
        if not moved:
            continue
        # only the stored references a change of the target can reach are read, never the whole table
        pointing = warehouse.read_where_in(out, "referenced_id", moved, ["entity_id"])
        members = warehouse.read_where_in(table("crosswalk", target), "entity_id", moved, KEYS)
        named = warehouse.read_where_in(out, "source_id", members["_source_id"], wanted)
        named = named[(named["referenced_entity"] == target) & pd.MultiIndex.from_frame(
            named[["tool", "source_id"]]).isin(pd.MultiIndex.from_frame(members))]
        scope |= set(pointing["entity_id"]) | set(named["entity_id"])
        # a key reference names a key: those a moved record's members hold (a key that became ambiguous, too)
        for by in sorted({k.by for k in keyed.values() if k.entity == target}):
            held = warehouse.read_keys(table("staged", target), members, [*KEYS, by])[by].dropna()
            fields = [f for f, k in keyed.items() if k.entity == target and k.by == by]
            named = warehouse.read_where_in(out, "source_id", held.unique(), ["entity_id", "field"])
            scope |= set(named.loc[named["field"].isin(fields), "entity_id"])
    return scope


def _resolve(stack: Stack, warehouse: Warehouse, entity: str, referenced: dict[str, str], ids: set[str],
             full: bool) -> pd.DataFrame:
    """The references of the golden records ``ids`` (all live ones when ``full``: whole tables are read instead
    of rows by id), by id (``referenced``) and by key (the stack's), with why each unresolved one is. Member
    records are read only for golden id values that do not resolve."""
    keyed = key_reference_fields(stack, entity)
    fields = [*referenced, *keyed]
    provenance = warehouse.read_where_in(table("provenance", entity), "field", fields,
                                         ["entity_id", "field", "tool", "value"]) if full else \
        warehouse.read_where_in(table("provenance", entity), "entity_id", ids,
                                ["entity_id", "field", "tool", "value"])
    live = pd.Index(list(ids), dtype="str").get_indexer(provenance["entity_id"]) >= 0  # isin goes value by value
    winners = provenance[provenance["field"].isin(fields) & live
                         & provenance["value"].notna()]
    whole = {target: warehouse.read_table(table("crosswalk", target), ["entity_id", *KEYS])
             for target in set(referenced.values())} if full else {}

    def crosswalk_of(target: str, pairs: pd.DataFrame) -> pd.DataFrame:
        if full:
            return whole[target]
        return warehouse.read_keys(table("crosswalk", target), pd.DataFrame(
            {"_source": pairs["tool"], "_source_id": pairs["value"]}), ["entity_id", *KEYS])

    def members_of(pairs: pd.DataFrame) -> pd.DataFrame:
        crosswalk = warehouse.read_where_in(table("crosswalk", entity), "entity_id", pairs["entity_id"].unique(),
                                            ["entity_id", *KEYS])
        staged = warehouse.read_keys(table("staged", entity), crosswalk[KEYS], [*KEYS, *fields])
        return crosswalk.merge(staged, on=KEYS).melt(
            id_vars=["entity_id", *KEYS], value_vars=fields, var_name="field", value_name="value").rename(
            columns={"_source": "tool"})[VALUE_COLUMNS]

    links = resolve_references(winners, members_of, crosswalk_of, referenced, stack.survivorship[entity].priority)
    links = links.assign(unresolved_because=_why_unresolved(stack, warehouse, links))
    if not keyed:
        return links

    def keys_of(target: str, by: str, keys: pd.Series) -> pd.DataFrame:
        staged = warehouse.read_where_in(table("staged", target), by, keys, [*KEYS, by])  # live records only
        members = warehouse.read_keys(table("crosswalk", target), staged[KEYS], ["entity_id", *KEYS])
        golden = warehouse.read_where_in(table("golden", target), "entity_id", members["entity_id"].unique(),
                                         ["entity_id", "_deleted"])
        members = members[members["entity_id"].isin(golden.loc[~golden["_deleted"].astype(bool), "entity_id"])]
        return members.merge(staged, on=KEYS).rename(columns={by: "key"})[["entity_id", "key"]]

    by_key = resolve_key_references(winners, keys_of, {f: (k.entity, k.by, k.via) for f, k in keyed.items()}, links)
    return pd.concat([links.reindex(columns=KEY_REFERENCE_COLUMNS), by_key], ignore_index=True).sort_values(
        ["entity_id", "field"], kind="stable", ignore_index=True)


def _why_unresolved(stack: Stack, warehouse: Warehouse, links: pd.DataFrame) -> pd.Series:
    """For each unresolved reference, why the record it names has no golden record: deleted in its tool, held in
    quarantine, or never landed (None for a resolved one). Only the few unresolved ids are read."""
    why = pd.Series(None, index=links.index, dtype=object)
    unresolved = links[links["via"] == UNRESOLVED]  # id references only: a key reference says its own reason
    quarantined = warehouse.has_table("quarantine")
    for (entity, tool), part in unresolved.groupby(["referenced_entity", "tool"]):
        landed = pd.concat([warehouse.read_where_in(landing_table_name(t, stream), "_source_id", part["source_id"],
                                                    ["_source_id", "_deleted"])
                            for t, stream in entity_streams(stack, entity) if t == tool]
                           or [pd.DataFrame(columns=["_source_id", "_deleted"])], ignore_index=True)
        deleted = set(landed.loc[landed["_deleted"].astype(bool), "_source_id"])
        held = warehouse.read_where_in("quarantine", "_source_id", part["source_id"], ["_source", "_source_id"]) \
            if quarantined else pd.DataFrame(columns=["_source", "_source_id"])
        held = set(held.loc[held["_source"] == tool, "_source_id"].astype(str))
        known = set(landed["_source_id"])
        why[part.index] = [f"deleted in {tool}" if i in deleted else "held in quarantine" if i in held
                           else "not resolved yet" if i in known else f"not in {tool}'s data"
                           for i in part["source_id"]]
    return why


def _summary(warehouse: Warehouse, entity: str, by_id: list[str], by_key: list[str], rebuilt: bool) -> References:
    """Counted in the warehouse, and only the unresolved rows read: a run costs what changed."""
    out, fields = table("references", entity), [*by_id, *by_key]
    unresolved = warehouse.read_where_in(out, "via", [UNRESOLVED])
    holding = {f: warehouse.count(out, field=f) for f in fields}
    ambiguous = unresolved["unresolved_because"].fillna("").str.startswith(AMBIGUOUS)
    return References(entity, rebuilt=rebuilt, holding=holding,
                      resolved={f: holding[f] - int((unresolved["field"] == f).sum()) for f in fields},
                      ambiguous={f: int((ambiguous & (unresolved["field"] == f)).sum())
                                 for f in by_key},
                      unresolved_because={str(k): int(n) for k, n in
                                          unresolved["unresolved_because"].value_counts().items()},
                      unresolved_samples=unresolved.head(10))
