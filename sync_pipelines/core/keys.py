"""Blocking keys derived from a field's comparison form: its first letters, its Soundex, an email's domain. Rules
and the scored matcher block on them by the names ``<field>_prefix``, ``<field>_soundex`` and ``<field>_domain``."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

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


def _prefix(value: str) -> str:
    return value[:PREFIX_LENGTH]


def _domain(value: str) -> str | None:
    _, at, domain = value.rpartition("@")
    return domain or None if at else None


DERIVED_KEYS: dict[str, Callable[[str], str | None]] = {"_prefix": _prefix, "_soundex": soundex, "_domain": _domain}
