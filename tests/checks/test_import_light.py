"""Importing include.checks (and loading suites) must not import pandas, great-expectations or openpyxl:
DAG files and the scheduler import it at parse time."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "great_expectations", "openpyxl", "numpy")


def test_import_does_not_load_heavy_modules():
    code = (
        "import json, sys\n"
        "import include.checks\n"
        "from include.checks import CheckReport, UnreadableFile, list_suites, load_suite, validate_file, read_table\n"
        "specs = [load_suite(n) for n in list_suites()]\n"
        "report = CheckReport(suite='invoice', file_name='x.csv', passed=True)\n"
        "report.to_json(); report.summary_markdown()\n"
        f"print(json.dumps([len(specs)] + [m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded[0] >= 5, "the five document suites are found"
    assert loaded[1:] == [], f"heavy modules imported by include.checks: {loaded[1:]}"
