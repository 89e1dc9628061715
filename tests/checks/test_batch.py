"""validate_files: one screen for many small files, each file's report equal to the reference path's.

The reference is ``validate_file(..., engine="gx")`` one file at a time (great-expectations for every
expectation). Reports are compared whole (counts, percents, samples, rows, success, columns), without
the timings. ``screen_seconds`` in a report's timings says the screen wrote it.
"""
import json

import pytest

from include.checks import load_suite, validate_file
from include.checks.batch import screenable, validate_files
from tests.data.bad_inputs import DOC_TYPES, csv_text, make_valid_file, valid_rows


def _plain(report):
    data = report.to_dict()
    data.pop("timings")
    return data


def _reference(path, suite, name=None, **kwargs):
    return validate_file(path, suite, engine="gx", file_name=name, **kwargs)


def _screened(report) -> bool:
    return "screen_seconds" in report.timings


def test_bad_input_corpus_and_valid_files_in_one_batch_match_the_reference(corpus, tmp_path):
    files = [(path, name) for name, (path, _) in sorted(corpus.items())]
    files += [(make_valid_file(tmp_path, "invoice", rows=7, name=f"ok-{i}.csv", seed=i), f"ok-{i}.csv") for i in range(12)]
    reports = validate_files(files, "invoice")
    assert len(reports) == len(files)
    for (path, name), report in zip(files, reports):
        assert _plain(report) == _plain(_reference(path, "invoice", name)), name
    by_name = dict(zip((name for _, name in files), reports))
    assert _screened(by_name["valid"]) and _screened(by_name["bom"]) and _screened(by_name["ok-3.csv"])
    for bad in ("negative_amount", "duplicate_invoice_number", "bad_values", "formula_plus", "zero_bytes", "xlsx_valid"):
        assert not _screened(by_name[bad]), bad  # flagged or refused: written by the reference path
    assert by_name["negative_amount"].reason_code == "expectations_failed"
    assert by_name["formula_plus"].reason_code == "formula_cells"
    assert sum(_screened(r) for r in reports) >= 12 + 3


SCREENED_TYPES = [t for t in DOC_TYPES if t != "product_file"]  # product_file: value lengths, GX only


@pytest.mark.parametrize("doc_type", SCREENED_TYPES)
def test_every_document_type_suite_is_screened_and_matches(tmp_path, doc_type):
    assert screenable(load_suite(doc_type))
    files = [(make_valid_file(tmp_path, doc_type, rows=5 + i, name=f"{doc_type}-{i}.csv", seed=i), None) for i in range(6)]
    reports = validate_files(files, doc_type)
    assert all(r.passed and _screened(r) for r in reports), [r.summary_markdown() for r in reports if not r.passed]
    for (path, _), report in zip(files, reports):
        assert _plain(report) == _plain(_reference(path, doc_type))


def _invoice(tmp_path, name, change=None, rows=6, seed=1, drop_notes=False):
    header, data = valid_rows("invoice", rows, seed=seed)
    data = [list(r) for r in data]
    if change:
        change(header, data)
    if drop_notes:
        keep = [i for i, h in enumerate(header) if h != "notes"]
        header, data = [header[i] for i in keep], [[r[i] for i in keep] for r in data]
    path = tmp_path / name
    path.write_text(csv_text(header, data), encoding="utf-8")
    return path


def test_uniqueness_is_per_file_and_mixed_layouts_and_number_text(tmp_path):
    def set_cell(column, value, row=2):
        return lambda header, data: data[row].__setitem__(header.index(column), value)

    same_numbers = [_invoice(tmp_path, f"same-{i}.csv", seed=3) for i in range(2)]  # same keys in two files
    files = [
        *same_numbers,
        _invoice(tmp_path, "no-notes.csv", drop_notes=True, seed=4),  # optional column absent: own layout
        _invoice(tmp_path, "amount-text.csv", set_cell("amount", "12,50")),  # amount column stays text
        _invoice(tmp_path, "dup-inside.csv", lambda h, d: d[4].__setitem__(0, d[1][0])),
        _invoice(tmp_path, "date-order.csv", set_cell("due_date", "2025-01-01")),
        _invoice(tmp_path, "empty-tax.csv", set_cell("tax_amount", "")),  # missing is not a failure here
    ]
    reports = validate_files([(p, None) for p in files], "invoice")
    by_name = {r.file_name: r for r in reports}
    for path in files:
        assert _plain(by_name[path.name]) == _plain(_reference(path, "invoice")), path.name
    assert by_name["same-0.csv"].passed and by_name["same-1.csv"].passed  # not duplicates of each other
    assert _screened(by_name["same-1.csv"]) and _screened(by_name["no-notes.csv"]) and _screened(by_name["empty-tax.csv"])
    assert "notes" not in by_name["no-notes.csv"].columns
    for flagged in ("amount-text.csv", "dup-inside.csv", "date-order.csv"):
        assert not by_name[flagged].passed and not _screened(by_name[flagged]), flagged


