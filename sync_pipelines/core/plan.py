"""Write-back planning: compare golden records with what a tool holds, and send only the differences.

What a tool holds is its landing table (already mapped to canonical fields), so the comparison is canonical to
canonical; only the changed fields travel, mapped back through the stack's field mapping. A ledger of what was
written makes a rerun before the next extraction a no-op instead of a second write. A destination that may create
gets the golden records it holds no record of, as far as its filter lets them through. Each destination's field
policies decide what may be written over what its people filled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sync_pipelines.core import conditions

if TYPE_CHECKING:
    from sync_pipelines.stack import Stream

# Transforms whose output can be written back as the tool's value unchanged (they only clean the value).
_CLEANING = {"trim", "lower", "upper", "title", "phone_e164", "utc", "domain"}
PLAN_COLUMNS = ["action", "entity_id", "source_id", "changes", "before", "held_back"]
GOLDEN_SUFFIX = "__golden"  # the golden value of a field, beside the tool's, while a write-back is planned
CLEAR = ""  # a change that empties the field: golden text is never empty (``_texts``), so it cannot be a value
CLEAR_NEVER = "clear never"  # what held back a clear under ``clear: never``
HELD_BY_FILTER = "filter"  # why a golden record the tool lacks was not created
HELD_WITHOUT_KEY = "no key"  # a create the tool could not match on its key (the key's field is empty)
HELD_BY_DUPLICATE_KEY = "key shared by another create"
HELD_BY_TAKEN_KEY = "key held by a tool record of another golden record"


def writable_fields(stream: Stream) -> dict[str, list[str]]:
    """Tool path → the canonical fields that compose it, for every path the mapping can invert."""
    by_path: dict[str, list] = defaultdict(list)
    for mapping in stream.fields:
        by_path[mapping.source].append(mapping)
    writable = {}
    for path, mappings in by_path.items():
        if len(mappings) == 1 and set(mappings[0].transforms) <= _CLEANING:
            writable[path] = [mappings[0].to]
        elif len(mappings) == 2:
            first = next((m for m in mappings if "first_word" in m.transforms), None)
            rest = next((m for m in mappings if "rest_words" in m.transforms), None)
            if first and rest:  # a full name split into first and last: join them back
                writable[path] = [first.to, rest.to]
    return writable


def tool_text(value) -> str | None:
    """A value as the tool would show it, None when empty or missing: how write-back and echo detection compare."""
    if value is None or (not isinstance(value, str) and pd.isna(value)) or value == "":
        return None
    return str(value)


def _texts(values: pd.Series) -> pd.Series:
    """``tool_text`` of a whole column, vectorised: what the tool would show, None when empty or missing."""
    text = values.astype("string")
    return text.astype(object).where(text.notna() & (text != ""), None)


def plan_writes(
    golden: pd.DataFrame,
    crosswalk: pd.DataFrame,
    current: pd.DataFrame,
    fields: list[str],
    tool: str,
    ledger: pd.DataFrame | None = None,
    composed: list[list[str]] = (),
    policies: Mapping[str, Any] | None = None,
    cleared: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per live record of the tool linked to a golden entity: ``update`` (with its changes),
    ``unchanged``, or ``duplicate`` (another record of the same tool holds that entity and gets the update).

    ``golden`` is indexed by entity id; ``crosswalk`` links entity ids to ``(_source, _source_id)``; ``current`` is
    the tool's landing rows. A golden value that is empty never erases a value the tool holds, unless it is a
    golden clear (``cleared``: ``entity_id, field`` pairs a source emptied): then the change is ``CLEAR``.
    ``ledger`` rows (``source_id, field, value, written_at``) are writes not yet seen by an extraction: a value
    already sent is not sent again until the tool has been re-read. ``composed`` lists the fields one tool value
    holds together (a full name of first and last): they are compared as the tool holds them, joined, since a
    value split on reading ("Mary Ann" "Williams" read back as "Mary" "Ann Williams") would otherwise differ on
    every run and be written again forever. ``policies`` maps a field to its ``write`` (own, fill_if_empty,
    never) and ``clear`` (allow, never) policy; a field not named is owned. Each row also carries ``before``
    (the tool's values of the fields it changes, None where it held nothing) and ``held_back`` (field → the
    policy that kept a wanted change from being sent).
    """
    links = crosswalk[crosswalk["_source"] == tool][["entity_id", "_source_id"]]
    live = current[~current["_deleted"].astype(bool)]
    held = links.merge(live[["_source_id", "_updated_at", "_extracted_at", *fields]], on="_source_id", how="inner")
    # an index lookup, not ``isin``: pandas checks Arrow-backed strings against a set one Python object at a time
    held = held[golden.index.get_indexer(held["entity_id"]) >= 0].rename(
        columns={"_source_id": "source_id", "_extracted_at": "extracted_at"})
    # Duplicates inside one tool: only its most recently changed record receives the golden values; writing
    # them to every copy would break the tool's unique keys (HubSpot emails) and hide the duplicate.
    held = held.sort_values(["_updated_at", "source_id"], ascending=[False, True], kind="stable")
    duplicate = held.duplicated("entity_id")
    latest = None
    if ledger is not None and len(ledger):
        latest = ledger.sort_values("written_at").drop_duplicates(["source_id", "field"], keep="last")
    records = held[~duplicate].join(golden[fields].add_suffix(GOLDEN_SUFFIX), on="entity_id").reset_index(drop=True)
    held_as_is = {}  # field -> rows whose composed tool value already reads as the golden one
    for group in composed:
        same = (_joined(records, [f + GOLDEN_SUFFIX for f in group]) == _joined(records, group)).to_numpy()
        held_as_is.update({name: same for name in group})
    wanted, before, held_back = {}, {}, {}
    for name in fields:  # column by column: the golden value where it differs from what the tool holds
        value, have = _texts(records[name + GOLDEN_SUFFIX]), _texts(records[name])
        differs = (value.notna() & (value != have)).to_numpy(bool, copy=True)
        clears = np.zeros(len(records), bool)
        if cleared is not None:  # a golden clear empties what the tool holds; a mere gap changes nothing
            emptied = pd.Index(cleared.loc[cleared["field"] == name, "entity_id"].unique())
            clears = (emptied.get_indexer(records["entity_id"]) >= 0) & (value.isna() & have.notna()).to_numpy(bool)
        if name in held_as_is:
            differs &= ~held_as_is[name]
            clears &= ~held_as_is[name]
        if latest is not None:  # already written and the tool not re-read since: do not send it again
            sent = records[["source_id", "extracted_at"]].merge(
                latest[latest["field"] == name][["source_id", "value", "written_at"]], on="source_id", how="left")
            after_read = (pd.to_datetime(sent["extracted_at"], utc=True)
                          < pd.to_datetime(sent["written_at"], utc=True)).to_numpy(bool)
            same = (sent["value"].astype("object") == value.astype("object")).to_numpy(bool)
            differs &= ~(same & after_read)
            clears &= ~(sent["value"].isna().to_numpy(bool) & after_read)
        send, blocked = _apply_policy((policies or {}).get(name), differs, clears, have.notna().to_numpy(bool))
        wanted[name] = value.where(send & differs, None).where(~(send & clears), CLEAR)
        before[name] = have.where(send)
        held_back[name] = blocked
    changed = {name: column.notna().to_numpy(bool) for name, column in wanted.items()}
    changes = _per_row(wanted, changed, len(records))
    befores = _per_row(before, changed, len(records))
    holds = _per_row(held_back, {name: column.notna().to_numpy(bool) for name, column in held_back.items()},
                     len(records))
    copies = held[duplicate]
    none = [{} for _ in range(len(copies))]
    return pd.DataFrame({
        "action": np.concatenate([np.full(len(copies), "duplicate", dtype=object),
                                  np.where([bool(change) for change in changes], "update", "unchanged").astype(object)]),
        "entity_id": np.concatenate([copies["entity_id"].to_numpy(object), records["entity_id"].to_numpy(object)]),
        "source_id": np.concatenate([copies["source_id"].to_numpy(object), records["source_id"].to_numpy(object)]),
        "changes": none + changes, "before": none + befores, "held_back": none + holds,
    }, columns=PLAN_COLUMNS)


