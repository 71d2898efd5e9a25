"""Golden references: a field that holds a tool's own id of another entity's record (a contact's account id in the
CRM, a ticket's requester id in the support desk) resolved to that record's golden id through the other entity's
crosswalk, whichever tool the value came from, so every golden record points at golden records."""

from __future__ import annotations

import pandas as pd

REFERENCE_COLUMNS = ["entity_id", "field", "referenced_entity", "referenced_id", "tool", "source_id", "via"]
# How a reference was resolved: the golden value's own record, another member's value (the golden value's tool
# holds no record of the referenced entity under it), or not at all (no record of any tool's value is known).
VIA_GOLDEN, VIA_MEMBER, UNRESOLVED = "golden value", "member", "unresolved"
VALUE_COLUMNS = ["entity_id", "field", "tool", "value"]


def resolve_references(winners: pd.DataFrame, members: pd.DataFrame, targets: dict[str, pd.DataFrame],
                       referenced: dict[str, str], priority: list[str]) -> pd.DataFrame:
    """One row per (golden record, reference field) whose golden value is not empty.

    ``winners``: the golden value of each reference field and the tool it came from (``VALUE_COLUMNS``);
    ``members``: every member record's value of it (the same columns); ``targets``: per referenced entity, its
    crosswalk (``entity_id``, ``_source``, ``_source_id``); ``referenced``: field -> the entity it references;
    ``priority``: the tools in survivorship order. The golden value's own tool resolves it when that tool's record is
    known; else the first member value that resolves, tools in ``priority`` order (then by id, so reruns agree); an
    unresolved one keeps the golden value and its tool, the id a steward would look for."""
    columns = {"entity_id": object, "field": object, "tool": object, "value": object}
    candidates = pd.concat([winners.astype(columns).assign(rank=-1),
                            members.astype(columns).assign(rank=members["tool"].map(
                                {tool: i for i, tool in enumerate(priority)}).fillna(len(priority)))],
                           ignore_index=True)
    # only a golden record holding a value points anywhere (one cleared in its source of truth points nowhere)
    held = pd.MultiIndex.from_frame(winners.loc[winners["value"].notna(), ["entity_id", "field"]].astype(object))
    candidates = candidates[candidates["value"].notna() & candidates["field"].isin(list(referenced))
                            & pd.MultiIndex.from_frame(candidates[["entity_id", "field"]]).isin(held)]
    candidates = candidates.assign(referenced_entity=candidates["field"].map(referenced),
                                   value=candidates["value"].astype(str))
    found = [part.merge(targets[entity].rename(columns={"entity_id": "referenced_id", "_source": "tool",
                                                        "_source_id": "value"})[["referenced_id", "tool", "value"]],
                        on=["tool", "value"], how="left")
             for entity, part in candidates.groupby("referenced_entity") if entity in targets]
    if not found:
        return pd.DataFrame(columns=REFERENCE_COLUMNS)
    found = pd.concat(found, ignore_index=True)
    found = found.assign(resolved=found["referenced_id"].notna()).sort_values(
        ["entity_id", "field", "resolved", "rank", "tool", "value"], ascending=[True, True, False, True, True, True],
        kind="stable")
    best = found.drop_duplicates(["entity_id", "field"]).reset_index(drop=True)
    best["via"] = VIA_MEMBER
    best.loc[best["rank"] < 0, "via"] = VIA_GOLDEN
    best.loc[~best["resolved"], "via"] = UNRESOLVED  # it names the golden value's own id when there is one
    return best.rename(columns={"value": "source_id"})[REFERENCE_COLUMNS]
