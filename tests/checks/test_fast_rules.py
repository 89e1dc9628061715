"""Parity: the vectorised rules (include/checks/fast_rules.py) give exactly great-expectations' results.

Each test validates the same file twice, chunked, with ``engine="gx"`` (the reference) and
``engine="fast"``, and compares the whole reports (counts, percents, samples, rows, success) except
the timings. The files mix valid rows with many kinds of bad rows, more than GX's 50 listed
unexpected values for some rules, and chunk boundaries that fall inside runs of bad rows.
"""
import json

import pytest

from include.checks import fast_rules, load_suite, validate_file
from include.checks.suites import parse_suite

CHUNK = 37  # several chunks, boundaries in the middle of the bad runs below


def _report_without_timings(report):
    data = report.to_dict()
    data.pop("timings")
    return data


def _both(path, suite, **kwargs):
    gx = validate_file(path, suite, chunksize=CHUNK, engine="gx", **kwargs)
    fast = validate_file(path, suite, chunksize=CHUNK, engine="fast", **kwargs)
    assert "fast_rules_seconds" not in gx.timings
    assert "fast_rules_seconds" in fast.timings  # the vectorised rules did run
    return gx, fast


def _write(path, header, rows):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _price_rows():
    rows = [f"SKU{i:05d},{(i % 97) + 0.5},EUR,2030-01-01" for i in range(120)]
    bad = [
        ",1.00,EUR,2030-01-01",  # no SKU
        "SKU90001,,USD,2030-01-01",  # no price
        "SKU90002,-3.50,USD,2030-01-01",  # negative price
        "SKU90003,0,USD,2030-01-01",  # zero (strict minimum)
        "SKU90004,abc,USD,2030-01-01",  # not a number: parse check, missing for GX
        "SKU90005,inf,USD,2030-01-01",
        "SKU90006,2.00,,2030-01-01",  # no currency
        "SKU90007,2.00,eur,2030-01-01",  # lower case
        "SKU90008,2.00,EURO,2030-01-01",
        "SKU90009,2.00, EUR,2030-01-01",  # leading blank
        "SKU90010,2.00,XXX,2030-01-01",
        "SKU90011,2.00,EUR,",  # no date
        "SKU90012,2.00,EUR,2030-02-30",  # impossible date
        "SKU90013,2.00,EUR,01/02/2030",  # wrong format
        "SKU00003,2.00,EUR,2030-01-01",  # duplicate SKU
        ",,,",  # everything missing
        "SKU90014,1e400,GBP,2030-01-01",
        "SKU90015,-0.0,GBP,2030-01-01",
    ]
    rows[10:10] = bad[:9]
    rows[60:60] = bad[9:]
    # 70 negative prices and 70 bad currencies: more than the 50 unexpected values GX lists
    rows += [f"SKU8{i:04d},-{i + 1}.25,US{chr(65 + i % 26)}x,2030-01-01" for i in range(70)]
    return rows


def test_price_list_parity_on_valid_and_bad_rows(tmp_path):
    path = _write(tmp_path / "prices.csv", "sku,price,currency,effective_date", _price_rows())
    gx, fast = _both(path, "price_list")
    assert _report_without_timings(fast) == _report_without_timings(gx)
    failed = {r.expectation_type: r for r in gx.failed_results}
    # the data really does fail the rules the fast engine replaces
    assert failed["expect_column_values_to_be_between"].unexpected_count == 3 + 70
    assert failed["expect_column_values_to_be_in_set"].unexpected_count == 4 + 70
    assert {"expect_column_values_to_not_be_null", "expect_column_values_to_be_unique"} <= set(failed)


def test_promotions_parity_end_before_start_and_missing_dates(tmp_path):
    rows = [f"P{i:04d},{i % 9 + 1}.99,2030-01-{i % 20 + 1:02d},2030-02-{i % 20 + 1:02d}" for i in range(100)]
    rows[5:5] = [
        "P9001,1.00,2030-03-10,2030-03-01",  # ends before it starts
        "P9002,1.00,2030-03-10,2030-03-10",  # same day: allowed
        "P9003,1.00,,2030-03-10",  # no start
        "P9004,1.00,2030-03-10,",  # no end
        "P9005,1.00,,",
        "P9006,1.00,2030-13-01,2030-03-01",  # bad start date
        "P9007,-1.00,2030-03-01,2030-03-02",
        "P9008,,2030-03-01,2030-03-02",
    ]
    rows += [f"Q{i:04d},2.00,2031-01-{i % 28 + 1:02d},2030-12-01" for i in range(60)]  # 60 ends before start
    path = _write(tmp_path / "promos.csv", "sku,promo_price,start_date,end_date", rows)
    gx, fast = _both(path, "promotions")
    assert _report_without_timings(fast) == _report_without_timings(gx)
    pair = next(r for r in gx.results if r.expectation_type == "expect_column_pair_values_a_to_be_greater_than_b")
    assert pair.unexpected_count == 61 and pair.sample_rows[0] == 7


