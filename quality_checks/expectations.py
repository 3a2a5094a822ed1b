"""Suites as code, without importing Great Expectations: rules are plain data.

A :class:`Rule` names a Great Expectations 1.x expectation class and its arguments, and
the Dagster check it feeds (``check``: several rules make one check, e.g. every per-signal
range is part of ``signal_ranges``).  A :class:`Batch` is one frame of data with the rules
that judge it.  Great Expectations (≈ 3.5 s and 270 MB to import) is loaded only when a
batch is validated (:mod:`plantstream.quality_checks.gx_runtime`), so loading the Dagster
definitions stays fast and the suites can be listed and unit-tested without it.

The helpers below are the vocabulary the suites use; every one returns a :class:`Rule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: How many failing rows a check's metadata shows.
SAMPLE_ROWS = 10


@dataclass(frozen=True)
class Rule:
    """One expectation: ``gx.expectations.<expectation>(**kwargs)``, feeding Dagster check ``check``."""

    check: str
    expectation: str
    kwargs: dict[str, Any]
    #: Why the rule exists (shown in the Data Docs and the check's metadata).
    notes: str = ""

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items() if k not in ("partition_object",))
        return f"{self.expectation}({args})"


@dataclass
class Batch:
    """A frame to validate (one Great Expectations batch) and the rules that judge it.

    ``sample_columns``: the columns a failing row is shown with in the check's metadata
    (all columns when empty).
    """

    frame: str
    data: pd.DataFrame
    rules: list[Rule]
    sample_columns: Sequence[str] = field(default_factory=tuple)


def not_null(check: str, *columns: str, row_condition: str | None = None) -> list[Rule]:
    return [Rule(check, "ExpectColumnValuesToNotBeNull", {"column": c, **_condition(row_condition)}) for c in columns]


def not_empty(check: str, *columns: str) -> list[Rule]:
    """Strings that must not be empty (an id lost in an import is "" where the schema forbids null)."""
    return [Rule(check, "ExpectColumnValueLengthsToBeBetween", {"column": c, "min_value": 1}) for c in columns]


def between(
    check: str,
    column: str,
    low: float | None = None,
    high: float | None = None,
    *,
    row_condition: str | None = None,
    notes: str = "",
) -> Rule:
    return Rule(
        check,
        "ExpectColumnValuesToBeBetween",
        {"column": column, "min_value": low, "max_value": high, **_condition(row_condition)},
        notes,
    )


def in_set(check: str, column: str, values: Sequence[Any], *, row_condition: str | None = None) -> Rule:
    return Rule(
        check, "ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(values), **_condition(row_condition)}
    )


def unique(check: str, *columns: str, notes: str = "") -> Rule:
    if len(columns) == 1:
        return Rule(check, "ExpectColumnValuesToBeUnique", {"column": columns[0]}, notes)
    return Rule(check, "ExpectCompoundColumnsToBeUnique", {"column_list": list(columns)}, notes)


def a_at_least_b(check: str, a: str, b: str) -> Rule:
    """``a >= b`` row by row (rows where either is null are not judged)."""
    return Rule(
        check,
        "ExpectColumnPairValuesAToBeGreaterThanB",
        {"column_A": a, "column_B": b, "or_equal": True, "ignore_row_if": "either_value_is_missing"},
    )


def equal_pair(check: str, a: str, b: str, notes: str = "") -> Rule:
    return Rule(check, "ExpectColumnPairValuesToBeEqual", {"column_A": a, "column_B": b}, notes)


def _condition(row_condition: str | None) -> dict[str, Any]:
    return {} if row_condition is None else {"row_condition": row_condition, "condition_parser": "pandas"}


def quoted(value: str) -> str:
    """A string literal for a pandas ``row_condition`` (``signal=="torque"``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
