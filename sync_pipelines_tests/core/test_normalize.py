import json
import random
from datetime import datetime, timezone

import pandas as pd
import phonenumbers

from sync_pipelines.core.normalize import get_path, map_records, to_timestamp
from sync_pipelines.stack import load_stack

STACK = load_stack()
NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)


def _map(tool, stream, records):
    spec = STACK.tools[tool].streams[stream]
    return map_records(records, tool=tool, stream_name=stream, stream=spec,
                       entity=STACK.entities[spec.entity], extracted_at=NOW)


def test_hubspot_contact_maps_nested_properties_and_canonical_values():
    rows, rejects = _map("hubspot", "contacts", [{
        "id": "101", "archived": False,
        "properties": {"email": "  Jane.Doe@Example.COM ", "firstname": " Jane ", "lastname": "Doe",
                       "phone": "(415) 555-0101", "lifecyclestage": "Customer",
                       "lastmodifieddate": "2026-11-01T12:00:00.000Z"},
    }])
    assert rejects.empty
    row = rows.iloc[0]
    assert row["email"] == "jane.doe@example.com" and row["first_name"] == "Jane"
    assert row["phone"] == "+14155550101" and row["lifecycle_stage"] == "customer"
    assert row["_source"] == "hubspot" and row["_source_id"] == "101" and not row["_deleted"]
    assert row["_updated_at"] == pd.Timestamp("2026-11-01T12:00:00Z")
    assert "job_title" not in rows.columns and "job_title" in rows.attrs["absent_fields"]


def test_zendesk_full_name_split_and_inactive_user_is_deleted():
    rows, _ = _map("zendesk", "users", [
        {"id": 7, "name": "Mary  Ann Smith", "email": "m@x.io", "active": False, "updated_at": "2026-10-01T00:00:00Z"},
    ])
    assert (rows.loc[0, "first_name"], rows.loc[0, "last_name"]) == ("Mary", "Ann Smith")
    assert rows.loc[0, "_source_id"] == "7" and bool(rows.loc[0, "_deleted"])


def test_a_number_in_a_path_indexes_a_list_and_an_empty_list_holds_nothing():
    rows, rejects = _map("zendesk", "organizations", [
        {"id": 1, "name": "Acme, Inc.", "domain_names": ["WWW.Acme.com", "acme.de"],
         "updated_at": "2026-10-01T00:00:00Z"},
        {"id": 2, "name": "Globex", "domain_names": [], "updated_at": "2026-10-01T00:00:00Z"},
    ])
    assert rejects.empty
    assert rows.loc[0, "domain"] == "acme.com" and pd.isna(rows.loc[1, "domain"])
    assert rows["name_key"].tolist() == ["acme", "globex"]
    assert get_path({"domain_names": ["acme.com"]}, "domain_names.0") == "acme.com"
    assert get_path({"domain_names": []}, "domain_names.0") is None


def test_record_without_primary_key_is_rejected_with_reason_not_dropped():
    rows, rejects = _map("legacy_erp", "customers", [
        {"customer_no": "", "email_address": "a@b.co", "modified": "2026-10-01T00:00:00Z"},
        {"customer_no": "C-1", "email_address": "c@d.co", "modified": "2026-10-01T00:00:00Z"},
    ])
    assert list(rows["_source_id"]) == ["C-1"]
    assert len(rejects) == 1 and "customer_no" in rejects.loc[0, "_reason"] and '"a@b.co"' in rejects.loc[0, "_raw"]


def test_duplicate_ids_in_one_read_keep_the_newest():
    rows, _ = _map("salesforce", "Contact", [
        {"Id": "003A", "Email": "new@x.io", "LastModifiedDate": "2026-11-02T00:00:00.000+0000"},
        {"Id": "003A", "Email": "old@x.io", "LastModifiedDate": "2026-11-01T00:00:00.000+0000"},
    ])
    assert list(rows["email"]) == ["new@x.io"]


def test_timestamps_in_vendor_styles():
    parsed = to_timestamp(pd.Series(["2026-11-01T12:34:56.000+0000", 1761998096, "1761998096000", None]))
    assert parsed[0] == pd.Timestamp("2026-11-01T12:34:56Z")
    assert parsed[1] == parsed[2] == pd.Timestamp(1761998096, unit="s", tz="UTC")
    assert pd.isna(parsed[3])


