"""Data quality of canonical entities, checked with Great Expectations (GX 1.x) on pandas DataFrames.

The stack file declares, per entity, ``quality.<entity>.expectations``: a list of
``{expect, column, <params>, mostly?, on_fail?, when?}``. The vocabulary is kept small on purpose:

================  ======================  ==========================================
``expect``        parameters              GX expectation
================  ======================  ==========================================
``not_null``      (none)                  ``ExpectColumnValuesToNotBeNull``
``unique``        (none)                  ``ExpectColumnValuesToBeUnique``
``match_regex``   ``regex``               ``ExpectColumnValuesToMatchRegex``
``in_set``        ``values`` (a list)     ``ExpectColumnValuesToBeInSet``
``between``       ``min`` and/or ``max``  ``ExpectColumnValuesToBeBetween``
``max_length``    ``value``               ``ExpectColumnValueLengthsToBeBetween``
================  ======================  ==========================================

Every expectation also takes:

- ``mostly`` (0-1, as in GX): the expectation as a whole passes when at least this share of the
  non-null values meet it. Missing values count only for ``not_null`` (GX ignores them elsewhere).
- ``on_fail``: ``quarantine`` (default) or ``warn``. Rows that violate a ``quarantine`` expectation
  are reported in ``QualityReport.row_failures`` and set aside by :func:`split_quarantine`; ``warn``
  expectations are only reported. A row's fate depends on the row alone, not on ``mostly``: a row
  that violates a ``quarantine`` expectation is quarantined even when ``mostly`` lets the expectation
  pass, so use ``on_fail: warn`` for rules whose failing rows should still flow on.
- ``when``: a condition on the row's columns; only matching rows are checked, e.g.
  ``{expect: not_null, column: email, when: "phone is null"}`` asks for an email or a phone. It is a small
  typed language (:mod:`sync_pipelines.core.conditions`: columns, ``== != < <= > >=`` against a quoted string,
  a number or true/false, ``is [not] null``, ``[not] in [...]``, ``and``/``or``/``not``, parentheses), parsed
  at load and evaluated as a vectorised mask, never by an evaluator: a stack file cannot run code. GX is given
  only the matching rows (with their positions), so counts, percentages and ``mostly`` are over those rows.

As in GX, ``unique`` flags every copy of a repeated value, and a column missing from the data fails its
expectation with an ``error`` message instead of raising.

GX reports unexpected rows by index label, so :func:`validate` gives GX a copy of the frame indexed by row
position (a named index, which GX lists as one array of labels rather than a dict per failing row) and maps the
positions back to the caller's index: this works for any index (duplicated labels included) and for the subsets a
``when`` selects. GX stays the single source of
truth for both the reported results and the quarantine mask; at 1M sandbox-like contact rows it takes
about 6 s on a 2-core machine (see :func:`bench`), so no second, vectorised code path is kept.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
import statistics
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sync_pipelines.core import conditions
from sync_pipelines.core.conditions import Condition, ConditionError

if TYPE_CHECKING:  # GX takes seconds to import: only pay for it when validating.
    import great_expectations as gx
    from great_expectations.core.batch_definition import BatchDefinition

SAMPLE_SIZE = 10
ON_FAIL_CHOICES = ("quarantine", "warn")
SOURCE_COLUMNS = ("_source", "_source_id")
_COMMON_KEYS = ("expect", "column", "mostly", "on_fail", "when")
_INTERNAL_KWARGS = ("batch_id", "column")


@dataclass(frozen=True)
class _Rule:
    """How one ``expect`` name maps onto a GX expectation class."""

    gx_class: str
    params: Mapping[str, str]  # stack parameter -> GX keyword
    required: tuple[str, ...]
    all_required: bool = True  # False: at least one of ``required`` is enough


RULES: dict[str, _Rule] = {
    "not_null": _Rule("ExpectColumnValuesToNotBeNull", {}, ()),
    "unique": _Rule("ExpectColumnValuesToBeUnique", {}, ()),
    "match_regex": _Rule("ExpectColumnValuesToMatchRegex", {"regex": "regex"}, ("regex",)),
    "in_set": _Rule("ExpectColumnValuesToBeInSet", {"values": "value_set"}, ("values",)),
    "between": _Rule(
        "ExpectColumnValuesToBeBetween", {"min": "min_value", "max": "max_value"}, ("min", "max"), all_required=False
    ),
    "max_length": _Rule("ExpectColumnValueLengthsToBeBetween", {"value": "max_value"}, ("value",)),
}
_KNOWN_KEYS = _COMMON_KEYS + tuple(sorted({param for rule in RULES.values() for param in rule.params}))


@dataclass(frozen=True)
class ExpectationOutcome:
    """The result of one expectation, in terms a reviewer can act on."""

    expectation: str  # GX type name, e.g. expect_column_values_to_match_regex
    column: str
    kwargs: dict[str, Any]  # GX keywords other than the column (mostly included when set), and the when
    success: bool
    element_count: int
    unexpected_count: int
    unexpected_percent: float  # as GX computes it (of non-null values, except for not_null)
    sample: list[dict[str, Any]]  # up to SAMPLE_SIZE failing rows: _source, _source_id and the column
    on_fail: str
    unexpected_by_source: dict[str, int]  # failing rows per source tool
    error: str | None = None  # set when GX could not evaluate the expectation (e.g. a missing column)

    @property
    def reason(self) -> str:
        """One line naming the column, the expectation and its parameters, used for quarantined rows."""
        params = ", ".join(f"{key} {value}" for key, value in self.kwargs.items() if key != "mostly")
        return f"{self.column}: {self.expectation}" + (f" ({params})" if params else "")


@dataclass(frozen=True)
class QualityReport:
    """Everything :func:`validate` learnt about one DataFrame."""

    name: str
    source: str | None
    row_count: int
    results: list[ExpectationOutcome]
    row_failures: pd.Series  # aligned with the frame's index: reasons ("; "-joined) or None for passing rows
    failure_rate: float  # rows failing a quarantine expectation / rows
    success: bool  # every expectation passed

    @property
    def quarantined_count(self) -> int:
        return int(self.row_failures.notna().sum())


@dataclass(frozen=True)
class VolumeResult:
    ok: bool
    ratio: float | None
    baseline: float | None
    message: str


def build_suite(name: str, expectations: Iterable[Any]) -> gx.ExpectationSuite:
    """Turn the stack's expectation list for entity ``name`` into a GX suite (``when`` kept in ``meta`` only:
    :func:`validate` gives GX the rows a condition selects, so GX never evaluates one)."""
    return _suite(name, dict(enumerate(_checked(name, expectations))))


def _checked(name: str, expectations: Iterable[Any]) -> list[CheckedExpectation]:
    """Every expectation checked (and its ``when`` parsed) before GX runs any of them."""
    return [checked_expectation(name, index, _as_spec(item)) for index, item in enumerate(expectations)]


def _suite(name: str, checked: Mapping[int, CheckedExpectation]) -> gx.ExpectationSuite:
    """The GX suite of the expectations at the given stack positions.

    Each GX expectation carries its position, ``on_fail`` and ``when`` in ``meta``, because GX does not return
    results in suite order and knows nothing of conditions.
    """
    import great_expectations as gx

    _batch_definition()  # GX suites need an active context, even unsaved ones
    suite = gx.ExpectationSuite(name=f"quality_{name}")
    for index, item in checked.items():
        expectation_class = getattr(gx.expectations, item.rule.gx_class)
        meta = {"quality_index": index, "on_fail": item.on_fail, **({"when": item.when_text} if item.when else {})}
        suite.add_expectation(expectation_class(column=item.column, **item.kwargs, meta=meta))
    return suite


def validate(
    df: pd.DataFrame, name: str, expectations: Iterable[Any], source: str | None = None
) -> QualityReport:
    """Run the expectations of entity ``name`` on ``df`` and say which rows fail and why.

    ``source`` names the tool the frame came from, used when the frame has no ``_source`` column.
    """
    checked = _checked(name, expectations)
    row_column = _free_column_name(df, "_quality_row")
    # GX looks rows up by index label internally, which breaks on duplicated labels: hand it positions. It also
    # fingerprints every column of the frame it is given, so it gets only the columns the expectations read.
    frame = df[_columns_read(df, checked)].set_axis(pd.RangeIndex(len(df), name=row_column))
    by_condition: dict[Condition | None, dict[int, CheckedExpectation]] = {}
    for index, item in enumerate(checked):
        by_condition.setdefault(item.when, {})[index] = item
    gx_results = []
    for condition, group in by_condition.items():  # one GX run per condition, on the rows it selects
        suite = _suite(name, group)
        try:
            rows = frame if condition is None else frame[conditions.evaluate(condition, frame)]
        except ValueError as error:  # like a column missing from the data: each expectation fails with the reason
            gx_results += [_failed(expectation.configuration, f"when: {error}") for expectation in suite.expectations]
            continue
        gx_results += _run_suite(rows, suite, row_column).results

    in_stack_order = sorted(gx_results, key=lambda result: result.expectation_config.meta["quality_index"])
    results: list[ExpectationOutcome] = []
    reasons_by_position: dict[int, list[str]] = {}
    for result in in_stack_order:
        positions = np.array(
            [row for item in result.result.get("unexpected_index_list") or () for row in item[row_column]],
            dtype=np.int64,
        )
        outcome = _outcome(df, result, positions, source)
        results.append(outcome)
        if outcome.on_fail == "quarantine":
            reason = outcome.reason
            for position in positions.tolist():
                reasons_by_position.setdefault(position, []).append(reason)

    reasons = np.full(len(df), None, dtype=object)
    for position, row_reasons in reasons_by_position.items():
        reasons[position] = "; ".join(row_reasons)
    row_failures = pd.Series(reasons, index=df.index, dtype=object, name="reason")
    failing_rows = len(reasons_by_position)
    return QualityReport(
        name=name,
        source=source,
        row_count=len(df),
        results=results,
        row_failures=row_failures,
        failure_rate=failing_rows / len(df) if len(df) else 0.0,
        success=all(outcome.success for outcome in results),
    )


def columns_read(name: str, expectations: Iterable[Any]) -> set[str]:
    """The columns the expectations of entity ``name`` read, so a caller can load only those."""
    return _read_by(_checked(name, expectations))


def _columns_read(df: pd.DataFrame, checked: list[CheckedExpectation]) -> list[str]:
    """The columns of ``df`` the expectations read."""
    read = _read_by(checked)
    return [c for c in df.columns if c in read]


def _read_by(checked: list[CheckedExpectation]) -> set[str]:
    """Each expectation's column and those its ``when`` names."""
    return {item.column for item in checked} | {
        column for item in checked if item.when for column in conditions.columns(item.when)
    }


