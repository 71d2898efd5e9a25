import numpy as np
import pandas as pd
import pytest

from sync_pipelines.core.conditions import (
    And,
    Compare,
    ConditionError,
    In,
    IsNull,
    Not,
    Or,
    columns,
    evaluate,
    parse,
)

# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "condition"),
    [
        ("phone is null", IsNull("phone")),
        ("phone IS NOT NULL", IsNull("phone", negated=True)),
        ("phone.isnull()", IsNull("phone")),
        ("phone . notnull ( )", IsNull("phone", negated=True)),
        ("stage == 'lead'", Compare("stage", "==", "lead")),
        ('stage != "it\'s \\"quoted\\""', Compare("stage", "!=", 'it\'s "quoted"')),
        ("amount >= -1.5e3", Compare("amount", ">=", -1500.0)),
        ("amount < 10", Compare("amount", "<", 10)),
        ("active == TRUE", Compare("active", "==", True)),
        ("stage in ['lead', 'customer', 'lead', 3]", In("stage", ("lead", "customer", 3))),
        ("stage not in [false]", In("stage", (False,), negated=True)),
        (
            "not (a is null or b > 1) and c <= 'x'",
            And((Not(Or((IsNull("a"), Compare("b", ">", 1)))), Compare("c", "<=", "x"))),
        ),
        (
            "a == 1 or b == 2 and c == 3",
            Or((Compare("a", "==", 1), And((Compare("b", "==", 2), Compare("c", "==", 3))))),
        ),
        ("not not a is null", Not(Not(IsNull("a")))),
    ],
)
def test_the_grammar_parses_into_typed_nodes(text, condition):
    assert parse(text) == condition


def test_nodes_remember_where_each_column_is_named_and_list_the_columns_read():
    condition = parse("phone is null and (stage == 'lead' or phone == '1')")

    assert [test.at for test in condition.tests()] == [0, 19, 38]
    assert columns(condition) == ["phone", "stage"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@pd.io.common.os.system('touch /tmp/x') == 0", r"at character 1: found '@pd\.io\.common\.os\.system\(…'"),
        ("__import__('os').system('id')", r"at character 11: found \"\('os'\)\.system\('id'\)\"; expected 'is \[not\]"),
        ("`phone` is null", r"at character 1: found '`phone` is null'"),
        ("phone.str.len() > 3", r"at character 6: found '\.str\.len\(\) > 3'"),
        ("email.isna()", r"at character 6: found '\.isna\(\)'"),
        ("len(email) > 3", r"at character 4: found '\(email\) > 3'; expected 'is \[not\] null'"),
        ("a == b", r"at character 6: found 'b'; expected a quoted string, a number, true or false"),
        ("a = 1", r"at character 3: found '= 1'"),
        ("a == 1 & b == 2", r"at character 8: found '& b == 2'"),
        ("a is nul", r"at character 6: found 'nul'; expected 'null'"),
        ("a not is null", r"at character 7: found 'is null'; expected 'in'"),
        ("a in []", r"at character 7: found '\]'; expected a quoted string"),
        ("a in ['x' 'y']", r"at character 11: found \"'y'\]\"; expected ',' or '\]'"),
        ("(a is null", r"at character 11: found the end; expected 'and', 'or' or '\)'"),
        ("a is null)", r"at character 10: found '\)'; expected 'and', 'or' or the end"),
        ("a is null b", r"at character 11: found 'b'; expected 'and', 'or' or the end"),
        ("and is null", r"at character 1: found 'and is null'; expected a column name, 'not' or '\('"),
        ("", r"at character 1: found the end; expected a column name"),
        ("a == 'open", r"at character 6: found \"'open\""),
        ("not " * 51 + "a is null", r"at character 201: over 50 nested"),
    ],
)
def test_anything_outside_the_grammar_is_refused_with_the_character_and_what_was_found(text, message):
    with pytest.raises(ConditionError, match=message):
        parse(text)


# --- evaluation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [object, "str", "string"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stage is null", [False, False, True, False]),
        ("stage is not null", [True, True, False, True]),
        ("stage == 'lead'", [True, False, False, False]),
        ("stage != 'lead'", [False, True, True, True]),  # a missing value differs from every value
        ("stage < 'd'", [False, True, False, False]),
        ("stage in ['lead', 'other']", [True, False, False, True]),
        ("stage not in ['lead', 'other']", [False, True, True, False]),
        ("not stage == 'lead'", [False, True, True, True]),
        ("stage == 'lead' or stage is null", [True, False, True, False]),
        ("stage != 'lead' and stage != 'other'", [False, True, True, False]),
    ],
)
def test_text_columns_of_every_dtype_give_the_same_mask(dtype, text, expected):
    frame = pd.DataFrame({"stage": pd.Series(["lead", "customer", None, "other"], dtype=dtype)})

    assert evaluate(parse(text), frame).tolist() == expected


@pytest.mark.parametrize("values", [[1.0, 5.0, np.nan, 10.0], pd.array([1, 5, None, 10], dtype="Int64")])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n > 4", [False, True, False, True]),
        ("n <= 5", [True, True, False, False]),
        ("n != 5", [True, False, True, True]),
        ("n in [1, 10.0]", [True, False, False, True]),
        ("n not in [1, 10.0]", [False, True, True, False]),
        ("n is null", [False, False, True, False]),
    ],
)
def test_numbers_and_missing_numbers(values, text, expected):
    assert evaluate(parse(text), pd.DataFrame({"n": values})).tolist() == expected


def test_booleans_and_dates():
    frame = pd.DataFrame(
        {
            "active": pd.array([True, False, None], dtype="boolean"),
            "seen": pd.to_datetime(["2026-01-02", "2025-12-31", None], utc=True),
        }
    )

    assert evaluate(parse("active == true"), frame).tolist() == [True, False, False]
    assert evaluate(parse("seen >= '2026-01-01'"), frame).tolist() == [True, False, False]


def test_a_missing_column_or_a_comparison_the_type_does_not_allow_is_a_value_error():
    frame = pd.DataFrame({"stage": pd.Series(["lead"], dtype="str")})

    with pytest.raises(ValueError, match="column\\(s\\) phone, email not in the data"):
        evaluate(parse("phone is null or email is null or stage is null"), frame)
    with pytest.raises(ValueError, match="Invalid comparison"):
        evaluate(parse("stage > 3"), frame)
