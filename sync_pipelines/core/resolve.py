"""Entity resolution: decide which records, from any tool, describe the same real-world entity.

Pure pandas/numpy/rapidfuzz/scipy; no Dagster, no HTTP. The public contract is documented in
`sync_pipelines.resolve`; this module holds the machinery:

1. comparison values: every field a rule uses is casefolded, trimmed and whitespace-collapsed; missing or
   empty values never match anything;
2. candidate pairs per rule: exact-only rules group on their fields; rules with fuzzy conditions compare
   record pairs inside blocks (a blocking key, plus the rule's exact fields), scored with rapidfuzz;
3. crosswalk links: records that shared an entity on the last run stay linked (identity persists when a
   record's email or phone changes in one tool), unless a manual split names one of them;
4. clusters: connected components of all matched pairs and crosswalk links, with a chain guard that
   re-clusters any component that is too large or that holds two clearly different records, such as two
   names that no rule matched directly (see `_ChainGuard`). A crosswalk link is no direct match, so a
   stale link to a record that now describes someone else is broken there; in a rebuild crosswalk links
   come after every rule. Given names (any field whose name contains `first_name` or `given_name`) are
   compared the way people write them: two values are never a contradiction when one is a prefix of the
   other (3+ letters: "Alex"/"Alexander"), one is an initial of the other ("J."/"James"), or they are
   listed together in `nicknames.txt` ("Bob"/"Robert", "Liz"/"Elizabeth"). This only keeps the guard
   from splitting; it never creates a match;
5. manual merges, then stable entity ids reused from the crosswalk.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rapidfuzz import fuzz, process
from rapidfuzz.distance import JaroWinkler, Levenshtein
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sync_pipelines.core import scoring
from sync_pipelines.core.given_names import given_names_compatible, is_given_name_field
from sync_pipelines.core.keys import DERIVED_KEYS, Groups, combine, derived_codes, key_source, split_large

log = logging.getLogger(__name__)

SOURCE = "_source"
SOURCE_ID = "_source_id"
ENTITY_ID = "entity_id"
REPORT_ATTR = "resolution"
CROSSWALK_COLUMNS = (ENTITY_ID, SOURCE, SOURCE_ID)

DEFAULT_MAX_CLUSTER_SIZE = 12
DEFAULT_MAX_BLOCK_SIZE = 5000
REVIEW_SAMPLES = 20  # review-band pairs the report lists, the heaviest first
EXACT = "exact"
# Scores are compared with this slack so a pair scoring exactly the threshold (rapidfuzz returns float32) matches.
SCORE_TOLERANCE = 1e-6
# Up to this many value pairs, a field's distinct values are all scored against each other in one call
_DENSE_SCORES = 1 << 22


@dataclass(frozen=True)
class _Scorer:
    function: Callable[..., float]
    scale: float  # the score of two identical strings
    # The highest score two texts can reach, from their lengths and how far apart their character counts are (see
    # `_character_counts`: an insertion or deletion moves one count by one, a substitution two), so pairs that
    # cannot reach a threshold are never scored.
    bound: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _jaro_winkler_bound(a: np.ndarray, b: np.ndarray, apart: np.ndarray) -> np.ndarray:
    """Jaro's matches are at most the shorter length and at most the characters both texts hold; Jaro is then at
    most (m/a + m/b + 1) / 3, and Winkler's bonus (a common prefix of 4 at most, weight 0.1) makes j at most
    0.6 j + 0.4."""
    matches = np.minimum(np.minimum(a, b), (a + b - apart) / 2)
    return 0.6 * (matches / a + matches / b + 1) / 3 + 0.4


SCORERS: dict[str, _Scorer] = {
    "jaro_winkler": _Scorer(JaroWinkler.normalized_similarity, 1.0, _jaro_winkler_bound),
    # 1 - distance / longer length; the distance is at least the length difference and half the counts apart
    "levenshtein": _Scorer(
        Levenshtein.normalized_similarity, 1.0,
        lambda a, b, apart: 1 - np.maximum(np.abs(a - b), np.ceil(apart / 2)) / np.maximum(a, b),
    ),
    # 1 - indel distance / both lengths, on the sorted words: comparison forms have single spaces (rapidfuzz splits
    # words on a subset of Python's whitespace), so sorting the words keeps each text's length and characters; the
    # distance is at least the length difference and the counts apart
    "token_sort": _Scorer(
        fuzz.token_sort_ratio, 100.0, lambda a, b, apart: 100.0 * (1 - np.maximum(np.abs(a - b), apart) / (a + b))
    ),
}
# A condition that finds no pair itself: it holds unless both values are present and differ (a veto on a name match
# when two records hold different domains), and any difference between them is a contradiction to the chain guard.
EQUAL_OR_MISSING = "equal_or_missing"
METHODS = (EXACT, *SCORERS, EQUAL_OR_MISSING)

# --------------------------------------------------------------------------------------------- rules


def _get(spec: Any, name: str, default: Any = None) -> Any:
    """Read `name` from a mapping or an object (a pydantic model), so both spellings of the rules work."""
    if isinstance(spec, Mapping):
        return spec.get(name, default)
    return getattr(spec, name, default)


@dataclass(frozen=True)
class Condition:
    field: str
    method: str
    threshold: float | None  # None for exact

    def cutoff(self) -> float:
        """The threshold on the scorer's own scale, with the float32 slack."""
        scorer = SCORERS[self.method]
        return max(float(self.threshold) - SCORE_TOLERANCE, 0.0) * scorer.scale


@dataclass(frozen=True)
class Rule:
    name: str
    conditions: tuple[Condition, ...]
    blocking: tuple[str, ...]

    @property
    def exact(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.method == EXACT)

    @property
    def fuzzy(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.method in SCORERS)

    @property
    def vetoes(self) -> tuple[Condition, ...]:
        return tuple(c for c in self.conditions if c.method == EQUAL_OR_MISSING)

    def blocking_keys(self) -> tuple[str, ...]:
        """Declared keys; a fuzzy rule without keys or exact fields blocks on its first fuzzy field's prefix."""
        if self.blocking or self.exact or not self.fuzzy:
            return self.blocking
        return (f"{self.fuzzy[0].field}_prefix",)


@dataclass(frozen=True)
class IdentityRules:
    """The identity section of a stack file for one entity, validated."""

    rules: tuple[Rule, ...]
    max_cluster_size: int
    merge: tuple[tuple[str, ...], ...]
    split: tuple[str, ...]
    model: scoring.MatchModel | None = None  # the scored matcher, whose matches link after every rule

    @classmethod
    def from_spec(cls, spec: Any) -> IdentityRules:
        """Accept the stack file's dict or any object with the same attributes; raise ValueError on bad input."""
        if isinstance(spec, IdentityRules):
            return spec
        rules = tuple(_parse_rule(raw, position) for position, raw in enumerate(_get(spec, "rules") or ()))
        max_size = _get(spec, "max_cluster_size")
        max_size = DEFAULT_MAX_CLUSTER_SIZE if max_size is None else max_size
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
            raise ValueError(f"identity max_cluster_size must be a positive integer, got {max_size!r}")
        manual = _get(spec, "manual") or {}
        merge = tuple(tuple(str(ref) for ref in group) for group in (_get(manual, "merge") or ()))
        split = tuple(str(ref) for group in (_get(manual, "split") or ()) for ref in _as_group(group))
        both = sorted({ref for group in merge for ref in group} & set(split))
        if both:
            raise ValueError(f"identity manual overrides: {both[0]!r} is listed in both merge and split")
        model = _get(spec, "model")
        model = None if model is None else scoring.MatchModel.from_spec(
            model.model_dump() if hasattr(model, "model_dump") else model)
        return cls(rules, max_size, merge, split, model)

    @property
    def model_strength(self) -> int:
        """The strength of the scored matcher's links: after every rule (rule k has strength k)."""
        return len(self.rules)

    @property
    def crosswalk_strength(self) -> int:
        """The strength of a link kept from the last run: after every rule and the scored matcher."""
        return len(self.rules) + (self.model is not None)

    def fields(self, columns: Sequence[str]) -> set[str]:
        """Record columns the rules and the model read (a derived blocking key counts as the column it derives
        from)."""
        return {c.field for rule in self.rules for c in rule.conditions} | {
            _blocking_source(rule, key, columns)[0] for rule in self.rules for key in rule.blocking_keys()
        } | (self.model.fields() if self.model else set())


