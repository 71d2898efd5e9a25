"""What changed between two versions of a set of records: the input of every incremental step.

Pure pandas. A record is keyed by (``_source``, ``_source_id``). Re-extracting a record with the same values is no
change (a nightly run re-reads boundary records and webhooks re-send), so values are compared, not timestamps of
extraction. Identity changes (a field the resolution rules read) are told apart from other changes: only they can
move a record to another entity, so only they need entity resolution again.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def changed_records(previous: pd.DataFrame, current: pd.DataFrame, removed: pd.DataFrame,
                    compared: Sequence[str], identity: Sequence[str]) -> pd.DataFrame:
    """The keys whose record is new, differs on a ``compared`` column, or was removed (``removed``: keys that no
    longer belong, e.g. deleted at the source or now failing validation), with ``identity_changed`` set when the
    record is new or removed or an ``identity`` column differs. Keys of ``removed`` that ``previous`` lacks were
    never there, so they are no change.

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
    old = before.reindex(now.index[known])
    differs = pd.Series(True, index=now.index)
    identity_changed = pd.Series(True, index=now.index)
    if known.any():
        new_text, old_text = _as_text(now[known], compared), _as_text(old, compared)
        unequal = new_text.ne(old_text)
        differs[known] = unequal.any(axis=1).to_numpy()
        identity_changed[known] = unequal[identity].any(axis=1).to_numpy() if identity else False
    upserted = pd.DataFrame({"removed": False, "identity_changed": identity_changed[differs]}).reset_index()
    gone = removed[KEYS].drop_duplicates()
    gone = gone[pd.MultiIndex.from_frame(gone).isin(before.index)
                & ~pd.MultiIndex.from_frame(gone).isin(now.index)]
    dropped = gone.assign(removed=True, identity_changed=True)
    return pd.concat([upserted, dropped], ignore_index=True)[CHANGE_COLUMNS].astype(
        {"removed": bool, "identity_changed": bool})