def plan_creates(golden: pd.DataFrame, linked: pd.Index, fields: list[str], policies: Mapping[str, Any] | None = None,
                 condition: conditions.Condition | None = None, key_field: str | None = None,
                 taken: pd.Index | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """One ``create`` row per live golden record (``golden`` indexed by entity id) the tool holds no record of
    (``linked``: the entity ids it has one of), carrying every non-empty field its policy lets be written; and how
    many were held back, by reason. ``condition`` (over the golden record) decides which may be created.

    A create is matched on the tool's key, so it is held back when it cannot be matched safely: its ``key_field``
    (the canonical field the key holds; None when the key is ours, the entity id) is empty; another create of this
    plan holds the same key (the tool would take both for one record); or a record of the tool no golden record
    links here already holds it (``taken``: the tool's key values, case-folded), which the upsert would overwrite."""
    live = golden[~golden["_deleted"].astype(bool)] if "_deleted" in golden.columns else golden
    candidates = live[linked.get_indexer(live.index) < 0]
    held = {}

    def hold(keep: np.ndarray, reason: str) -> None:
        nonlocal candidates
        held[reason] = int((~keep).sum())
        candidates = candidates[keep]

    if condition is not None and len(candidates):
        hold(conditions.evaluate(condition, candidates), HELD_BY_FILTER)
    if key_field is not None:
        keys = _texts(candidates[key_field])
        hold(keys.notna().to_numpy(bool), HELD_WITHOUT_KEY)
        folded = _texts(candidates[key_field]).str.casefold()
        hold(~folded.duplicated(keep=False).to_numpy(bool), HELD_BY_DUPLICATE_KEY)
        if taken is not None:
            hold(taken.unique().get_indexer(_texts(candidates[key_field]).str.casefold()) < 0, HELD_BY_TAKEN_KEY)
    written = [name for name in fields if getattr((policies or {}).get(name), "write", "own") != "never"]
    values = {name: _texts(candidates[name]) for name in written}
    changes = _per_row(values, {name: column.notna().to_numpy(bool) for name, column in values.items()},
                       len(candidates))
    none = [{} for _ in range(len(candidates))]
    plan = pd.DataFrame({"action": "create", "entity_id": candidates.index.to_numpy(object),
                         "source_id": np.full(len(candidates), None, dtype=object), "changes": changes,
                         "before": none, "held_back": [{} for _ in range(len(candidates))]}, columns=PLAN_COLUMNS)
    return plan, {reason: n for reason, n in held.items() if n}


def _apply_policy(policy: Any, differs: np.ndarray, clears: np.ndarray,
                  tool_has: np.ndarray) -> tuple[np.ndarray, pd.Series]:
    """Which wanted changes a field's policy lets through, and the policy that held back each other one."""
    write, clear = (policy.write, policy.clear) if policy is not None else ("own", "allow")
    wanted = differs | clears
    if write == "never":
        send = np.zeros(len(differs), bool)
    elif write == "fill_if_empty":  # only where the tool holds nothing: a clear always meets a held value
        send = differs & ~tool_has
    else:
        send = differs | (clears & (clear == "allow"))
    reason = np.where(clears & (write == "own"), CLEAR_NEVER, write)
    return send, pd.Series(np.where(wanted & ~send, reason, None), dtype=object)


def _joined(records: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The values of ``columns`` joined by a space, empty ones left out, as ``to_tool_record`` writes them."""
    joined = None
    for column in columns:
        part = _texts(records[column]).astype("string")
        joined = part if joined is None else joined.where(part.isna(), (joined + " " + part).fillna(part))
    return joined.astype(object).where(joined.notna(), None)


def _per_row(columns: Mapping[str, pd.Series], present: Mapping[str, np.ndarray], rows: int) -> list[dict]:
    """Per row, a dict of each column's value where ``present`` marks it (keys in column order, None for a missing
    value): a Python step per value kept only."""
    values_by_row: list[dict] = [{} for _ in range(rows)]
    for name, column in columns.items():
        kept = np.flatnonzero(present[name])
        values = column.to_numpy(dtype=object)[kept]
        values[pd.isna(values)] = None
        for row, value in zip(kept.tolist(), values.tolist()):
            values_by_row[row][name] = value
    return values_by_row


def to_tool_record(changes: dict, held: pd.Series | dict, writable: dict[str, list[str]]) -> dict:
    """The tool-shaped record carrying ``changes`` (``CLEAR`` empties a field): nested paths (``properties.email``)
    become nested dicts, and a path composed of several fields takes the others from what the tool ``held``, so a
    part a policy held back is written as the tool has it. An emptied path is None; each connector sends it the
    way its API empties a field."""
    record: dict = {}
    for path, canonical in writable.items():
        if changes.keys().isdisjoint(canonical):
            continue
        parts = [tool_text(changes[f] if f in changes else held.get(f)) for f in canonical]
        value = " ".join(p for p in parts if p) or None
        node = record
        *parents, leaf = path.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return record


UNRESOLVED_REFERENCE = "unresolved reference"  # what held back a reference the destination holds no record of
REFERENCE_HOLD_COLUMNS = ["entity_id", "field", "referenced_entity", "referenced_id", "reason"]


def translate_references(golden: pd.DataFrame, references: pd.DataFrame, targets: pd.DataFrame,
                         held: pd.DataFrame, referenced: Mapping[str, str], tool: str) -> tuple[pd.DataFrame,
                                                                                                pd.DataFrame]:
    """``golden`` with each reference field holding ``tool``'s own id of the golden record it points at, and the
    references held back because ``tool`` has no record of it (or it points at no golden record).

    A golden reference is one tool's raw id; another tool holds its own record of the same golden record, under
    its own id, and only that may be written there. ``golden`` is indexed by entity id; ``references`` are the
    stored references of those records (``entity_id, field, referenced_entity, referenced_id``); ``targets`` the
    referenced entities' crosswalk rows of ``tool`` (``referenced_entity, entity_id, _source_id``); ``held`` what
    ``tool`` holds of each reference field now (``entity_id, field, value``), kept when it is already one of its
    records of the right golden record (a tool may hold that record twice); ``referenced``: field -> the entity it
    references. A held-back field is emptied, so nothing is written over what the tool holds."""
    translated = golden.copy()
    holds = []
    for name, entity in referenced.items():
        if name not in translated.columns:
            continue
        wanted = translated[name].notna()
        links = references[(references["field"] == name)].drop_duplicates("entity_id").set_index("entity_id")
        pointed = links["referenced_id"].reindex(translated.index).where(wanted)
        ids = targets[targets["referenced_entity"] == entity][["entity_id", "_source_id"]].rename(
            columns={"entity_id": "referenced_id", "_source_id": "value"}).astype(str)
        kept = held[held["field"] == name][["entity_id", "value"]].dropna().astype(str).assign(
            referenced_id=lambda f: pointed.reindex(f["entity_id"]).to_numpy()).merge(ids, on=["referenced_id",
                                                                                              "value"])
        first = ids.sort_values("value", kind="stable").drop_duplicates("referenced_id").set_index(
            "referenced_id")["value"]
        own = pd.Series(first.reindex(pointed).to_numpy(object), index=translated.index)
        own.update(kept.drop_duplicates("entity_id").set_index("entity_id")["value"])
        own = own.where(pointed.notna())
        translated[name] = own.astype(object).where(own.notna(), None)
        missing = wanted & own.isna()
        if missing.any():
            target = pointed[missing]
            holds.append(pd.DataFrame({
                "entity_id": target.index, "field": name, "referenced_entity": entity,
                "referenced_id": target.to_numpy(object),
                "reason": [f"{UNRESOLVED_REFERENCE}: {entity} {gid} has no record in {tool}" if pd.notna(gid) else
                           f"{UNRESOLVED_REFERENCE}: {translated_value} points at no golden {entity}"
                           for gid, translated_value in zip(target.to_numpy(object),
                                                            golden.loc[missing, name].to_numpy(object))]}))
    held_back = pd.concat(holds, ignore_index=True) if holds else pd.DataFrame(columns=REFERENCE_HOLD_COLUMNS)
    return translated, held_back


def hold_back_references(plan: pd.DataFrame, held_back: pd.DataFrame) -> pd.DataFrame:
    """``plan`` with each held-back reference named in its record's ``held_back`` (field -> why), so ``plan`` shows
    what was not written and why."""
    if held_back.empty or plan.empty:
        return plan
    reasons: dict[str, dict] = defaultdict(dict)
    for entity_id, name, reason in zip(held_back["entity_id"], held_back["field"], held_back["reason"]):
        reasons[entity_id][name] = reason
    live = plan["action"].isin(["update", "unchanged", "create"]).to_numpy(bool)
    plan = plan.copy()
    plan["held_back"] = [{**holds, **reasons.get(entity_id, {})} if is_live else holds
                         for holds, entity_id, is_live in zip(plan["held_back"], plan["entity_id"], live)]
    return plan