def _as_group(group: Any) -> Sequence[Any]:
    return [group] if isinstance(group, str) else group


def _parse_rule(raw: Any, position: int) -> Rule:
    name = str(_get(raw, "name") or f"rule #{position + 1}")
    conditions = []
    for raw_condition in _get(raw, "conditions") or ():
        field = _get(raw_condition, "field")
        method = _get(raw_condition, "method", EXACT)
        method = str(getattr(method, "value", method))
        if not field:
            raise ValueError(f"identity rule {name!r}: a condition has no field")
        if method not in METHODS:
            raise ValueError(f"identity rule {name!r}: unknown method {method!r} for {field!r} (use one of {METHODS})")
        threshold = _get(raw_condition, "threshold")
        if method in SCORERS:
            if threshold is None or not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(
                    f"identity rule {name!r}: {method} on {field!r} needs a threshold in [0, 1], got {threshold!r}"
                )
            threshold = float(threshold)
        conditions.append(Condition(str(field), method, threshold if method in SCORERS else None))
    if not conditions:
        raise ValueError(f"identity rule {name!r} has no conditions")
    if all(c.method == EQUAL_OR_MISSING for c in conditions):
        raise ValueError(f"identity rule {name!r} has only {EQUAL_OR_MISSING} conditions, which find no pair: "
                         "add an exact or fuzzy one")
    return Rule(name, tuple(conditions), tuple(str(key) for key in (_get(raw, "blocking") or ())))


# ------------------------------------------------------------------------------- comparison values


def normalize_values(column: pd.Series) -> np.ndarray:
    """Comparison form of a column: casefolded, trimmed, whitespace collapsed; missing or empty is None."""
    return _Compared.of(column).values


# lower-cased texts already in comparison form: printable ASCII words (no whitespace) between single spaces
_COMPARISON_FORM = r"^[!-~]+( [!-~]+)*$"


def _arrow_text(column: pd.Series) -> pa.Array:
    """A column as Arrow text, missing values null; a text column backed by Arrow is not copied."""
    texts = column if isinstance(column.dtype, pd.StringDtype) else column.astype("string")
    arrow = pa.array(texts.array)
    return arrow.combine_chunks() if isinstance(arrow, pa.ChunkedArray) else arrow


def _flags(mask: pa.Array) -> np.ndarray:
    """An Arrow boolean array as numpy, null as False."""
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class _Compared:
    """A column in comparison form, with integer codes so grouping never hashes the strings again. The distinct
    forms stay Arrow text until a rule reads them as Python strings (fuzzy scores, derived keys, the chain guard):
    exact-only fields (emails, phones) never pay for a Python string per value."""

    codes: np.ndarray  # per row: position in `forms` (numbered by first appearance), -1 where missing
    forms: pa.Array  # each comparison form once

    @classmethod
    def of(cls, column: pd.Series) -> _Compared:
        """Arrow lower-cases and encodes the texts; what that leaves undone concerns few distinct texts: those that
        are not printable ASCII words between single spaces are transformed once each in Python, where `split()`
        drops the same (Unicode) whitespace as `strip()` and a `\\s+` pattern, so joining its words trims and
        collapses at once (`casefold` maps letter by letter, so lower-casing ASCII letters first changes nothing)."""
        encoded = pc.ascii_lower(_arrow_text(column)).dictionary_encode()
        codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
        lowered = encoded.dictionary
        irregular = np.flatnonzero(~_flags(pc.match_substring_regex(lowered, _COMPARISON_FORM)))
        if not len(irregular):
            return cls(codes, lowered)
        fixed = [" ".join(text.casefold().split()) or None for text in lowered.take(irregular).to_pylist()]
        is_irregular = np.zeros(len(lowered), dtype=bool)
        is_irregular[irregular] = True
        forms = pc.replace_with_mask(lowered, is_irregular, pa.array(fixed, type=lowered.type)).dictionary_encode()
        # one more code, -1, last: code -1 (missing) picks it, as does a text whose form is None (blank)
        form_codes = np.append(pc.fill_null(forms.indices, -1).to_numpy(), -1).astype(np.int64)
        return cls(form_codes[codes], forms.dictionary)

    @functools.cached_property
    def distinct(self) -> np.ndarray:
        """Each comparison form once, as Python strings (object array)."""
        return self.forms.to_numpy(zero_copy_only=False)

    @property
    def values(self) -> np.ndarray:
        """Comparison form per row, None where missing."""
        return np.append(self.distinct, None)[self.codes]  # code -1 picks the None appended last

    def take(self, order: np.ndarray) -> _Compared:
        """The column with its rows in `order`, codes renumbered by first appearance in that order: as `of` on the
        reordered column, but cheaper, since the texts are not encoded again."""
        codes = self.codes[order]
        seen = pd.unique(codes)
        seen = seen[seen >= 0]
        renumber = np.full(len(self.forms) + 1, -1, dtype=np.int64)  # code -1 picks the last slot: stays -1
        renumber[seen] = np.arange(len(seen))
        return _Compared(renumber[codes], self.forms.take(seen))

    def key_codes(self, derive: Callable[[str], str | None] | None) -> np.ndarray:
        """Codes of a blocking key on this column: its own, or those of `derive` applied once per distinct value."""
        return derived_codes(self.codes, self.distinct, derive)


def _blocking_source(rule: Rule, key: str, columns: Sequence[str]) -> tuple[str, Callable | None]:
    """The column a blocking key reads and the derivation applied to it (None: the value itself)."""
    source = key_source(key, columns)
    if source is None:
        raise ValueError(
            f"identity rule {rule.name!r}: blocking key {key!r} is neither a column of the records nor "
            f"<field> followed by one of {', '.join(DERIVED_KEYS)}"
        )
    return source


def _derive(values: np.ndarray, derive: Callable[[str], str | None] | None) -> np.ndarray:
    if derive is None:
        return values
    present = pd.Series(values).dropna().unique()
    derived = {value: derive(value) for value in present}
    return np.array([None if value is None else derived[value] for value in values], dtype=object)


def _codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of values, -1 where missing."""
    return pd.factorize(values, use_na_sentinel=True)[0].astype(np.int64)


# ------------------------------------------------------------------------------------------- pairs


def _cross(
    left_keys: np.ndarray, right_keys: np.ndarray, starts: np.ndarray, counts: np.ndarray, *, strict: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Every (x, y) with x among the slots of a left key and y among those of its paired right key (a key's
    slots are `counts[key]` consecutive ones from `starts[key]`). A key paired with itself yields each
    unordered pair of its slots once: x < y when `strict`, else x <= y."""
    sizes = counts[left_keys] * counts[right_keys]
    # per key pair, values repeated into its run of slots (sequential copies, no gathers through a pair index)
    offset = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    row, column = np.divmod(offset, np.repeat(counts[right_keys], sizes))
    x = np.repeat(starts[left_keys], sizes) + row
    y = np.repeat(starts[right_keys], sizes) + column
    keep = np.repeat(left_keys != right_keys, sizes) | ((x < y) if strict else (x <= y))
    return x[keep], y[keep]


def _similar_values(left: np.ndarray, right: np.ndarray, uniques: np.ndarray, condition: Condition) -> np.ndarray:
    """Whether each pair of value codes meets the condition; each distinct pair of values is scored once (the
    scorers are symmetric). Few distinct values (names) are all scored against each other once instead."""
    width = len(uniques)
    cutoff = condition.cutoff()
    if width * width <= _DENSE_SCORES:
        scores = process.cdist(uniques.tolist(), uniques.tolist(), scorer=SCORERS[condition.method].function,
                               score_cutoff=cutoff, workers=-1)
        return (scores >= cutoff)[left, right]
    pair_codes, distinct = _distinct(np.minimum(left, right) * width + np.maximum(left, right))
    first, second = distinct // width, distinct % width
    scorer = SCORERS[condition.method]
    lengths, counts = _character_counts(uniques)
    bound = scorer.bound(lengths[first], lengths[second], _counts_apart(counts, first, second))
    scored = np.flatnonzero(bound >= cutoff - SCORE_TOLERANCE * scorer.scale)
    scores = process.cpdist(uniques[first[scored]].tolist(), uniques[second[scored]].tolist(),
                            scorer=scorer.function, score_cutoff=cutoff, workers=-1)
    similar = np.zeros(len(distinct), dtype=bool)
    similar[scored] = scores >= cutoff
    return similar[pair_codes]


