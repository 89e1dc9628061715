"""Generator of the bad-input corpus and of valid partner files, for the checks tests and the e2e tests.

All bad inputs are *invoice* files (suite ``BAD_INPUT_SUITE``); ``expected_reason_code`` is what
``validate_file(path, "invoice").reason_code`` must be (None: the file must pass).

    from tests.data.bad_inputs import make_bad_inputs, make_valid_file, ODD_NAMES, TEMP_NAMES
    corpus = make_bad_inputs(tmp_path)          # {"truncated_last_row": (Path, "truncated"), ...}
    good = make_valid_file(tmp_path, "invoice", rows=100)
"""
from __future__ import annotations

from pathlib import Path

BAD_INPUT_SUITE = "invoice"
DOC_TYPES = ("invoice", "purchase_order", "shipping_manifest", "compliance_certificate", "product_file")

#: File names with odd characters; the content is valid, the file must pass and keep its name.
ODD_NAMES = (
    "invoice 2026 11.csv",
    "Rechnung_Müller_ÄÖÜ_ß.csv",
    "请求书_2026.csv",
    "facture l'été.csv",
    'quote"double.csv',
    "semi;colon & amp.csv",
    "tab\there.csv",
    "   leading-spaces.csv",
    "trailing-dot.csv.",
    "emoji_📦.csv",
    "UPPER.CSV",
    "-starts-with-dash.csv",
    "#hash%percent.csv",
)
#: Names of files still being uploaded or editor/OS leftovers: intake must skip them, never process.
TEMP_NAMES = (
    "invoice.csv.part",
    "invoice.csv.filepart",
    "invoice.csv.tmp",
    ".invoice.csv.swp",
    "~$invoice.xlsx",
    ".~lock.invoice.csv#",
    "invoice.csv.crdownload",
    ".DS_Store",
    "Thumbs.db",
    "invoice.csv~",
)
#: Names a hostile or broken client might send; intake must refuse them (no path traversal).
TRAVERSAL_NAMES = (
    "../invoice.csv",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/passwd",
    "sub/../../invoice.csv",
    "invoice.csv\x00.txt",
    "..",
    ".",
)


def make_bad_inputs(directory: str | Path) -> dict[str, tuple[Path, str | None]]:
    """Write the bad-input corpus into ``directory`` and return ``{name: (path, expected_reason_code)}``."""
    raise NotImplementedError


def make_valid_file(
    directory: str | Path,
    doc_type: str,
    rows: int = 10,
    *,
    fmt: str = "csv",
    name: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a valid ``doc_type`` file of ``rows`` data rows (deterministic for a seed) and return its path."""
    raise NotImplementedError