def test_get_path():
    assert get_path({"a": {"b": 1}}, "a.b") == 1 and get_path({"a": None}, "a.b") is None


def test_a_field_no_record_carries_is_left_out_not_nulled_and_a_null_parent_is_null():
    rows, _ = _map("asana", "tasks", [
        {"gid": "1", "name": "Onboard", "modified_at": "2026-11-01T00:00:00Z", "assignee": None},
    ])
    assert "assignee_email" in rows.columns and pd.isna(rows.loc[0, "assignee_email"])  # parent null: a real null
    assert set(rows.attrs["absent_fields"]) == {"notes", "completed", "due_on"}
    assert "notes" not in rows.columns


def test_a_value_of_the_wrong_type_is_rejected_with_its_field_named():
    rows, rejects = _map("hubspot", "contacts", [
        {"id": "1", "properties": {"email": "a@b.co", "phone": 0, "lastmodifieddate": "2026-11-01T00:00:00Z"}},
        {"id": "2", "properties": {"email": {"value": "c@d.co"}, "phone": "+14155550101",
                                   "lastmodifieddate": "2026-11-01T00:00:00Z"}},
        {"id": "3", "properties": {"email": "e@f.co", "phone": "+14155550102", "lastmodifieddate": "2026-11-01T00:00:00Z"}},
    ])
    assert list(rows["_source_id"]) == ["3"]
    reasons = dict(zip(rejects["_source_id"], rejects["_reason"]))
    assert reasons["1"] == "field 'phone' (from 'properties.phone'): expected phone, got int"
    assert reasons["2"] == "field 'email' (from 'properties.email'): expected email, got dict"
    rows, rejects = _map("hubspot", "contacts", [
        {"id": "4", "archived": True, "properties": {"email": {"value": "g@h.co"}, "phone": 0,
                                                     "lastmodifieddate": "2026-11-02T00:00:00Z"}}])
    assert rejects.empty and rows["_deleted"].tolist() == [True]  # its deletion lands, drift or not


def test_a_fraction_for_an_integer_field_is_quarantined_and_dates_keep_their_written_day():
    """One such value used to fail the whole stream's landing on every run, and mixed offsets failed the chunk."""
    rows, rejects = _map("stripe", "invoices", [
        {"id": "in_1", "amount_due": 1999.5, "customer": "cus_1", "updated": 1790000000},
        {"id": "in_2", "amount_due": "2500", "customer": "cus_2", "updated": 1790000001},
        {"id": "in_3", "amount_due": "12.25", "customer": "cus_3", "updated": 1790000002},
    ])
    assert list(rows["_source_id"]) == ["in_2"] and rows["amount_due"].tolist() == [2500]
    reasons = dict(zip(rejects["_source_id"], rejects["_reason"]))
    assert reasons == {"in_1": "field 'amount_due': expected integer, got 1999.5",
                       "in_3": "field 'amount_due': expected integer, got '12.25'"}
    deals = STACK.tools["salesforce"].streams["Opportunity"]
    close = next(m.source for m in deals.fields if m.to == "close_date")
    rows, _ = _map("salesforce", "Opportunity", [
        {"Id": "006A", close: "2026-11-01T23:30:00-05:00", "LastModifiedDate": "2026-11-01T00:00:00Z"},
        {"Id": "006B", close: "2026-03-29T01:30:00+01:00", "LastModifiedDate": "2026-11-01T00:00:00Z"},
        {"Id": "006C", close: "2026-11-02", "LastModifiedDate": "2026-11-01T00:00:00Z"}])
    assert rows.set_index("_source_id")["close_date"].to_dict() == {
        "006A": "2026-11-01", "006B": "2026-03-29", "006C": "2026-11-02"}


def _libphonenumber_e164(value):
    """libphonenumber's own answer, uncached: the one-value path, which only parses, validates and formats."""
    from sync_pipelines.core.normalize import _phone_e164

    return _phone_e164.__wrapped__(value)


