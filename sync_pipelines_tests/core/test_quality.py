import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sync_pipelines.core.quality import (
    ExpectationError,
    build_suite,
    checked_expectation,
    columns_read,
    split_quarantine,
    to_metadata,
    validate,
    volume_check,
)

EMAIL_REGEX = r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$"


def failing_labels(report) -> list:
    return list(report.row_failures[report.row_failures.notna()].index)


# --- each expectation type --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "values", "failing"),
    [
        ({"expect": "not_null"}, ["a", None, "c", np.nan], [1, 3]),
        ({"expect": "unique"}, ["a", "b", "a", None, None], [0, 2]),
        ({"expect": "match_regex", "regex": EMAIL_REGEX}, ["a@b.io", "nope", None, "x@y"], [1, 3]),
        ({"expect": "in_set", "values": ["lead", "customer"]}, ["lead", "other", None, "customer"], [1]),
        ({"expect": "between", "min": 0, "max": 10}, [0, 11, -1, 10, None], [1, 2]),
        ({"expect": "between", "min": 5}, [4, 5, 500], [0]),
        ({"expect": "max_length", "value": 3}, ["abc", "abcd", None, ""], [1]),
    ],
)
def test_each_expectation_flags_exactly_the_rows_that_break_it(spec, values, failing):
    df = pd.DataFrame({"value": values})
    report = validate(df, "things", [{**spec, "column": "value"}])

    (outcome,) = report.results
    assert failing_labels(report) == failing
    assert outcome.success is False
    assert outcome.unexpected_count == len(failing)
    assert outcome.element_count == len(values)
    assert report.success is False


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ({"expect": "not_null"}, ["a", "b"]),
        ({"expect": "unique"}, ["a", "b", None, None]),
        ({"expect": "match_regex", "regex": EMAIL_REGEX}, ["a@b.io", None]),
        ({"expect": "in_set", "values": ["lead"]}, ["lead", None]),
        ({"expect": "between", "max": 3}, [1, 3, None]),
        ({"expect": "max_length", "value": 2}, ["ab", None]),
    ],
)
def test_each_expectation_passes_on_good_data(spec, values):
    report = validate(pd.DataFrame({"value": values}), "things", [{**spec, "column": "value"}])

    assert report.success is True
    assert report.results[0].unexpected_count == 0
    assert report.row_failures.isna().all()
    assert report.failure_rate == 0.0


def test_results_keep_the_stack_order_and_name_the_gx_expectation():
    df = pd.DataFrame({"email": ["a@b.io"], "n": [1]})
    specs = [
        {"expect": "max_length", "column": "email", "value": 100},
        {"expect": "between", "column": "n", "min": 0, "max": 5},
        {"expect": "not_null", "column": "email"},
        {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX},
    ]
    report = validate(df, "contacts", specs)

    assert [outcome.expectation for outcome in report.results] == [
        "expect_column_value_lengths_to_be_between",
        "expect_column_values_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_match_regex",
    ]
    assert report.results[1].kwargs == {"min_value": 0, "max_value": 5}


# --- mostly and on_fail -------------------------------------------------------------------------


def test_mostly_decides_whether_the_expectation_passes_but_bad_rows_are_still_quarantined():
    df = pd.DataFrame({"phone": ["+15550000001"] * 9 + ["555-0101"]})
    spec = {"expect": "match_regex", "column": "phone", "regex": r"^\+[1-9][0-9]{6,14}$"}

    tolerant = validate(df, "contacts", [{**spec, "mostly": 0.85}])
    strict = validate(df, "contacts", [{**spec, "mostly": 0.95}])

    assert tolerant.success is True
    assert strict.success is False
    assert tolerant.results[0].kwargs["mostly"] == 0.85
    assert failing_labels(tolerant) == failing_labels(strict) == [9]


