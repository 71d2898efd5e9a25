"""An organisation's name without its legal form, as a matching key: "Acme, Inc.", "ACME Inc" and "Acme" are one
name written three ways. The forms are data (`legal_forms.txt`), so adding one needs no code."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pandas as pd

LEGAL_FORMS_FILE = Path(__file__).with_name("legal_forms.txt")
_NOT_A_WORD = re.compile(r"[\W_]+")


def _words(text: str) -> tuple[str, ...]:
    """Lower-case words, punctuation as separators: "S.A." is ("s", "a"), "A/S" is ("a", "s")."""
    return tuple(_NOT_A_WORD.sub(" ", text.casefold()).split())


@functools.cache
def legal_forms(path: Path = LEGAL_FORMS_FILE) -> frozenset[tuple[str, ...]]:
    """The forms of the file as word tuples; blank lines and ``#`` comments skipped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return frozenset(words for line in lines if (words := _words(line)))


def name_key_of(name: str, forms: frozenset[tuple[str, ...]] | None = None) -> str | None:
    """The words of ``name`` with the legal forms that end it dropped, one after another ("Acme Pty Ltd" is
    "acme"), while a word remains before them (a company named "Limited Ltd" keeps "limited"); None when it has
    no word."""
    forms = legal_forms() if forms is None else forms
    words = _words(name)
    longest = max(map(len, forms), default=0)
    dropped = True
    while dropped:
        dropped = False
        for size in range(min(longest, len(words) - 1), 0, -1):
            if words[-size:] in forms:
                words, dropped = words[:-size], True
                break
    return " ".join(words) or None


def name_key(series: pd.Series) -> pd.Series:
    """`name_key_of` each text of a column, computed once per distinct text; missing stays missing."""
    keys = {text: name_key_of(text) for text in series.dropna().unique().tolist()}
    return pd.Series([keys.get(text) if isinstance(text, str) else None for text in series.tolist()],
                     index=series.index, dtype=series.dtype)
