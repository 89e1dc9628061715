"""The check report: the result of checking one partner file, for machines (JSON) and people (markdown).

``CheckReport.to_json()`` is the "check report" file the document_delivery DAG attaches to the
Trading Grid case; ``summary_markdown()`` is the comment text a person reads there. Both are built
from plain data (no pandas / great-expectations objects), so a report survives XCom and JSON round trips
(:meth:`CheckReport.from_dict`). Every text in both (names, values, messages) passes through
:func:`include.textsafe.safe_text`: a NUL or a lone surrogate from a partner's file would make the
case it is attached to fail on every retry.
"""
from __future__ import annotations

import json
import re
import math
from dataclasses import dataclass, field
from typing import Any

from include.checks.errors import EXPECTATIONS_FAILED, FORMULA_CELLS
from include.textsafe import safe_text

REPORT_VERSION = 1
#: Longest cell excerpt shown to people; longer values are cut with an ellipsis.
MAX_VALUE_CHARS = 40


@dataclass
class ExpectationResult:
    """The outcome of one expectation (or one built-in check) over the whole file.

    ``source`` is ``"gx"`` for a great-expectations expectation from the suite, ``"checks"`` for the
    built-in checks the runner adds: ``no_formula_cells`` and ``values_parse_as_<type>``.
    ``sample_values`` are a few distinct offending values (as short strings) in file order;
    ``sample_rows`` the spreadsheet row numbers of the first offending rows (header = row 1, first data
    row = row 2; a quoted line break inside a record shifts physical lines, not these numbers).
    """

    expectation_type: str
    success: bool
    column: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample_values: list[str] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    observed_value: Any = None
    error: str | None = None
    meaning: str = ""
    source: str = "gx"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExpectationResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class CheckReport:
    """Everything known about checking one file against one suite.

    ``passed`` is True only if the file was read and every expectation and built-in check succeeded.
    ``read_error`` (``{"reason_code", "message", "details"}``) is set when the file could not be read;
    then ``results`` is empty.
    """

    suite: str
    file_name: str
    passed: bool
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    results: list[ExpectationResult] = field(default_factory=list)
    read_error: dict[str, Any] | None = None
    chunks: int = 1
    timings: dict[str, float] = field(default_factory=dict)
    version: int = REPORT_VERSION

    @property
    def failed_results(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    @property
    def reason_code(self) -> str | None:
        """None when passed; else the read error's code, ``formula_cells``, or ``expectations_failed``."""
        if self.passed:
            return None
        if self.read_error:
            return self.read_error["reason_code"]
        if any(r.expectation_type == "no_formula_cells" and not r.success for r in self.results):
            return FORMULA_CELLS
        return EXPECTATIONS_FAILED

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN/inf become None), including ``reason_code``."""
        # Not dataclasses.asdict: it deep-copies every value first, and _json_safe copies again.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["results"] = [{name: getattr(r, name) for name in r.__dataclass_fields__} for r in self.results]
        data["reason_code"] = self.reason_code
        plain = _finite(data)
        # Almost every report is clean text: one scan of its JSON instead of safe_text on each of its
        # hundreds of strings (~0.7 ms a report). Anything suspicious takes the per-string path.
        if not _MAYBE_UNSAFE.search(json.dumps(plain, ensure_ascii=False)):
            return plain
        return _json_safe(plain)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckReport:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["results"] = [ExpectationResult.from_dict(r) for r in data.get("results", [])]
        return cls(**fields)

    def summary_markdown(self, max_rows: int = 20) -> str:
        """A short markdown text for people: verdict, size, and a table of the failed checks.

        Every piece of file-derived text (file name, column names, values, messages) is escaped so a
        hostile file cannot inject links, HTML or table structure into the case comment.
        """
        name = md_code(self.file_name)
        suite = md_escape(self.suite)
        if self.read_error:
            err = self.read_error
            return (
                f"**Check failed: {name} could not be read as {suite}** "
                f"(reason `{err['reason_code']}`)\n\n{md_escape(err['message'])}\n"
            )
        size = f"{self.rows:,} rows × {len(self.columns)} columns"
        if self.passed:
            return f"**Check passed: {name}** ({suite}, {size}, {len(self.results)} checks)\n"
        failed = self.failed_results
        lines = [
            f"**Check failed: {name}** ({suite}, {size}): "
            f"{len(failed)} of {len(self.results)} checks failed (reason `{self.reason_code}`)",
            "",
            "| Check | Column | Bad rows | Sample bad values | Rows |",
            "|---|---|---:|---|---|",
        ]
        for r in failed[:max_rows]:
            if r.error:
                bad = "error"
                samples = md_escape(_cut(r.error, 80))
            else:
                bad = "—" if r.unexpected_count is None else f"{r.unexpected_count:,}"
                if r.unexpected_percent is not None and r.unexpected_count:
                    pct = r.unexpected_percent
                    bad += " (<0.1%)" if pct < 0.1 else f" ({pct:.1f}%)"
                values = r.sample_values or ([] if r.observed_value is None else [f"observed: {r.observed_value}"])
                samples = ", ".join(md_code(_cut(v)) for v in values) or "—"
            rows = ", ".join(str(n) for n in r.sample_rows) or "—"
            lines.append(
                f"| {md_escape(_label(r))} | {md_escape(r.column or '—')} | {bad} | {samples} | {rows} |"
            )
        if len(failed) > max_rows:
            lines.append(f"\n… and {len(failed) - max_rows} more failed checks (see the attached report).")
        return "\n".join(lines) + "\n"


def _label(result: ExpectationResult) -> str:
    """The expectation type without ``expect_`` and its key arguments, then what it means for people
    (the suite's ``meaning``), e.g. ``column_values_to_be_between (min_value=0) — an amount is positive``."""
    label = result.expectation_type.removeprefix("expect_")
    args = {k: v for k, v in result.kwargs.items() if k not in ("column", "column_A", "column_B", "column_list", "batch_id")}
    if args:
        shown = ", ".join(
            f"{k}={len(v)} values" if isinstance(v, (list, tuple)) and len(v) > 5 else f"{k}={_cut(str(v), 30)}"
            for k, v in args.items()
        )
        label += f" ({shown})"
    return f"{label} — {result.meaning}" if result.meaning else label


def _cut(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    # Control characters (line breaks too) made visible instead of breaking lines in the table.
    return safe_text(value, limit, keep="")


# Enough to neutralise emphasis, links/images, autolinks, HTML/entities and table pipes inside a cell.
_MD_SPECIAL = set("\\`*_{}[]<>#!|~&:")


def md_escape(text: Any) -> str:
    """Escape text for a markdown table cell: markdown punctuation, HTML, pipes and line breaks."""
    out = []
    for ch in safe_text(text, keep="\r\n\t"):
        if ch in "\r\n":
            out.append(" ")
        elif ch in _MD_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def md_code(text: Any) -> str:
    """Show text as inline code, safe in a table cell: backticks and pipes cannot end the span or cell."""
    body = safe_text(text, keep="\r\n\t").replace("\r", " ").replace("\n", " ").replace("|", "¦").replace("`", "ˋ")
    return f"`{body}`" if body.strip() else "`␣`"


#: In JSON text: a control character json escaped (\u00XX, \b, \f, \r; \n and \t are kept as they are
#: by safe_text), or a character safe_text would escape. A backslash followed by one of these letters
#: in the data matches too: it only takes the slow path, which is exact.
_MAYBE_UNSAFE = re.compile(r"\\u00[01][0-9a-fA-F]|\\u007[fF]|\\[bfr]|[\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _finite(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither), other objects their text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_finite(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)  # what _json_safe makes of it too (dates, decimals, numpy scalars)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (int, bool)):
        return value
    return safe_text(value)
