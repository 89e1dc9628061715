"""GTIN check digit (GS1 mod-10), for GTIN-8, -12 (UPC-A), -13 (EAN) and -14.

great-expectations has no GS1 expectation, so the catalog checks run this on the pandas side and
report it in the same CheckReport as the suite (see include/catalog/checks.py).
"""
from __future__ import annotations

GTIN_LENGTHS = frozenset({8, 12, 13, 14})


def gtin_check_digit(body: str) -> int:
    """The check digit for ``body`` (a GTIN without its last digit).

    GS1: from the right, digits are weighted 3, 1, 3, 1, …; the check digit brings the sum to a
    multiple of ten.
    """
    if not body.isdigit():
        raise ValueError("a GTIN body has digits only")
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def is_valid_gtin(value: object) -> bool:
    """True if ``value`` is a GTIN-8/12/13/14 whose last digit is the right check digit.

    Values read from spreadsheets arrive as floats or ints and lose their leading zeros; anything
    that is not a plain digit string of a GTIN length is invalid rather than guessed at.
    """
    if value is None:
        return False
    text = str(value).strip()
    if len(text) not in GTIN_LENGTHS or not text.isdigit():
        return False
    return gtin_check_digit(text[:-1]) == int(text[-1])


def invalid_gtin_mask(series):
    """Boolean pandas mask of rows whose non-empty GTIN fails the check digit (vectorised).

    Empty GTINs are left to the suite's not-null expectation, so a missing value is reported once.
    """
    import numpy as np

    text = series.astype("string").str.strip()
    present = text.notna() & (text != "")
    lengths = text.str.len()
    ok_shape = text.str.fullmatch(r"\d+").fillna(False) & lengths.isin(list(GTIN_LENGTHS)).fillna(False)
    # Left-pad to 14 digits: leading zeros do not change a GS1 sum, so one weight vector fits all.
    padded = text.where(ok_shape, "0" * 14).str.zfill(14)
    digits = np.frombuffer("".join(padded.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, 14) - 48
    weights = np.array([3, 1] * 6 + [3], dtype=np.int64)
    total = (digits[:, :13].astype(np.int64) * weights).sum(axis=1)
    check_ok = ((10 - total % 10) % 10) == digits[:, 13]
    valid = ok_shape.to_numpy(dtype=bool) & check_ok
    return present & ~valid