# characters counted one by one for `_Scorer.bound`; any other character but a space counts in one more column
_COUNTED = "abcdefghijklmnopqrstuvwxyz0123456789"
_PAIR_CHUNK = 1 << 18  # pairs whose counts are compared at once (the two gathered count rows take 37 bytes each)


def _character_counts(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's length and how often it holds each `_COUNTED` character and any other (spaces not counted:
    sorting words moves them; counts capped at 255, which only lowers the counts apart). Counting is done by Arrow,
    a pass per character."""
    arrow = pa.array(texts.tolist(), type=pa.large_string())
    lengths = pc.utf8_length(arrow).to_numpy().astype(np.int64)
    counts = np.empty((len(texts), len(_COUNTED) + 1), dtype=np.int64)
    for column, char in enumerate(_COUNTED):
        counts[:, column] = pc.count_substring(arrow, char).to_numpy()
    counts[:, -1] = lengths - pc.count_substring(arrow, " ").to_numpy() - counts[:, :-1].sum(axis=1)
    return lengths, np.minimum(counts, 255).astype(np.uint8)


def _counts_apart(counts: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Per pair, the sum of the differences between the two texts' character counts: an insertion or deletion
    changes one count by one and a substitution two, so it is at most the indel distance and twice Levenshtein's."""
    apart = np.empty(len(first), dtype=np.int64)
    for start in range(0, len(first), _PAIR_CHUNK):
        chunk = slice(start, start + _PAIR_CHUNK)
        apart[chunk] = np.abs(counts[first[chunk]].astype(np.int16) - counts[second[chunk]]).sum(axis=1)
    return apart


