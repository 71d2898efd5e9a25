"""Survivorship: pick one golden value per entity and field from every tool's records, and say why.

Entity resolution groups records of the same real-world thing; this module decides, field by field, which
record's value survives into the golden record, records where each golden value came from (provenance) and
lists every value that lost (the conflicts audit), so a steward can see what write-back will overwrite.

Everything is vectorised: per field one ``argsort`` of a packed (entity, rule order) key over the non-empty
values, then the first row of each entity wins. Loops run over fields and tools only, never over records or
entities. Outputs do not depend on input order: ties left by the rule are broken by source id, then value.

A clear is a fact, not a gap: a record whose field state (see :func:`derive_field_change_times`) says its tool
emptied the field at a time takes part like a value, and wins as one under its rule (the golden value is then
empty); a record that never held the field (or whose tool does not map it) is a gap and takes no part. Fields of a
group (``groups``: a name's parts, an address) survive together: each comes from the one record that wins the
group, so two tools that split a name differently never mix.

Conflicts compare values as text after ``strip`` and ``casefold``: the stack's field mappings already lower-case
what is case-insensitive (emails, stages), so a difference in case alone (``McDonald``/``Mcdonald``) is cosmetic,
not a disagreement about the fact, and would only drown the real conflicts. The winner's exact spelling still wins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SOURCE_OF_TRUTH = "source_of_truth"
LAST_WRITE_WINS = "last_write_wins"
RULE_TYPES = (SOURCE_OF_TRUTH, LAST_WRITE_WINS)
REQUIRED_COLUMNS = ("_source", "_source_id", "_updated_at")
KEY_COLUMNS = ["_source", "_source_id"]
CHANGED_AT_SUFFIX = "__changed_at"
PROVENANCE_COLUMNS = ["entity_id", "field", "value", "tool", "source_id", "changed_at", "rule"]
CONFLICT_COLUMNS = [
    "entity_id", "field", "rule",
    "winner_tool", "winner_source_id", "winner_value", "winner_changed_at",
    "loser_tool", "loser_source_id", "loser_value", "loser_changed_at",
    "decided_at",
]
UTC_DTYPE = "datetime64[us, UTC]"
_NO_TIME = np.iinfo(np.int64).min  # NaT as an int64: the oldest possible time, so it never wins on recency


@dataclass(frozen=True)
class SurvivorshipRules:
    """One entity's survivorship rules, read from a plain dict or the stack model (same attribute names)."""

    source_of_truth: str | None = None
    priority: tuple[str, ...] = ()
    default_rule: str = SOURCE_OF_TRUTH
    fields: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def coerce(cls, rules: Any) -> SurvivorshipRules:
        """Accept a mapping or any object with the attributes, and reject rule names this module cannot apply."""
        if isinstance(rules, SurvivorshipRules):
            return rules

        def read(name: str, default: Any) -> Any:
            value = rules.get(name, default) if isinstance(rules, Mapping) else getattr(rules, name, default)
            return default if value is None else value

        priority = read("priority", ())
        if isinstance(priority, str) or not isinstance(priority, Sequence):
            raise ValueError(f"survivorship priority must be a list of tool names, got {priority!r}")
        parsed = cls(
            source_of_truth=read("source_of_truth", None),
            priority=tuple(str(tool) for tool in priority),
            default_rule=_rule_name(read("default_rule", SOURCE_OF_TRUTH)),
            fields={str(name): _rule_name(rule) for name, rule in dict(read("fields", {})).items()},
            groups=tuple(tuple(str(name) for name in group) for group in read("groups", ())),
        )
        for where, rule in [("default_rule", parsed.default_rule)] + [
            (f"fields.{name}", rule) for name, rule in parsed.fields.items()
        ]:
            if rule not in RULE_TYPES:
                raise ValueError(f"survivorship {where}: unknown rule {rule!r}; known rules: {', '.join(RULE_TYPES)}")
        for i, group in enumerate(parsed.groups):
            rules = {name: parsed.rule_for(name) for name in group}
            if len(set(rules.values())) > 1:
                raise ValueError(f"survivorship groups[{i}]: its fields survive together, so they need one rule; "
                                 f"found {rules}")
        return parsed

    def rule_for(self, field_name: str) -> str:
        return self.fields.get(field_name, self.default_rule)

    def tool_order(self, tools: Sequence[str]) -> list[str]:
        """Truth tool first, then the declared priority, then undeclared tools alphabetically (deterministic)."""
        declared = list(dict.fromkeys(([self.source_of_truth] if self.source_of_truth else []) + list(self.priority)))
        return declared + sorted(set(tools) - set(declared))