def split_quarantine(df: pd.DataFrame, report: QualityReport) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into rows that passed every quarantine expectation and the rest (with ``_reason``)."""
    if len(report.row_failures) != len(df) or not report.row_failures.index.equals(df.index):
        raise ValueError(
            f"quality report for {report.name!r} does not belong to this DataFrame: "
            f"it covers {len(report.row_failures)} rows, the frame has {len(df)} (or the index differs)"
        )
    failing = report.row_failures.notna().to_numpy()
    quarantined = df[failing].assign(_reason=report.row_failures[failing].to_numpy())
    return df[~failing], quarantined


def volume_check(
    current_count: int,
    history_counts: Sequence[int],
    min_ratio: float,
    max_ratio: float,
    history: int | None = None,
) -> VolumeResult:
    """Compare this run's row count with the median of earlier runs (oldest first).

    ``history`` keeps only the latest counts (the stack's ``volume.history``). A zero baseline gives no
    usable ratio, so it passes with a message, like having no history at all.
    """
    if not 0 <= min_ratio <= max_ratio:
        raise ValueError(f"volume: need 0 <= min_ratio <= max_ratio, got min_ratio={min_ratio}, max_ratio={max_ratio}")
    if current_count < 0 or any(count < 0 for count in history_counts):
        raise ValueError(
            f"volume: row counts cannot be negative (current {current_count}, history {list(history_counts)})"
        )
    recent = list(history_counts)[-history:] if history else list(history_counts)
    if not recent:
        return VolumeResult(True, None, None, f"{current_count:,} rows; no earlier runs yet, volume not checked")
    baseline = float(statistics.median(recent))
    if baseline == 0:
        return VolumeResult(
            True, None, baseline, f"{current_count:,} rows; earlier runs had 0 rows, so there is no baseline to compare"
        )
    ratio = current_count / baseline
    ok = min_ratio <= ratio <= max_ratio
    verdict = "within" if ok else "OUTSIDE"
    message = (
        f"{current_count:,} rows against a baseline of {baseline:,.0f} (median of the last {len(recent)} runs): "
        f"ratio {ratio:.2f}, {verdict} the allowed {min_ratio:.2f}-{max_ratio:.2f}x the baseline"
    )
    return VolumeResult(ok, ratio, baseline, message)


def to_metadata(report: QualityReport) -> dict[str, Any]:
    """JSON-serialisable figures for the Dagster UI: totals, a summary table and each expectation."""
    expectations = [
        {
            "expectation": outcome.expectation,
            "column": outcome.column,
            "kwargs": _json_value(outcome.kwargs),
            "success": outcome.success,
            "on_fail": outcome.on_fail,
            "unexpected_count": outcome.unexpected_count,
            "unexpected_percent": round(outcome.unexpected_percent, 4),
            "sources": dict(outcome.unexpected_by_source),
            "sample": markdown_table(outcome.sample),
            **({"error": outcome.error} if outcome.error else {}),
        }
        for outcome in report.results
    ]
    summary_rows = [
        {
            "result": "pass" if outcome.success else "FAIL",
            "column": outcome.column,
            "expectation": outcome.expectation,
            "on_fail": outcome.on_fail,
            "unexpected": outcome.unexpected_count,
            "percent": f"{outcome.unexpected_percent:.2f}",
            "sources": ", ".join(f"{tool}: {count}" for tool, count in outcome.unexpected_by_source.items()),
        }
        for outcome in report.results
    ]
    return {
        "entity": report.name,
        "source": report.source,
        "rows": report.row_count,
        "success": report.success,
        "failure_rate": round(report.failure_rate, 6),
        "quarantined_rows": report.quarantined_count,
        "summary": markdown_table(summary_rows),
        "expectations": expectations,
    }


# --- configuration ------------------------------------------------------------------------------


def _as_spec(item: Any) -> dict[str, Any]:
    """Accept a plain dict or any object with the same attributes (e.g. a pydantic model)."""
    if isinstance(item, Mapping):
        return dict(item)
    return {key: getattr(item, key) for key in _KNOWN_KEYS if getattr(item, key, None) is not None}


class ExpectationError(ValueError):
    """A mistake in one expectation: ``path`` is its key path in the stack (down to ``.when`` for a condition),
    ``problem`` what is wrong there; the message is both, with the expectation's name."""

    def __init__(self, path: str, problem: str, expect: str | None = None):
        self.path, self.problem = path, problem
        super().__init__(f"{path}{f' ({expect})' if expect else ''}: {problem}")


@dataclass(frozen=True)
class CheckedExpectation:
    """One expectation of the stack, validated: what GX is asked and on which rows."""

    rule: _Rule
    column: str
    kwargs: dict[str, Any]  # GX keywords other than the column
    on_fail: str
    when: Condition | None = None  # only rows meeting it are checked
    when_text: str | None = None  # as the stack wrote it, for reports


def checked_expectation(
    name: str, index: int, spec: dict[str, Any], columns: Iterable[str] | None = None
) -> CheckedExpectation:
    """Validate one expectation spec, parsing its ``when``. Given the entity's ``columns``, a condition naming any
    other column (but a ``_``-prefixed system column) is refused; errors start with the key path."""
    where = f"quality.{name}.expectations[{index}]"
    expect = spec.get("expect")
    if expect not in RULES:
        raise ExpectationError(where, f"unknown expect {expect!r}; allowed: {', '.join(sorted(RULES))}")
    rule = RULES[expect]
    column = spec.get("column")
    if not isinstance(column, str) or not column:
        raise ExpectationError(where, f"'column' must be a column name, got {column!r}", expect)
    unknown = sorted(set(spec) - set(_COMMON_KEYS) - set(rule.params))
    if unknown:
        allowed = ", ".join([*_COMMON_KEYS, *rule.params])
        raise ExpectationError(where, f"unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}", expect)
    given = [param for param in rule.required if spec.get(param) is not None]
    if rule.required and (len(given) < len(rule.required) if rule.all_required else not given):
        needed = (" and " if rule.all_required else " and/or ").join(rule.required)
        raise ExpectationError(where, f"needs {needed}; found parameters {sorted(spec)}", expect)
    kwargs = {rule.params[param]: _checked_param(where, expect, param, spec[param]) for param in given}
    if spec.get("mostly") is not None:
        mostly = spec["mostly"]
        if isinstance(mostly, bool) or not isinstance(mostly, Real) or not 0 <= mostly <= 1:
            raise ExpectationError(where, f"'mostly' must be a number from 0 to 1, got {mostly!r}", expect)
        kwargs["mostly"] = float(mostly)
    on_fail = spec.get("on_fail") or "quarantine"
    if on_fail not in ON_FAIL_CHOICES:
        raise ExpectationError(where, f"'on_fail' is {on_fail!r}; allowed: {', '.join(ON_FAIL_CHOICES)}", expect)
    text = spec.get("when")
    if text is None:
        return CheckedExpectation(rule, column, kwargs, on_fail)
    if not isinstance(text, str):
        raise ExpectationError(f"{where}.when", f"must be a condition such as 'phone is null', got {text!r}", expect)
    try:
        when = conditions.parse(text)
    except ConditionError as error:
        raise ExpectationError(f"{where}.when", str(error), expect) from None
    if columns is not None:
        known = set(columns)
        for test in when.tests():
            if test.column not in known and not test.column.startswith("_"):
                raise ExpectationError(f"{where}.when", f"at character {test.at + 1}: unknown column {test.column!r}; "
                                       f"allowed: {', '.join(sorted(known))} or a _-prefixed system column", expect)
    return CheckedExpectation(rule, column, kwargs, on_fail, when, text)


def _checked_param(where: str, expect: str, param: str, value: Any) -> Any:
    """Reject parameter values GX would choke on later, with the stack's own names."""
    problem = None
    if param == "regex":
        if not isinstance(value, str):
            problem = "must be a string"
        else:
            try:
                re.compile(value)
            except re.error as error:
                problem = f"is not a valid regular expression ({error})"
    elif param == "values":
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable) or not list(value):
            problem = "must be a non-empty list"
        else:
            value = list(value)
    elif param in ("min", "max"):
        if isinstance(value, bool) or not isinstance(value, (Real, str, date)):
            problem = "must be a number, a date or a string"
    elif param == "value" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        problem = "must be a non-negative integer"
    if problem:
        raise ExpectationError(where, f"'{param}' {problem}, got {value!r}", expect)
    return value


