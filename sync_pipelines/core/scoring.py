"""A scored matcher (Fellegi–Sunter): each declared comparison puts a record pair at one of its levels, each level
carries a match weight (the log2 of how much likelier it is among matches than among non-matches), and a pair's
weight is the sum of its levels' weights and the prior's. The parameters come from the records alone: ``u`` (how
often a level holds for two random records) from a random sample of pairs, ``m`` (how often it holds for a match)
by expectation maximisation over blocked pairs. An exact level with ``term_frequency`` weighs a shared value by how
rare it is. Fields that move together (a household's phone, postcode and city) are declared ``correlated``: their
agreement is counted once, by the strongest of them, since summing them would count one fact several times. Pure
numpy/pandas/rapidfuzz; the contract is ``docs/matching.md``.

Levels are numbered in the order declared, then one more for "none of them"; ``MISSING`` (-1) is a pair where
either record lacks the value, which is no evidence either way (weight 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import JaroWinkler, Levenshtein

from sync_pipelines.core.given_names import given_names_compatible
from sync_pipelines.core.keys import Groups, derived_codes, key_source, split_large

MISSING = -1
EXACT = "exact"
WITHIN_DAYS = "within_days"
GIVEN_NAME = "given_name"  # nicknames, prefixes and initials of one another (core/given_names)
SWAPPED_WITH = "swapped_with"  # this field and another one written the other way round (first and last names)
SWAP_SIMILARITY = 0.9  # Jaro–Winkler both crossed values reach for a swap
# similarity on a 0..1 scale (token_sort is rapidfuzz's 0..100 ratio, rescaled)
SIMILARITIES: dict[str, Callable[..., float]] = {
    "jaro_winkler": JaroWinkler.normalized_similarity,
    "levenshtein": Levenshtein.normalized_similarity,
    "token_sort": lambda a, b, **kwargs: fuzz.token_sort_ratio(a, b, **kwargs) / 100.0,
}
LEVEL_KINDS = (EXACT, GIVEN_NAME, *SIMILARITIES, WITHIN_DAYS, SWAPPED_WITH)
_WITHOUT_THRESHOLD = (EXACT, GIVEN_NAME)
DEFAULT_SAMPLE_PAIRS = 300_000  # enough for levels rarer than 1 in 1,000 to be seen hundreds of times
DEFAULT_MAX_BLOCK_SIZE = 5_000
MAX_FREQUENCIES = 10_000  # values whose term frequency is stored per comparison, the commonest first
EM_ITERATIONS = 50
EM_TOLERANCE = 1e-5
SMOOTHING = 1e-6  # keeps every probability off 0 and 1, so every weight is finite
_SCORE_SLACK = 1e-6  # rapidfuzz scores are float32: a pair scoring the threshold exactly reaches it


class SpecError(ValueError):
    """A model section that cannot be used; the message starts with its key path."""

    @property
    def path(self) -> str:
        return str(self).split(": ", 1)[0]

    @property
    def problem(self) -> str:
        return str(self).split(": ", 1)[-1]


@dataclass(frozen=True)
class Level:
    kind: str
    threshold: float | None = None  # a similarity in [0, 1], or days for within_days
    other: str | None = None  # the field of swapped_with

    @property
    def label(self) -> str:
        if self.kind in _WITHOUT_THRESHOLD:
            return self.kind.replace("_", " ")
        if self.kind == WITHIN_DAYS:
            return f"within {self.threshold:g} days"
        if self.kind == SWAPPED_WITH:
            return f"swapped with {self.other}"
        return f"{self.kind} >= {self.threshold:g}"


@dataclass(frozen=True)
class Comparison:
    field: str
    levels: tuple[Level, ...]
    term_frequency: bool = False  # the exact level weighs a shared value by its frequency

    @property
    def labels(self) -> list[str]:
        return [level.label for level in self.levels] + ["different"]


@dataclass(frozen=True)
class MatchModel:
    """The ``model`` of an entity's identity section, validated."""

    comparisons: tuple[Comparison, ...]
    blocking: tuple[tuple[str, ...], ...]  # each: keys whose values two records must share to be compared
    match_probability: float
    review_probability: float
    max_block_size: int = DEFAULT_MAX_BLOCK_SIZE
    sample_pairs: int = DEFAULT_SAMPLE_PAIRS
    correlated: tuple[tuple[int, ...], ...] = ()  # positions of comparisons whose agreement counts once

    @property
    def match_weight(self) -> float:
        return _weight_of(self.match_probability)

    @property
    def review_weight(self) -> float:
        return _weight_of(self.review_probability)

    def fields(self) -> set[str]:
        """The record fields the model reads (a derived blocking key counts as its field)."""
        return ({c.field for c in self.comparisons}
                | {key_source(key, None)[0] for keys in self.blocking for key in keys}
                | {level.other for c in self.comparisons for level in c.levels if level.other})

    @classmethod
    def from_spec(cls, spec: Any, where: str = "model") -> MatchModel:
        if isinstance(spec, MatchModel):
            return spec
        if not isinstance(spec, Mapping):
            raise SpecError(f"{where}: expected a mapping with comparisons, blocking and thresholds, got {spec!r}")
        known = {"comparisons", "blocking", "match_probability", "review_probability", "max_block_size",
                 "sample_pairs", "correlated"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
        comparisons = tuple(_comparison(raw, f"{where}.comparisons[{i}]")
                            for i, raw in enumerate(_listed(spec, "comparisons", where)))
        if not comparisons:
            raise SpecError(f"{where}.comparisons: at least one comparison is needed")
        blocking = tuple(_blocking(raw, f"{where}.blocking[{i}]")
                         for i, raw in enumerate(_listed(spec, "blocking", where)))
        if not blocking:
            raise SpecError(f"{where}.blocking: at least one blocking key is needed (comparing every pair of "
                            "records does not scale)")
        match = _probability(spec.get("match_probability", 0.99), f"{where}.match_probability")
        review = _probability(spec.get("review_probability", 0.5), f"{where}.review_probability")
        if review > match:
            raise SpecError(f"{where}.review_probability: {review} is above match_probability {match}; the review "
                            "band lies under the match threshold")
        return cls(comparisons, blocking, match, review,
                   _positive_int(spec.get("max_block_size", DEFAULT_MAX_BLOCK_SIZE), f"{where}.max_block_size", 2),
                   _positive_int(spec.get("sample_pairs", DEFAULT_SAMPLE_PAIRS), f"{where}.sample_pairs", 100),
                   _correlated(_listed(spec, "correlated", where), comparisons, f"{where}.correlated"))


def _listed(spec: Mapping, name: str, where: str) -> list:
    value = spec.get(name) or []
    if not isinstance(value, list):
        raise SpecError(f"{where}.{name}: expected a list, got {value!r}")
    return value


def _probability(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise SpecError(f"{where}: expected a probability strictly between 0 and 1, got {value!r}")
    return float(value)


def _positive_int(value: Any, where: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SpecError(f"{where}: expected an integer of at least {least}, got {value!r}")
    return value


def _correlated(groups: list, comparisons: tuple[Comparison, ...], where: str) -> tuple[tuple[int, ...], ...]:
    position = {c.field: i for i, c in enumerate(comparisons)}
    seen: set[str] = set()
    out = []
    for g, group in enumerate(groups):
        if not isinstance(group, list) or len(group) < 2:
            raise SpecError(f"{where}[{g}]: expected a list of two or more compared fields, got {group!r}")
        for k, name in enumerate(group):
            if name not in position:
                raise SpecError(f"{where}[{g}][{k}]: {name!r} is no compared field; compared: {sorted(position)}")
            if name in seen:
                raise SpecError(f"{where}[{g}][{k}]: {name!r} is in two groups; a field counts in one at most")
            seen.add(name)
        out.append(tuple(position[name] for name in group))
    return tuple(out)


def _comparison(raw: Any, where: str) -> Comparison:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("field"), str):
        raise SpecError(f"{where}: expected {{field: NAME, levels: [...]}}, got {raw!r}")
    unknown = sorted(set(raw) - {"field", "levels", "term_frequency"})
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: ['field', 'levels', 'term_frequency']")
    levels = tuple(_level(item, f"{where}.levels[{i}]") for i, item in enumerate(_listed(raw, "levels", where)))
    if not levels:
        raise SpecError(f"{where}.levels: at least one level is needed, e.g. [exact, {{jaro_winkler: 0.9}}]")
    for i, (stronger, weaker) in enumerate(zip(levels, levels[1:])):
        if stronger.kind == EXACT and i > 0 or weaker.kind == EXACT:
            raise SpecError(f"{where}.levels[{i + 1}]: exact must be the first level (the strongest)")
        if stronger.kind == weaker.kind and stronger.kind in SIMILARITIES and weaker.threshold >= stronger.threshold:
            raise SpecError(f"{where}.levels[{i + 1}]: thresholds out of order: {weaker.label} after "
                            f"{stronger.label}; list the levels from the strictest down")
        if stronger.kind == weaker.kind == WITHIN_DAYS and weaker.threshold <= stronger.threshold:
            raise SpecError(f"{where}.levels[{i + 1}]: thresholds out of order: {weaker.label} after "
                            f"{stronger.label}; list the levels from the strictest down")
    term_frequency = raw.get("term_frequency", False)
    if not isinstance(term_frequency, bool):
        raise SpecError(f"{where}.term_frequency: expected true or false, got {term_frequency!r}")
    if term_frequency and levels[0].kind != EXACT:
        raise SpecError(f"{where}.term_frequency: adjusts an exact level, and this comparison has none first")
    return Comparison(raw["field"], levels, term_frequency)


def _level(raw: Any, where: str) -> Level:
    if raw in _WITHOUT_THRESHOLD:
        return Level(raw)
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise SpecError(f"{where}: expected exact, given_name or a mapping of one kind to its threshold "
                        f"(e.g. {{jaro_winkler: 0.9}}), got {raw!r}; kinds: {', '.join(LEVEL_KINDS)}")
    (kind, threshold), = raw.items()
    if kind not in LEVEL_KINDS or kind in _WITHOUT_THRESHOLD:
        raise SpecError(f"{where}: unknown level kind {kind!r}; allowed: {', '.join(LEVEL_KINDS)}")
    if kind == SWAPPED_WITH:
        if not isinstance(threshold, str) or not threshold:
            raise SpecError(f"{where}: swapped_with needs the other field's name, got {threshold!r}")
        return Level(kind, other=threshold)
    if kind == WITHIN_DAYS:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
            raise SpecError(f"{where}: within_days needs a number of days of at least 0, got {threshold!r}")
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise SpecError(f"{where}: {kind} needs a similarity threshold in (0, 1], got {threshold!r}")
    return Level(kind, float(threshold))


def _blocking(raw: Any, where: str) -> tuple[str, ...]:
    keys = [raw] if isinstance(raw, str) else raw
    if not isinstance(keys, list) or not keys or not all(isinstance(key, str) for key in keys):
        raise SpecError(f"{where}: expected a key or a list of keys, got {raw!r}")
    return tuple(keys)


def _weight_of(probability: float) -> float:
    return float(np.log2(probability / (1 - probability)))


# ------------------------------------------------------------------------------------------- values


class Values(Protocol):
    """A field in comparison form: per record the code of its value (-1 where missing), and each value once."""

    codes: np.ndarray
    distinct: np.ndarray


@dataclass(frozen=True)
class FieldValues:
    codes: np.ndarray
    distinct: np.ndarray

    @classmethod
    def of(cls, column: pd.Series) -> FieldValues:
        """Casefolded, trimmed, single-spaced text; blanks are missing."""
        texts = column.astype("str").str.casefold().str.split().str.join(" ").replace("", None)
        codes, distinct = pd.factorize(texts, use_na_sentinel=True)
        return cls(codes.astype(np.int64), np.asarray(distinct, dtype=object))


def field_values(records: pd.DataFrame, model: MatchModel) -> dict[str, FieldValues]:
    return {name: FieldValues.of(records[name]) for name in sorted(model.fields())}


# ------------------------------------------------------------------------------------------- blocking


@dataclass
class Blocked:
    """Candidate pairs (i < j, each once) and what blocking left out, per key."""

    left: np.ndarray
    right: np.ndarray
    by_key: list[tuple[np.ndarray, np.ndarray]]  # each blocking entry's own pairs
    # blocks too large (``keys.SplitBlocks.large``): ``skipped`` left records uncompared, ``split`` compared each
    # record within its part
    skipped: list[dict[str, Any]] = field(default_factory=list)
    split: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uncompared_pairs(self) -> int:
        return sum(s["pairs_not_compared"] for s in (*self.skipped, *self.split))


def key_codes(values: Mapping[str, Values], keys: Sequence[str]) -> np.ndarray:
    """One code per distinct combination of the keys' values; -1 where any is missing."""
    combined = np.zeros(len(next(iter(values.values())).codes), dtype=np.int64)
    valid = np.ones(len(combined), dtype=bool)
    for key in keys:
        name, derive = key_source(key, list(values)) or (key, None)
        codes = derived_codes(values[name].codes, values[name].distinct, derive)
        valid &= codes >= 0
        combined = pd.factorize(combined * (int(codes.max()) + 2) + codes + 1)[0].astype(np.int64)
    combined[~valid] = -1
    return combined


def block(model: MatchModel, values: Mapping[str, Values]) -> Blocked:
    """The pairs of every blocking entry, united. A block larger than ``max_block_size`` is split by the next
    entry's keys (then the next, in turn); a block with records still not compared goes in ``skipped``, one whose
    every record was compared within its part in ``split``."""
    n = len(next(iter(values.values())).codes)
    by_key, skipped, split = [], [], []
    for position, keys in enumerate(model.blocking):
        others = [model.blocking[(position + k) % len(model.blocking)] for k in range(1, len(model.blocking))]
        blocks = split_large(key_codes(values, keys), model.max_block_size,
                             [("+".join(more), lambda more=more: key_codes(values, more)) for more in others])
        for large in blocks.large:
            entry = {"blocking": "+".join(keys), **large}
            (skipped if large["records_not_compared"] else split).append(entry)
        by_key.append(Groups.of(blocks.codes).pairs())
    pair = np.unique(np.concatenate([i * n + j for i, j in by_key])) if by_key else np.empty(0, np.int64)
    return Blocked(pair // n, pair % n, by_key, skipped, split)


# ------------------------------------------------------------------------------------------- levels


def _similarities(column: Values, left: np.ndarray, right: np.ndarray, kind: str, cutoff: float) -> np.ndarray:
    """The similarity of each pair's values, each distinct pair of values scored once (0 below ``cutoff``, which
    lets the scorer stop early)."""
    width = len(column.distinct) + 1
    a, b = column.codes[left], column.codes[right]
    inverse, distinct = pd.factorize(np.minimum(a, b) * width + np.maximum(a, b))
    first, second = distinct // width, distinct % width
    scores = process.cpdist(column.distinct[first].tolist(), column.distinct[second].tolist(),
                            scorer=SIMILARITIES[kind], score_cutoff=max(cutoff - _SCORE_SLACK, 0.0), workers=-1)
    return np.asarray(scores, dtype=np.float64)[inverse]


def _given_names(column: Values, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each pair of value codes are given names of one person; each distinct pair judged once."""
    width = len(column.distinct) + 1
    inverse, distinct = pd.factorize(np.minimum(a, b) * width + np.maximum(a, b))
    judged = np.array([given_names_compatible(column.distinct[x], column.distinct[y])
                       for x, y in zip((distinct // width).tolist(), (distinct % width).tolist())], dtype=bool)
    return judged[inverse]


def _swapped(column: Values, other: Values, left: np.ndarray, right: np.ndarray, pending: np.ndarray) -> np.ndarray:
    """Whether each pending pair holds the two fields the other way round (each crossed pair similar)."""
    holds = np.zeros(len(left), dtype=bool)
    rows = np.flatnonzero(pending & (other.codes[left] >= 0) & (other.codes[right] >= 0))
    if not len(rows):
        return holds
    def crossed(a: Values, b: Values, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.asarray(process.cpdist(a.distinct[a.codes[x]].tolist(), b.distinct[b.codes[y]].tolist(),
                                         scorer=JaroWinkler.normalized_similarity, workers=-1)) >= SWAP_SIMILARITY
    holds[rows] = (crossed(column, other, left[rows], right[rows])
                   & crossed(other, column, left[rows], right[rows]))
    return holds


def _days(column: Values) -> np.ndarray:
    """Each distinct value as a day number (NaN where it is no date)."""
    parsed = pd.to_datetime(pd.Series(column.distinct, dtype=object), errors="coerce", format="mixed")
    return (parsed.dt.tz_localize(None) if parsed.dt.tz is not None else parsed).to_numpy(
        "datetime64[D]").astype("float64")


def levels(model: MatchModel, values: Mapping[str, Values], left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Per pair and comparison, the first level that holds (``MISSING`` where a value is missing): an int8
    matrix of pairs × comparisons."""
    out = np.empty((len(left), len(model.comparisons)), dtype=np.int8)
    for c, comparison in enumerate(model.comparisons):
        column = values[comparison.field]
        a, b = column.codes[left], column.codes[right]
        present = (a >= 0) & (b >= 0)
        level = np.full(len(left), len(comparison.levels), dtype=np.int8)
        undecided = present.copy()
        scores: dict[str, np.ndarray] = {}
        days = None
        for number, spec in enumerate(comparison.levels):
            if spec.kind == EXACT:
                holds = a == b
            elif spec.kind == GIVEN_NAME:
                holds = np.zeros(len(left), dtype=bool)
                holds[undecided] = _given_names(column, a[undecided], b[undecided])
            elif spec.kind == SWAPPED_WITH:
                holds = _swapped(column, values[spec.other], left, right, undecided)
            elif spec.kind == WITHIN_DAYS:
                if days is None:
                    days = _days(column)
                apart = np.abs(days[np.maximum(a, 0)] - days[np.maximum(b, 0)])
                holds = apart <= spec.threshold  # NaN (no date) never holds
            else:
                if spec.kind not in scores:  # once per kind, for the pairs no stricter level took, at its lowest
                    scores[spec.kind] = np.zeros(len(left))
                    if undecided.any():
                        lowest = min(x.threshold for x in comparison.levels if x.kind == spec.kind)
                        scores[spec.kind][undecided] = _similarities(column, left[undecided], right[undecided],
                                                                     spec.kind, lowest)
                holds = scores[spec.kind] >= spec.threshold - _SCORE_SLACK
            hit = undecided & holds
            level[hit] = number
            undecided &= ~hit
        level[~present] = MISSING
        out[:, c] = level
    return out


# ------------------------------------------------------------------------------------------- parameters


@dataclass
class Parameters:
    """What the model learnt: per comparison, the probability of each level among matches (m) and among
    non-matches (u); the prior probability that two records match; and which m were estimated."""

    m: list[np.ndarray]
    u: list[np.ndarray]
    prior: float
    estimated: list[bool]
    # per comparison with term_frequency: the trained shares of its commonest values, and the share any other
    # value is given (the rarest kept): a run on part of the records weighs a value as the training did
    frequencies: list[Frequencies | None] = field(default_factory=list)

    def weights(self) -> list[np.ndarray]:
        """log2(m / u) per comparison and level."""
        return [np.log2(m / u) for m, u in zip(self.m, self.u)]

    def as_dict(self, model: MatchModel) -> dict[str, Any]:
        """Plain JSON, which ``from_dict`` reads back exactly."""
        frequencies = self.frequencies or [None] * len(model.comparisons)
        return {"prior": self.prior, "comparisons": {
            c.field: {"levels": c.labels, "m": m.tolist(), "u": u.tolist(), "m_estimated": e,
                      **({"term_frequencies": {"shares": f.shares, "floor": f.floor}} if f else {})}
            for c, m, u, e, f in zip(model.comparisons, self.m, self.u, self.estimated, frequencies)}}

    @classmethod
    def from_dict(cls, model: MatchModel, data: Mapping[str, Any]) -> Parameters:
        """Parameters stored by ``as_dict``; refused (ValueError) when they were trained for other comparisons."""
        stored = data.get("comparisons") or {}
        if [c.field for c in model.comparisons] != list(stored) or any(
                stored[c.field].get("levels") != c.labels for c in model.comparisons):
            raise ValueError("the stored parameters were trained for other comparisons or levels: train again")
        fields = [stored[c.field] for c in model.comparisons]
        return cls([np.asarray(f["m"], dtype=np.float64) for f in fields],
                   [np.asarray(f["u"], dtype=np.float64) for f in fields], float(data["prior"]),
                   [bool(f.get("m_estimated")) for f in fields],
                   [Frequencies(f["term_frequencies"]["shares"], f["term_frequencies"]["floor"])
                    if "term_frequencies" in f else None for f in fields])


@dataclass(frozen=True)
class Frequencies:
    shares: dict[str, float]  # value (comparison form) -> its share of the records holding one
    floor: float  # the share of a value not listed

    @classmethod
    def of(cls, column: Values) -> Frequencies:
        codes = column.codes
        counts = np.bincount(codes[codes >= 0], minlength=len(column.distinct))
        shares = counts / max(int(counts.sum()), 1)
        kept = np.argsort(-shares, kind="stable")[:MAX_FREQUENCIES]
        kept = kept[shares[kept] > 0]
        floor = float(shares[kept].min()) if len(kept) < len(shares) and len(kept) else 1.0 / max(len(codes), 1)
        return cls({str(column.distinct[k]): float(shares[k]) for k in kept}, floor)

    def of_codes(self, column: Values) -> np.ndarray:
        """Each distinct value's share, ``floor`` for those not listed."""
        return pd.Series(column.distinct, dtype=object).map(self.shares).fillna(self.floor).to_numpy(np.float64)


def _distribution(observed: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The share of each level among the pairs where the value is present (smoothed off zero)."""
    present = observed >= 0
    counts = np.bincount(observed[present], weights=None if weights is None else weights[present], minlength=size)
    total = counts.sum()
    shares = counts / total if total > 0 else np.full(size, 1.0 / size)
    shares = np.clip(shares, SMOOTHING, None)
    return shares / shares.sum()


def estimate_u(model: MatchModel, values: Mapping[str, Values], n: int, seed: int = 0) -> list[np.ndarray]:
    """``u`` from random pairs of records: nearly all of them are non-matches."""
    rng = np.random.default_rng(seed)
    total = n * (n - 1) // 2
    if total <= model.sample_pairs:
        left, right = np.triu_indices(n, 1)
    else:
        left = rng.integers(0, n, model.sample_pairs)
        right = rng.integers(0, n - 1, model.sample_pairs)
        right = right + (right >= left)  # never a record with itself
    observed = levels(model, values, left, right)
    return [_distribution(observed[:, c], len(comp.levels) + 1) for c, comp in enumerate(model.comparisons)]


def _initial_m(size: int) -> np.ndarray:
    """A start for EM: matches sit mostly at the strictest level."""
    m = np.full(size, 0.1 / max(size - 1, 1))
    m[0] = 0.9
    return m


def counted_once(model: MatchModel, weights: np.ndarray) -> np.ndarray:
    """Per-comparison weights (pairs × comparisons) with each correlated group's agreement counted once: where any
    member agrees (a positive weight), only the strongest keeps its weight; where none does, their disagreements
    all count."""
    out = weights.copy()
    for group in model.correlated:
        members = out[:, group]
        best = members.argmax(axis=1)
        agrees = members.max(axis=1) > 0
        kept = np.where(agrees[:, None], 0.0, members)
        rows = np.flatnonzero(agrees)
        kept[rows, best[rows]] = members[rows, best[rows]]
        out[:, group] = kept
    return out


def _log_bayes_factors(model: MatchModel, observed: np.ndarray, m: list[np.ndarray], u: list[np.ndarray],
                       used: Sequence[int]) -> np.ndarray:
    """ln(m / u) of each pair's level per comparison ``used`` (0 elsewhere and where missing), counted once."""
    out = np.zeros(observed.shape, dtype=np.float64)
    for c in used:
        column = observed[:, c]
        present = column >= 0
        out[present, c] = np.log(m[c] / u[c])[column[present]]
    return counted_once(model, out)


def _expectation(model: MatchModel, observed: np.ndarray, m: list[np.ndarray], u: list[np.ndarray], prior: float,
                 used: Sequence[int]) -> np.ndarray:
    """The probability that each pair matches, from the levels of the comparisons ``used``."""
    total = np.log(prior / (1 - prior)) + _log_bayes_factors(model, observed, m, u, used).sum(axis=1)
    return 1.0 / (1.0 + np.exp(-np.clip(total, -700, 700)))


def _em(model: MatchModel, observed: np.ndarray, m: list[np.ndarray], u: list[np.ndarray],
        used: Sequence[int]) -> list[np.ndarray]:
    """EM over one blocking entry's pairs, with ``u`` fixed; only the comparisons ``used`` are estimated."""
    m = [x.copy() for x in m]
    prior = 0.5
    for _ in range(EM_ITERATIONS):
        p = _expectation(model, observed, m, u, prior, used)
        moved = 0.0
        for c in used:
            updated = _distribution(observed[:, c], len(m[c]), p)
            moved = max(moved, float(np.abs(updated - m[c]).max()))
            m[c] = updated
        prior = float(np.clip(p.mean(), SMOOTHING, 1 - SMOOTHING))
        if moved < EM_TOLERANCE:
            break
    return m


def estimate(model: MatchModel, values: Mapping[str, Values], blocked: Blocked | None = None,
             seed: int = 0) -> Parameters:
    """``u`` from random pairs; ``m`` by EM over each blocking entry's pairs, leaving out the comparisons of the
    fields that entry blocks on (its pairs agree on them by construction), averaged over the entries; the prior
    from the expected matches among the candidate pairs over all pairs."""
    n = len(next(iter(values.values())).codes)
    blocked = blocked or block(model, values)
    u = estimate_u(model, values, n, seed)
    start = [_initial_m(len(x)) for x in u]
    found: list[list[np.ndarray]] = [[] for _ in model.comparisons]
    for keys, (left, right) in zip(model.blocking, blocked.by_key):
        blocked_fields = {key_source(key, list(values))[0] for key in keys}
        used = [c for c, comp in enumerate(model.comparisons) if comp.field not in blocked_fields]
        if not len(left) or not used:
            continue
        fitted = _em(model, levels(model, values, left, right), start, u, used)
        for c in used:
            found[c].append(fitted[c])
    m = [np.mean(f, axis=0) if f else s for f, s in zip(found, start)]
    # the prior: matches expected among the candidates (their own share found by EM on the prior alone) over all
    # pairs; a true match blocking misses is lost anyway
    observed = levels(model, values, blocked.left, blocked.right)
    share = 0.5
    for _ in range(EM_ITERATIONS):
        updated = float(np.clip(_expectation(model, observed, m, u, share, range(len(m))).mean(), SMOOTHING, 1))
        if abs(updated - share) < EM_TOLERANCE:
            share = updated
            break
        share = updated
    total = max(n * (n - 1) // 2, 1)
    prior = float(np.clip(share * len(blocked.left) / total, SMOOTHING / total, 1 - SMOOTHING))
    return Parameters(m, u, prior, [bool(f) for f in found],
                      [Frequencies.of(values[c.field]) if c.term_frequency else None for c in model.comparisons])


# ------------------------------------------------------------------------------------------- weights


def term_frequencies(model: MatchModel, params: Parameters, values: Mapping[str, Values]
                     ) -> list[np.ndarray | None]:
    """Per comparison with ``term_frequency``, each distinct value's trained share (None for the others)."""
    trained = params.frequencies or [None] * len(model.comparisons)
    return [None if not c.term_frequency else (f or Frequencies.of(values[c.field])).of_codes(values[c.field])
            for c, f in zip(model.comparisons, trained)]


def pair_weights(model: MatchModel, params: Parameters, values: Mapping[str, Values], left: np.ndarray,
                 right: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
    """Per pair and comparison, the weight its level adds (0 where missing): pairs × comparisons."""
    observed = levels(model, values, left, right) if observed is None else observed
    frequencies = term_frequencies(model, params, values)
    out = np.zeros(observed.shape, dtype=np.float64)
    for c, (weights, comparison) in enumerate(zip(params.weights(), model.comparisons)):
        column = observed[:, c]
        present = column >= 0
        out[present, c] = weights[column[present]]
        if frequencies[c] is not None:  # a shared value weighs by how rare it is: m over its own frequency
            exact = column == 0
            shared = frequencies[c][values[comparison.field].codes[left[exact]]]
            out[exact, c] = np.log2(params.m[c][0] / np.clip(shared, SMOOTHING, 1))
    return counted_once(model, out)


def prior_weight(params: Parameters) -> float:
    return _weight_of(params.prior)


def match_weights(model: MatchModel, params: Parameters, values: Mapping[str, Values], left: np.ndarray,
                  right: np.ndarray) -> np.ndarray:
    """Each pair's match weight: the prior's plus every comparison's."""
    return prior_weight(params) + pair_weights(model, params, values, left, right).sum(axis=1)


def probability(weight: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp2(-np.asarray(weight, dtype=np.float64)))


@dataclass
class Scored:
    """The candidate pairs with their weights, split by the model's thresholds."""

    left: np.ndarray
    right: np.ndarray
    weight: np.ndarray
    match: np.ndarray  # bool: at or above the match weight
    review: np.ndarray  # bool: in the review band, under the match weight
    blocked: Blocked


def score(model: MatchModel, params: Parameters, values: Mapping[str, Values], blocked: Blocked | None = None
          ) -> Scored:
    blocked = blocked or block(model, values)
    weight = match_weights(model, params, values, blocked.left, blocked.right)
    match = weight >= model.match_weight
    return Scored(blocked.left, blocked.right, weight, match, ~match & (weight >= model.review_weight), blocked)


# ------------------------------------------------------------------------------------------- explanations


def explain(model: MatchModel, params: Parameters, values: Mapping[str, Values], i: int, j: int) -> pd.DataFrame:
    """The waterfall of one pair: a row for the prior and one per comparison (level, both values, weight), and
    the total, whose weight is the sum of the rows above it and the score used to decide."""
    left, right = np.array([i]), np.array([j])
    observed = levels(model, values, left, right)[0]
    weights = pair_weights(model, params, values, left, right, observed[None, :])[0]
    rows = [{"comparison": "prior", "level": f"1 in {1 / params.prior:,.0f} pairs match", "left": None,
             "right": None, "weight": prior_weight(params)}]
    for c, comparison in enumerate(model.comparisons):
        column = values[comparison.field]
        level = int(observed[c])
        label = "missing" if level == MISSING else comparison.labels[level]
        if comparison.term_frequency and level == 0:
            label += " (term frequency)"
        if weights[c] == 0 and level != MISSING and any(c in group for group in model.correlated):
            label += " (counted once with its correlated fields)"
        rows.append({"comparison": comparison.field, "level": label,
                     "left": _value(column, i), "right": _value(column, j), "weight": float(weights[c])})
    total = float(sum(row["weight"] for row in rows))
    rows.append({"comparison": "total", "level": f"match probability {probability(total):.6f}", "left": None,
                 "right": None, "weight": total})
    return pd.DataFrame(rows)


def _value(column: Values, row: int) -> str | None:
    code = int(column.codes[row])
    return None if code < 0 else str(column.distinct[code])


def waterfall_markdown(table: pd.DataFrame) -> str:
    lines = ["| comparison | level | left | right | weight |", "|---|---|---|---|---:|"]
    for row in table.itertuples(index=False):
        left, right = (value if isinstance(value, str) else "" for value in (row.left, row.right))
        lines.append(f"| {row.comparison} | {row.level} | {left} | {right} | {row.weight:+.2f} |")
    return "\n".join(lines)