def _suite(tmp_path, expectations, columns):
    data = {"name": "parity", "format": "csv", "columns": columns, "expectations": expectations}
    (tmp_path / "suites").mkdir(exist_ok=True)
    (tmp_path / "suites" / "parity.json").write_text(json.dumps(data), encoding="utf-8")
    return tmp_path / "suites"


def test_parity_on_every_kwarg_variant(tmp_path):
    columns = [
        {"name": "code"}, {"name": "n", "type": "number"}, {"name": "k", "type": "integer"},
        {"name": "a", "type": "date"}, {"name": "b", "type": "date"}, {"name": "note", "required": False},
    ]
    expectations = [
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "code", "regex": "^[A-Z]{2}\\d$"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "code", "regex": "\\d", "mostly": 0.9}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "code", "value_set": ["AB1", "CD2"]}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "k", "value_set": [1, 2, 3]}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": -1.5, "max_value": 10}},
        {"type": "expect_column_values_to_be_between",
         "kwargs": {"column": "n", "min_value": 0, "max_value": 10, "strict_min": True, "strict_max": True}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "k", "max_value": 3, "mostly": 0.5}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "note"}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n", "mostly": 0.95}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "b", "column_B": "a"}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "b", "column_B": "a", "or_equal": True, "ignore_row_if": "neither"}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "n", "column_B": "k", "ignore_row_if": "either_value_is_missing"}},
        # not vectorised: a kwarg the fast rules do not take, and a type they do not know -> GX
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0, "row_condition": None}},
        {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "code", "min_value": 3}},
    ]
    rows = []
    for i in range(150):
        code = ["AB1", "CD2", "ab1", "ABC", "", "A 1", "XY9", "AB12", "Ω1"][i % 9]
        n = ["1", "-1.5", "10", "0", "", "x", "11", "-2", "5.5", "1e1"][i % 10]
        k = ["1", "2", "3", "4", "", "2.5", "0", "-1"][i % 8]
        a = ["2030-01-01", "", "2030-01-03", "2030-02-30", "2030-01-02"][i % 5]
        b = ["2030-01-02", "2030-01-01", "", "2030-01-03", "2030-01-02", "2029-12-31"][i % 6]
        rows.append(",".join([code, n, k, a, b]))
    path = _write(tmp_path / "variants.csv", "code,n,k,a,b", rows)  # "note" absent: optional column
    suites = _suite(tmp_path, expectations, columns)
    gx, fast = _both(path, "parity", suites_dir=suites)
    assert _report_without_timings(fast) == _report_without_timings(gx)
    by_index = gx.results[-len(expectations):]
    assert by_index[7].success is False  # the absent optional column: GX's verdict, kept by the fallback to GX
    assert all(r.unexpected_count for r in by_index[:7] + by_index[9:12])  # every variant sees bad rows


def test_plan_sends_unknown_shapes_to_gx():
    spec = load_suite("price_list")
    planned = [e.type for e in spec.expectations if fast_rules.plan(e, spec)]
    assert "expect_column_values_to_be_unique" not in planned  # merged across chunks by the runner
    assert planned.count("expect_column_values_to_not_be_null") == 4
    odd = parse_suite({
        "name": "odd", "columns": [{"name": "d", "type": "date"}, {"name": "n", "type": "number"}],
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "d", "min_value": "2030-01-01"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 5, "max_value": 1}},
            {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "n", "regex": "1"}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "n", "value_set": ["1"]}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n", "mostly": 2}},
            {"type": "expect_column_pair_values_a_to_be_greater_than_b", "kwargs": {"column_A": "d", "column_B": "n"}},
        ],
    })
    assert [fast_rules.plan(e, odd) for e in odd.expectations] == [False] * 6


