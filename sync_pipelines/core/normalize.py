"""Turn a tool's raw records into canonical rows through the stack file's declared field mapping.

Every transform named in the stack file is a vectorised function on a pandas Series, so a mapping is applied
column by column; a record that cannot be keyed or timed is rejected with its reason instead of being dropped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from sync_pipelines.core.legal_forms import name_key

if TYPE_CHECKING:  # the core never imports the stack's model: it is handed its parts
    from sync_pipelines.stack import Entity, Stream


_MISSING = object()
_RAW_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
                | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS)


def raw_json(record: dict) -> str:
    """The whole source record as JSON text, kept for audit and quarantine: orjson, several times cheaper than the
    standard library at a million records; what it refuses (integers beyond 64 bits) goes through ``json``. Dates
    and other objects become their ``str``, as with either encoder's ``default``."""
    try:
        return orjson.dumps(record, default=str, option=_RAW_OPTIONS).decode()
    except TypeError:
        return json.dumps(record, default=str, sort_keys=True)


# A North American number as people type it: (415) 555-0100, 415.555.0100, +1 415 555 0100, 1-415-555-0100,
# +14155550100. ASCII digits only: libphonenumber also reads other scripts' digits, and writes them as ASCII.
_NANP_SHAPE = r"^(?:\+?1[ .-]?)?\(?([2-9][0-9]{2})\)?[ .-]?([0-9]{3})[ .-]?([0-9]{4})$"
_NANP_DIGITS = 10
# The PhoneNumberDesc fields libphonenumber's number type tries: a number is valid when it matches the general
# description and one of these.
_NUMBER_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
                 "fixed_line", "mobile")


@functools.lru_cache(maxsize=1 << 16)
def _phone_e164(value: Any) -> Any:
    """E.164 when libphonenumber can parse a valid number (read as from the US); the trimmed input otherwise, so a
    check can flag it. Cached: the same person's number comes from several tools."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        number = phonenumbers.parse(value, "US")
    except phonenumbers.NumberParseException:
        return value.strip()
    if not phonenumbers.is_valid_number(number):
        return value.strip()
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _matches_desc(desc: Any, length: int) -> str | None:
    """The anchored pattern a national number of ``length`` digits must match to match ``desc``, as
    libphonenumber's ``_is_number_matching_desc`` decides it; None when none can."""
    if desc is None or (desc.possible_length and length not in desc.possible_length):
        return None
    return f"^(?:{desc.national_number_pattern})$" if desc.national_number_pattern else None


@functools.cache
def _us_validity_patterns() -> tuple[str, str] | None:
    """The two patterns a ten-digit national number must both match to be valid for the US, from libphonenumber's
    own metadata: its general description, and any of its number types. Arrow runs them on RE2, as C++
    libphonenumber does, so the metadata is written for it. None when no ten-digit number can be valid."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region("US")
    general = _matches_desc(metadata.general_desc, _NANP_DIGITS)
    kinds = [p for name in _NUMBER_TYPES if (p := _matches_desc(getattr(metadata, name), _NANP_DIGITS))]
    return (general, "|".join(kinds)) if general and kinds else None


def _phones_e164(values: pd.Series) -> pd.Series:
    """``_phone_e164`` over a column. A plain North American number is decided in Arrow, for the whole column at
    once: its shape gives its country code and national number, and the US metadata's patterns its validity. A
    number valid for the US is valid (the US is the first region libphonenumber tries for +1), and its E.164 form
    is +1 and its digits; one that is not is checked across the other +1 regions without being parsed again. Every
    other value goes through libphonenumber."""
    out = values.tolist()
    plain = [i for i, v in enumerate(out) if type(v) is str and v.isascii()]
    patterns = _us_validity_patterns()
    decided = [False] * len(out)
    if plain and patterns:
        texts = pa.array([out[i] for i in plain], type=pa.string())
        shaped = pc.match_substring_regex(texts, _NANP_SHAPE)
        digits = pc.replace_substring_regex(texts, _NANP_SHAPE, r"\1\2\3")
        valid = pc.and_(pc.match_substring_regex(digits, patterns[0]), pc.match_substring_regex(digits, patterns[1]))
        for i, number, is_shaped, is_valid in zip(plain, digits.to_pylist(), shaped.to_pylist(), valid.to_pylist()):
            if is_shaped:
                out[i] = "+1" + number if is_valid or _valid_nanp(number) else out[i]
                decided[i] = True
    return pd.Series([v if done else _phone_e164(v) for v, done in zip(out, decided)], index=values.index,
                     dtype="object")


@functools.lru_cache(maxsize=1 << 12)
def _valid_nanp(digits: str) -> bool:
    """Whether the +1 number of these ten digits is valid in any +1 region."""
    return phonenumbers.is_valid_number(phonenumbers.PhoneNumber(country_code=1, national_number=int(digits)))


def _domain(series: pd.Series) -> pd.Series:
    """``https://www.Acme.com/about`` and ``acme.com`` both become ``acme.com``."""
    return series.str.extract(r"^(?:[a-z]+://)?(?:www\.)?([^/]+)", expand=False)