def _rule_name(rule: Any) -> str:
    """A rule as text, also when the stack model hands over an Enum."""
    return str(getattr(rule, "value", rule))


@dataclass(frozen=True)
class Survivorship:
    """Golden records (index ``entity_id``), where each golden value came from, and every value that lost."""

    golden: pd.DataFrame
    provenance: pd.DataFrame
    conflicts: pd.DataFrame


def canonical_fields(records: pd.DataFrame) -> list[str]:
    """Canonical field columns: everything that is not ``_``-prefixed metadata, in the records' order."""
    return [str(c) for c in records.columns if not str(c).startswith("_")]


def survivorship(
    records: pd.DataFrame,
    clusters: pd.Series,
    rules: Any,
    field_times: pd.DataFrame | None = None,
    decided_at: Any = None,
) -> Survivorship:
    """Build golden records of one entity from resolved records.

    ``clusters`` holds the entity id of each record (aligned with ``records.index``). ``field_times`` holds, per
    canonical field, when that value last changed at its source (NaT: unknown, the record's ``_updated_at`` is
    used); it is either aligned with ``records.index`` or keyed by ``_source``/``_source_id`` columns (the state
    from :func:`derive_field_change_times`), with columns named ``<field>`` or ``<field>__changed_at``.
    Deleted records (``_deleted``) take no part; an entity with only deleted records has no golden row.
    An empty value with a known change time in ``field_times`` is a clear (see the module's docstring). A golden
    field left empty by a decision (a clear won, or its group's winner holds nothing there) has a provenance row
    with a null value, which write-back sends as a clear; the conflicts show it as null too (a gap has no row).
    Provenance and conflict values are text so one audit table can hold every field's type; golden columns keep
    their dtype. Both tables list fields in the records' column order, each by entity id; conflicts within an
    entity come closest contender first. ``decided_at`` (default: now) stamps the conflicts.
    """
    parsed = SurvivorshipRules.coerce(rules)
    fields = canonical_fields(records)
    _check_columns(records, fields, parsed)
    stamp = _utc_timestamp(decided_at, "decided_at") if decided_at is not None else pd.Timestamp.now(tz="UTC")

    updated = _utc_micros(records["_updated_at"], "records._updated_at")
    times, known = _field_times(records, field_times, fields, updated)
    members = _Members.build(records, _aligned_clusters(records, clusters), updated, parsed)
    # the record times stay one array, so the fields without times of their own share one ranking per rule
    member_times = {name: members.updated if when is updated else when[members.rows] for name, when in times.items()}
    values = {name: _FieldValues.of(records[name].take(members.rows),
                                    None if known[name] is None else known[name][members.rows]) for name in fields}
    grouped = {name: group for group in parsed.groups for name in group}
    outcomes: dict[str, _Outcome] = {}
    for name in fields:
        if name in outcomes:
            continue
        group = grouped.get(name, (name,))
        outcomes.update(members.decide([values[f] for f in group], [member_times[f] for f in group],
                                       parsed.rule_for(name), group))

    golden = pd.DataFrame(index=members.entity_index)
    newest_win = np.full(len(members.entity_index), _NO_TIME, dtype=np.int64)
    provenance_parts: list[pd.DataFrame] = []
    conflict_parts: list[pd.DataFrame] = []
    for name in fields:
        rule, outcome = parsed.rule_for(name), outcomes[name]
        golden[name] = members.golden_column(outcome)
        provenance_parts.append(members.provenance(outcome, name, rule))
        conflict_parts.append(members.conflicts(outcome, name, rule, stamp))
        won = outcome.winner_entities
        newest_win[won] = np.maximum(newest_win[won], outcome.times[outcome.winner_rows])

    golden["_member_count"] = members.member_counts()
    golden["_updated_at"] = _utc_times(np.where(newest_win == _NO_TIME, members.newest_update(), newest_win))
    return Survivorship(
        golden=golden,
        provenance=_concat(provenance_parts, PROVENANCE_COLUMNS),
        conflicts=_concat(conflict_parts, CONFLICT_COLUMNS),
    )


def _check_columns(records: pd.DataFrame, fields: list[str], rules: SurvivorshipRules) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(f"records lack required column(s) {', '.join(missing)}")
    unknown = sorted((set(rules.fields) | {name for group in rules.groups for name in group}) - set(fields))
    if unknown:
        raise ValueError(
            f"survivorship rules name field(s) {', '.join(map(repr, unknown))} that the records do not have; "
            f"record fields: {', '.join(fields) or '(none)'}"
        )


