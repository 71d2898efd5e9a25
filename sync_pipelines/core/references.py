"""Golden references: a field that holds a tool's own id of another entity's record (a contact's account id in the
CRM, a ticket's requester id in the support desk) resolved to that record's golden id through the other entity's
crosswalk, whichever tool the value came from, so every golden record points at golden records."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

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
    columns = {"entity_id": object, "field": object, "tool": object, "value": object}
    winners = winners.astype(columns)
    # only a golden record holding a value points anywhere (one cleared in its source of truth points nowhere)
    winners = winners[winners["value"].notna() & winners["field"].isin(list(referenced))].drop_duplicates(
        ["entity_id", "field"])
    if winners.empty:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    first = _looked_up(winners, crosswalk_of, referenced)
    if first.empty:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    resolved = first[first["referenced_id"].notna()].assign(via=VIA_GOLDEN)
    missing = first[first["referenced_id"].isna()]
    pairs = missing[["entity_id", "field"]]
    others = members_of(pairs).astype(columns).dropna(subset=["value"]).merge(pairs) if len(pairs) else pairs
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
