"""Vectorised pandas evaluation of the simple per-row expectations, for big chunked files.

great-expectations is the reference engine. On this machine it costs about 1 s fixed per chunk
plus about 5 s per million rows for the seven per-row rules of the price list: most of a 5M-row
validation. The rules the catalog suites use are one pandas/numpy expression each, so for files
validated in several chunks the runner evaluates those here, from the SAME JSON suite, with
GX's own pandas semantics (copied from the GX 1.x metric providers named below):

- ``expect_column_values_to_not_be_null``: unexpected = missing (``isna``); no ``missing_count``.
- ``expect_column_values_to_be_between`` on a ``number``/``integer`` column with numeric bounds:
  missing values are skipped; ``min <= x <= max`` (``strict_*`` makes it ``<``), as
  ``ColumnValuesBetween._pandas_vectorized``.
- ``expect_column_values_to_be_in_set`` on a text or number column: ``Series.isin(value_set)``.
- ``expect_column_values_to_match_regex`` on a text column: ``str.contains(regex)`` (``re.search``).
- ``expect_column_pair_values_a_to_be_greater_than_b``: rows dropped by ``ignore_row_if``
  (default ``both_values_are_missing``) are missing; ``A > B`` (``or_equal``: ``>=``), so a missing
  value on one side of a kept row is unexpected, as in GX.

Anything else — another expectation type, an extra kwarg (``row_condition``, ``result_format``…), a
bound GX would reject, a column that is not in the frame — returns ``None`` from :func:`plan` and runs
in great-expectations, so a suite never loses a check and GX keeps producing its own error messages.
:func:`evaluate` returns the same ``result`` fields the runner reads from a GX result
(``element_count``, ``missing_count``, ``unexpected_count``, ``partial_unexpected_index_list``), so
both engines go through one merge. tests/checks/test_fast_rules.py runs both on the same data.
"""
from __future__ import annotations

import re
from numbers import Real
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from include.checks.suites import ExpectationSpec, SuiteSpec

NOT_NULL = "expect_column_values_to_not_be_null"
BETWEEN = "expect_column_values_to_be_between"
IN_SET = "expect_column_values_to_be_in_set"
MATCH_REGEX = "expect_column_values_to_match_regex"
PAIR_GREATER = "expect_column_pair_values_a_to_be_greater_than_b"

#: kwargs each rule understands; any other kwarg sends the expectation to GX.
_KWARGS = {
    NOT_NULL: {"column", "mostly"},
    BETWEEN: {"column", "min_value", "max_value", "strict_min", "strict_max", "mostly"},
    IN_SET: {"column", "value_set", "mostly"},
    MATCH_REGEX: {"column", "regex", "mostly"},
    PAIR_GREATER: {"column_A", "column_B", "or_equal", "ignore_row_if", "mostly"},
}
FAST_TYPES = frozenset(_KWARGS)
_IGNORE_ROW_IF = ("both_values_are_missing", "either_value_is_missing", "neither")


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value == value


def plan(expectation: ExpectationSpec, spec: SuiteSpec) -> bool:
    """Whether ``expectation`` is evaluated here with GX's exact result (else it runs in GX)."""
    kwargs = expectation.kwargs
    allowed = _KWARGS.get(expectation.type)
    if allowed is None or not set(kwargs) <= allowed:
        return False
    mostly = kwargs.get("mostly", 1.0)
    if not _number(mostly) or not 0 <= mostly <= 1:
        return False
    types = spec.column_types
    if expectation.type == PAIR_GREATER:
        a, b = kwargs.get("column_A"), kwargs.get("column_B")
        if a not in types or b not in types or kwargs.get("ignore_row_if", _IGNORE_ROW_IF[0]) not in _IGNORE_ROW_IF:
            return False
        # Same kind on both sides (dates with dates, numbers with numbers): no mixed-type comparisons.
        kinds = {("number" if types[c].type == "integer" else types[c].type) for c in (a, b)}
        return len(kinds) == 1 and kinds != {"string"} and isinstance(kwargs.get("or_equal", False), bool)
    column = kwargs.get("column")
    if column not in types:
        return False
    kind = types[column].type
    if expectation.type == BETWEEN:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if kind not in ("number", "integer") or (low is None and high is None):
            return False
        if any(v is not None and not _number(v) for v in (low, high)):
            return False
        if low is not None and high is not None and low > high:
            return False  # GX reports its own error
        return all(isinstance(kwargs.get(k, False), bool) for k in ("strict_min", "strict_max"))
    if expectation.type == IN_SET:
        value_set = kwargs.get("value_set")
        if kind not in ("string", "number", "integer") or not isinstance(value_set, list):
            return False
        return all(isinstance(v, str) if kind == "string" else _number(v) for v in value_set)
    if expectation.type == MATCH_REGEX:
        if kind != "string" or not isinstance(kwargs.get("regex"), str):
            return False
        try:
            re.compile(kwargs["regex"])
        except re.error:
            return False
        return True
    return True  # NOT_NULL


