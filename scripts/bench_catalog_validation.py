#!/usr/bin/env python
"""Benchmark: chunked validation of a big price list against the time pandas takes to read it.

    .venv/bin/python scripts/bench_catalog_validation.py [--rows 5000000] [--chunksize 250000] [--keep DIR]
        [--repeat N] [--engine auto|gx]

Generates a price list CSV (sku, price, currency, effective_date) in a temporary directory, then in
separate child processes (so each peak RSS is its own):

1. ``pandas.read_csv`` of the whole file (the reference time, and its peak memory for context);
2. ``include.catalog.checks.validate_catalog_file`` with ``chunksize`` — the suite from
   include/expectations/price_list.json through the shared runner, as the DAG runs it. The process
   first validates a 10-row file so great-expectations' import and context are not counted (they are
   printed separately, as "warm-up").

Prints both times, their ratio (target ≤ 3×) and the validation's peak RSS (target ≤ 1 GB), measured
with ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in the child. Figures are compared as a ratio in
one run on purpose: the machine is shared, absolute times are not stable. ``--repeat N`` alternates
read and validation N times and judges the median ratio (one pair can land on a load spike).
``--engine gx`` runs every expectation in great-expectations (the reference engine; the default
``auto`` uses the vectorised rules for multi-chunk files, see docs/checks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK", "PLN", "JPY", "CAD"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write a valid price list of ``rows`` lines (unique SKUs, prices > 0, future dates)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    block = 1_000_000
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("sku,price,currency,effective_date\n")
        for start in range(0, rows, block):
            n = min(block, rows - start)
            frame = pd.DataFrame(
                {
                    "sku": [f"SKU{i:09d}" for i in range(start, start + n)],
                    "price": np.round(rng.uniform(0.05, 999.0, n), 2),
                    "currency": np.array(CURRENCIES)[rng.integers(0, len(CURRENCIES), n)],
                    "effective_date": np.array(["2030-01-01", "2030-06-15", "2031-03-31"])[rng.integers(0, 3, n)],
                }
            )
            frame.to_csv(fh, header=False, index=False)


CHILD_READ = r"""
import json, resource, sys, time
import pandas as pd
t0 = time.perf_counter()
df = pd.read_csv(sys.argv[1])
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "rows": len(df), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD_VALIDATE = r"""
import json, resource, sys, time
from datetime import date
sys.path[:0] = [sys.argv[4], sys.argv[4] + "/plugins"]
t0 = time.perf_counter()
import functools
import include.checks
# validate_catalog_file looks validate_file up in include.checks at call time: pick the engine there
include.checks.validate_file = functools.partial(include.checks.validate_file, engine=sys.argv[5])
from include.catalog.checks import validate_catalog_file
from include.catalog.kinds import PRICE_LIST
validate_catalog_file(sys.argv[2], PRICE_LIST, file_name="price_list_small.csv", as_of=date(2026, 11, 25), chunksize=int(sys.argv[3]))
warmup = time.perf_counter() - t0
baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
report = validate_catalog_file(sys.argv[1], PRICE_LIST, file_name="price_list.csv", as_of=date(2026, 11, 25), chunksize=int(sys.argv[3]))
elapsed = time.perf_counter() - t0
print(json.dumps({"seconds": elapsed, "warmup_seconds": warmup, "passed": report.passed, "rows": report.rows,
                  "chunks": report.chunks, "failed": [r.expectation_type for r in report.failed_results],
                  "timings": report.timings,
                  "baseline_rss_mb": baseline_mb,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--chunksize", type=int, default=250_000)
    parser.add_argument("--keep", help="write the files here and keep them")
    parser.add_argument("--repeat", type=int, default=1, help="read/validate pairs; the median ratio is judged")
    parser.add_argument("--engine", choices=["auto", "gx"], default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        big, small = work / "price_list.csv", work / "price_list_small.csv"
        t0 = time.perf_counter()
        generate(big, args.rows)
        generate(small, 10)
        print(f"generated {args.rows:,} rows, {big.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - t0:.1f} s")

        ratios, peaks = [], []
        for run in range(1, args.repeat + 1):
            read = run_child(CHILD_READ, str(big))
            check = run_child(CHILD_VALIDATE, str(big), str(small), str(args.chunksize), str(REPO), args.engine)
            ratio = check["seconds"] / read["seconds"]
            ratios.append(ratio)
            peaks.append(check["peak_rss_mb"])
            print(f"-- run {run}/{args.repeat} (engine={args.engine})")
            print(f"pandas.read_csv:            {read['seconds']:7.2f} s   peak RSS {read['peak_rss_mb']:7.0f} MB")
            print(f"validation (chunks of {args.chunksize:,}): {check['seconds']:7.2f} s   peak RSS {check['peak_rss_mb']:7.0f} MB "
                  f"(after GX warm-up {check['baseline_rss_mb']:.0f} MB; warm-up {check['warmup_seconds']:.1f} s not counted)")
            print(f"report: passed={check['passed']} rows={check['rows']:,} chunks={check['chunks']} failed={check['failed']}")
            parts = ", ".join(f"{k.removesuffix('_seconds')} {v:.1f} s" for k, v in check["timings"].items() if k != "total_seconds")
            print(f"where the validation time goes: {parts}")
            print(f"ratio validation / read_csv: {ratio:.2f}x")
            if not check["passed"] or check["rows"] != args.rows:
                print("ERROR: the generated file is valid; the validation should pass on every row", file=sys.stderr)
                return 1
        ordered = sorted(ratios)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        print(f"ratio validation / read_csv: {median:.2f}x (median of {', '.join(f'{r:.2f}' for r in ratios)})   "
              f"(target <= 3x: {'OK' if median <= 3 else 'MISSED'})")
        print(f"validation peak memory:      {max(peaks) / 1024:.2f} GB (target <= 1 GB: "
              f"{'OK' if max(peaks) <= 1024 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