def test_a_finding_that_mostly_tolerates_goes_to_the_reference_path(tmp_path):
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "tolerant.json").write_text(json.dumps({
        "name": "tolerant", "format": "csv", "delimiter": ",", "encoding": "utf-8",
        "columns": [{"name": "code", "type": "string"}, {"name": "qty", "type": "number"}],
        "expectations": [
            {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "code", "regex": "^C[0-9]+$", "mostly": 0.5}},
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "code"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "qty", "min_value": 0}},
        ],
    }))
    clean = tmp_path / "clean.csv"
    clean.write_text("code,qty\nC1,1\nC2,2\n")
    tolerated = tmp_path / "tolerated.csv"
    tolerated.write_text("code,qty\nC1,1\nX2,2\nC3,3\n")
    reports = validate_files([(clean, None), (tolerated, None)], "tolerant", suites_dir=suites)
    assert _screened(reports[0]) and reports[0].passed
    assert reports[1].passed and not _screened(reports[1])  # passes by `mostly`; its samples come from GX
    regex = next(r for r in reports[1].results if r.expectation_type.endswith("match_regex"))
    assert regex.unexpected_count == 1 and regex.sample_values == ["X2"]
    for path, report in zip((clean, tolerated), reports):
        assert _plain(report) == _plain(_reference(path, "tolerant", suites_dir=suites))


def test_a_suite_with_an_expectation_the_screen_does_not_know_validates_each_file_alone(tmp_path):
    assert not screenable(load_suite("product_file"))  # expect_column_value_lengths_to_be_between
    files = [(make_valid_file(tmp_path, "product_file", rows=4, name=f"p{i}.csv", seed=i), None) for i in range(2)]
    reports = validate_files(files, "product_file")
    assert all(r.passed and not _screened(r) for r in reports)
    for (path, _), report in zip(files, reports):
        assert _plain(report) == _plain(_reference(path, "product_file"))


def test_errors_of_one_file_do_not_cost_the_others_their_reports(tmp_path):
    good = make_valid_file(tmp_path, "invoice", rows=3, name="good.csv")
    missing = tmp_path / "gone.csv"
    reports = validate_files([(good, None), (missing, None)], "invoice", return_exceptions=True)
    assert reports[0].passed and _screened(reports[0])
    assert isinstance(reports[1], FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        validate_files([(good, None), (missing, None)], "invoice")


def test_simple_files_parsed_together_give_the_cells_read_table_gives(tmp_path):
    """read_simple_tables (one pandas call for many files) against read_table file by file."""
    from include.checks.reading import read_simple_tables, read_table, simple_csv
    from include.checks.runner import read_options

    header, rows = valid_rows("invoice", 6, seed=11)
    body = csv_text(header, rows)
    notes = header.index("notes")
    quoted = [list(r) for r in rows]
    quoted[2][notes] = 'line one\nline "two", with a comma'
    contents = {
        "plain.csv": body.encode(),
        "crlf.csv": csv_text(header, rows, line_end="\r\n").encode(),
        "bom.csv": b"\xef\xbb\xbf" + body.encode(),
        "no-final-newline.csv": body.rstrip("\n").encode(),
        "blank-lines.csv": body.replace("\n", "\n\n", 4).encode() + b"\n\n",
        "quoted-newline.csv": csv_text(header, quoted).encode(),
        "bare-cr.csv": body.replace("\n", "\r", 3).encode(),  # pandas ends records at a bare CR
        "quoted-header.csv": ('"' + header[0] + '",' + ",".join(header[1:]) + "\n").encode() + body.split("\n", 1)[1].encode(),
        "leading-blank.csv": b"\n" + body.encode(),
        "ragged.csv": (body + "INV-9,2026-01-01\n").encode(),
    }
    options = {**read_options(load_suite("invoice")), "number_columns": ()}
    parts = {}
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
        parts[name] = simple_csv(tmp_path / name, **options)
    not_simple = {"bare-cr.csv", "quoted-header.csv", "leading-blank.csv", "ragged.csv"}
    assert {n for n, p in parts.items() if p is None} == not_simple
    simple = [n for n in contents if n not in not_simple]
    together = read_simple_tables([parts[n] for n in simple], delimiter=",")
    start = 0
    for name in simple:
        alone = read_table(tmp_path / name, "csv", **options)
        chunk = together.iloc[start:start + len(alone)].reset_index(drop=True)
        start += len(alone)
        assert list(chunk.columns) == list(alone.columns), name
        assert chunk.astype(object).where(chunk.notna(), None).values.tolist() == \
            alone.astype(object).where(alone.notna(), None).values.tolist(), name
    assert start == len(together)
    reports = validate_files([(tmp_path / n, None) for n in contents], "invoice")
    for name, report in zip(contents, reports):
        assert _plain(report) == _plain(_reference(tmp_path / name, "invoice")), name