@pytest.mark.parametrize("chunksize, expect_fast", [(50, True), (10_000, False)])
def test_auto_engine_uses_vectorised_rules_only_when_the_file_spans_chunks(tmp_path, chunksize, expect_fast):
    path = _write(tmp_path / "prices.csv", "sku,price,currency,effective_date", _price_rows())
    report = validate_file(path, "price_list", chunksize=chunksize)
    assert ("fast_rules_seconds" in report.timings) is expect_fast
    reference = validate_file(path, "price_list", chunksize=chunksize, engine="gx")
    assert _report_without_timings(report) == _report_without_timings(reference)


def test_whole_file_run_stays_on_gx_and_bad_engine_is_refused(tmp_path):
    path = _write(tmp_path / "prices.csv", "sku,price,currency,effective_date", _price_rows())
    assert "fast_rules_seconds" not in validate_file(path, "price_list").timings
    with pytest.raises(ValueError, match="engine"):
        validate_file(path, "price_list", engine="turbo")


def test_chunked_fast_run_matches_whole_file_gx_on_text_cells(tmp_path):
    """The reference without any speed-up: one text DataFrame, great-expectations, no number parsing while reading."""
    from dataclasses import asdict

    from include.checks import read_table, validate_dataframe

    # First chunk all plain numbers (parsed while reading), bad prices written in several ways.
    rows = [f"SKU{i:05d},{i + 1}.00,EUR,2030-01-01" for i in range(CHUNK)]
    rows[3] = "SKU00003,-3.50,EUR,2030-01-01"
    rows[9] = "SKU00009,-1e1,EUR,2030-01-01"
    rows[12] = "SKU00012,-3.5,EUR,2030-01-01"  # same number as -3.50, other text: its own sample
    rows[20] = "SKU00020,,EUR,2030-01-01"
    rows += _price_rows()
    rows += ["SKU77003,99999999999999999999,EUR,2030-01-01", "SKU77004,-inf,EUR,2030-01-01"]
    path = _write(tmp_path / "prices.csv", "sku,price,currency,effective_date", rows)
    fast = validate_file(path, "price_list", chunksize=CHUNK, engine="fast")
    text = read_table(path, formulas="allow")
    assert not any(text[c].dtype.kind in "if" for c in text.columns)
    reference = validate_dataframe(text, "price_list")
    assert [asdict(r) for r in fast.results] == [asdict(r) for r in reference.results]
    between = next(r for r in fast.results if r.expectation_type == "expect_column_values_to_be_between")
    assert between.sample_values[:3] == ["-3.50", "-1e1", "-3.5"] and between.sample_rows[:3] == [5, 11, 14]


def test_reader_parses_number_columns_only_when_a_chunk_is_all_finite_numbers(tmp_path):
    from include.checks import iter_table_chunks

    rows = ["a,1.50", "b,007", "c,", "d,2",  # numbers (and an empty cell): parsed
            "e,1", "f,x1", "g,3", "h,4",  # text in the chunk: stays text
            "i,1", "j,-inf", "k,2", "l,3",  # not finite: read again as text
            "m,1", "n,99999999999999999999", "o,2", "p,3"]  # beyond 64 bits: read again as text
    path = _write(tmp_path / "n.csv", "name, p ", rows)
    chunks = list(iter_table_chunks(path, chunksize=4, formulas="allow", number_columns=["p"]))
    assert [c.attrs["number_columns"] for c in chunks] == [["p"], [], [], []]
    assert chunks[0]["p"].dtype == "float64" and chunks[0]["p"].isna().tolist() == [False, False, True, False]
    assert chunks[0]["name"].tolist() == ["a", "b", "c", "d"]
    assert chunks[1]["p"].tolist() == ["1", "x1", "3", "4"]
    assert chunks[2]["p"].tolist() == ["1", "-inf", "2", "3"] and list(chunks[2].index) == [8, 9, 10, 11]
    assert chunks[3]["p"].tolist() == ["1", "99999999999999999999", "2", "3"]


def test_prefetching_reader_hands_over_chunks_in_order_and_reraises_reader_errors():
    import threading

    from include.checks.errors import UnreadableFile
    from include.checks.runner import _prefetched

    def frames():
        yield 1
        yield 2
        raise UnreadableFile("truncated", "the last record is cut")

    got = []
    with pytest.raises(UnreadableFile, match="cut"):
        for frame in _prefetched(frames()):
            got.append(frame)
    assert got == [1, 2]

    def endless():
        n = 0
        while True:
            n += 1
            yield n

    reader = _prefetched(endless())
    assert [next(reader), next(reader)] == [1, 2]
    reader.close()  # the caller stops early (e.g. unexpected columns): the thread ends
    assert not any(t.name == "chunk-reader" and t.is_alive() for t in threading.enumerate())