# Ten digits each: the US, then +1 numbers valid only in Canada, the Bahamas, Jamaica, Puerto Rico and Guam, US
# toll-free, premium and personal numbers, then +1 numbers valid nowhere: an unassigned area code, an N11 code, an
# exchange starting with 1 or 0, and area codes of the British Virgin Islands, the Turks and Caicos, Dominica and
# Trinidad that those regions' own patterns refuse.
NANP_NUMBERS = ["4155550101", "2125550100", "6135550123", "6045550199", "2423570101", "8769271234", "7875550123",
                "6715550123", "8005550199", "9005550199", "5005550199", "2000000000", "9995551234", "9115550101",
                "4151550101", "4150550101", "2845550123", "6495550123", "7675550123", "8685550123"]
NANP_STYLES = ["({a}) {e}-{l}", "{a}.{e}.{l}", "+1 {a} {e} {l}", "+1{a}{e}{l}", "{a}-{e}-{l}", "+1 ({a}) {e}-{l}",
               "{a}{e}{l}", "1{a}{e}{l}", "1 {a} {e} {l}", "+1-{a}-{e}-{l}", "+1.{a}.{e}.{l}", "({a}){e}-{l}",
               "({a} {e}-{l}", "{a}) {e}-{l}", "+1({a}){e}{l}", "{a} {e}{l}", "{a}{e} {l}", " {a} {e} {l} ",
               "\t({a}) {e}-{l}\n", "{a}  {e}  {l}", "{a}\u00a0{e}\u00a0{l}", "{a}\t{e}\t{l}", "{a}/{e}/{l}",
               "{a}_{e}_{l}", "[{a}] {e}-{l}", "{a}\u2013{e}\u2013{l}", "+1 {a} {e} {l}.", "{a}.{e}.{l},",
               "++1 {a} {e} {l}", "+ 1 {a} {e} {l}", "tel:+1-{a}-{e}-{l}", "abc {a} {e} {l}", "{a} {e} {l} abc",
               "{a}-{e}-{l} x123", "+1 {a} {e} {l} ext. 12", "({a}) {e}-{l} #4", "{a}.{e}.{l};ext=7",
               "{a}{e}{l},,123", "+1 {a} {e} {l}0", "{a} {e} {l}1"]
OTHER_NUMBERS = [
    "+44 20 7946 0958", "020 7946 0958", "+44 (0)20 7946 0958", "011 44 20 7946 0958", "00 44 20 7946 0958",
    "+33 1 42 68 53 00", "0033 1 42 68 53 00", "+49 30 901820", "+49 (0) 30 901820-0", "+91 98765 43210",
    "+61 2 9374 4000", "+81 3-3224-9999", "+55 11 98765-4321", "+52 55 1234 5678", "+86 10 1234 5678",
    "+44 20 7946 0958 ext 3", "+999 123", "+1 415 555 010", "+1 415 555 01011", "4155550101234", "555-0101",
    "12345", "not a phone", "+", "()", "", "   ", "1-800-FLOWERS", "800-FLOWERS",
    "(415) \u0665\u0665\u0665-\u0660\u0661\u0660\u0661", "\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff11",
    "+\u0661 \u0664\u0661\u0665 \u0665\u0665\u0665 \u0660\u0661\u0660\u0661",
    None, float("nan"), 4155550101, 4155550101.0, True]


def test_phone_numbers_normalise_exactly_as_libphonenumber_parses_them():
    """The column-wide shortcut for plain +1 numbers must agree with libphonenumber on every value: each +1 number
    in every typed style, with extensions, punctuation and whitespace, other countries' national and international
    formats, invalid numbers and values that are no text."""
    from sync_pipelines.core.normalize import TRANSFORMS

    typed = [style.format(a=n[:3], e=n[3:6], l=n[6:]) for n in NANP_NUMBERS for style in NANP_STYLES]
    corpus = typed + OTHER_NUMBERS
    normalised = TRANSFORMS["phone_e164"](pd.Series(corpus, dtype="object"))
    expected = [_libphonenumber_e164(value) for value in corpus]
    assert [(value, got) for value, got, want in zip(corpus, normalised.tolist(), expected) if got != want] == []
    # the corpus holds what each path decides: valid US numbers, +1 numbers valid only elsewhere, invalid ones
    answers = dict(zip(corpus, expected))
    assert answers["(415) 555-0101"] == "+14155550101" and answers["(613) 555-0123"] == "+16135550123"
    assert answers["(284) 555-0123"] == "(284) 555-0123" and answers["+44 20 7946 0958"] == "+442079460958"