def evaluate(expectation: ExpectationSpec, frame: pd.DataFrame, partial_count: int) -> dict[str, Any] | None:
    """GX's ``result`` dict for one planned expectation on ``frame`` (typed as the runner hands it to GX).

    ``None`` when a column is not in this frame (an optional column): the caller runs GX, which
    reports it as an error.
    """
    import numpy as np

    masks = row_masks(expectation, frame)
    if masks is None:
        return None
    unexpected, missing = masks
    index = frame.index[np.flatnonzero(unexpected)[:partial_count]]
    result = {
        "element_count": len(frame),
        "unexpected_count": int(unexpected.sum()),
        "partial_unexpected_index_list": [int(i) for i in index],
    }
    if missing is not None:
        result["missing_count"] = int(missing.sum())
    return result


def row_masks(expectation: ExpectationSpec, frame: pd.DataFrame):
    """``(unexpected, missing)`` boolean arrays, one entry per row of ``frame``, for a planned expectation.

    ``missing`` is None for ``not_null`` (GX reports no missing count there). ``None`` instead of the
    pair when a column is not in the frame. :func:`evaluate` and the batch screen
    (:mod:`include.checks.batch`) both count from these masks.
    """
    import numpy as np

    kwargs = expectation.kwargs
    columns = [kwargs["column_A"], kwargs["column_B"]] if expectation.type == PAIR_GREATER else [kwargs["column"]]
    if any(c not in frame.columns for c in columns):
        return None
    if expectation.type == PAIR_GREATER:
        a, b = frame[columns[0]], frame[columns[1]]
        missing_a, missing_b = a.isna().to_numpy(), b.isna().to_numpy()
        ignore = kwargs.get("ignore_row_if", "both_values_are_missing")
        if ignore == "both_values_are_missing":
            missing = missing_a & missing_b
        elif ignore == "either_value_is_missing":
            missing = missing_a | missing_b
        else:
            missing = np.zeros(len(frame), dtype=bool)
        ok = (a >= b if kwargs.get("or_equal") else a > b).to_numpy(dtype=bool, na_value=False)
        return ~missing & ~ok, missing
    values = frame[columns[0]]
    missing = values.isna().to_numpy()
    if expectation.type == NOT_NULL:
        return missing, None
    return ~missing & ~_condition(expectation, values, missing), missing


def _condition(expectation: ExpectationSpec, values: pd.Series, missing):
    """The per-row condition on the non-missing values (missing rows: True, they are not counted)."""
    import numpy as np

    kwargs = expectation.kwargs
    ok = np.ones(len(values), dtype=bool)
    present = values[~missing]
    if expectation.type == BETWEEN:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        numbers = present.to_numpy(dtype="float64")
        inside = np.ones(len(numbers), dtype=bool)
        if low is not None:
            inside &= (low < numbers) if kwargs.get("strict_min") else (low <= numbers)
        if high is not None:
            inside &= (numbers < high) if kwargs.get("strict_max") else (numbers <= high)
    elif expectation.type == IN_SET:
        inside = present.isin(kwargs["value_set"]).to_numpy(dtype=bool)
    else:  # MATCH_REGEX
        inside = present.astype(str).str.contains(kwargs["regex"]).to_numpy(dtype=bool, na_value=False)
    ok[~missing] = inside
    return ok
