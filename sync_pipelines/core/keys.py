"""Blocking, shared by the rules and the scored matcher: keys derived from a field's comparison form (its first
letter, its first letters, its Soundex, an email's domain, by the names ``<field>_initial``, ``<field>_prefix``,
``<field>_soundex`` and ``<field>_domain``), groups of records sharing a key and the pairs inside them, and the
splitting of a block too large to compare whole."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PREFIX_LENGTH = 3

_SOUNDEX_DIGITS = {
    letter: digit
    for letters, digit in (("bfpv", "1"), ("cgjkqsxz", "2"), ("dt", "3"), ("l", "4"), ("mn", "5"), ("r", "6"))
    for letter in letters
}


def soundex(text: str) -> str | None:
    """American Soundex of the ASCII letters of `text` (accents stripped), or None when it has none."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    letters = [char for char in ascii_text if char.isalpha()]
    if not letters:
        return None
    digits, previous = [], _SOUNDEX_DIGITS.get(letters[0], "")
    for letter in letters[1:]:
        digit = _SOUNDEX_DIGITS.get(letter, "")
        if digit and digit != previous:
            digits.append(digit)
        if letter not in "hw":  # h and w do not separate letters with the same code; vowels do
            previous = digit
    return (letters[0].upper() + "".join(digits) + "000")[:4]


def _initial(value: str) -> str:
    return value[:1]


def _prefix(value: str) -> str:
    return value[:PREFIX_LENGTH]


def _domain(value: str) -> str | None:
    _, at, domain = value.rpartition("@")
    return domain or None if at else None


DERIVED_KEYS: dict[str, Callable[[str], str | None]] = {
    "_initial": _initial, "_prefix": _prefix, "_soundex": soundex, "_domain": _domain,
}
Derive = Callable[[str], "str | None"]


def key_source(key: str, fields: Sequence[str] | None) -> tuple[str, Derive | None] | None:
    """The field a blocking key reads and the derivation applied to it (None: the field's own value); None when
    the key is neither one of ``fields`` nor derived from one (``fields`` None: any name is a field)."""
    if fields is not None and key in fields:
        return key, None
    for suffix, derive in DERIVED_KEYS.items():
        if key.endswith(suffix) and len(key) > len(suffix) and (fields is None or key[: -len(suffix)] in fields):
            return key[: -len(suffix)], derive
    return (key, None) if fields is None else None


def derived_codes(codes: np.ndarray, distinct: np.ndarray, derive: Derive | None) -> np.ndarray:
    """Codes of a derived key, from a field's value codes (-1 missing) and its distinct values: ``derive`` is
    applied once per distinct value."""
    if derive is None:
        return codes
    derived = pd.factorize(np.array([derive(value) for value in distinct] + [None], dtype=object))[0]
    return derived[codes]  # -1 takes the None appended last, whose code is -1


def combine(code_arrays: Sequence[np.ndarray]) -> np.ndarray:
    """One code per distinct tuple of codes, -1 where any part is missing."""
    if len(code_arrays) == 1:
        return code_arrays[0].copy()
    valid = np.logical_and.reduce([codes >= 0 for codes in code_arrays])
    combined = np.full(len(code_arrays[0]), -1, dtype=np.int64)
    if valid.any():
        # numbered in the tuples' sorted order; packing two codes into one int keeps that order
        packed = code_arrays[0][valid].astype(np.int64)
        for codes in code_arrays[1:]:
            part = codes[valid].astype(np.int64)
            packed = np.unique(packed * (part.max() + 1) + part, return_inverse=True)[1].ravel()
        combined[valid] = packed
    return combined


@dataclass(frozen=True)
class Groups:
    """Positions sorted by group code (ascending within a group), with each group's start and size."""

    members: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def of(cls, codes: np.ndarray) -> Groups:
        positions = np.flatnonzero(codes >= 0)
        members = positions[np.argsort(codes[positions], kind="stable")]
        starts = np.r_[0, np.flatnonzero(np.diff(codes[members])) + 1] if len(members) else np.empty(0, np.int64)
        sizes = np.diff(np.r_[starts, len(members)])
        return cls(members, starts.astype(np.int64), sizes.astype(np.int64))

    def pairs(self, min_size: int = 2, max_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Every pair (i < j) inside groups of min_size..max_size members, vectorized per group size."""
        chosen = (self.sizes >= max(min_size, 2)) & (self.sizes <= (max_size or np.inf))
        left, right = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        for size in np.unique(self.sizes[chosen]):
            starts = self.starts[chosen & (self.sizes == size)]
            first, second = np.triu_indices(int(size), 1)
            left.append(self.members[starts[:, None] + first].ravel())
            right.append(self.members[starts[:, None] + second].ravel())
        return np.concatenate(left), np.concatenate(right)

    def large(self, min_size: int) -> Iterator[np.ndarray]:
        for start, size in zip(self.starts, self.sizes):
            if size >= min_size:
                yield self.members[start : start + size]


def _pair_count(sizes: np.ndarray) -> int:
    return int((sizes * (sizes - 1) // 2).sum())


@dataclass
class SplitBlocks:
    """Block codes after splitting (-1: not compared), and per block that was too large what became of it:
    ``size``, ``split_by`` (the further keys applied), ``records_not_compared`` (left in a part still too large,
    or lacking a further key), ``pairs_not_compared`` (between its parts or inside those left out), ``example``
    (a position in it)."""

    codes: np.ndarray
    large: list[dict] = field(default_factory=list)


def split_large(codes: np.ndarray, limit: int, further: Sequence[tuple[str, Callable[[], np.ndarray]]]
                ) -> SplitBlocks:
    """Split every block of more than ``limit`` records by the further keys in turn (each a name and its codes,
    computed only when needed), a part still too large by the next one; what is still too large after the last
    is left out."""
    original = codes
    sizes = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.empty(0, np.int64)
    large = np.flatnonzero(sizes > limit)
    if not len(large):
        return SplitBlocks(codes)
    codes, used = codes.copy(), []
    for name, further_codes in further:
        is_large = np.isin(codes, np.flatnonzero(np.bincount(codes[codes >= 0]) > limit))
        if not is_large.any():
            break
        finer = combine([np.where(is_large, codes, -1), further_codes()])
        codes = np.where(is_large, np.where(finer >= 0, finer + codes.max() + 1, -1), codes)
        codes = np.where(codes >= 0, pd.factorize(codes)[0], -1)
        used.append(name)
    still = np.flatnonzero(np.bincount(codes[codes >= 0]) > limit) if (codes >= 0).any() else []
    codes[np.isin(codes, still)] = -1
    in_large = np.flatnonzero(np.isin(original, large))
    parts = pd.DataFrame({"block": original[in_large], "part": codes[in_large]})
    compared = parts[parts["part"] >= 0].groupby(["block", "part"]).size().groupby(level="block").apply(
        lambda s: _pair_count(s.to_numpy())).reindex(large, fill_value=0)
    not_compared = (parts["part"] < 0).groupby(parts["block"]).sum().reindex(large, fill_value=0)
    example = pd.Series(in_large).groupby(parts["block"].to_numpy()).first().reindex(large)
    return SplitBlocks(codes, [
        {"size": int(sizes[block]), "split_by": list(used), "records_not_compared": int(not_compared[block]),
         "pairs_not_compared": _pair_count(sizes[block : block + 1]) - int(compared[block]),
         "example": int(example[block])}
        for block in large
    ])