def test_random_north_american_numbers_in_every_plain_shape_normalise_as_libphonenumber_parses_them():
    """Every combination of the optional parts of a plain +1 number (the country code and its separator, the
    parentheses, the separators), over numbers drawn from the whole ten-digit range: most are invalid somewhere."""
    from sync_pipelines.core.normalize import TRANSFORMS

    draw = random.Random(20261202)
    prefixes, separators = ["", "+1", "+1 ", "+1-", "+1.", "1", "1 "], ["", " ", ".", "-", "  "]
    typed = []
    for _ in range(3000):
        digits = str(draw.randrange(10**9, 10**10))
        typed.append(f"{draw.choice(prefixes)}{draw.choice(['(', ''])}{digits[:3]}{draw.choice([')', ''])}"
                     f"{draw.choice(separators)}{digits[3:6]}{draw.choice(separators)}{digits[6:]}")
    normalised = TRANSFORMS["phone_e164"](pd.Series(typed, dtype="object"))
    expected = [_libphonenumber_e164(value) for value in typed]
    assert [(value, got) for value, got, want in zip(typed, normalised.tolist(), expected) if got != want] == []
    assert 0 < sum(e.startswith("+") for e in expected) < len(typed)


def test_plain_north_american_numbers_valid_in_the_us_are_decided_without_libphonenumber(monkeypatch):
    """The shortcut must take the common shapes: a valid US number in them is never handed to the parser."""
    from sync_pipelines.core import normalize

    def refuse(*args, **kwargs):
        raise AssertionError(f"parsed by libphonenumber: {args}")

    normalize._phone_e164.cache_clear()
    monkeypatch.setattr(phonenumbers, "parse", refuse)
    monkeypatch.setattr(phonenumbers, "is_valid_number", refuse)
    typed = ["(415) 555-0101", "+1 212 555 0100", "617.555.0199", "+18005550199", "415-555-0101"]
    assert normalize.TRANSFORMS["phone_e164"](pd.Series(typed)).tolist() == [
        "+14155550101", "+12125550100", "+16175550199", "+18005550199", "+14155550101"]


def test_nul_characters_are_stripped_before_any_transform_and_the_raw_payload_keeps_them_escaped():
    """PostgreSQL text cannot hold NUL (one in a first name failed the whole stream there): every text value loses
    its NULs as it becomes text, so a value maps exactly as it would without them, on either warehouse."""
    properties = {"email": " Ada@Example.com\x00", "firstname": "Ad\x00a", "lastname": "\x00 Lovelace \x00",
                  "phone": "(415) 555-0101\x00", "lifecyclestage": "\x00", "lastmodifieddate": "2026-11-01T00:00:00Z"}
    clean = {key: value.replace("\x00", "") for key, value in properties.items()}
    rows, rejects = _map("hubspot", "contacts", [{"id": "1", "properties": properties},
                                                 {"id": "2", "properties": clean}])
    assert rejects.empty
    mapped = rows.drop(columns=["_source_id", "_raw"])
    pd.testing.assert_frame_equal(mapped.iloc[[0]].reset_index(drop=True), mapped.iloc[[1]].reset_index(drop=True))
    row = rows.iloc[0]
    assert (row["first_name"], row["last_name"], row["email"], row["phone"]) == (
        "Ada", "Lovelace", "ada@example.com", "+14155550101")
    assert pd.isna(row["lifecycle_stage"])  # nothing but a NUL is empty, as "" is
    assert "\x00" not in row["_raw"] and json.loads(row["_raw"])["properties"] == properties  # escaped, kept whole
    rows, _ = _map("zendesk", "users", [{"id": 7, "name": "Mary\x00 Ann Smith", "email": "m@x.io", "active": True,
                                         "updated_at": "2026-10-01T00:00:00Z"}])
    assert (rows.loc[0, "first_name"], rows.loc[0, "last_name"]) == ("Mary", "Ann Smith")


