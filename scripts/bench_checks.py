#!/usr/bin/env python
"""Benchmark the file checks: read and validate an invoice file of N rows, against plain pandas.

    .venv/bin/python scripts/bench_checks.py [--rows 1000000] [--chunksize 250000] [--keep DIR] [--modes ...]

Generates a valid invoice CSV (tests/data/bad_inputs.make_valid_file), then runs each measurement in
its own child process (so each peak RSS, from ``ru_maxrss``, is its own):

- ``pandas``: ``pandas.read_csv(dtype=str)``: the reference;
- ``read_table``: include.checks.read_table (binary pre-scan, csv field-count pass, pandas);
- ``validate``: include.checks.validate_file, whole file in memory;
- ``validate_chunked``: the same with ``chunksize``;
- ``gx_fixed``: validate_file of a 10-row file, warm: the fixed cost of one GX validation run.

The children that use great-expectations first validate a 10-row file, so GX import and context
set-up are printed separately ("gx_setup") and not counted in the figures. Figures are printed with
their ratio to pandas in the same run: the machine is shared, absolute times vary.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
sys.path[:0] = [{repo!r}]
mode, path, small, chunksize = {mode!r}, {path!r}, {small!r}, {chunksize!r}
out = {{}}
if mode == "pandas":
    import pandas as pd
    t = time.perf_counter(); df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    out["seconds"] = time.perf_counter() - t; out["rows"] = len(df)
elif mode == "read_table":
    from include.checks import read_table
    import pandas  # import cost not counted
    t = time.perf_counter(); df = read_table(path, formulas="allow")
    out["seconds"] = time.perf_counter() - t; out["rows"] = len(df)
else:
    from include.checks import validate_file
    t = time.perf_counter(); validate_file(small, "invoice"); out["gx_setup"] = time.perf_counter() - t
    target = small if mode == "gx_fixed" else path
    t = time.perf_counter()
    report = validate_file(target, "invoice", chunksize=chunksize if mode == "validate_chunked" else None)
    out["seconds"] = time.perf_counter() - t
    out.update(rows=report.rows, passed=report.passed, chunks=report.chunks, timings=report.timings)
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(mode: str, path: Path, small: Path, chunksize: int) -> dict:
    code = CHILD.format(repo=str(REPO), mode=mode, path=str(path), small=str(small), chunksize=chunksize)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunksize", type=int, default=250_000)
    parser.add_argument("--keep", help="directory for the generated files (default: a temporary one)")
    parser.add_argument("--modes", default="pandas,read_table,validate,validate_chunked,gx_fixed",
                        help="comma-separated subset of the measurements (pandas always runs: it is the reference)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.data.bad_inputs import make_valid_file

    with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
        directory = Path(args.keep or tmp)
        started = time.perf_counter()
        path = make_valid_file(directory, "invoice", rows=args.rows, seed=1)
        small = make_valid_file(directory, "invoice", rows=10, seed=2)
        print(f"generated {args.rows:,} rows, {path.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - started:.1f} s")
        modes = ["pandas"] + [m for m in args.modes.split(",") if m and m != "pandas"]
        results = {mode: run(mode, path, small, args.chunksize) for mode in modes}
    base = results["pandas"]["seconds"]
    for mode, r in results.items():
        extra = ""
        if "timings" in r:
            t = r["timings"]
            extra = (f"  read {t.get('read_seconds', 0):.2f} s, convert+builtin {t.get('convert_seconds', 0):.2f} s, "
                     f"gx {t.get('gx_seconds', 0):.2f} s, vectorised rules {t.get('fast_rules_seconds', 0):.2f} s, "
                     f"chunks {r['chunks']}, passed {r['passed']}, "
                     f"gx_setup (import+context, not counted) {r['gx_setup']:.2f} s")
        print(f"{mode:17} {r['seconds']:7.2f} s  x{r['seconds'] / base:5.2f} pandas  "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB{extra}")


if __name__ == "__main__":
    main()