# --- running GX ---------------------------------------------------------------------------------

_GX_LOCK = threading.Lock()  # the GX context is not documented as thread-safe; validations share it


def import_gx_in_background() -> None:
    """Start importing GX on a daemon thread and return at once. Its first import takes seconds of interpreter
    work; a process that will validate later (steps sharing one process) can do it while it waits on the tools'
    APIs. The validation that comes first waits for the import, which Python's import lock makes safe."""
    if "great_expectations" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True,
                         name="import-great-expectations").start()


@functools.cache
def _batch_definition() -> BatchDefinition:
    """One ephemeral GX context per process, with analytics and progress bars off."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("sync_pipelines_quality").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def _run_suite(frame: pd.DataFrame, suite: gx.ExpectationSuite, row_column: str) -> Any:
    result_format = {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": [row_column],
        "exclude_unexpected_values": True,  # the failing rows' positions only: values are read from the frame
        "return_unexpected_index_query": False,
    }
    with _GX_LOCK:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
        return batch.validate(suite, result_format=result_format)


def _failed(config: Any, message: str) -> Any:
    """A GX result for an expectation that could not run, shaped like those GX makes for a missing column."""
    from great_expectations.core import ExpectationValidationResult

    failure = {"raised_exception": True, "exception_message": message}
    return ExpectationValidationResult(success=False, expectation_config=config, exception_info=failure)


def _outcome(df: pd.DataFrame, result: Any, positions: np.ndarray, source: str | None) -> ExpectationOutcome:
    """Summarise one GX result; ``positions`` are the failing rows' positions in ``df``."""
    config = result.expectation_config
    figures = result.result or {}
    column = config.kwargs["column"]
    sample_columns = [name for name in dict.fromkeys((*SOURCE_COLUMNS, column)) if name in df.columns]
    failing = df[sample_columns].iloc[positions]
    if "_source" in failing.columns:
        tools = failing["_source"].astype(object).where(failing["_source"].notna(), "(unknown)")
        by_source = {str(tool): int(count) for tool, count in tools.value_counts().items()}
    else:
        by_source = {source or "(unknown)": len(positions)} if len(positions) else {}
    sample = [
        {name: _json_value(value) for name, value in row.items()}
        for row in failing.head(SAMPLE_SIZE).to_dict("records")
    ]
    return ExpectationOutcome(
        expectation=config.type,
        column=column,
        kwargs={
            **{key: value for key, value in config.kwargs.items() if key not in _INTERNAL_KWARGS},
            **({"when": config.meta["when"]} if "when" in config.meta else {}),
        },
        success=bool(result.success),
        element_count=int(figures.get("element_count") or 0),
        unexpected_count=int(figures.get("unexpected_count") or 0),
        unexpected_percent=float(figures.get("unexpected_percent") or 0.0),
        sample=sample,
        on_fail=config.meta["on_fail"],
        unexpected_by_source=by_source,
        error=_exception_message(result.exception_info),
    )


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    """GX nests exception details per metric; return the first message, if any."""
    if not info:
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    return next(
        (
            message
            for message in (_exception_message(value) for value in info.values() if isinstance(value, Mapping))
            if message
        ),
        None,
    )


def _free_column_name(df: pd.DataFrame, wanted: str) -> str:
    name = wanted
    while name in df.columns:
        name = f"_{name}"
    return name


# --- presentation -------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    """Make values from pandas, numpy and GX safe for json.dumps (missing values become None)."""
    if isinstance(value, Mapping):
        return {str(key): _json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_value(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table (the UI renders it), their cells escaped; empty for no rows."""
    if not rows:
        return ""
    headers = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(row.get(header)) for header in headers) + " |" for row in rows]
    return "\n".join(lines)
