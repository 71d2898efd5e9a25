"""What changed between two versions of a set of records: the input of every incremental step.

Pure pandas. A record is keyed by (``_source``, ``_source_id``). Re-extracting a record with the same values is no
change (a nightly run re-reads boundary records and webhooks re-send), so values are compared, not timestamps of
extraction. Identity changes (a field the resolution rules read) are told apart from other changes: only they can
move a record to another entity, so only they need entity resolution again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

KEYS = ["_source", "_source_id"]
CHANGE_COLUMNS = [*KEYS, "removed", "identity_changed"]


def _as_text(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Values as comparable text: timestamps in UTC, missing values as one marker, whatever the dtype."""
    out = {}
    for column in columns:
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(values.dtype):
            values = pd.to_datetime(values, utc=True)
        out[column] = values.astype("string").fillna("\0")
    return pd.DataFrame(out, index=frame.index)


ALL_FIELDS = "*"  # in ``identity_changed``: a new record, every identity field counts as changed


def changed_records(previous: pd.DataFrame, current: pd.DataFrame, removed: pd.DataFrame,
                    compared: Sequence[str], identity: Sequence[str]) -> pd.DataFrame:
    """The keys whose record is new, differs on a ``compared`` column, or was removed (``removed``: keys that no
    longer belong, e.g. deleted at the source or now failing validation). ``identity_changed`` names the
    ``identity`` columns that differ, comma-separated: ``*`` for a new record, empty when none did or the record
    was removed (it can match nothing new; it only leaves its entity). Keys of ``removed`` that ``previous`` lacks
    were never there, so they are no change.

    ``previous`` holds the stored versions of (at least) the keys of ``current`` and ``removed``.
    """
    compared, identity = list(compared), list(identity)
    missing = [c for c in KEYS + compared if c not in current.columns or c not in previous.columns]
    if missing:
        raise ValueError(f"changed_records: column(s) {missing} missing from the current or previous records")
    unknown = sorted(set(identity) - set(compared))
    if unknown:
        raise ValueError(f"changed_records: identity column(s) {unknown} are not among the compared columns")
    current = current.drop_duplicates(KEYS, keep="last")
    before = previous.drop_duplicates(KEYS, keep="last").set_index(KEYS)
    now = current.set_index(KEYS)
    known = now.index.isin(before.index)
    differs = np.ones(len(now), dtype=bool)
    identity_changed = np.full(len(now), ALL_FIELDS, dtype=object)
    if known.any():
        unequal = _as_text(now[known], compared).ne(_as_text(before.reindex(now.index[known]), compared))
        differs[known] = unequal.any(axis=1).to_numpy()
        names = np.full(int(known.sum()), "", dtype=object)
        for column in identity:
            names = np.where(unequal[column].to_numpy(), names + "," + column, names)
        identity_changed[known] = [name.lstrip(",") for name in names]
    upserted = pd.DataFrame({"removed": False, "identity_changed": identity_changed[differs]},
                            index=now.index[differs]).reset_index()
    gone = removed[KEYS].drop_duplicates()
    gone = gone[pd.MultiIndex.from_frame(gone).isin(before.index)
                & ~pd.MultiIndex.from_frame(gone).isin(now.index)]
    dropped = gone.assign(removed=True, identity_changed="")
    return pd.concat([upserted, dropped], ignore_index=True)[CHANGE_COLUMNS].astype({"removed": bool})


def changed_fields(identity_changed: pd.Series, field: str) -> np.ndarray:
    """Which of ``changed_records``' ``identity_changed`` values name ``field`` (or every field)."""
    names = identity_changed.fillna("").astype(str)
    return names.str.contains(rf"(?:^|,)(?:{re.escape(ALL_FIELDS)}|{re.escape(field)})(?:,|$)").to_numpy()


CONCURRENT_COLUMNS = ["entity_id", "field", "rule", "decided_tool", "decided_value", "tool", "source_id", "value",
                      "changed_at", "decided_at"]


def concurrent_edits(conflicts: pd.DataFrame, since) -> pd.DataFrame:
    """The edits a steward should see: per entity and field, the values two or more tools changed to, differently,
    after ``since`` (the last sync; None: a first run, where every value is new, so none). Their rule decided them
    as any conflict; this lists each such edit (one row per tool record) beside the value that won.

    ``conflicts`` is survivorship's audit: an edit that lost is a loser there, one that won is the winner. Values
    compare as survivorship compares them (text, stripped and casefolded, a clear as empty)."""
    if since is None or conflicts.empty:
        return pd.DataFrame(columns=CONCURRENT_COLUMNS)
    decided = {"winner_tool": "decided_tool", "winner_value": "decided_value"}
    sides = [conflicts.rename(columns={f"{side}_{name}": name for name in ("tool", "source_id", "value",
                                                                           "changed_at")})
             for side in ("winner", "loser")]
    sides[0] = sides[0].assign(decided_tool=sides[0]["tool"], decided_value=sides[0]["value"])
    sides[1] = sides[1].rename(columns=decided)
    edits = pd.concat([side[CONCURRENT_COLUMNS] for side in sides], ignore_index=True)
    edits = edits[pd.to_datetime(edits["changed_at"], utc=True) > pd.Timestamp(since)]
    edits = edits.drop_duplicates(["entity_id", "field", "tool", "source_id"], ignore_index=True)
    compared = edits["value"].astype("str").str.strip().str.casefold().fillna("")
    per_case = edits.assign(_value=compared).groupby(["entity_id", "field"])
    concurrent = (per_case["tool"].transform("nunique") > 1) & (per_case["_value"].transform("nunique") > 1)
    return edits[concurrent.to_numpy()].sort_values(["entity_id", "field", "tool", "source_id"],
                                                    ignore_index=True)


def shown(value) -> str:
    """A value as a steward reads it in a list of edits: a clear (null) says so."""
    return "(cleared)" if value is None or value != value else str(value)