def test_a_nul_in_a_field_key_lands_the_record_and_a_nul_in_its_id_quarantines_it_with_the_key_named():
    """A key is only matched against the mapping, never stored but in the escaped raw payload; an id is what
    write-back addresses the record by, so it is not altered but refused."""
    stamp = {"lastmodifieddate": "2026-11-01T00:00:00Z"}
    rows, rejects = _map("hubspot", "contacts", [
        {"id": "1", "properties": {"email": "a@b.co", "first\x00name": "Ada", **stamp}},
        {"id": "2\x00", "properties": {"email": "c@d.co", "firstname": "Bo\x00b", **stamp}},
    ])
    assert rows["_source_id"].tolist() == ["1"] and pd.isna(rows.loc[0, "first_name"])
    assert json.loads(rows.loc[0, "_raw"])["properties"]["first\x00name"] == "Ada" and "\x00" not in rows.loc[0, "_raw"]
    [reject] = rejects.to_dict("records")
    assert reject["_reason"] == "primary key 'id' holds a NUL character, which cannot be stored"
    assert pd.isna(reject["_source_id"]) and json.loads(reject["_raw"])["id"] == "2\x00"
    assert not any("\x00" in str(value) for value in reject.values())


def test_an_unpaired_surrogate_becomes_a_replacement_character_before_any_transform_and_the_raw_payload_keeps_it():
    """A JSON escape like \\ud800 with no partner decodes to a lone surrogate, which no UTF-8 database can hold and
    Arrow refused to make text (the whole stream failed, on SQLite and PostgreSQL alike): each becomes one U+FFFD.
    A pair the decoder left as two surrogates is the character they make, as JSON means it."""
    properties = {"email": "ada\udc00@example.com", "firstname": "A\ud800", "lastname": "\udc00Bo  \ud800\udc00x",
                  "phone": "(415) 555-0101\ud83d", "lifecyclestage": "Lead\udc00\ud800",
                  "lastmodifieddate": "2026-11-01T00:00:00Z"}
    rows, rejects = _map("hubspot", "contacts", [{"id": "1", "properties": properties},
                                                 {"id": "2", "properties": {**properties, "firstname": "\ud83d\ude00"}},
                                                 {"id": "3", "properties": {"firstname": "\udc00B", "email": "x@y.z"}}])
    assert rejects.empty
    first, second, third = (rows.set_index("_source_id").loc[key] for key in ("1", "2", "3"))
    assert (first["first_name"], first["last_name"], first["email"]) == (
        "A\ufffd", "\ufffdBo \U00010000x", "ada\ufffd@example.com")
    assert first["phone"] == "+14155550101"  # libphonenumber reads past it, as past a NUL
    assert first["lifecycle_stage"] == "lead\ufffd\ufffd"
    assert (second["first_name"], third["first_name"]) == ("\U0001F600", "\ufffdB")
    assert '"A\\ud800"' in first["_raw"] and '"\\udc00B"' in third["_raw"]  # escaped, as json writes them
    paired = {**properties, "lastname": "\udc00Bo  \U00010000x"}  # the two escapes of a pair read back as one
    for raw, sent in [(first["_raw"], paired), (third["_raw"], {"firstname": "\udc00B", "email": "x@y.z"})]:
        assert raw.isascii() and json.loads(raw)["properties"] == sent  # kept whole
    assert "".join(v for v in rows.to_numpy().ravel() if isinstance(v, str)).encode("utf-8")  # all storable


def test_surrogates_as_the_json_decoders_give_them_are_replaced_one_for_one():
    """json keeps a lone escape as a lone surrogate (orjson refuses it, and the connector falls back to json); both
    combine a valid pair of escapes into one character, which is text like any other."""
    decoded = [json.loads(body) for body in (r'"A\ud800"', r'"\udc00B"', r'"\ud83d\ude00"', r'"\ud800\ud800\udc00"')]
    assert decoded[2] == "\U0001F600"
    rows, _ = _map("zendesk", "users", [{"id": i, "name": name, "email": "m@x.io", "active": True,
                                         "updated_at": "2026-10-01T00:00:00Z"} for i, name in enumerate(decoded)])
    assert rows["first_name"].tolist() == ["A\ufffd", "\ufffdB", "\U0001F600", "\ufffd\U00010000"]


def test_timestamps_holding_a_surrogate_are_missing_not_an_error():
    stamps = to_timestamp(pd.Series(["2026-11-01T00:00:00Z\ud800", "2026-11-01T00:00:00Z", None], dtype="object"))
    assert pd.isna(stamps[0]) and stamps[1] == pd.Timestamp("2026-11-01T00:00:00Z") and pd.isna(stamps[2])


