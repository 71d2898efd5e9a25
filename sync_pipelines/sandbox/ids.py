"""Vendor-looking record ids that encode the row number, so a lookup by id needs no index."""

from __future__ import annotations

from dataclasses import dataclass

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SF_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_STRIPE_MOD = 62**12
_STRIPE_MUL = 2_654_435_761  # odd and not a multiple of 31: invertible modulo 62**12
_STRIPE_ADD = 1_234_567_890_123_456_789


def to_base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(BASE62[digit])
    return "".join(reversed(chars))


def from_base62(text: str) -> int:
    number = 0
    for char in text:
        number = number * 62 + BASE62.index(char)
    return number


def salesforce_checksum(id15: str) -> str:
    """The 3-character suffix Salesforce adds to make 15-character ids case-insensitive."""
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, c in enumerate(id15[chunk * 5:chunk * 5 + 5]) if "A" <= c <= "Z")
        suffix += _SF_SUFFIX[bits]
    return suffix


@dataclass(frozen=True)
class IdScheme:
    """Maps a row number to a vendor id and back; `row` returns None for ids this scheme never issues."""

    kind: str  # "salesforce", "int", "string_int", "stripe", "csv"
    prefix: str = ""
    offset: int = 0

    def id(self, row: int) -> str | int:
        if self.kind == "salesforce":
            id15 = f"{self.prefix}5g00000{to_base62(row, 5)}"
            return id15 + salesforce_checksum(id15)
        if self.kind == "int":
            return self.offset + row
        if self.kind == "string_int":
            return str(self.offset + row)
        if self.kind == "stripe":
            scrambled = (row * _STRIPE_MUL + _STRIPE_ADD) % _STRIPE_MOD
            return f"{self.prefix}_{to_base62(scrambled, 12)}{to_base62(row % 62, 2)}"
        return f"{self.prefix}{self.offset + row:06d}"

    def row(self, value: object) -> int | None:
        try:
            text = str(value)
            if self.kind == "salesforce":
                if len(text) not in (15, 18) or not text.startswith(self.prefix):
                    return None
                row = from_base62(text[10:15])
                return row if self.id(row)[: len(text)] == text else None
            if self.kind in ("int", "string_int"):
                row = int(text) - self.offset
            elif self.kind == "stripe":
                head = f"{self.prefix}_"
                if not text.startswith(head) or len(text) != len(head) + 14:
                    return None
                scrambled = from_base62(text[len(head):len(head) + 12])
                row = (scrambled - _STRIPE_ADD) * pow(_STRIPE_MUL, -1, _STRIPE_MOD) % _STRIPE_MOD
            else:
                if not text.startswith(self.prefix):
                    return None
                row = int(text[len(self.prefix):]) - self.offset
        except ValueError:
            return None
        return row if row >= 0 and str(self.id(row)) == text else None