# The characters str.split() takes for whitespace among the ASCII ones, spelled out for RE2 (Arrow's regex engine).
_ASCII_WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f "
# An ASCII text that trimming changes: whitespace at an end, two in a row, or any but a space.
_UNTRIMMED = (rf"^[{_ASCII_WHITESPACE}]|[{_ASCII_WHITESPACE}]$|[{_ASCII_WHITESPACE}]{{2}}"
              rf"|[{_ASCII_WHITESPACE.replace(' ', '')}]")


def _email_domain(series: pd.Series) -> pd.Series:
    """``Ann@Acme.COM`` becomes ``acme.com``: the organisation an address belongs to, a matching key."""
    return series.str.extract(r"@([^@\s]+)$", expand=False).str.lower()


def _trim(series: pd.Series) -> pd.Series:
    """Ends stripped and inner runs of whitespace made one space, as ``" ".join(text.split())`` does. On a text
    column Arrow finds the values that this changes, or that are not ASCII (whose whitespace is Unicode's), and only
    those go through Python: most values are clean, and leaving them in Arrow saves making Python strings of them."""
    if str(series.dtype) != "str":
        return pd.Series(_trimmed(series.tolist()), index=series.index, dtype=series.dtype)
    texts = pa.array(series)
    changed = pc.fill_null(pc.or_(pc.invert(pc.string_is_ascii(texts)),
                                  pc.match_substring_regex(texts, _UNTRIMMED)), False)
    if not pc.any(changed).as_py():
        return series
    trimmed = pa.array(_trimmed(texts.filter(changed).to_pylist()), type=texts.type)
    return pd.Series(pc.replace_with_mask(texts, changed, trimmed), index=series.index, dtype=series.dtype)


def _trimmed(values: list) -> list:
    return [" ".join(v.split()) if isinstance(v, str) else v for v in values]


TRANSFORMS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "trim": _trim,
    "lower": lambda s: s.str.lower(),
    "upper": lambda s: s.str.upper(),
    "title": lambda s: s.str.title(),
    "snake": lambda s: s.str.replace(r"[^0-9a-zA-Z]+", "_", regex=True).str.strip("_"),
    "first_word": lambda s: s.str.extract(r"^(\S+)", expand=False),
    "rest_words": lambda s: s.str.extract(r"^\S+\s+(.+)$", expand=False),
    "domain": _domain,
    "email_domain": _email_domain,
    "phone_e164": _phones_e164,
    "name_key": name_key,
    "utc": lambda s: pd.to_datetime(s, utc=True, format="ISO8601", errors="coerce"),
}

_TEXT_TRANSFORMS = set(TRANSFORMS) - {"phone_e164", "utc"}


