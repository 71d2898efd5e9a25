"""Golden references: a field that holds a tool's own id of another entity's record (a contact's account id in the
CRM, a ticket's requester id in the support desk) resolved to that record's golden id through the other entity's
crosswalk, whichever tool the value came from, so every golden record points at golden records; or a field that
names one by a matching key (a company's name, where a tool holds no id of it)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from sync_pipelines.core.normalize import apply_transforms

REFERENCE_COLUMNS = ["entity_id", "field", "referenced_entity", "referenced_id", "tool", "source_id", "via"]
# How a reference was resolved: the golden value's own record, another member's value (the golden value's tool
# holds no record of the referenced entity under it), or not at all (no record of any tool's value is known).
VIA_GOLDEN, VIA_MEMBER, UNRESOLVED = "golden value", "member", "unresolved"
VALUE_COLUMNS = ["entity_id", "field", "tool", "value"]


CrosswalkOf = Callable[[str, pd.DataFrame], "pd.DataFrame | None"]


def _looked_up(values: pd.DataFrame, crosswalk_of: CrosswalkOf, referenced: dict[str, str]) -> pd.DataFrame:
    """``values`` with ``referenced_entity`` and ``referenced_id`` (missing where the tool has no such record), and
    only the rows of entities that have a crosswalk."""
    values = values.assign(referenced_entity=values["field"].map(referenced), value=values["value"].astype(str))
    parts = []
    for entity, part in values.groupby("referenced_entity", sort=False):
        crosswalk = crosswalk_of(entity, part[["tool", "value"]].drop_duplicates())
        if crosswalk is None:
            continue
        found = crosswalk.rename(columns={"entity_id": "referenced_id", "_source": "tool", "_source_id": "value"})
        parts.append(part.merge(found[["referenced_id", "tool", "value"]], on=["tool", "value"], how="left"))
    return pd.concat(parts, ignore_index=True) if parts else values.iloc[:0].assign(referenced_id=None)


_VALUE_TYPES = {"entity_id": object, "field": object, "tool": object, "value": object}


def _held_values(winners: pd.DataFrame, fields) -> pd.DataFrame:
    """The golden values of ``fields``, one per golden record and field, where the golden record holds one: one
    cleared in its source of truth points nowhere."""
    winners = winners.astype(_VALUE_TYPES)
    return winners[winners["value"].notna() & winners["field"].isin(list(fields))].drop_duplicates(
        ["entity_id", "field"])


def resolve_references(winners: pd.DataFrame, members_of: Callable[[pd.DataFrame], pd.DataFrame],
                       crosswalk_of: CrosswalkOf, referenced: dict[str, str], priority: list[str]) -> pd.DataFrame:
    """One row per (golden record, reference field) whose golden value is not empty.

    ``winners``: the golden value of each reference field and the tool it came from (``VALUE_COLUMNS``);
    ``members_of``: given (``entity_id``, ``field``) pairs, their member records' values (the same columns), asked
    only for the golden values that do not resolve, so the usual case is one join and no member read;
    ``crosswalk_of``: given a referenced entity and (``tool``, ``value``) pairs, the rows of its crosswalk
    (``entity_id``, ``_source``, ``_source_id``) that hold them, or None when that entity has none;
    ``referenced``: field -> the entity it references;
    ``priority``: the tools in survivorship order. The golden value's own tool resolves it when that tool's record is
    known; else the first member value that resolves, tools in ``priority`` order (then by id, so reruns agree); an
    unresolved one keeps the golden value and its tool, the id a steward would look for."""
    winners = _held_values(winners, referenced)
    if winners.empty:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    first = _looked_up(winners, crosswalk_of, referenced)
    if first.empty:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    resolved = first[first["referenced_id"].notna()].assign(via=VIA_GOLDEN)
    missing = first[first["referenced_id"].isna()]
    pairs = missing[["entity_id", "field"]]
    others = members_of(pairs).astype(_VALUE_TYPES).dropna(subset=["value"]).merge(pairs) if len(pairs) else pairs
    if len(others):
        others = _looked_up(others, crosswalk_of, referenced)
        others = others[others["referenced_id"].notna()]
        others = others.assign(rank=others["tool"].map({tool: i for i, tool in enumerate(priority)}).fillna(
            len(priority)))
        others = others.sort_values(["entity_id", "field", "rank", "tool", "value"], kind="stable").drop_duplicates(
            ["entity_id", "field"]).drop(columns="rank").assign(via=VIA_MEMBER)
    rescued = pd.MultiIndex.from_frame(others[["entity_id", "field"]]) if len(others) else pd.MultiIndex.from_tuples(
        [], names=["entity_id", "field"])
    unresolved = missing[~pd.MultiIndex.from_frame(missing[["entity_id", "field"]]).isin(rescued)].assign(
        via=UNRESOLVED)
    links = pd.concat([part for part in (resolved, others, unresolved) if len(part)], ignore_index=True)
    links = links.sort_values(["entity_id", "field"], kind="stable", ignore_index=True)
    return links.rename(columns={"value": "source_id"})[REFERENCE_COLUMNS]


# A key reference's rows: resolved by its key, or by an id reference of the same record to the same entity (which
# wins over the key; the key's own finding stays in ``key_points_at``).
VIA_KEY, VIA_ID = "key", "id reference"
KEY_REFERENCE_COLUMNS = [*REFERENCE_COLUMNS, "key_points_at", "unresolved_because"]
AMBIGUOUS, NO_HOLDER, NO_KEY = "ambiguous key", "no record holds the key", "the value gives no key"
KeysOf = Callable[[str, str, pd.Series], pd.DataFrame]


def resolve_key_references(winners: pd.DataFrame, keys_of: KeysOf, matched: dict[str, tuple[str, str, list[str]]],
                           id_links: pd.DataFrame) -> pd.DataFrame:
    """One row per (golden record, key reference field) whose golden value is not empty.

    ``winners``: the golden value of each field and its tool (``VALUE_COLUMNS``); ``matched``: field -> (the
    entity it references, the field of that entity holding the key, the transforms making the value a key);
    ``keys_of``: given an entity, its key field and keys, the (``entity_id``, ``key``) pairs of its live golden
    records holding them (through any member); ``id_links``: the id references of the same records
    (``REFERENCE_COLUMNS``). A key held by exactly one golden record points at it; one held by none, or by two
    (ambiguous: precision first), points nowhere and says why. ``source_id`` is the key, so a change of what holds
    it can find the references it reaches."""
    winners = _held_values(winners, matched)
    if winners.empty:
        return pd.DataFrame(columns=KEY_REFERENCE_COLUMNS)
    parts = []
    for field, part in winners.groupby("field", sort=True):
        entity, by, via = matched[field]
        keys = apply_transforms(part["value"].reset_index(drop=True), via).astype(object)
        keys = keys.where(keys.notna() & keys.ne(""), None).tolist()
        part = part.assign(referenced_entity=entity, source_id=keys)
        wanted = part["source_id"].dropna().drop_duplicates()
        held = keys_of(entity, by, wanted) if len(wanted) else pd.DataFrame(columns=["entity_id", "key"])
        holders = held.drop_duplicates(["entity_id", "key"]).groupby("key")["entity_id"]
        count, first = holders.size(), holders.min()
        n = part["source_id"].map(count).fillna(0).astype(int)
        part = part.assign(key_points_at=part["source_id"].map(first).where(n == 1, None))
        why = pd.Series(NO_HOLDER, index=part.index, dtype=object).mask(n > 1, n.map(
            lambda k: f"{AMBIGUOUS}: {k} golden records hold it")).mask(part["source_id"].isna(), NO_KEY)
        parts.append(part.assign(unresolved_because=why.where(part["key_points_at"].isna(), None)))
    links = pd.concat(parts, ignore_index=True)
    # an id reference of the same record to the same entity wins: a tool's own link beats a name
    by_id = id_links.dropna(subset=["referenced_id"]).sort_values(["entity_id", "field"], kind="stable")
    by_id = by_id.drop_duplicates(["entity_id", "referenced_entity"]).set_index(
        ["entity_id", "referenced_entity"])["referenced_id"]
    winning = by_id.reindex(pd.MultiIndex.from_frame(links[["entity_id", "referenced_entity"]])).to_numpy()
    has_id = pd.notna(winning)
    links["referenced_id"] = links["key_points_at"].where(~has_id, winning)
    links["via"] = UNRESOLVED
    links.loc[links["key_points_at"].notna(), "via"] = VIA_KEY
    links.loc[has_id, "via"] = VIA_ID
    links.loc[has_id, "unresolved_because"] = None
    links = links.sort_values(["entity_id", "field"], kind="stable", ignore_index=True)
    return links[KEY_REFERENCE_COLUMNS]