def test_warn_expectations_are_reported_but_keep_their_rows():
    df = pd.DataFrame({"email": ["a@b.io", None, "bad"]})
    report = validate(
        df,
        "contacts",
        [
            {"expect": "not_null", "column": "email", "on_fail": "warn"},
            {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX},
        ],
    )

    warn, quarantine = report.results
    assert (warn.on_fail, warn.success, warn.unexpected_count) == ("warn", False, 1)
    assert quarantine.on_fail == "quarantine"
    assert failing_labels(report) == [2]
    assert report.failure_rate == pytest.approx(1 / 3)
    assert report.success is False


# --- row failures -------------------------------------------------------------------------------


def test_row_failures_follow_a_non_default_index_and_join_every_reason():
    df = pd.DataFrame(
        {"email": ["ok@b.io", "bad", None, "alsobad"], "stage": ["lead", "lead", "x", "lead"]},
        index=pd.Index(["c-9", "c-3", "c-7", "c-1"], name="contact"),
    )
    report = validate(
        df,
        "contacts",
        [
            {"expect": "in_set", "column": "stage", "values": ["lead", "customer"]},
            {"expect": "not_null", "column": "email"},
            {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX},
        ],
    )

    assert report.row_failures.index.equals(df.index)
    reasons = report.row_failures
    assert reasons["c-9"] is None
    assert reasons["c-3"] == f"email: expect_column_values_to_match_regex (regex {EMAIL_REGEX})"
    assert reasons["c-7"] == (  # in the stack's order, whatever order GX runs them in
        "stage: expect_column_values_to_be_in_set (value_set ['lead', 'customer']); "
        "email: expect_column_values_to_not_be_null"
    )
    assert reasons["c-1"].startswith("email: expect_column_values_to_match_regex")
    assert report.failure_rate == 0.75