def _as_text(series: pd.Series) -> pd.Series:
    """A string column whatever came in (numbers, NaN-only columns), so ``.str`` transforms always apply.

    Source values become text here, before any transform, and lose their NUL characters as they do: PostgreSQL text
    cannot hold NUL, and SQLite must land the same data (docs/reliability.md). An unpaired surrogate (a JSON escape
    like ``\\ud800`` with no partner), which no UTF-8 database can hold and Arrow refuses, becomes U+FFFD here too.
    A column already of text is one that came through here, or a transform's output of one."""
    if str(series.dtype) == "str":
        return series
    texts = [v if type(v) is str else None if v is None or v != v else str(v) for v in series.tolist()]
    try:  # built by Arrow from the list, which pandas would check value by value first
        column = pd.Series(pa.array(texts, type=pa.large_string()), index=series.index, dtype="str")
    except UnicodeEncodeError:  # Arrow encodes to UTF-8 as it builds the column: clean columns pay nothing more
        column = pd.Series([v if v is None or v.isascii() else _without_surrogates(v) for v in texts],
                           index=series.index, dtype="str")
    return _without_nul(column)


def _storable_strings(values: pd.Series) -> pd.Series:
    """Source values with their text cleaned as ``_as_text`` cleans it (no NUL, no unpaired surrogate), the others
    (numbers, None) as they came: for a transform that parses them itself, such as ``phone_e164`` or ``utc``."""
    cleaned = values.tolist()
    for i, value in enumerate(cleaned):
        if type(value) is str and ("\x00" in value or not value.isascii() and not _is_utf8(value)):
            cleaned[i] = _without_surrogates(value).replace("\x00", "")
    return pd.Series(cleaned, index=values.index, dtype="object")


def _is_utf8(text: str) -> bool:
    """Whether ``text`` can be UTF-8, as every database stores text: only a surrogate cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _without_surrogates(text: str) -> str:
    """``text`` with each unpaired surrogate as U+FFFD. Through UTF-16, as JSON escapes are: a high surrogate
    followed by a low one is the character they make together (as json and orjson decode ``\\ud83d\\ude00``), any
    other is replaced, one U+FFFD each ("A\\ud800" is "A\\ufffd", "\\udc00\\ud800" two of them)."""
    if _is_utf8(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _ids_as_text(ids: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Record ids as text, and which hold a surrogate (those are missing from the text: no UTF-8 text holds them).
    Arrow makes the column and refuses a surrogate as it does, so a batch without one pays nothing to be checked."""
    def as_text(v: Any) -> str | None:
        return None if v is None or v == "" else str(v)

    try:
        texts = ids.map(as_text)
    except UnicodeEncodeError:
        texts = None
    if texts is not None and str(texts.dtype) == "str":
        return texts, pd.Series(False, index=ids.index)
    unpaired = ids.map(lambda v: isinstance(v, str) and not _is_utf8(v)).astype(bool)
    return ids.mask(unpaired, None).map(as_text), unpaired


def _without_nul(texts: pd.Series) -> pd.Series:
    """``texts`` with NUL characters removed; looked for first (in Arrow, about 50 ms a million values), so the clean
    columns, nearly all of them, are not copied."""
    if texts.str.contains("\x00", regex=False).any():
        return texts.str.replace("\x00", "", regex=False)
    return texts


def get_path(record: dict, path: str, absent: Any = None) -> Any:
    """The value at a dotted path (``properties.email``); ``absent`` when a key is missing from its object, None when
    a parent is null. A number indexes a list, as in a mapping (``_level``)."""
    value: Any = record
    for part in path.split("."):
        if value is None:
            return None
        if isinstance(value, list) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else None
            continue
        if not isinstance(value, dict) or part not in value:
            return absent
        value = value[part]
    return value


def _values_at(records: list, path: str, walked: dict[str, list], absent: Any = None) -> list:
    """``get_path`` over every record, one level at a time across the list (much cheaper than record by record).
    ``walked`` keeps the parents already read for these records (``properties`` for ``properties.email``), so the
    fields under one parent read it once."""
    *parents, leaf = path.split(".")
    values = records
    for depth, part in enumerate(parents):
        prefix = ".".join(parents[:depth + 1])
        if prefix not in walked:
            walked[prefix] = _level(values, part, _MISSING)
        values = walked[prefix]
    return _level(values, leaf, absent)