def _distinct(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each code's number among the distinct codes, and those codes (ascending). A stable sort: the pairs come in
    long sorted runs, which it merges several times faster than a hash table takes millions of distinct codes."""
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if len(ordered) else np.empty(0, dtype=bool)
    numbers = np.empty(len(codes), dtype=np.int64)
    numbers[order] = np.cumsum(starts) - 1
    return numbers, ordered[starts]


def _fuzzy_pairs(
    block_codes: np.ndarray, conditions: Sequence[Condition], compared: Mapping[str, _Compared]
) -> tuple[np.ndarray, np.ndarray]:
    """Record pairs (i < j) inside blocks (codes >= 0) that meet every fuzzy condition.

    The work goes by distinct values, not by record pairs: records are keyed by their block, then by block and
    one condition's value, and so on, one condition at a time; a pair of keys survives a level when their parents
    were a surviving pair (a block pairs only with itself) and their values meet the condition. Each distinct pair
    of values is scored once per level, so a big block with few distinct names stays cheap, and records with
    equal values are never scored pair by pair. Conditions with the fewest distinct (block, value) keys go first.
    """
    positions = np.flatnonzero(block_codes >= 0)
    if not len(positions):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys, blocks = pd.factorize(block_codes[positions])
    keys = keys.astype(np.int64)
    left_keys = right_keys = np.arange(len(blocks), dtype=np.int64)
    coded = [(compared[c.field].codes[positions], compared[c.field].distinct) for c in conditions]
    for k in sorted(range(len(conditions)), key=lambda k: len(pd.unique(keys * len(coded[k][1]) + coded[k][0]))):
        value_codes, uniques = coded[k]
        parent_count = keys.max() + 1
        child_keys, keys = np.unique(keys * len(uniques) + value_codes, return_inverse=True)
        child_values = child_keys % len(uniques)
        counts = np.bincount(child_keys // len(uniques), minlength=parent_count)
        x, y = _cross(left_keys, right_keys, np.cumsum(counts) - counts, counts, strict=False)
        similar = _similar_values(child_values[x], child_values[y], uniques, conditions[k])
        left_keys, right_keys = x[similar], y[similar]
    members = positions[np.argsort(keys, kind="stable")]
    counts = np.bincount(keys)
    x, y = _cross(left_keys, right_keys, np.cumsum(counts) - counts, counts, strict=True)
    return np.minimum(members[x], members[y]), np.maximum(members[x], members[y])


# ------------------------------------------------------------------------------------------- resolve


@dataclass
class _Report:
    """What the run decided beyond the ids themselves; attached to the result as attrs["resolution"]."""

    merged_ids: dict[str, str]
    split_ids: dict[str, list[str]]
    unknown_refs: list[str]
    skipped: list[dict[str, Any]]  # blocks too large, with records no pair of which was compared
    split: list[dict[str, Any]] = field(default_factory=list)  # blocks too large, compared by parts
    guarded_components: int = 0
    sticky_links: int = 0
    model: dict[str, Any] | None = None  # the scored matcher's parameters, matches and review band

    def as_dict(self) -> dict[str, Any]:
        return {
            "merged_ids": self.merged_ids, "split_ids": self.split_ids, "unknown_refs": self.unknown_refs,
            "skipped": self.skipped, "split": self.split, "guarded_components": self.guarded_components,
            "sticky_links": self.sticky_links, "model": self.model,
        }


class _Resolver:
    """One run over one frame; positions are rows sorted by ref so every tie breaks the same way."""

    def __init__(self, refs: pa.Array, compared: dict[str, _Compared], spec: IdentityRules, max_block_size: int,
                 parameters: scoring.Parameters | None = None):
        self.refs = refs
        self.ref_codes = np.r_[0, np.cumsum(_flags(pc.not_equal(refs[1:], refs[:-1])))].astype(np.int64)  # sorted
        self.compared = compared
        self.spec = spec
        self.max_block_size = max_block_size
        self.parameters = parameters
        self.report = _Report({}, {}, [], [])

    def _large_block(self, rule: str, key: str, large: dict[str, Any]) -> None:
        """Report a block too large to compare whole (``keys.SplitBlocks.large``): in ``skipped`` when some of its
        records were not compared, else in ``split``."""
        entry = {"rule": rule, "key": key, "size": large["size"], "example_ref": self.refs[large["example"]].as_py(),
                 "split_by": large["split_by"], "records_not_compared": large["records_not_compared"],
                 "pairs_not_compared": large["pairs_not_compared"]}
        if large["records_not_compared"]:
            self.report.skipped.append({**entry, "reason": "block too large"})
        else:
            self.report.split.append(entry)

    def _key_codes(self, rule: Rule, key: str) -> np.ndarray:
        column, derive = _blocking_source(rule, key, list(self.compared))
        return self.compared[column].key_codes(derive)

    def _split_keys(self, rule: Rule, key: str | None) -> list[str]:
        """The keys that split a rule's block too large, in turn: its other blocking keys, then the initial and
        then the prefix of each fuzzy field the block's key does not already read."""
        source = None if key is None else _blocking_source(rule, key, list(self.compared))[0]
        own = [c.field for c in rule.fuzzy if c.field != source]
        return [*(k for k in rule.blocking_keys() if k != key), *(f"{f}_initial" for f in own),
                *(f"{f}_prefix" for f in own)]

    def rule_pairs(self, rule: Rule) -> tuple[np.ndarray, np.ndarray]:
        """Matched pairs (i < j) for one rule."""
        exact_codes = [self.compared[c.field].codes for c in rule.exact]
        if not rule.fuzzy:
            return self._shared_value_pairs(rule, combine(exact_codes))
        present = np.logical_and.reduce([self.compared[c.field].codes >= 0 for c in rule.fuzzy])
        left, right = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for key in rule.blocking_keys() or (None,):
            block_codes = combine([*([] if key is None else [self._key_codes(rule, key)]), *exact_codes])
            block_codes[~present] = -1
            further = [(k, functools.partial(self._key_codes, rule, k)) for k in self._split_keys(rule, key)]
            blocks = split_large(block_codes, self.max_block_size, further)
            for large in blocks.large:
                self._large_block(rule.name, key or "+".join(c.field for c in rule.exact), large)
            pairs = _fuzzy_pairs(blocks.codes, rule.fuzzy, self.compared)
            left.append(pairs[0])
            right.append(pairs[1])
        return np.concatenate(left), np.concatenate(right)

    def _unvetoed(self, rule: Rule, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The pairs whose `EQUAL_OR_MISSING` fields are equal or missing on either side."""
        keep = np.ones(len(left), dtype=bool)
        for condition in rule.vetoes:
            codes = self.compared[condition.field].codes
            keep &= (codes[left] < 0) | (codes[right] < 0) | (codes[left] == codes[right])
        return left[keep], right[keep]

    def _shared_value_pairs(self, rule: Rule, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every pair inside each group of equal values (a clique, not a star, so the chain guard sees
        direct matches). A value shared by more refs than one entity may hold (a team mailbox, a
        switchboard) identifies nobody, so its group yields no pairs."""
        limit = self.spec.max_cluster_size
        for members in Groups.of(codes).large(limit + 1):
            if len(np.unique(self.ref_codes[members])) > limit:
                size = len(members)
                self.report.skipped.append({
                    "rule": rule.name, "key": "+".join(c.field for c in rule.exact), "size": size,
                    "example_ref": self.refs[int(members[0])].as_py(), "split_by": [], "records_not_compared": size,
                    "pairs_not_compared": size * (size - 1) // 2, "reason": "value shared by too many records"})
                codes[members] = -1
        return Groups.of(codes).pairs()

    def model_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (i < j) the scored matcher weighs at or above its match threshold, with the parameters given or,
        without them, estimated on these records; the review band and the blocks left out go in the report."""
        model = self.spec.model
        blocked = scoring.block(model, self.compared)
        parameters = self.parameters or scoring.estimate(model, self.compared, blocked)
        scored = scoring.score(model, parameters, self.compared, blocked)
        for large in (*blocked.skipped, *blocked.split):
            self._large_block("model", large["blocking"], large)
        review = np.flatnonzero(scored.review)
        review = review[np.argsort(-scored.weight[review], kind="stable")]
        self.report.model = {
            "parameters": parameters.as_dict(model), "trained": self.parameters is None,
            "candidate_pairs": len(scored.left), "matches": int(scored.match.sum()), "review_pairs": len(review),
            "uncompared_pairs": blocked.uncompared_pairs,
            "review": [{"left": self.refs[int(scored.left[k])].as_py(),
                        "right": self.refs[int(scored.right[k])].as_py(),
                        "weight": round(float(scored.weight[k]), 3),
                        "probability": round(float(scoring.probability(scored.weight[k])), 6)} for k in review],
        }
        self.report.model["review_samples"] = self.report.model["review"][:REVIEW_SAMPLES]
        return scored.left[scored.match], scored.right[scored.match]

    def crosswalk_pairs(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (i < j) of refs that shared an entity id on the last run, one position per ref.

        An entity within max_cluster_size refs yields every pair, so the chain guard can drop one stale
        member and keep the others together; a larger one (only a manual merge makes those) is a chain,
        since the size guard rebuilds it anyway.
        """
        first_of_ref = np.r_[True, self.ref_codes[1:] != self.ref_codes[:-1]]  # positions are sorted by ref
        groups = Groups.of(np.where(first_of_ref, _codes(previous_ids), -1))
        limit = self.spec.max_cluster_size
        left, right = groups.pairs(max_size=limit)
        chains = list(groups.large(limit + 1))
        return np.concatenate([left, *(m[:-1] for m in chains)]), np.concatenate([right, *(m[1:] for m in chains)])

    def edges(self, split_positions: np.ndarray, previous_ids: np.ndarray) -> pd.DataFrame:
        """All links: same-ref pairs first (strength -1), then each rule by its position (0 strongest), then the
        scored matcher's, then crosswalk links (`IdentityRules.crosswalk_strength`, weaker than every rule).

        Links touching a manually split record are dropped, except same-ref pairs.
        """
        same_ref = np.flatnonzero(self.ref_codes[1:] == self.ref_codes[:-1])
        lefts, rights, strengths = [same_ref], [same_ref + 1], [np.full(len(same_ref), -1, dtype=np.int64)]
        linked = [self._unvetoed(rule, *self.rule_pairs(rule)) for rule in self.spec.rules]
        if self.spec.model is not None:
            linked.append(self.model_pairs())
        linked.append(self.crosswalk_pairs(previous_ids))
        is_split = np.zeros(len(self.refs), dtype=bool)
        is_split[split_positions] = True
        for strength, (left, right) in enumerate(linked):
            keep = ~(is_split[left] | is_split[right])
            lefts.append(left[keep])
            rights.append(right[keep])
            strengths.append(np.full(int(keep.sum()), strength, dtype=np.int64))
        i, j, strength = (np.concatenate(parts).astype(np.int64) for parts in (lefts, rights, strengths))
        # by strength, then pair; each pair kept once, with its strongest rule. One int64 key holds all three: a
        # single sort of it is several times faster than sorting by three keys
        pairs = len(self.refs) ** 2
        if (len(linked) + 1) * pairs >= 2**63:
            raise ValueError(f"{len(self.refs):,} records are too many to resolve in one pass")
        pair = i * len(self.refs) + j
        order = np.argsort((strength + 1) * pairs + pair)  # equal keys are equal links: their order does not matter
        i, j, strength = i[order], j[order], strength[order]
        first = ~pd.Series(pair[order]).duplicated().to_numpy()
        return pd.DataFrame({"i": i[first], "j": j[first], "strength": strength[first]})


    def guarded(self, split_positions: np.ndarray, previous_ids: np.ndarray,
                decisions: Sequence[tuple[str, str, str]], positions_of: Callable[[str], np.ndarray]
                ) -> tuple[pd.DataFrame, np.ndarray, _ChainGuard]:
        """The links (``edges``) less those a steward rejected, and the clusters the chain guard leaves of them
        (before manual merges and accepts)."""
        edges = self.edges(split_positions, previous_ids)
        apart = _rejected(decisions, positions_of, self.ref_codes)
        guard = _ChainGuard(self.spec, self.compared, self.ref_codes, apart)
        if len(apart):  # a rejected pair's own links go; links through others the guard breaks
            edges = edges[~guard.apart_keys(edges["i"].to_numpy(), edges["j"].to_numpy())]
        labels = _components(len(self.refs), edges["i"].to_numpy(), edges["j"].to_numpy())
        labels, self.report.guarded_components = guard.rebuild(labels, edges)
        return edges, labels, guard


@dataclass(frozen=True)
class _Check:
    """One field the chain guard compares, at the lowest threshold any rule uses for it."""

    condition: Condition
    # values scoring below the threshold that still do not contradict (nicknames), or None
    compatible: Callable[[str, str], bool] | None

    def excused(self, left: str, right: str) -> bool:
        """Whether two values that score below the threshold are still no contradiction: compatible (nicknames),
        or, on a fuzzily compared field, one's words ending the other's ("jones" and "frank jones": a tool that
        keeps the whole name in one field)."""
        if self.compatible is not None and self.compatible(left, right):
            return True
        vetoing = self.condition.method == "levenshtein" and self.condition.threshold >= 1.0  # any difference
        return not vetoing and _words_end(left, right)


def _words_end(left: str, right: str) -> bool:
    shorter, longer = sorted((left.split(), right.split()), key=len)
    return len(shorter) < len(longer) and longer[-len(shorter):] == shorter


class _ChainGuard:
    """Re-clusters components that transitive closure made implausible.

    A component is suspect when it holds more than max_cluster_size distinct refs, or when two of its
    records that no rule matched directly are clearly different: both carry a value for a field some rule
    compares fuzzily, and those values score below the lowest threshold any rule uses for that field
    (e.g. last names "Smith" and "Okafor" joined only through a chain, or only by the crosswalk). Different
    emails or phones are not a contradiction: one person often has several. Given names that are
    nicknames, prefixes or initials of one another are not a contradiction either; any other given name
    below the threshold is, even when both records share an email or phone with a common member, since
    colleagues on one switchboard and family on one home phone share a last name.

    A suspect component is rebuilt greedily: links in order of strength (rules listed first are the
    stronger evidence, crosswalk links come last) then by ref; two partial clusters join only if the result
    stays within max_cluster_size and no cross pair is clearly different. Same-ref records always stay
    together.
    """

    def __init__(self, rules: IdentityRules, compared: Mapping[str, _Compared], ref_codes: np.ndarray,
                 apart: np.ndarray | None = None):
        thresholds: dict[tuple[str, str], float] = {}
        for rule in rules.rules:
            for c in rule.fuzzy:
                key = (c.field, c.method)
                thresholds[key] = min(thresholds.get(key, 1.0), c.threshold)
        self.checks = [
            _Check(Condition(field, method, threshold), given_names_compatible if is_given_name_field(field) else None)
            for (field, method), threshold in thresholds.items()
        ]
        # any difference in a vetoing field contradicts: a Levenshtein similarity below 1
        vetoing = dict.fromkeys(c.field for rule in rules.rules for c in rule.vetoes)
        self.checks += [_Check(Condition(field, "levenshtein", 1.0), None) for field in vetoing]
        self.max_size = rules.max_cluster_size
        self.crosswalk_strength = rules.crosswalk_strength
        self.values = {check.condition.field: compared[check.condition.field].values for check in self.checks}
        self.ref_codes = ref_codes
        # pairs of ref codes a steward rejected (``apart_keys``): always clearly different
        self.apart = np.unique(apart) if apart is not None else np.empty(0, np.int64)

    def apart_keys(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Whether each pair of positions is a pair of refs a steward kept apart."""
        a, b = self.ref_codes[left], self.ref_codes[right]
        width = int(self.ref_codes.max()) + 1 if len(self.ref_codes) else 1
        return np.isin(np.minimum(a, b) * width + np.maximum(a, b), self.apart)

    def differ(self, a: int, b: int) -> bool:
        """Whether two records are clearly different (one pair; see `contradicting` for many)."""
        if len(self.apart) and self.apart_keys(np.array([a]), np.array([b]))[0]:
            return True
        for check in self.checks:
            column = self.values[check.condition.field]
            left, right = column[a], column[b]
            if left is not None and right is not None:
                score = SCORERS[check.condition.method].function(left, right)
                if score < check.condition.cutoff() and not check.excused(left, right):
                    return True
        return False

    def contradicting(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Which pairs are clearly different records (vectorized; the few low scores are then checked one
        by one for nicknames)."""
        conflict = self.apart_keys(left, right) if len(self.apart) else np.zeros(len(left), dtype=bool)
        for check in self.checks:
            column = self.values[check.condition.field]
            both = np.flatnonzero((column[left] != None) & (column[right] != None))  # noqa: E711
            if not len(both):
                continue
            scores = process.cpdist(
                column[left[both]].tolist(), column[right[both]].tolist(),
                scorer=SCORERS[check.condition.method].function, workers=-1,
            )
            low = both[scores < check.condition.cutoff()]
            excused = np.array([check.excused(column[left[k]], column[right[k]]) for k in low], dtype=bool)
            conflict[low[~excused]] = True
        return conflict

    def direct_matches(self, edges: pd.DataFrame) -> pd.DataFrame:
        """The links a rule (or a shared ref) made; a crosswalk link is history, not a match."""
        return edges[edges["strength"].to_numpy() < self.crosswalk_strength]

    def suspect_components(self, labels: np.ndarray, edges: pd.DataFrame) -> np.ndarray:
        """Labels of the components to rebuild."""
        n_labels = labels.max() + 1
        # positions are sorted by ref and a ref's records always share a component: count each ref at its first
        first_of_ref = np.r_[True, self.ref_codes[1:] != self.ref_codes[:-1]]
        ref_counts = np.bincount(labels[first_of_ref], minlength=n_labels)
        record_counts = np.bincount(labels, minlength=n_labels)
        oversized = (ref_counts > self.max_size) | (record_counts > self.max_size * 4)
        left, right = Groups.of(np.where(oversized[labels], -1, labels)).pairs()
        direct = self.direct_matches(edges)
        matched = direct["i"].to_numpy() * len(labels) + direct["j"].to_numpy()
        # a hash lookup: np.isin sorts both sides, about 20x slower here
        is_matched = pd.Series(left * len(labels) + right).isin(matched).to_numpy()
        indirect = ~is_matched & (self.ref_codes[left] != self.ref_codes[right])
        left, right = left[indirect], right[indirect]
        contradicted = np.unique(labels[left[self.contradicting(left, right)]])
        return np.union1d(np.flatnonzero(oversized), contradicted)

    def rebuild(self, labels: np.ndarray, edges: pd.DataFrame) -> tuple[np.ndarray, int]:
        """Labels after rebuilding every suspect component, and how many components were rebuilt."""
        suspects = self.suspect_components(labels, edges)
        if not len(suspects):
            return labels, 0
        is_suspect = np.zeros(labels.max() + 1, dtype=bool)
        is_suspect[suspects] = True
        is_suspect = is_suspect[labels]
        members_of = {int(labels[m[0]]): m for m in Groups.of(np.where(is_suspect, labels, -1)).large(1)}
        inside = is_suspect[edges["i"].to_numpy()]
        suspect_edges = edges[inside].assign(label=labels[edges["i"].to_numpy()[inside]])
        rebuilt = labels.copy()
        for label, component_edges in suspect_edges.groupby("label", sort=True):
            for position, representative in self._rebuild_component(members_of[label], component_edges).items():
                rebuilt[position] = len(labels) + representative
        return pd.factorize(rebuilt)[0].astype(np.int64), len(suspects)

    def _rebuild_component(self, members: np.ndarray, edges: pd.DataFrame) -> dict[int, int]:
        """Greedy constrained merge of one component; returns position -> representative position."""
        parent = {int(p): int(p) for p in members}
        cluster: dict[int, list[int]] = {int(p): [int(p)] for p in members}
        refs: dict[int, set[int]] = {int(p): {int(self.ref_codes[p])} for p in members}
        direct_edges = self.direct_matches(edges)
        direct = set(zip(direct_edges["i"].tolist(), direct_edges["j"].tolist()))
        known: dict[tuple[int, int], bool] = {}

        def root(p: int) -> int:
            while parent[p] != p:
                parent[p] = parent[parent[p]]
                p = parent[p]
            return p

        def clearly_different(a: int, b: int) -> bool:
            pair = (min(a, b), max(a, b))
            if pair in direct:
                return False
            if pair not in known:
                known[pair] = self.differ(*pair)
            return known[pair]

        for i, j, strength in edges[["i", "j", "strength"]].itertuples(index=False):
            a, b = root(i), root(j)
            if a == b:
                continue
            if strength >= 0:
                if len(refs[a] | refs[b]) > self.max_size:
                    continue
                if any(clearly_different(x, y) for x in cluster[a] for y in cluster[b]):
                    continue
            parent[b] = a
            cluster[a] += cluster.pop(b)
            refs[a] |= refs.pop(b)
        return {p: root(p) for p in parent}


def _rejected(decisions: Sequence[tuple[str, str, str]], positions_of: Callable[[str], np.ndarray],
              ref_codes: np.ndarray) -> np.ndarray:
    """The pairs of ref codes rejected by a steward, as the chain guard's keys."""
    width = int(ref_codes.max()) + 1 if len(ref_codes) else 1
    keys = []
    for decision, left, right in decisions:
        if decision not in ("accept", "reject"):
            raise ValueError(f"identity decision {decision!r} on {left} and {right}: use accept or reject")
        a, b = positions_of(left), positions_of(right)
        if decision == "reject" and len(a) and len(b):
            x, y = int(ref_codes[a[0]]), int(ref_codes[b[0]])
            keys.append(min(x, y) * width + max(x, y))
    return np.array(keys, dtype=np.int64)


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(left), dtype=np.int8), (left, right)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _held_only_by_crosswalk(labels: np.ndarray, direct: pd.DataFrame) -> int:
    """How many records share their cluster only through the crosswalk: in each cluster, the records
    outside its largest part that direct matches hold together (what would have split off without it)."""
    i, j = direct["i"].to_numpy(), direct["j"].to_numpy()
    inside = labels[i] == labels[j]
    parts = _components(len(labels), i[inside], j[inside])
    largest_part = np.zeros(labels.max() + 1, dtype=np.int64)
    np.maximum.at(largest_part, labels, np.bincount(parts)[parts])
    return int(len(labels) - largest_part.sum())


def _record_keys(frame: pd.DataFrame, what: str) -> tuple[pa.Array, pa.Array]:
    """_source and _source_id per row as Arrow text; a row without either cannot be referenced, so it is an error."""
    missing = [column for column in (SOURCE, SOURCE_ID) if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} lack the column(s) {missing}; every record needs {SOURCE} and {SOURCE_ID}")
    texts = []
    for column in (SOURCE, SOURCE_ID):
        text = _arrow_text(frame[column].astype(str)).cast(pa.large_string())
        empty = frame[column].isna().to_numpy() | _blank(text)
        if empty.any():
            first = frame.index[empty][0]
            raise ValueError(f"{what}: {int(empty.sum())} row(s) have no {column} (first at index {first!r})")
        texts.append(text)
    return texts[0], texts[1]


def _record_refs(frame: pd.DataFrame, what: str) -> pa.Array:
    """'{_source}:{_source_id}' per row (see `_record_keys`)."""
    return _joined_refs(*_record_keys(frame, what))


def record_refs(frame: pd.DataFrame) -> pd.Series:
    """Each record's ref, ``'{_source}:{_source_id}'``, aligned with the frame's index."""
    return pd.Series(_record_refs(frame, "records").to_pylist(), index=frame.index, dtype=object)


def _joined_refs(sources: pa.Array, source_ids: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(sources, source_ids, pa.scalar(":", pa.large_string()))


def _ref_order(sources: pa.Array, source_ids: pa.Array) -> np.ndarray:
    """Positions in the text order of their refs, stable, in code point order (as Python compares text).

    When no source holds a ':', two refs of different sources compare as their '{source}:' prefixes, so the
    refs sort as (rank of that prefix, id): about half the cost of sorting the refs, whose ids share long prefixes.
    """
    encoded = sources.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    if any(":" in source for source in distinct):
        return pc.sort_indices(_joined_refs(sources, source_ids)).to_numpy()
    prefix_rank = np.argsort(np.argsort(np.array([source + ":" for source in distinct], dtype=object)))
    keys = pa.table({"rank": prefix_rank[encoded.indices.to_numpy()], "id": source_ids})
    return pc.sort_indices(keys, sort_keys=[("rank", "ascending"), ("id", "ascending")]).to_numpy()


# a superset of the characters `str.isspace` accepts (those in Unicode's separator categories, and the controls
# it takes for whitespace), so the texts this pattern matches include every text that `str.strip()` empties
_MAYBE_BLANK = r"^[\p{Z}\t-\r\x1c-\x1f\x85]*$"


def _blank(texts: pa.Array) -> np.ndarray:
    """Which texts `str.strip()` leaves empty: Arrow finds the candidates, Python checks those few one by one."""
    candidates = np.flatnonzero(_flags(pc.match_substring_regex(texts, _MAYBE_BLANK)))
    blank = np.zeros(len(texts), dtype=bool)
    blank[candidates] = [not text.strip() for text in texts.take(candidates).to_pylist()]
    return blank


def _check_fields(records: pd.DataFrame, spec: IdentityRules) -> None:
    missing = sorted(spec.model.fields() - set(records.columns)) if spec.model else []
    if missing:
        raise ValueError(f"the identity model reads field(s) {missing}, which the records lack "
                         f"(columns: {sorted(map(str, records.columns))})")
    for rule in spec.rules:
        needed = [c.field for c in rule.conditions]
        needed += [_blocking_source(rule, key, list(records.columns))[0] for key in rule.blocking_keys()]
        for field in needed:
            if field not in records.columns:
                raise ValueError(
                    f"identity rule {rule.name!r} needs field {field!r}, which the records lack "
                    f"(columns: {sorted(map(str, records.columns))})"
                )


def entity_id_for(ref: str, salt: int = 0) -> str:
    """The id a brand-new cluster takes: a hash of its smallest member ref, stable across runs."""
    return _hashed_ids([ref if salt == 0 else f"{ref}#{salt}"])[0]


def _hashed_ids(texts: list[str]) -> list[str]:
    """`entity_id_for` many texts at once, in one comprehension: about half the time of a call per text."""
    blake2b = hashlib.blake2b
    return ["ent_" + blake2b(text.encode(), digest_size=8).hexdigest() for text in texts]


def _previous_ids(refs: pa.Array, crosswalk: pd.DataFrame | None) -> np.ndarray:
    """The entity id each position held in an earlier run, or None (a ref held under several: the smallest)."""
    if crosswalk is None or crosswalk.empty:
        return np.full(len(refs), None, dtype=object)
    missing = [column for column in CROSSWALK_COLUMNS if column not in crosswalk.columns]
    if missing:
        raise ValueError(f"crosswalk lacks the column(s) {missing}; expected {list(CROSSWALK_COLUMNS)}")
    held = pd.Series(crosswalk[ENTITY_ID].astype(str).to_numpy(),
                     index=pd.Index(_record_refs(crosswalk, "crosswalk rows"), dtype="str"))
    held = held.sort_values(kind="stable")
    held = held[~held.index.duplicated(keep="first")]
    return held.reindex(pd.Index(refs, dtype="str")).to_numpy(dtype=object, na_value=None)


def _new_ids(refs: list[str], taken: set[str]) -> list[str]:
    """`entity_id_for` each ref, salted until it clashes with no id taken, nor with one given to an earlier ref."""
    ids = _hashed_ids(refs)
    if taken.isdisjoint(ids) and len(set(ids)) == len(ids):
        return ids  # the usual case: nothing to salt, so no need to go one by one
    for k, ref in enumerate(refs):
        salt = 0
        while ids[k] in taken:
            salt += 1
            ids[k] = entity_id_for(ref, salt)
        taken.add(ids[k])
    return ids


def _assign_ids(labels: np.ndarray, refs: pa.Array, previous: np.ndarray, report: _Report) -> np.ndarray:
    """Entity id per label: the earlier id most of its members held (each earlier id goes to one cluster;
    a cluster holding several keeps the smallest), else a hash of its smallest ref."""
    n_labels = labels.max() + 1
    smallest_position = np.full(n_labels, len(labels))
    np.minimum.at(smallest_position, labels, np.arange(len(labels)))
    ids = np.full(n_labels, None, dtype=object)
    has_previous = np.flatnonzero(previous != None)  # noqa: E711
    claims = pd.DataFrame({"label": labels[has_previous], "entity_id": previous[has_previous]})
    if len(claims):
        claims = claims.value_counts().rename("votes").reset_index()
        claims["smallest"] = smallest_position[claims["label"]]
        # ids ranked once as text, so the sorts compare integers (sorting the text column is ~10x slower)
        claims["id_rank"] = pd.factorize(claims["entity_id"], sort=True)[0]
        claims = claims.sort_values(["id_rank", "votes", "smallest"], ascending=[True, False, True])
        winners = claims.drop_duplicates("id_rank").sort_values(["label", "id_rank"])
        kept = winners.drop_duplicates("label")
        ids[kept["label"].to_numpy()] = kept["entity_id"].to_numpy(dtype=object)
        retired = winners[winners.duplicated("label")]
        report.merged_ids.update(zip(retired["entity_id"].tolist(), ids[retired["label"].to_numpy()].tolist()))
    taken = set(previous[has_previous]) | {i for i in ids if i is not None}
    fresh = np.flatnonzero(ids == None)  # noqa: E711
    ids[fresh] = _new_ids(refs.take(smallest_position[fresh]).to_pylist(), taken)
    if len(claims):
        contested = claims.merge(winners[["id_rank", "label"]], on="id_rank", suffixes=("", "_winner"))
        for row in contested[contested["label"] != contested["label_winner"]].itertuples():
            report.split_ids.setdefault(row.entity_id, []).append(ids[row.label])
    return ids


def resolve_entities(
    records: pd.DataFrame,
    rules: Any,
    crosswalk: pd.DataFrame | None = None,
    *,
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE,
    parameters: scoring.Parameters | Mapping[str, Any] | None = None,
    decisions: Sequence[tuple[str, str, str]] = (),
) -> pd.Series:
    """Cluster records into entities; see `sync_pipelines.resolve` for the contract. ``parameters``: the scored
    matcher's, as trained (``Parameters.as_dict`` read back too); estimated on these records when None.
    ``decisions``: a steward's (``accept`` or ``reject``, left ref, right ref) on reviewed pairs: an accepted pair
    joins like a manual merge, a rejected one is never linked, directly or through others."""
    spec = IdentityRules.from_spec(rules)
    if isinstance(parameters, Mapping):
        parameters = scoring.Parameters.from_dict(spec.model, parameters)
    if isinstance(max_block_size, bool) or not isinstance(max_block_size, int) or max_block_size < 2:
        raise ValueError(f"max_block_size must be an integer of at least 2, got {max_block_size!r}")
    if not isinstance(records, pd.DataFrame):
        raise TypeError(f"records must be a pandas DataFrame, got {type(records).__name__}")
    report = _Report({}, {}, [], [])
    if records.empty:
        result = pd.Series([], index=records.index, dtype="str", name=ENTITY_ID)
        result.attrs[REPORT_ATTR] = report.as_dict()
        return result
    _check_fields(records, spec)
    columns = list(records.columns)
    sources, source_ids = _record_keys(records, "records")
    order = _ref_order(sources, source_ids)
    refs = _joined_refs(sources, source_ids).take(order)
    compared = {field: _Compared.of(records[field]).take(order) for field in spec.fields(columns)}
    resolver = _Resolver(refs, compared, spec, max_block_size, parameters)
    report = resolver.report

    def positions_of(ref: str) -> np.ndarray:
        found = np.flatnonzero(_flags(pc.equal(refs, ref)))
        if not len(found) and ref not in report.unknown_refs:
            report.unknown_refs.append(ref)
        return found

    split_positions = np.concatenate([positions_of(ref) for ref in spec.split] or [np.empty(0, np.int64)])
    previous_ids = _previous_ids(refs, crosswalk)
    edges, labels, guard = resolver.guarded(split_positions, previous_ids, decisions, positions_of)
    report.sticky_links = _held_only_by_crosswalk(labels, guard.direct_matches(edges))

    merge_left, merge_right = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    accepted = [(left, right) for decision, left, right in decisions if decision == "accept"]
    for group in (*spec.merge, *accepted):
        found = np.concatenate([positions_of(ref) for ref in group] or [np.empty(0, np.int64)])
        merge_left.append(np.full(max(len(found) - 1, 0), labels[found[0]] if len(found) else 0))
        merge_right.append(labels[found[1:]])
    # manual merges are a person's decision: they join whole clusters and are not capped by max_cluster_size
    labels = _components(labels.max() + 1, np.concatenate(merge_left), np.concatenate(merge_right))[labels]
    for skipped in report.skipped:
        log.warning(
            "identity rule %r: %s for key %r (%d records, e.g. %s, split by %s); %d of them were not compared by it",
            skipped["rule"], skipped["reason"], skipped["key"], skipped["size"], skipped["example_ref"],
            ", ".join(skipped["split_by"]) or "no further key", skipped["records_not_compared"],
        )
    if report.unknown_refs:
        log.warning("identity manual overrides name refs that are not among the records: %s", report.unknown_refs)

    ids = pd.array(_assign_ids(labels, refs, previous_ids, report), dtype="str")  # each id checked as text once
    label_of_row = np.empty(len(refs), dtype=np.int64)
    label_of_row[order] = labels
    result = pd.Series(ids.take(label_of_row), index=records.index, name=ENTITY_ID)
    result.attrs[REPORT_ATTR] = report.as_dict()
    return result


def _model_inputs(records: pd.DataFrame, rules: Any) -> tuple[scoring.MatchModel, dict[str, _Compared]]:
    spec = IdentityRules.from_spec(rules)
    if spec.model is None:
        raise ValueError("the identity section declares no model: add identity.<entity>.model (docs/matching.md)")
    _check_fields(records, spec)
    return spec.model, {f: _Compared.of(records[f]) for f in sorted(spec.model.fields())}


def train_model(records: pd.DataFrame, rules: Any) -> dict[str, Any]:
    """The scored matcher's parameters estimated on ``records``, as ``resolve_entities`` reads them back."""
    model, compared = _model_inputs(records, rules)
    return scoring.estimate(model, compared).as_dict(model)


def explain_pair(records: pd.DataFrame, rules: Any, parameters: Mapping[str, Any], left: str, right: str
                 ) -> pd.DataFrame:
    """The scored matcher's waterfall (``scoring.explain``) of the records ``left`` and ``right`` (refs
    ``tool:source_id``) among ``records``, with their values in the comparison form resolution scores."""
    model, compared = _model_inputs(records, rules)
    refs = _joined_refs(*_record_keys(records, "records")).to_pylist()
    position = {ref: i for i, ref in reversed(list(enumerate(refs)))}
    unknown = [ref for ref in (left, right) if ref not in position]
    if unknown:
        raise ValueError(f"no staged record {', '.join(map(repr, unknown))}; a ref is tool:source_id, e.g. "
                         f"{refs[0] if refs else 'hubspot:101'!r}")
    return scoring.explain(model, scoring.Parameters.from_dict(model, parameters), compared, position[left],
                           position[right])


def explain_members(records: pd.DataFrame, rules: Any, *, parameters: Mapping[str, Any] | None = None,
                    decisions: Sequence[tuple[str, str, str]] = ()) -> pd.DataFrame:
    """Why ``records`` (one golden record's members) are together: the fewest links that join them, each the
    strongest reason its two records were linked, in the order resolution weighs reasons (the same ref, each rule
    in turn, the scored matcher, the last run's entity, then a manual merge or a steward's accept). Columns:
    ``left``, ``right`` (refs), ``linked_by`` and ``detail`` (the rule's values, or the scored matcher's weight).
    Records no link reaches are listed with ``linked_by`` "nothing links it"."""
    spec = IdentityRules.from_spec(rules)
    if spec.model is not None and parameters is None:
        raise ValueError("the identity section declares a model: pass its trained parameters")
    _check_fields(records, spec)
    sources, source_ids = _record_keys(records, "records")
    order = _ref_order(sources, source_ids)
    refs = _joined_refs(sources, source_ids).take(order)
    compared = {f: _Compared.of(records[f]).take(order) for f in spec.fields(list(records.columns))}
    trained = None if parameters is None else scoring.Parameters.from_dict(spec.model, parameters)
    resolver = _Resolver(refs, compared, spec, DEFAULT_MAX_BLOCK_SIZE, trained)
    names = refs.to_pylist()
    position = {ref: k for k, ref in reversed(list(enumerate(names)))}

    def positions_of(ref: str) -> np.ndarray:
        return np.array([position[ref]] if ref in position else [], dtype=np.int64)

    edges, labels, _ = resolver.guarded(np.flatnonzero(np.isin(names, spec.split)),
                                        np.zeros(len(names), dtype=np.int64), decisions, positions_of)
    edges = edges[labels[edges["i"].to_numpy()] == labels[edges["j"].to_numpy()]]  # the guard kept these
    parent = list(range(len(names)))
    rows = []

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    def link(i: int, j: int, reason: Callable[[], tuple[str, str]]) -> None:
        if root(i) != root(j):
            parent[root(i)] = root(j)
            rows.append((names[i], names[j], *reason()))

    direct = edges["strength"] < spec.crosswalk_strength
    for i, j, strength in edges[direct].itertuples(index=False):
        link(i, j, functools.partial(_link_reason, spec, compared, trained, int(strength), i, j))
    joins = [(group, "manual merge") for group in spec.merge] + [
        ((left, right), "accepted by a steward") for decision, left, right in decisions if decision == "accept"]
    for group, reason in joins:
        present = [position[ref] for ref in group if ref in position]
        for k in present[1:]:
            link(present[0], k, lambda reason=reason: (reason, ""))
    for i, j, _ in edges[~direct].itertuples(index=False):
        link(i, j, lambda: ("together on the last run", "no rule links them now; the crosswalk keeps them together"))
    roots = [root(k) for k in range(len(names))]
    sizes = collections.Counter(roots)
    alone = [names[k] for k in range(len(names)) if sizes[roots[k]] == 1] if len(names) > 1 else []
    rows += [(ref, "", "nothing links it", "") for ref in alone]
    return pd.DataFrame(rows, columns=["left", "right", "linked_by", "detail"])


def _link_reason(spec: IdentityRules, compared: Mapping[str, _Compared], trained: scoring.Parameters | None,
                 strength: int, i: int, j: int) -> tuple[str, str]:
    """A direct link's reason and detail: the same ref, a rule (by ``IdentityRules`` strength), or the model."""
    if strength < 0:
        return "the same ref", ""
    if strength < len(spec.rules):
        rule = spec.rules[strength]
        shown = [f"{c.field}: {compared[c.field].values[i]!r} / {compared[c.field].values[j]!r}"
                 for c in rule.conditions if c.method != EQUAL_OR_MISSING]
        return f"rule {rule.name}", "; ".join(dict.fromkeys(shown))
    weight = float(scoring.match_weights(spec.model, trained, compared, np.array([i]), np.array([j]))[0])
    return "scored matcher", f"weight {weight:+.2f}, match probability {float(scoring.probability(weight)):.4f}"


def build_crosswalk(records: pd.DataFrame, clusters: pd.Series) -> pd.DataFrame:
    """The (entity_id, _source, _source_id) rows to store, so the next run keeps these ids."""
    if not clusters.index.equals(records.index):
        raise ValueError("clusters must be aligned with the records' index (use the Series resolve_entities returned)")
    _record_refs(records, "records")
    crosswalk = pd.DataFrame(
        {ENTITY_ID: clusters.astype(str).to_numpy(), SOURCE: records[SOURCE].astype(str).to_numpy(),
         SOURCE_ID: records[SOURCE_ID].astype(str).to_numpy()}
    ).drop_duplicates()
    clashes = crosswalk.duplicated([SOURCE, SOURCE_ID], keep=False)
    if clashes.any():
        first = crosswalk[clashes].iloc[0]
        raise ValueError(f"record {first[SOURCE]}:{first[SOURCE_ID]} is in more than one entity")
    return crosswalk.sort_values([ENTITY_ID, SOURCE, SOURCE_ID], ignore_index=True)


def pairwise_precision_recall(predicted: pd.Series, truth: pd.Series) -> tuple[float, float]:
    """Pairwise precision and recall of predicted clusters against true ones, from cluster contingency counts.

    Both Series label the same index; a missing label makes that record a singleton. With no predicted
    (true) pairs, precision (recall) is 1.0.
    """
    if len(predicted.index) != len(truth.index) or not predicted.index.sort_values().equals(truth.index.sort_values()):
        raise ValueError("predicted and truth must label the same index")
    if not predicted.index.is_unique:
        raise ValueError("predicted and truth need a unique index")
    truth = truth.reindex(predicted.index)

    def codes(labels: pd.Series) -> np.ndarray:
        found = pd.factorize(labels, use_na_sentinel=True)[0].astype(np.int64)
        missing = found < 0
        found[missing] = found.max(initial=-1) + 1 + np.arange(missing.sum())
        return found

    def pair_count(counts: np.ndarray) -> int:
        return int((counts * (counts - 1) // 2).sum())

    predicted_codes, truth_codes = codes(predicted), codes(truth)
    joint = predicted_codes * (truth_codes.max(initial=0) + 1) + truth_codes
    true_pairs = pair_count(np.unique(joint, return_counts=True)[1])
    predicted_pairs = pair_count(np.bincount(predicted_codes))
    truth_pairs = pair_count(np.bincount(truth_codes))
    precision = true_pairs / predicted_pairs if predicted_pairs else 1.0
    recall = true_pairs / truth_pairs if truth_pairs else 1.0
    return precision, recall


def block_neighbors(records: pd.DataFrame, touched: np.ndarray | Mapping[str, np.ndarray], rules: Any) -> np.ndarray:
    """Which records a rule could now link to a ``touched`` one (boolean mask over ``records``; touched records
    included): the same values of an exact-only rule's fields, or a fuzzy rule's match within their candidate group
    (blocking key and exact fields). An incremental run re-resolves these and their entities, and leaves the rest
    alone.

    ``touched`` is a mask of changed records, or, per field, a mask of the records whose value of that field
    changed: a rule then starts only from records whose fields it reads changed, since a pair it compares decides
    as before when neither record's fields changed."""
    spec = IdentityRules.from_spec(rules)
    _check_fields(records, spec)
    columns = list(records.columns)
    per_field = dict(touched) if isinstance(touched, Mapping) else None
    for name, mask in (per_field or {"touched": touched}).items():
        if len(np.asarray(mask)) != len(records):
            raise ValueError(f"{name} has {len(np.asarray(mask))} flags for {len(records)} records")
    values = {field: normalize_values(records[field]) for field in spec.fields(columns)}
    none = np.zeros(len(records), dtype=bool)
    near = np.logical_or.reduce([np.asarray(m, dtype=bool) for m in per_field.values()] or [none]) \
        if per_field is not None else np.asarray(touched, dtype=bool).copy()
    for rule in spec.rules:
        if per_field is None:
            starts = np.asarray(touched, dtype=bool)
        else:
            read = {c.field for c in rule.conditions} | {
                _blocking_source(rule, key, columns)[0] for key in rule.blocking_keys()}
            starts = np.logical_or.reduce([np.asarray(per_field.get(f, none), dtype=bool) for f in read])
        if not starts.any():
            continue
        exact_codes = [_codes(values[c.field]) for c in rule.exact]
        for key in rule.blocking_keys() or (None,):
            key_codes = []
            if key is not None:
                column, derive = _blocking_source(rule, key, columns)
                key_codes = [_codes(_derive(values[column], derive))]
            codes = combine([*key_codes, *exact_codes])
            if rule.fuzzy:
                near[_fuzzy_matches(codes, starts, rule, values)] = True
            else:
                near |= _sharing(codes, starts)
    if spec.model is not None:  # the model compares only records that share a blocking entry's keys
        read = spec.model.fields()
        starts = np.asarray(touched, dtype=bool) if per_field is None else np.logical_or.reduce(
            [np.asarray(per_field.get(f, none), dtype=bool) for f in read])
        if starts.any():
            compared = {f: _Compared.of(records[f]) for f in read}
            for keys in spec.model.blocking:
                near |= _sharing(scoring.key_codes(compared, keys), starts)
    return near


def _sharing(codes: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The records whose code (>= 0) one of the ``starts`` holds."""
    shared = np.unique(codes[starts & (codes >= 0)])
    return (codes >= 0) & np.isin(codes, shared)


_MAX_NEIGHBOUR_PAIRS = 5_000_000  # beyond this, whole candidate groups are taken instead of scoring pairs


def _fuzzy_matches(codes: np.ndarray, starts: np.ndarray, rule: Rule, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Positions of the records a fuzzy rule matches with a starting record in its candidate group: the rest of a
    large group (a common last-name prefix) cannot link to it, so it need not be resolved again."""
    present = np.logical_and.reduce([values[c.field] != None for c in rule.fuzzy])  # noqa: E711
    usable = (codes >= 0) & present
    left = pd.DataFrame({"code": codes[starts & usable], "i": np.flatnonzero(starts & usable)})
    right = pd.DataFrame({"code": codes[usable], "j": np.flatnonzero(usable)})
    sizes = right["code"].value_counts()
    if int(sizes.reindex(left["code"]).fillna(0).sum()) > _MAX_NEIGHBOUR_PAIRS:
        return np.flatnonzero(usable & np.isin(codes, left["code"].unique()))
    pairs = left.merge(right, on="code")
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    for condition in rule.fuzzy:
        if not len(i):
            break
        column, cutoff = values[condition.field], condition.cutoff()
        scores = process.cpdist(column[i].tolist(), column[j].tolist(), scorer=SCORERS[condition.method].function,
                                score_cutoff=cutoff, workers=-1)
        keep = scores >= cutoff
        i, j = i[keep], j[keep]
    return np.unique(j)