def test_a_surrogate_in_an_id_quarantines_the_record_with_the_key_named_and_the_id_unaltered_in_the_payload():
    stamp = {"lastmodifieddate": "2026-11-01T00:00:00Z"}
    rows, rejects = _map("hubspot", "contacts", [
        {"id": "1", "properties": {"email": "a@b.co", "first\ud800name": "Ada", **stamp}},
        {"id": "2\ud800", "properties": {"email": "c@d.co", "firstname": "Bo\udc00b", **stamp}},
        {"id": "\ud83d\ude00", "properties": {"email": "e@f.co", **stamp}},
        {"id": 3, "properties": {"email": "g@h.co", **stamp}},
    ])
    assert rows["_source_id"].tolist() == ["1", "3"] and pd.isna(rows.loc[0, "first_name"])
    assert json.loads(rows.loc[0, "_raw"])["properties"]["first\ud800name"] == "Ada"
    assert rejects["_reason"].tolist() == ["primary key 'id' holds an unpaired surrogate, which cannot be stored"] * 2
    assert rejects["_source_id"].isna().all()
    assert [json.loads(raw)["id"] for raw in rejects["_raw"]] == ["2\ud800", "\U0001F600"]  # the escapes it came as
    assert rejects.loc[0, "first_name"] == "Bo\ufffdb"


def test_text_no_database_holds_is_cleaned_before_a_parsing_transform_too():
    """A mapping that starts with phone_e164 (no trim first) takes values as they came: a NUL must not reach the
    warehouse (PostgreSQL refuses it), nor an unpaired surrogate make the stream fail."""
    spec = STACK.tools["hubspot"].streams["contacts"]
    phone_only = spec.model_copy(update={"fields": [
        m.model_copy(update={"transforms": ["phone_e164"]}) if m.to == "phone" else m for m in spec.fields]})
    records = [{"id": "1", "properties": {"phone": "(415) 555-0101\x00"}},
               {"id": "2", "properties": {"phone": "bad\ud800phone"}}]
    rows, rejects = map_records(records, tool="hubspot", stream_name="contacts", stream=phone_only,
                                entity=STACK.entities["contacts"], extracted_at=NOW)
    assert rejects.empty
    assert rows["phone"].tolist() == ["+14155550101", "bad\ufffdphone"]


def test_trim_of_a_text_column_equals_python_splitting_each_value_on_whitespace():
    """Arrow picks the values trim changes; it must pick every one Python's str.split() would change, ASCII
    whitespace of every kind and Unicode whitespace alike."""
    from sync_pipelines.core.normalize import TRANSFORMS

    draw = random.Random(20261202)
    alphabet = ["a", "B", " ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1f", "\x85", "\xa0", "\u2003", "\u3000",
                "é", "\x1b", "\x7f", "-"]
    texts = ["".join(draw.choice(alphabet) for _ in range(draw.randrange(7))) for _ in range(20000)]
    column = pd.Series(texts + [None, "", "Ada Lovelace"], dtype="str")
    trimmed = TRANSFORMS["trim"](column)
    assert trimmed.dtype == column.dtype
    assert trimmed.tolist()[:-3] == [" ".join(text.split()) for text in texts]
    assert pd.isna(trimmed.iloc[-3]) and trimmed.tolist()[-2:] == ["", "Ada Lovelace"]


def test_fields_under_one_parent_read_it_alike_whether_it_is_missing_null_or_no_object():
    """The fields and the cursor under ``properties`` share one reading of it: a record without it, or with text
    there, sends none of them; one whose parent is null sends them as null, so they are not absent."""
    stamp = "2026-11-01T00:00:00Z"
    records = [{"id": "1", "properties": {"email": "a@b.co", "lastmodifieddate": stamp}}, {"id": "2"},
               {"id": "3", "properties": "text"}]
    rows, rejects = _map("hubspot", "contacts", records)
    assert rejects.empty and "first_name" in rows.attrs["absent_fields"] and "email" not in rows.attrs["absent_fields"]
    emails = rows.set_index("_source_id")["email"]
    assert emails["1"] == "a@b.co" and emails[["2", "3"]].isna().all()
    assert rows.set_index("_source_id")["_updated_at"].isna().to_dict() == {"1": False, "2": True, "3": True}
    rows, _ = _map("hubspot", "contacts", records + [{"id": "4", "properties": None}])
    assert "first_name" not in rows.attrs["absent_fields"] and rows["first_name"].isna().all()