def _level(values: list, part: str, absent: Any) -> list:
    """Each value's ``part``: ``absent`` where it has no such key or is no object (or was absent), None where it is
    None. A number indexes a list (``domain_names.0``, its first item; None when it is shorter)."""
    index = int(part) if part.isdigit() else None
    return [v if v is None or v is absent else v.get(part, absent) if isinstance(v, dict) else
            (v[index] if index < len(v) else None) if index is not None and isinstance(v, list) else absent
            for v in values]


def _type_mismatch(value: Any, field_type: str) -> str | None:
    """What is wrong when a source value cannot be the declared canonical type (schema drift), else None."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, (dict, list)):
        return type(value).__name__
    if field_type in ("email", "phone") and isinstance(value, (bool, int, float)):
        return type(value).__name__
    if field_type in ("integer", "number") and isinstance(value, bool):
        return "bool"
    return None


def to_timestamp(values: pd.Series) -> pd.Series:
    """Parse source timestamps to UTC: ISO strings in any vendor's style, or epoch seconds / milliseconds."""
    numeric = pd.to_numeric(values, errors="coerce")
    is_number = numeric.notna()
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    if is_number.any():
        n = numeric[is_number]
        millis = n.where(n > 1e11, n * 1000)
        out[is_number] = pd.to_datetime(millis, unit="ms", utc=True).astype("datetime64[us, UTC]")
    text = ~is_number & values.notna()
    if text.any():
        try:
            texts = values[text].astype(str)
        except UnicodeEncodeError:  # Arrow refused a lone surrogate: that value cannot parse, the others must
            texts = values[text].map(lambda v: _without_surrogates(v) if isinstance(v, str) else v).astype(str)
        out[text] = pd.to_datetime(texts, utc=True, format="ISO8601", errors="coerce")
    return out