def _aligned_clusters(records: pd.DataFrame, clusters: pd.Series) -> pd.Series:
    """Entity ids in record order; every live record needs one (deleted records may have none)."""
    if not clusters.index.equals(records.index):
        if clusters.index.has_duplicates or not records.index.isin(clusters.index).all():
            raise ValueError("clusters must be aligned with records.index (one entity id per record)")
        clusters = clusters.reindex(records.index)
    unassigned = clusters.isna().to_numpy() & ~_deleted_mask(records)
    if unassigned.any():
        example = records.loc[unassigned, KEY_COLUMNS].head(3).to_dict("records")
        raise ValueError(f"{int(unassigned.sum())} live record(s) have no entity id in clusters, e.g. {example}")
    return clusters


def _factorize_sorted(values: pd.Series) -> tuple[np.ndarray, Any]:
    """``pd.factorize(values, sort=True)``. A text column held by Arrow is encoded and sorted there (code point
    order, as Python compares strings). Other distinct texts are sorted as numpy text, several times faster than
    sorting Python objects; texts that only trailing NULs tell apart look equal to numpy, so those, like values
    that are not all text, take pandas' own sort."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return pd.factorize(values.array, sort=True)
    values = values.to_numpy()
    codes, uniques = pd.factorize(values)
    if pd.api.types.infer_dtype(uniques, skipna=False) != "string":
        return pd.factorize(values, sort=True)
    fixed = uniques.astype(str)
    order = np.argsort(fixed, kind="stable")
    if (fixed[order][1:] == fixed[order][:-1]).any():
        return pd.factorize(values, sort=True)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return np.where(codes >= 0, rank[codes], -1), uniques[order]


def _deleted_mask(records: pd.DataFrame) -> np.ndarray:
    if "_deleted" not in records.columns:
        return np.zeros(len(records), dtype=bool)
    return records["_deleted"].eq(True).to_numpy()


def _utc_timestamp(value: Any, where: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise ValueError(f"{where} must be timezone-aware, got {value!r}")
    return stamp.tz_convert("UTC")


def _utc_micros(values: pd.Series, where: str) -> np.ndarray:
    """UTC microseconds as int64 (NaT as the oldest time): cheap keys for sorting and comparing."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind == "M":
        raise ValueError(f"{where} holds timezone-naive datetimes; give UTC (tz-aware) times")
    try:
        parsed = pd.to_datetime(values, utc=True).astype(UTC_DTYPE)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} holds values that are not times: {exc}") from None
    return parsed.dt.tz_convert(None).to_numpy().view(np.int64).copy()  # NaT views as int64 min: _NO_TIME


