"""The diff of a catalog version against the partner's last accepted version of the same kind.

Retailers acknowledge this diff on Trading Grid before a version is loaded, so it says what a person
needs to decide: which SKUs appear and disappear, which prices move by more than the partner's
threshold, and which attributes change. The full diff is a CSV attachment; the summary is markdown.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

from include.catalog.kinds import FileKind

DIFF_COLUMNS = ("change", "sku", "field", "old", "new", "pct_change", "above_threshold")
SUMMARY_SAMPLE = 10  # rows of each change type shown in the item body; the CSV has them all


@dataclass
class CatalogDiff:
    """What changed between the accepted version and a new one, per SKU."""

    kind: str
    threshold_pct: float
    rows_before: int
    rows_after: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    # (sku, old, new, pct_change) for every price that changed, threshold or not
    price_changes: list[tuple[str, float, float, float | None]] = field(default_factory=list)
    # (sku, field, old, new)
    attribute_changes: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)

    @property
    def price_changes_above_threshold(self) -> list[tuple[str, float, float, float | None]]:
        return [p for p in self.price_changes if _above(p[3], self.threshold_pct)]

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.price_changes or self.attribute_changes)

    @property
    def needs_attention(self) -> bool:
        """Removed SKUs or prices beyond the threshold: things a retailer should look at twice."""
        return bool(self.removed or self.price_changes_above_threshold)

    def counts(self) -> dict[str, int]:
        return {
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
            "added": len(self.added),
            "removed": len(self.removed),
            "price_changes": len(self.price_changes),
            "price_changes_above_threshold": len(self.price_changes_above_threshold),
            "attribute_changes": len(self.attribute_changes),
        }

    def to_csv(self) -> bytes:
        """The full diff, one change per line (columns: DIFF_COLUMNS)."""
        import csv

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(DIFF_COLUMNS)
        for sku in self.added:
            writer.writerow(("added", sku, "", "", "", "", ""))
        for sku in self.removed:
            writer.writerow(("removed", sku, "", "", "", "", ""))
        for sku, old, new, pct in self.price_changes:
            writer.writerow(
                ("price_change", sku, "price", _fmt(old), _fmt(new), _pct(pct), _above(pct, self.threshold_pct))
            )
        for sku, col, old, new in self.attribute_changes:
            writer.writerow(("attribute_change", sku, col, old or "", new or "", "", ""))
        return buf.getvalue().encode("utf-8")

    def summary_markdown(self) -> str:
        """A readable summary for the TG item body; samples, not the whole diff."""
        c = self.counts()
        lines = [
            f"**{self.kind}**: {c['rows_before']} rows accepted before, {c['rows_after']} rows in this version.",
            "",
            "| change | count |",
            "|---|---|",
            f"| SKUs added | {c['added']} |",
            f"| SKUs removed | {c['removed']} |",
            f"| price changes | {c['price_changes']} |",
            f"| price changes above {self.threshold_pct:g}% | {c['price_changes_above_threshold']} |",
            f"| attribute changes | {c['attribute_changes']} |",
        ]
        if self.is_empty:
            lines += ["", "No change against the last accepted version."]
        above = sorted(self.price_changes_above_threshold, key=lambda p: -abs(p[3] or 0))
        if above:
            lines += ["", f"Price changes above {self.threshold_pct:g}%:", "", "| sku | old | new | change |", "|---|---|---|---|"]
            lines += [f"| {s} | {_fmt(o)} | {_fmt(n)} | {_pct(p)}% |" for s, o, n, p in above[:SUMMARY_SAMPLE]]
        for title, skus in (("Removed SKUs", self.removed), ("Added SKUs", self.added)):
            if skus:
                shown = ", ".join(skus[:SUMMARY_SAMPLE])
                more = f" and {len(skus) - SUMMARY_SAMPLE} more" if len(skus) > SUMMARY_SAMPLE else ""
                lines += ["", f"{title}: {shown}{more}"]
        if self.attribute_changes:
            lines += ["", "Attribute changes (sample):", "", "| sku | field | old | new |", "|---|---|---|---|"]
            lines += [f"| {s} | {f} | {o} | {n} |" for s, f, o, n in self.attribute_changes[:SUMMARY_SAMPLE]]
        lines += ["", "The full diff is attached as CSV."]
        return "\n".join(lines)


def _above(pct: float | None, threshold_pct: float) -> bool:
    # A price appearing from zero has no percentage: always worth a look.
    return pct is None or abs(pct) > threshold_pct


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _pct(pct: float | None) -> str:
    return "" if pct is None else f"{pct:+.2f}"


def _as_text(series):
    return series.astype("string").str.strip().fillna("")


def compute_diff(new, accepted, kind: FileKind, threshold_pct: float) -> CatalogDiff:
    """Diff two frames of ``kind`` (our column names, one row per SKU) — ``accepted`` may be None.

    Values are compared as trimmed text, so "1.50" vs "1.5" is a change in an attribute column but
    not in the price column, which is compared as a number.
    """
    import pandas as pd

    key = kind.key
    accepted = accepted if accepted is not None else pd.DataFrame(columns=[key, *kind.compared])
    new_keys = _as_text(new[key])
    old_keys = _as_text(accepted[key])
    diff = CatalogDiff(kind=kind.name, threshold_pct=float(threshold_pct), rows_before=len(accepted), rows_after=len(new))

    new_set, old_set = set(new_keys), set(old_keys)
    diff.added = sorted(new_set - old_set)
    diff.removed = sorted(old_set - new_set)

    compared = [c for c in kind.compared if c in new.columns and c in accepted.columns]
    left = pd.DataFrame({key: new_keys.to_numpy(), **{c: new[c].to_numpy() for c in compared}})
    right = pd.DataFrame({key: old_keys.to_numpy(), **{c: accepted[c].to_numpy() for c in compared}})
    both = left.merge(right, on=key, how="inner", suffixes=("_new", "_old"))

    if kind.price_column and kind.price_column in compared:
        col = kind.price_column
        new_price = pd.to_numeric(both[f"{col}_new"], errors="coerce")
        old_price = pd.to_numeric(both[f"{col}_old"], errors="coerce")
        changed = (new_price != old_price) & new_price.notna() & old_price.notna()
        sel = both.loc[changed, key]
        o, n = old_price[changed], new_price[changed]
        pct = ((n - o) / o.where(o != 0) * 100).round(4)
        diff.price_changes = [
            (s, float(a), float(b), None if pd.isna(p) else float(p))
            for s, a, b, p in zip(sel.tolist(), o.tolist(), n.tolist(), pct.tolist())
        ]

    for col in compared:
        if col == kind.price_column:
            continue
        new_text, old_text = _as_text(both[f"{col}_new"]), _as_text(both[f"{col}_old"])
        changed = new_text != old_text
        for s, o, n in zip(both.loc[changed, key].tolist(), old_text[changed].tolist(), new_text[changed].tolist()):
            diff.attribute_changes.append((s, col, o or None, n or None))
    diff.price_changes.sort()
    diff.attribute_changes.sort(key=lambda t: (t[0], t[1]))
    return diff