def _coerce(series: pd.Series, field_type: str) -> pd.Series:
    """Give a canonical column its declared type; values that do not fit become missing (quality checks see it)."""
    if field_type in ("integer", "number"):
        numbers = pd.to_numeric(series, errors="coerce")
        return numbers.where(numbers % 1 == 0).astype("Int64") if field_type == "integer" else numbers
    if field_type == "boolean":
        lowered = series.map(lambda v: str(v).strip().lower() if v is not None and v == v else None)
        return lowered.map({"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False})
    if field_type == "date":  # the day as written: offsets (mixed ones refuse to parse together) do not move it
        days = _as_text(series).str.slice(0, 10)
        return pd.to_datetime(days, errors="coerce", format="%Y-%m-%d").dt.strftime("%Y-%m-%d")
    if field_type == "datetime":
        return to_timestamp(series)
    return _as_text(series).replace("", None)


def apply_transforms(values: pd.Series, transforms: Iterable[str]) -> pd.Series:
    """``values`` through the named transforms in order: a mapping's, a stream's key's, a key reference's ``via``."""
    for position, name in enumerate(transforms):
        if name in _TEXT_TRANSFORMS:
            values = _as_text(values)
        elif position == 0:  # a parsing transform takes values as they came, but never text no database holds
            values = _storable_strings(values)
        values = TRANSFORMS[name](values)
    return values


def map_records(
    records: Iterable[dict],
    *,
    tool: str,
    stream_name: str,
    stream: Stream,
    entity: Entity,
    extracted_at: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Map raw records to canonical columns plus source metadata.

    Returns ``(rows, rejects)``: rejects are records without a primary key or with a value whose type does not fit
    its canonical field (schema drift), kept whole with a ``_reason`` so that nothing is lost silently. A mapped field
    that no record carries at all (the API stopped sending it) is left out of ``rows`` rather than landed as null
    over the stored value; ``rows.attrs["absent_fields"]`` names them.
    """
    records = list(records)
    walked: dict[str, list] = {}
    columns: dict[str, pd.Series] = {}
    absent: list[str] = []
    mismatch: dict[int, list[str]] = {}
    for mapping in stream.fields:
        values = _values_at(records, mapping.source, walked, _MISSING)
        if records and all(v is _MISSING for v in values):
            absent.append(mapping.to)
            continue
        field_type = entity.fields[mapping.to].type
        for i in [i for i, v in enumerate(values) if type(v) is not str and v is not None and v is not _MISSING]:
            if wrong := _type_mismatch(values[i], field_type):
                mismatch.setdefault(i, []).append(
                    f"field {mapping.to!r} (from {mapping.source!r}): expected {field_type}, got {wrong}")
        raw = pd.Series([None if v is _MISSING or isinstance(v, (dict, list)) else v for v in values], dtype="object")
        columns[mapping.to] = apply_transforms(raw, mapping.transforms)
    data: dict[str, Any] = {}  # made into the frame at once: a column added at a time costs a copy each
    for field, spec in entity.fields.items():
        if field in absent and field not in columns:
            continue
        column = columns.get(field, pd.Series([None] * len(records), dtype="object"))
        if spec.type == "integer":  # a fraction cannot be stored as one: the record waits in quarantine, named
            numbers = pd.to_numeric(column, errors="coerce")
            for i in np.flatnonzero((numbers % 1 != 0) & numbers.notna()).tolist():
                mismatch.setdefault(i, []).append(f"field {field!r}: expected integer, got {column[i]!r}")
        data[field] = _coerce(column, spec.type)
    ids = pd.Series(_values_at(records, stream.primary_key, walked), dtype="object")
    if stream.key_transforms:
        ids = apply_transforms(ids, stream.key_transforms).astype(object).replace("", None)
        ids = ids.where(ids.notna(), None)
    data["_source"] = tool
    data["_source_stream"] = stream_name
    data["_source_id"], unpaired = _ids_as_text(ids)  # one holding a surrogate is quarantined below, unaltered
    cursor = pd.Series(_values_at(records, stream.cursor, walked), dtype="object") if stream.cursor else None
    data["_updated_at"] = to_timestamp(cursor) if cursor is not None else pd.Timestamp(extracted_at)
    data["_extracted_at"] = pd.Timestamp(extracted_at)
    if stream.deleted_field:
        flags = pd.Series(_values_at(records, stream.deleted_field, walked), dtype="object")
        data["_deleted"] = flags.map(
            lambda v: v == stream.deleted_value or str(v).lower() == str(stream.deleted_value).lower()).astype(bool)
    else:
        data["_deleted"] = False
    data["_raw"] = [raw_json(r) for r in records]
    frame = pd.DataFrame(data, index=range(len(records)))

    texts: list[str | None] = [None] * len(records)
    for i, found in mismatch.items():
        texts[i] = "; ".join(found)
    if stream.deleted_field:  # a deleted record's values no longer matter: its deletion must land, drifted or not
        texts = [None if gone else text for text, gone in zip(texts, frame["_deleted"].tolist())]
    reasons = pd.Series(texts, index=frame.index, dtype="object")
    reasons[frame["_source_id"].isna()] = f"missing primary key {stream.primary_key!r}"
    # An id is what write-back addresses the record by, so it is never altered: one holding a NUL cannot be stored
    # (PostgreSQL), and its record waits in quarantine under a digest of its payload, which keeps the id escaped
    # An unpaired surrogate no UTF-8 database can store either: replaced, as in a value, it would be another id
    unkeyable = frame["_source_id"].str.contains("\x00", regex=False).fillna(False).astype(bool)
    if unkeyable.any():
        reasons[unkeyable] = f"primary key {stream.primary_key!r} holds a NUL character, which cannot be stored"
        frame.loc[unkeyable, "_source_id"] = None
    if unpaired.any():
        reasons[unpaired.to_numpy()] = (f"primary key {stream.primary_key!r} holds an unpaired surrogate, which "
                                        f"cannot be stored")
    rejected = reasons.notna()
    if stream.without_key == "skip":  # a row of the export that is no record of this stream: neither kept nor held
        kept = ~(frame["_source_id"].isna() & ~unkeyable & ~unpaired.to_numpy())
        rejected, reasons, frame = rejected[kept], reasons[kept], frame[kept]
    rejects = frame[rejected].assign(_reason=reasons[rejected])
    rows = frame[~rejected].sort_values("_updated_at", kind="stable").drop_duplicates("_source_id", keep="last")
    rows = rows.reset_index(drop=True)
    rows.attrs["absent_fields"] = absent
    return rows, rejects.reset_index(drop=True)