def _field_times(
    records: pd.DataFrame, field_times: pd.DataFrame | None, fields: list[str], updated: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    """Per-field change time of every record as int64 micros, falling back to ``updated`` where unknown, and where
    it is known (None: nowhere), which makes an empty value a clear."""
    times: dict[str, np.ndarray] = {name: updated for name in fields}
    known_at: dict[str, np.ndarray | None] = {name: None for name in fields}
    if field_times is None:
        return times, known_at
    suffixed = any(str(c).endswith(CHANGED_AT_SUFFIX) for c in field_times.columns)
    column_of = {name: name + CHANGED_AT_SUFFIX if suffixed else name for name in fields}
    known = {name: column for name, column in column_of.items() if column in field_times.columns}
    if set(KEY_COLUMNS) <= set(field_times.columns):
        record_keys, state_keys = _joint_key_codes(records, field_times)
        if pd.Series(state_keys).duplicated().any():
            raise ValueError("field_times repeats _source/_source_id keys; it must hold one row per record")
        state_row = pd.Index(state_keys).get_indexer(record_keys)  # -1: no state row, so no known time
    elif records.index.isin(field_times.index).all() and not field_times.index.has_duplicates:
        state_row = field_times.index.get_indexer(records.index)
    else:
        raise ValueError("field_times must be aligned with records.index or carry _source and _source_id columns")
    for name, column in known.items():
        aligned = pd.Series(field_times[column].array.take(state_row, allow_fill=True))
        changed = _utc_micros(aligned, f"field_times.{column}")
        known_at[name] = changed != _NO_TIME
        times[name] = np.where(known_at[name], changed, updated)
    return times, known_at


def _joint_key_codes(records: pd.DataFrame, state: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One integer per (_source, _source_id) text key, numbered across both frames, so rows align by an integer
    lookup rather than a merge on two text columns (which hashes every text several times); Arrow-backed text
    is encoded by Arrow, without a Python string per value."""
    codes = []
    for column in KEY_COLUMNS:
        text = pd.concat([frame[column].astype(str) for frame in (records, state)], ignore_index=True)
        codes.append(pd.factorize(text)[0].astype(np.int64))
    joint = codes[0] * (codes[1].max(initial=0) + 1) + codes[1]
    return joint[: len(records)], joint[len(records) :]


def _empty_mask(values: pd.Series) -> np.ndarray:
    """None, NaN and "" are empty: they never win and never conflict.

    Whitespace-only text is not stripped here (a per-value Python call, the costliest step at 1M records): the
    stack's ``trim`` transform already turns it into "".
    """
    return (values.isna() | values.eq("")).to_numpy()


def _comparable(texts: pd.api.extensions.ExtensionArray) -> pa.Array:
    """Text stripped and casefolded, for comparing; ASCII text is folded by Arrow (casefold is lower-casing there)."""
    stripped = pa.array(pd.Series(texts, dtype="str").str.strip().array)
    others = np.flatnonzero(~pc.string_is_ascii(stripped).to_numpy(zero_copy_only=False))
    is_other = np.zeros(len(stripped), dtype=bool)
    is_other[others] = True
    folded = [text.casefold() for text in stripped.take(others).to_pylist()]
    return pc.replace_with_mask(pc.ascii_lower(stripped), is_other, pa.array(folded, type=stripped.type))


def _utc_times(micros: np.ndarray) -> pd.DatetimeIndex:
    """Int64 micros back to UTC times, kept as a datetime column (not an object array of Timestamps)."""
    return pd.DatetimeIndex(micros.view("datetime64[us]")).tz_localize("UTC")


@dataclass(frozen=True)
class _FieldValues:
    """One field's values, in member order. A text column is compared and read by Arrow, without a Python string
    per value; only other columns (numbers, dates, flags) become Python objects, as Python compares those."""

    column: pd.Series
    empty: np.ndarray  # None, NaN and "" (see `_empty_mask`)
    eligible: np.ndarray  # a value or a clear: what takes part in the decision

    @classmethod
    def of(cls, column: pd.Series, known: np.ndarray | None = None) -> _FieldValues:
        """``known``: where the field's change time is known, so an empty value there is a clear."""
        empty = _empty_mask(column)
        return cls(column, empty, ~empty if known is None else ~empty | known)

    def differ(self, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        """Which of ``rows`` hold a value that differs from the one in ``others`` beyond case and surrounding
        whitespace (see the module's docstring); an empty value differs from any other value, not from another
        empty one."""
        unequal = self.empty[rows] != self.empty[others]
        both = np.flatnonzero(~self.empty[rows] & ~self.empty[others])
        unequal[both] = self._values_differ(rows[both], others[both])
        return unequal

    def _values_differ(self, rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        if isinstance(self.column.dtype, pd.StringDtype):
            unequal = np.asarray(self.text(rows) != self.text(others), dtype=bool)
        else:
            unequal = self._objects[rows] != self._objects[others]
        differing = pc.not_equal(_comparable(self.text(rows[unequal])), _comparable(self.text(others[unequal])))
        unequal[unequal] = differing.to_numpy(zero_copy_only=False)
        return unequal

    def text(self, rows: np.ndarray) -> pd.api.extensions.ExtensionArray:
        """The values of ``rows`` as text: a text column's own values, any other's through ``str``; empty as null."""
        if isinstance(self.column.dtype, pd.StringDtype):
            texts = self.column.array.take(rows).astype("str")
        else:
            texts = _as_text(self._objects[rows])
        empty = self.empty[rows]
        if empty.any():
            texts[empty] = None
        return texts

    @functools.cached_property
    def _objects(self) -> np.ndarray:
        return self.column.to_numpy(dtype=object)


@dataclass(frozen=True)
class _Outcome:
    """One field's decision, in member positions: ``winner_of[entity code]`` is the winning member (-1: no value).

    ``loser_rows`` hold the members whose value differs from their entity's winner, by entity and then by their place
    in the rule's ranking (the closest contender first).
    """

    winner_of: np.ndarray
    winner_entities: np.ndarray
    winner_rows: np.ndarray
    loser_rows: np.ndarray
    values: _FieldValues
    times: np.ndarray


@dataclass(frozen=True)
class _Members:
    """The live records, grouped by entity, reduced to positional arrays shared by every field. Fields are read in
    this order too, so what an entity's members and winners gather lies close together (taking rows scattered over
    the records costs several times more, above all for text)."""

    entity_index: pd.Index
    rows: np.ndarray  # record position of each member
    entity_codes: np.ndarray  # ascending
    tool_rank: np.ndarray
    # text columns as pandas string arrays: audit columns take from them without re-checking every value
    tool_names: pd.api.extensions.ExtensionArray
    source_ids: pd.api.extensions.ExtensionArray
    updated: np.ndarray
    updated_rank: tuple[int, np.ndarray]
    # members ranked by each rule on the record times, shared by every field whose times are the record times
    record_time_rankings: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def build(
        cls, records: pd.DataFrame, entity_ids: pd.Series, updated: np.ndarray, rules: SurvivorshipRules
    ) -> _Members:
        live_rows = np.flatnonzero(~_deleted_mask(records))
        live_codes, uniques = _factorize_sorted(entity_ids.iloc[live_rows])
        by_entity = np.argsort(live_codes, kind="stable")
        rows = live_rows[by_entity]
        tool_codes, tools = pd.factorize(records["_source"].astype(str))
        order = rules.tool_order(list(tools))
        rank_of_code = np.array([order.index(tool) for tool in tools], dtype=np.int64)
        return cls(
            entity_index=pd.Index(uniques, name="entity_id"),
            rows=rows,
            entity_codes=live_codes[by_entity],
            tool_rank=rank_of_code[tool_codes[rows]] if len(tools) else np.zeros(0, dtype=np.int64),
            tool_names=pd.array(order, dtype="str"),
            source_ids=records["_source_id"].astype("str").array.take(rows),
            updated=updated[rows],
            updated_rank=_dense_rank(updated[rows]),
        )

    def member_counts(self) -> np.ndarray:
        return np.bincount(self.entity_codes, minlength=len(self.entity_index))

    def newest_update(self) -> np.ndarray:
        newest = np.full(len(self.entity_index), _NO_TIME, dtype=np.int64)
        np.maximum.at(newest, self.entity_codes, self.updated)
        return newest

    def decide(self, values: list[_FieldValues], times: list[np.ndarray], rule: str,
               names: Sequence[str]) -> dict[str, _Outcome]:
        """Rank each entity's records holding a value or a clear of the fields ``names`` (one field, or a group
        surviving together) by the rule; the first wins every field of them, the others differing on a field are
        its conflicts. A record holding any field of a group takes part in it (a partial name in the source of
        truth is still the truth's name), its time the newest change among those fields."""
        eligible = np.logical_or.reduce([v.eligible for v in values])
        when = times[0] if len(times) == 1 else np.maximum.reduce(
            [np.where(v.eligible, t, _NO_TIME) for v, t in zip(values, times)])
        ranked = self._ranked(when, rule)
        ranked = self._break_ties(ranked[eligible[ranked]], when, values[0])
        ranked_entity = self.entity_codes[ranked]
        first = np.ones(len(ranked), dtype=bool)
        first[1:] = ranked_entity[1:] != ranked_entity[:-1]
        winners, winner_entities = ranked[first], ranked_entity[first]
        winner_of = np.full(len(self.entity_index), -1, dtype=np.int64)
        winner_of[winner_entities] = winners

        outcomes = {}
        for name, field_values, field_times in zip(names, values, times):
            losers = ranked[~first]
            losers = losers[field_values.eligible[losers]]
            losers = losers[field_values.differ(losers, winner_of[self.entity_codes[losers]])]
            outcomes[name] = _Outcome(winner_of, winner_entities, winners, losers, field_values, field_times)
        return outcomes

    def _ranked(self, times: np.ndarray, rule: str) -> np.ndarray:
        """Members in the rule's order, ties not yet broken. A field's non-empty values keep this order, so the
        fields whose change times are the record times (none of their own, or all equal to them) share one sort
        per rule."""
        if not (times is self.updated or np.array_equal(times, self.updated)):
            return np.argsort(self._ranking_key(times, rule))
        if rule not in self.record_time_rankings:
            self.record_time_rankings[rule] = np.argsort(self._ranking_key(self.updated, rule))
        return self.record_time_rankings[rule]

    def _ranking_key(self, times: np.ndarray, rule: str) -> np.ndarray:
        """One int64 per member ordering by entity, then the rule's (tool, recency) or (recency, tool).

        Packing the keys lets one ``argsort`` replace a three-key ``lexsort`` (3x faster at 1M records); times are
        replaced by their dense rank so they fit in the bits left over.
        """
        time_count, time_rank = self.updated_rank if times is self.updated else _dense_rank(times)
        newest_first = time_count - 1 - time_rank
        tool, tool_bits = self.tool_rank, len(self.tool_names).bit_length()
        time_bits, entity_bits = time_count.bit_length(), len(self.entity_index).bit_length()
        if entity_bits + time_bits + tool_bits > 63:
            raise ValueError(f"{len(times):,} records are too many to rank in one survivorship pass")
        if rule == LAST_WRITE_WINS:
            minor = (newest_first << tool_bits) | tool
        else:
            minor = (tool << time_bits) | newest_first
        return (self.entity_codes << (time_bits + tool_bits)) | minor

    def _break_ties(self, ranked: np.ndarray, times: np.ndarray, values: _FieldValues) -> np.ndarray:
        """Runs of rows equal on entity, tool and time are put in source id (then value) order.

        This makes the whole ranking independent of input order. Sorting every source id would cost a full string
        sort; ties are rare, so only tied rows are sorted.
        """
        tool, entity, when = self.tool_rank[ranked], self.entity_codes[ranked], times[ranked]
        tied_to_previous = np.zeros(len(ranked), dtype=bool)
        tied_to_previous[1:] = (entity[1:] == entity[:-1]) & (tool[1:] == tool[:-1]) & (when[1:] == when[:-1])
        if not tied_to_previous.any():
            return ranked
        run_start = np.maximum.accumulate(np.where(tied_to_previous, 0, np.arange(len(ranked))))
        slots = np.flatnonzero(tied_to_previous | np.append(tied_to_previous[1:], False))
        contest = pd.DataFrame({
            "run": run_start[slots],
            "source_id": self.source_ids[ranked[slots]],
            "value": values.text(ranked[slots]),
            "row": ranked[slots],
        }).sort_values(["run", "source_id", "value"], kind="stable")
        reordered = ranked.copy()
        reordered[slots] = contest["row"].to_numpy()  # a run's slots are contiguous, so runs keep their place
        return reordered

    def golden_column(self, outcome: _Outcome) -> pd.Series:
        """Each entity's winning value (missing where none or empty), with the fill and dtype a reindex would give."""
        column = outcome.values.column
        winner_of = outcome.winner_of.copy()
        winner_of[outcome.winner_entities[outcome.values.empty[outcome.winner_rows]]] = -1
        won = pd.api.extensions.take(column.array, winner_of, allow_fill=True)
        # an object column stays one, though it may hold only text (which a new Series would take for "str")
        return pd.Series(won, index=self.entity_index, dtype=column.dtype if column.dtype == object else None)

    def provenance(self, outcome: _Outcome, name: str, rule: str) -> pd.DataFrame:
        return pd.DataFrame({
            "entity_id": self.entity_index[outcome.winner_entities],
            "field": name,
            **self._origin("", outcome.winner_rows, outcome),
            "rule": rule,
        })

    def conflicts(self, outcome: _Outcome, name: str, rule: str, decided_at: pd.Timestamp) -> pd.DataFrame:
        losers = outcome.loser_rows
        entities = self.entity_codes[losers]
        return pd.DataFrame({
            "entity_id": self.entity_index[entities],
            "field": name,
            "rule": rule,
            **self._origin("winner_", outcome.winner_of[entities], outcome),
            **self._origin("loser_", losers, outcome),
            "decided_at": pd.Series(decided_at, index=pd.RangeIndex(len(losers)), dtype=UTC_DTYPE),
        })

    def _origin(self, prefix: str, rows: np.ndarray, outcome: _Outcome) -> dict[str, Any]:
        """Value, tool, source id and change time of ``rows``, as audit columns named with ``prefix``."""
        return {
            f"{prefix}value": outcome.values.text(rows),
            f"{prefix}tool": self.tool_names[self.tool_rank[rows]],
            f"{prefix}source_id": self.source_ids[rows],
            f"{prefix}changed_at": _utc_times(outcome.times[rows]),
        }


def _dense_rank(times: np.ndarray) -> tuple[int, np.ndarray]:
    """How many distinct times there are, and each time's rank among them (0 = oldest)."""
    distinct, rank = np.unique(times, return_inverse=True)
    return len(distinct), rank


def _as_text(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    return pd.Series(values, dtype=object).astype("str").array


def _concat(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Per-field parts one after the other (fields in the records' order, each by entity id), in ``columns`` order."""
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=UTC_DTYPE if name.endswith("_at") else object) for name in columns})
    return pd.concat(parts, ignore_index=True)[columns]


def derive_field_change_times(
    previous_state: pd.DataFrame | None,
    current: pd.DataFrame,
    fields: Sequence[str],
    extracted_at: Any,
) -> pd.DataFrame:
    """Per-field change times for APIs that only give a record timestamp, from successive extractions.

    State layout (one row per ``_source``, ``_source_id``, sorted by them)::

        _source, _source_id, <field>, <field>__changed_at, ..., _seen_at

    ``<field>`` is the value last seen, ``<field>__changed_at`` (UTC) when it last changed: kept from the previous
    state while the value is unchanged, the record's ``_updated_at`` (``extracted_at`` when that is unknown) when the
    value changed or the record is new. An empty value has a time only where it replaced a value (a clear, a fact
    survivorship weighs); one the record never held otherwise (new, or empty since it was first seen) has none: a
    gap. ``_seen_at`` is the last extraction that returned the record. Records absent
    from ``current`` (incremental runs return only changed records) keep their previous row. Values are compared
    as text, so a value that round-tripped through the warehouse as text still counts as unchanged.
    Store the result and pass it as ``field_times`` to :func:`survivorship` (it joins on the key columns).
    """
    if isinstance(fields, str):
        raise ValueError(f"fields must be a list of field names, got the string {fields!r}")
    fields = list(fields)
    seen_at = _utc_timestamp(extracted_at, "extracted_at")
    missing = [c for c in KEY_COLUMNS + ["_updated_at"] + fields if c not in current.columns]
    if missing:
        raise ValueError(f"current records lack column(s) {', '.join(missing)}")
    changed_columns = [name + CHANGED_AT_SUFFIX for name in fields]
    layout = KEY_COLUMNS + [c for pair in zip(fields, changed_columns) for c in pair] + ["_seen_at"]

    now = current[KEY_COLUMNS + fields].astype({c: str for c in KEY_COLUMNS}).reset_index(drop=True)
    record_times = current["_updated_at"]
    previous = _previous_state(previous_state, fields, changed_columns)
    if previous.empty:
        # a first run: the state is the records in key order, so they are put in that order now, where repeated
        # keys lie side by side, and no key is hashed
        order = _key_order(now)
        now, record_times = now.take(order).reset_index(drop=True), record_times.iloc[order]
        duplicated = np.zeros(len(now), dtype=bool)
        duplicated[order[1:][_same_as_previous(now)]] = True
    else:
        now_keys, previous_keys = _joint_key_codes(now, previous)
        duplicated = pd.Series(now_keys).duplicated().to_numpy()
    if duplicated.any():
        example = current.loc[duplicated, KEY_COLUMNS].astype(str).head(3).to_dict("records")
        raise ValueError(f"current records repeat keys, e.g. {example}")
    updated = pd.Series(_utc_times(_utc_micros(record_times, "current._updated_at"))).fillna(seen_at)

    # both sides' keys are unique (checked), so each current record has at most one previous row (-1: none)
    previous_row = np.full(len(now), -1) if previous.empty else pd.Index(previous_keys).get_indexer(now_keys)
    for name, changed in zip(fields, changed_columns):
        changed_before = pd.Series(previous[changed].array.take(previous_row, allow_fill=True))
        same = changed_before.notna().to_numpy().copy()  # only a value with a known change time can keep it
        same[same] = _same_text(now.loc[same, name], pd.Series(previous[name].array.take(previous_row[same])))
        gap = _empty_mask(now[name]) & changed_before.isna().to_numpy()  # no previous row: a new record's gap
        held = np.flatnonzero(gap & (previous_row >= 0))
        gap[held] = _empty_mask(pd.Series(previous[name].array.take(previous_row[held])))
        now[changed] = changed_before.where(same, updated).mask(gap)
    now["_seen_at"] = pd.Series(seen_at, index=now.index, dtype=UTC_DTYPE)

    if previous.empty:
        return now[layout]  # in key order already; the stored state's empty columns would make text Python objects
    untouched = np.ones(len(previous), dtype=bool)
    untouched[previous_row[previous_row >= 0]] = False
    state = pd.concat([previous.loc[untouched, layout], now[layout]], ignore_index=True)
    return state.take(_key_order(state)).reset_index(drop=True)


def echoed_writes(current: pd.DataFrame, previous_state: pd.DataFrame, written: pd.DataFrame,
                  fields: Sequence[str]) -> np.ndarray:
    """Which ``current`` records changed only by taking the values we last wrote them: every field that differs
    from the record's row of ``previous_state`` (a record without one held nothing: one we created) now holds the
    value ``written`` says was last written to that field of that record, and at least one such write exists. That
    is our own write-back coming back from the tool (its echo): the values came from the golden record, so they
    move no golden value. ``written`` holds ``_source``, ``_source_id``, ``field``, ``value`` (None for a clear),
    one row per record and field."""
    fields = list(fields)
    changed_columns = [name + CHANGED_AT_SUFFIX for name in fields]
    now = current[KEY_COLUMNS + fields].astype({c: str for c in KEY_COLUMNS}).reset_index(drop=True)
    previous = _previous_state(previous_state, fields, changed_columns)
    written = written.astype({c: str for c in KEY_COLUMNS})
    now_keys, previous_keys = _joint_key_codes(now, previous)
    previous_row = pd.Index(previous_keys).get_indexer(now_keys)
    echo = np.ones(len(now), dtype=bool)
    wrote_any = np.zeros(len(now), dtype=bool)
    for name in fields:
        ours = written[written["field"] == name].reset_index(drop=True)
        now_codes, written_codes = _joint_key_codes(now, ours)
        written_row = pd.Index(written_codes).get_indexer(now_codes)
        wrote_any |= written_row >= 0
        held = pd.Series(previous[name].astype(object).array.take(previous_row, allow_fill=True))
        moved = np.flatnonzero(~_same_text(now[name], held))
        has_write = written_row[moved] >= 0
        took_ours = np.zeros(len(moved), dtype=bool)
        took_ours[has_write] = _same_text(now.loc[moved[has_write], name].reset_index(drop=True),
                                          pd.Series(ours["value"].array.take(written_row[moved[has_write]])))
        echo[moved[~took_ours]] = False
    return echo & wrote_any


def without_clears(state: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """A state stored before clears were recorded gave every empty value a change time, replaced value or not: as
    no clear can be told from a gap there, all its empty values become gaps (none empties a golden field)."""
    state = state.copy()
    for name in fields:
        if name in state.columns and name + CHANGED_AT_SUFFIX in state.columns:
            state.loc[_empty_mask(state[name]), name + CHANGED_AT_SUFFIX] = pd.NaT
    return state


def _same_as_previous(frame: pd.DataFrame) -> np.ndarray:
    """For each row after the first, whether its key equals the one of the row before (missing equals missing, as
    for ``duplicated``)."""
    same = np.ones(max(len(frame) - 1, 0), dtype=bool)
    for column in KEY_COLUMNS:
        keys = pa.array(frame[column].array)
        equal = pc.fill_null(pc.equal(keys[1:], keys[:-1]), False)
        same &= pc.or_(equal, pc.and_(pc.is_null(keys[1:]), pc.is_null(keys[:-1]))).to_numpy(zero_copy_only=False)
    return same


def _key_order(frame: pd.DataFrame) -> np.ndarray:
    """Row positions in (_source, _source_id) text order, stable: one Arrow sort of both columns, in code point
    order (as Python compares strings). A missing source sorts first, a missing id as the text "nan"."""
    source, source_id = (pa.array(frame[column].astype(str).array) for column in KEY_COLUMNS)
    keys = pa.table({"source": source, "source_id": pc.fill_null(source_id, "nan")})
    return pc.sort_indices(keys, sort_keys=[("source", "ascending", "at_start"), ("source_id", "ascending")]).to_numpy()


def _previous_state(previous_state: pd.DataFrame | None, fields: list[str], changed_columns: list[str]) -> pd.DataFrame:
    """The stored state in the current layout: fields new since the last run start with no value and no time."""
    previous = pd.DataFrame(columns=KEY_COLUMNS) if previous_state is None else previous_state.copy()
    missing_keys = [c for c in KEY_COLUMNS if c not in previous.columns]
    if missing_keys:
        raise ValueError(f"previous_state lacks key column(s) {', '.join(missing_keys)}")
    previous = previous.astype({c: str for c in KEY_COLUMNS})
    for name in fields:
        if name not in previous.columns:
            previous[name] = None
    for column in changed_columns + ["_seen_at"]:
        values = previous[column] if column in previous.columns else pd.Series(pd.NaT, index=previous.index)
        previous[column] = pd.to_datetime(values, utc=True).astype(UTC_DTYPE)
    if previous.duplicated(KEY_COLUMNS).any():
        raise ValueError("previous_state repeats _source/_source_id keys; it must hold one row per record")
    return previous[KEY_COLUMNS + fields + changed_columns + ["_seen_at"]]


def _same_text(now: pd.Series, before: pd.Series) -> np.ndarray:
    """Equal as text, with empty equal to empty."""
    now_empty, before_empty = _empty_mask(now), _empty_mask(before)
    equal = np.asarray(_text(now) == _text(before).set_axis(now.index), dtype=bool)
    return (now_empty & before_empty) | (~now_empty & ~before_empty & equal)


def _text(values: pd.Series) -> pd.Series:
    """Values as text ("str"): text as it is (no Python string per value), anything else through ``str``."""
    if isinstance(values.dtype, pd.StringDtype):
        return values.astype("str")
    return values.astype(object).astype("str")