def test_row_failures_handle_duplicated_index_labels():
    df = pd.DataFrame({"email": ["bad", "a@b.io", "bad"]}, index=[5, 5, 5])
    report = validate(df, "contacts", [{"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX}])

    assert report.row_failures.notna().tolist() == [True, False, True]


@pytest.mark.parametrize("dtype", [object, "str", "string"])
@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
def test_string_dtypes_and_every_kind_of_missing_value(dtype, missing):
    df = pd.DataFrame({"email": pd.Series(["a@b.io", missing, "bad", "c@d.org"], dtype=dtype)})
    report = validate(
        df,
        "contacts",
        [
            {"expect": "not_null", "column": "email"},
            {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX},
            {"expect": "max_length", "column": "email", "value": 6},
        ],
    )

    not_null, regex, length = report.results
    assert not_null.unexpected_count == 1
    assert regex.unexpected_count == 1  # GX leaves missing values to not_null
    assert length.unexpected_count == 1  # only c@d.org is longer than 6
    assert report.row_failures.notna().tolist() == [False, True, True, True]
    json.dumps(to_metadata(report))


def test_empty_frames_do_not_crash():
    df = pd.DataFrame({"email": pd.Series([], dtype="str")})
    report = validate(df, "contacts", [{"expect": "not_null", "column": "email"}])
    clean, quarantined = split_quarantine(df, report)

    assert report.success is True
    assert report.failure_rate == 0.0
    assert len(report.row_failures) == 0
    assert (len(clean), len(quarantined)) == (0, 0)
    assert "_reason" in quarantined.columns


def test_a_column_missing_from_the_data_fails_the_expectation_with_a_message():
    df = pd.DataFrame({"email": ["a@b.io"]})
    report = validate(df, "contacts", [{"expect": "not_null", "column": "phone"}])

    (outcome,) = report.results
    assert outcome.success is False
    assert "phone" in outcome.error
    assert report.success is False
    assert report.row_failures.isna().all()
    assert to_metadata(report)["expectations"][0]["error"] == outcome.error


def test_samples_carry_source_columns_and_are_capped():
    df = pd.DataFrame(
        {
            "_source": ["hubspot"] * 12 + ["zendesk"] * 3,
            "_source_id": [f"h{i}" for i in range(15)],
            "email": ["bad"] * 15,
            "first_name": "Ada",
        }
    )
    report = validate(df, "contacts", [{"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX}])

    (outcome,) = report.results
    assert len(outcome.sample) == 10
    assert outcome.sample[0] == {"_source": "hubspot", "_source_id": "h0", "email": "bad"}
    assert outcome.unexpected_by_source == {"hubspot": 12, "zendesk": 3}


def test_the_source_argument_is_used_when_rows_do_not_say_where_they_came_from():
    df = pd.DataFrame({"email": [None, "a@b.io"]})
    report = validate(df, "contacts", [{"expect": "not_null", "column": "email"}], source="legacy_erp")

    assert report.results[0].unexpected_by_source == {"legacy_erp": 1}
    assert report.results[0].sample == [{"email": None}]
    assert to_metadata(report)["source"] == "legacy_erp"


def test_expectations_may_be_objects_with_the_same_attributes():
    specs = [
        SimpleNamespace(expect="in_set", column="stage", values=("a", "b"), mostly=None, on_fail="warn"),
        SimpleNamespace(expect="not_null", column="stage"),
    ]
    report = validate(pd.DataFrame({"stage": ["a", "z", None]}), "deals", specs)

    assert [outcome.on_fail for outcome in report.results] == ["warn", "quarantine"]
    assert report.results[0].kwargs == {"value_set": ["a", "b"]}
    assert failing_labels(report) == [2]


# --- split_quarantine ---------------------------------------------------------------------------


def test_split_quarantine_keeps_every_row_exactly_once():
    df = pd.DataFrame(
        {"_source_id": ["a", "b", "c", "d", "e"], "email": ["a@b.io", "bad", None, "d@e.fr", "bad"]},
        index=[50, 40, 30, 20, 10],
    )
    report = validate(
        df,
        "contacts",
        [
            {"expect": "not_null", "column": "email"},
            {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX},
        ],
    )
    clean, quarantined = split_quarantine(df, report)

    assert list(clean.index) == [50, 20]
    assert list(quarantined.index) == [40, 30, 10]
    assert sorted([*clean["_source_id"], *quarantined["_source_id"]]) == sorted(df["_source_id"])
    assert "_reason" not in clean.columns
    assert quarantined.loc[30, "_reason"] == "email: expect_column_values_to_not_be_null"
    assert list(df.columns) == ["_source_id", "email"]  # the caller's frame is untouched


def test_split_quarantine_refuses_a_report_of_another_frame():
    df = pd.DataFrame({"email": ["bad", "a@b.io"]})
    report = validate(df, "contacts", [{"expect": "not_null", "column": "email"}])

    with pytest.raises(ValueError, match="does not belong"):
        split_quarantine(df.iloc[:1], report)


# --- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"expect": "not_nul", "column": "email"},
            r"quality\.contacts\.expectations\[1\]: unknown expect 'not_nul'; allowed: between, in_set, "
            r"match_regex, max_length, not_null, unique",
        ),
        ({"column": "email"}, r"expectations\[1\]: unknown expect None"),
        ({"expect": "match_regex", "column": "email"}, r"expectations\[1\] \(match_regex\): needs regex"),
        ({"expect": "match_regex", "column": "email", "regex": "("}, r"'regex' is not a valid regular expression"),
        ({"expect": "in_set", "column": "s", "values": "abc"}, r"'values' must be a non-empty list, got 'abc'"),
        ({"expect": "in_set", "column": "s", "values": []}, r"'values' must be a non-empty list"),
        ({"expect": "between", "column": "n"}, r"\(between\): needs min and/or max"),
        ({"expect": "max_length", "column": "s", "value": -1}, r"'value' must be a non-negative integer, got -1"),
        (
            {"expect": "not_null", "column": "email", "regexp": "x"},
            r"unknown parameter\(s\) regexp; allowed: expect, column, mostly, on_fail",
        ),
        ({"expect": "not_null"}, r"'column' must be a column name, got None"),
        ({"expect": "not_null", "column": "email", "mostly": 1.5}, r"'mostly' must be a number from 0 to 1, got 1.5"),
        (
            {"expect": "not_null", "column": "email", "on_fail": "drop"},
            r"'on_fail' is 'drop'; allowed: quarantine, warn",
        ),
    ],
)
def test_bad_configuration_names_the_entity_the_position_and_what_is_allowed(spec, message):
    with pytest.raises(ValueError, match=message):
        build_suite("contacts", [{"expect": "not_null", "column": "_source_id"}, spec])


def test_build_suite_maps_the_vocabulary_onto_gx():
    suite = build_suite(
        "contacts",
        [
            {"expect": "match_regex", "column": "phone", "regex": r"^\+", "mostly": 0.95, "on_fail": "warn"},
            {"expect": "max_length", "column": "email", "value": 254},
        ],
    )

    regex, length = suite.expectations
    assert type(regex).__name__ == "ExpectColumnValuesToMatchRegex"
    assert (regex.regex, regex.mostly, regex.meta["on_fail"]) == (r"^\+", 0.95, "warn")
    assert type(length).__name__ == "ExpectColumnValueLengthsToBeBetween"
    assert (length.max_value, length.min_value, length.meta["on_fail"]) == (254, None, "quarantine")


# --- volume -------------------------------------------------------------------------------------


def test_volume_without_history_passes_and_says_so():
    result = volume_check(1200, [], min_ratio=0.5, max_ratio=2.0)

    assert (result.ok, result.ratio, result.baseline) == (True, None, None)
    assert "no earlier runs" in result.message


def test_volume_within_the_range_passes():
    result = volume_check(1100, [1000, 900, 1050, 2000, 980], min_ratio=0.5, max_ratio=2.0)

    assert result.ok is True
    assert result.baseline == 1000
    assert result.ratio == pytest.approx(1.1)


def test_volume_jump_of_three_times_fails_with_counts_and_range():
    result = volume_check(3000, [1000, 1000, 1000], min_ratio=0.5, max_ratio=2.0)

    assert result.ok is False
    assert result.ratio == 3.0
    assert "3,000 rows" in result.message
    assert "baseline of 1,000" in result.message
    assert "0.50-2.00" in result.message


def test_volume_drop_below_half_fails_and_exactly_half_passes():
    assert volume_check(400, [1000, 1000], min_ratio=0.5, max_ratio=2.0).ok is False
    assert volume_check(500, [1000, 1000], min_ratio=0.5, max_ratio=2.0).ok is True


def test_volume_history_keeps_only_the_latest_runs():
    result = volume_check(100, [10_000, 10_000, 10_000, 100, 100], min_ratio=0.5, max_ratio=2.0, history=2)

    assert result.ok is True
    assert result.baseline == 100


def test_volume_zero_baseline_is_not_a_ratio():
    result = volume_check(50, [0, 0], min_ratio=0.5, max_ratio=2.0)

    assert (result.ok, result.ratio) == (True, None)
    assert "0 rows" in result.message


def test_volume_rejects_an_inverted_range():
    with pytest.raises(ValueError, match="min_ratio <= max_ratio"):
        volume_check(1, [1], min_ratio=2.0, max_ratio=0.5)


# --- metadata -----------------------------------------------------------------------------------


def test_metadata_is_json_and_shows_failing_rows_as_markdown():
    df = pd.DataFrame(
        {
            "_source": ["salesforce", "hubspot", "hubspot"],
            "_source_id": ["003A", "17", "18"],
            "email": ["a|b", "ok@b.io", None],
            "amount": pd.array([1, 99, None], dtype="Int64"),
            "seen": pd.to_datetime(["2026-09-01", None, "2026-09-02"]),
        }
    )
    report = validate(
        df,
        "contacts",
        [
            {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX},
            {"expect": "between", "column": "amount", "max": 10, "on_fail": "warn"},
            {"expect": "not_null", "column": "seen"},
        ],
    )
    metadata = to_metadata(report)
    decoded = json.loads(json.dumps(metadata))

    assert decoded["rows"] == 3
    assert decoded["quarantined_rows"] == 2
    assert decoded["failure_rate"] == pytest.approx(2 / 3, abs=1e-6)
    regex, between, seen = decoded["expectations"]
    assert regex["column"] == "email"
    assert regex["unexpected_count"] == 1
    assert regex["sources"] == {"salesforce": 1}
    assert regex["sample"].splitlines() == [
        "| _source | _source_id | email |",
        "|---|---|---|",
        "| salesforce | 003A | a\\|b |",
    ]
    assert between["sample"].splitlines()[2] == "| hubspot | 17 | 99 |"
    assert seen["sample"].splitlines()[2] == "| hubspot | 17 |  |"
    assert "| FAIL | email | expect_column_values_to_match_regex |" in decoded["summary"]


def test_when_checks_only_matching_rows_so_a_contact_needs_an_email_or_a_phone():
    frame = pd.DataFrame({
        "email": ["a@b.co", None, None],
        "phone": [None, "+14155550101", None],
        "_source": "crm",
        "_source_id": ["1", "2", "3"],
    }, index=[10, 11, 12])
    report = validate(frame, "contacts", [{"expect": "not_null", "column": "email", "when": "phone.isnull()"}])
    assert report.row_failures.notna().tolist() == [False, False, True]
    assert report.results[0].unexpected_count == 1


def test_columns_read_names_each_expectation_s_column_and_those_its_when_reads():
    expectations = [
        {"expect": "not_null", "column": "email", "when": "phone.isnull() and stage == 'lead'"},
        {"expect": "unique", "column": "_source_id"},
    ]
    assert columns_read("contacts", expectations) == {"email", "phone", "stage", "_source_id"}
    assert columns_read("contacts", []) == set()


def test_when_must_be_a_condition_string():
    with pytest.raises(ValueError, match=r"expectations\[0\]\.when \(not_null\): must be a condition"):
        build_suite("contacts", [{"expect": "not_null", "column": "email", "when": 3}])


def test_when_selects_rows_with_the_typed_condition_language_and_keeps_each_row_s_own_label():
    frame = pd.DataFrame(
        {
            "email": ["a@b.io", "bad", "bad", None, "bad", "c@d.org"],
            "stage": ["lead", "lead", "customer", "lead", None, "lead"],
            "n": [1, 2, 3, 4, 5, 6],
        },
        index=[7, 7, 8, 8, 9, 9],
    )
    regex = {"expect": "match_regex", "column": "email", "regex": EMAIL_REGEX}
    report = validate(
        frame,
        "contacts",
        [
            {**regex, "when": "stage == 'lead' and n > 1", "mostly": 0.5},
            {"expect": "not_null", "column": "email", "when": "stage in ['lead'] or stage is null", "on_fail": "warn"},
            {"expect": "unique", "column": "email", "when": "not stage == 'customer'"},
        ],
    )

    lead, not_null, unique = report.results
    assert (lead.element_count, lead.unexpected_count, lead.unexpected_percent) == (3, 1, pytest.approx(100 / 2))
    assert lead.success is True  # mostly counts only the rows the condition selects
    assert lead.kwargs == {"regex": EMAIL_REGEX, "mostly": 0.5, "when": "stage == 'lead' and n > 1"}
    assert (not_null.element_count, not_null.unexpected_count) == (5, 1)
    assert unique.unexpected_count == 2  # the customer's 'bad' is not compared
    assert report.row_failures.notna().tolist() == [False, True, False, False, True, False]
    assert report.row_failures.iloc[1] == (
        f"email: expect_column_values_to_match_regex (regex {EMAIL_REGEX}, when stage == 'lead' and n > 1); "
        "email: expect_column_values_to_be_unique (when not stage == 'customer')"
    )


def test_a_when_column_missing_from_the_data_fails_its_expectations_with_a_message():
    df = pd.DataFrame({"email": [None, "a@b.io"]})
    report = validate(df, "contacts", [{"expect": "not_null", "column": "email", "when": "phone is null"}])

    (outcome,) = report.results
    assert (outcome.success, outcome.unexpected_count) == (False, 0)
    assert outcome.error == "when: column(s) phone not in the data"
    assert report.row_failures.isna().all()


CODE_IN_WHEN = [
    "@pd.io.common.os.system('touch {marker}') == 0",
    "__import__('os').system('touch {marker}') == 0",
    "email == `__import__('os').system('touch {marker}')`",
    "email.str.len() > 0 and @pd.io.common.os.system('touch {marker}') == 0",
    "email == email.__class__.__init__.__globals__['os'].system('touch {marker}')",
    "phone is null or open('{marker}', 'w')",
]


@pytest.mark.parametrize("payload", CODE_IN_WHEN)
def test_code_in_a_when_is_refused_before_anything_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    spec = {"expect": "not_null", "column": "email", "when": payload.format(marker=marker)}
    df = pd.DataFrame({"email": ["a@b.io", None], "phone": [None, None]})

    with pytest.raises(ValueError, match=r"^quality\.contacts\.expectations\[0\]\.when \(not_null\): at character \d+"):
        validate(df, "contacts", [spec])
    assert not marker.exists()


@pytest.mark.parametrize("payload", CODE_IN_WHEN)
def test_code_in_a_when_fails_the_stack_at_load_with_its_key_path(tmp_path, payload):
    import yaml

    from sync_pipelines.stack import DEFAULT_STACK, StackError, load_stack

    marker = tmp_path / "ran"
    raw = yaml.safe_load(DEFAULT_STACK.read_text())
    raw["quality"]["contacts"]["expectations"][2]["when"] = payload.format(marker=marker)
    file = tmp_path / "stack.yaml"
    file.write_text(yaml.safe_dump(raw))

    with pytest.raises(StackError, match=r"at quality\.contacts\.expectations\[2\]\.when: at character \d+: found"):
        load_stack(file)
    assert not marker.exists()


def test_checked_expectation_refuses_a_when_column_the_entity_does_not_have():
    spec = {"expect": "not_null", "column": "email", "when": "_source == 'crm' and phone is null or phnoe is null"}

    with pytest.raises(ExpectationError) as info:
        checked_expectation("contacts", 3, spec, columns=["email", "phone"])
    assert info.value.path == "quality.contacts.expectations[3].when"
    assert info.value.problem == (
        "at character 39: unknown column 'phnoe'; allowed: email, phone or a _-prefixed system column"
    )
    assert checked_expectation("contacts", 3, {**spec, "when": "phone is null"}, columns=["email", "phone"]).when


def test_gx_imported_in_the_background_serves_the_next_validation():
    """In a fresh interpreter: the import starts on its own thread, and a validation right after it waits for it."""
    import subprocess
    import sys

    script = (
        "import sys, threading\n"
        "import pandas as pd\n"
        "from sync_pipelines.core.quality import import_gx_in_background, validate\n"
        "assert 'great_expectations' not in sys.modules\n"
        "import_gx_in_background()\n"
        "assert any(t.name == 'import-great-expectations' for t in threading.enumerate())\n"
        "report = validate(pd.DataFrame({'email': ['a@x.io', None]}), 'contacts',\n"
        "                  [{'expect': 'not_null', 'column': 'email'}])\n"
        "print(report.row_count, int(report.row_failures.notna().sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "1"]
