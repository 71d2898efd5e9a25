"""Given names compared the way people write them: a prefix of three letters or more ("Alex", "Alexander"), an
initial ("J.", "James"), or two names of one line of ``nicknames.txt`` ("Bob", "Robert") name one person."""

from __future__ import annotations

import functools
from pathlib import Path

GIVEN_NAME_MARKERS = ("first_name", "given_name")
NICKNAMES_FILE = Path(__file__).with_name("nicknames.txt")  # one group of interchangeable given names per line
MIN_GIVEN_NAME_PREFIX = 3


def _nickname_index(path: Path) -> dict[str, frozenset[int]]:
    """Each name in the file -> the numbers of the groups that list it (Sam is in Samuel's and Samantha's)."""
    index: dict[str, set[int]] = {}
    lines = [line.split("#", 1)[0] for line in path.read_text(encoding="utf-8").splitlines()]
    for number, line in enumerate(line for line in lines if line.strip()):
        for name in line.split():
            index.setdefault(name, set()).add(number)
    return {name: frozenset(numbers) for name, numbers in index.items()}


_NICKNAME_INDEX = _nickname_index(NICKNAMES_FILE)
_NO_GROUPS: frozenset[int] = frozenset()


def is_given_name_field(field: str) -> bool:
    """Whether a field holds given names, so nickname-aware comparison applies to it."""
    folded = field.casefold()
    return any(marker in folded for marker in GIVEN_NAME_MARKERS)


def _same_given_name(left: str, right: str) -> bool:
    shorter, longer = sorted((left, right), key=len)
    if longer.startswith(shorter) and (len(shorter) == 1 or len(shorter) >= MIN_GIVEN_NAME_PREFIX):
        return True
    return not _NICKNAME_INDEX.get(left, _NO_GROUPS).isdisjoint(_NICKNAME_INDEX.get(right, _NO_GROUPS))


@functools.lru_cache(maxsize=1 << 16)
def given_names_compatible(left: str, right: str) -> bool:
    """Whether two given names (comparison form) can name one person: one is a prefix (3+ letters) or an
    initial of the other, or they share a line of `nicknames.txt`; checked on the whole names (dots dropped)
    and on their first words ("Bob" and "Robert James"). A name with no letters left is no evidence."""
    left_words, right_words = left.replace(".", " ").split(), right.replace(".", " ").split()
    if not left_words or not right_words:
        return True
    return _same_given_name(" ".join(left_words), " ".join(right_words)) or _same_given_name(
        left_words[0], right_words[0]
    )
