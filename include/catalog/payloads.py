"""The TG items and actions catalog_sync asks the bulk post operator for, as post requests.

- a validated version: a *catalog_sync case* that requires the retailer's acknowledgement, its diff
  against the last accepted version in the body (summary) and attached inline as CSV;
- a quarantined file: the kit's *validation_failure case* (:func:`include.exchange.cases.validation_failure_post`),
  the stored check summary attached inline;
- an older open version replaced by a newer file: an *action* on its item (comment, ``[Superseded]``
  title prefix and metadata, then ``resolved``).

Every ``external_ref`` comes from the use case, the partner and the version (kind + sha256), or the
ledger entry for a file refused by name, so reruns converge on the same items. A body depends only on
stored facts (the due date counts from the receipt, not from "now"): a rerun sends the same body.

**Big diffs.** Inline files travel in XCom and are capped at :data:`trading_grid.posts.MAX_INLINE_BYTES`.
A larger diff CSV is cut at a line boundary below the cap; the item body says how many change lines
the attachment holds of how many, and the full diff can be recomputed from the staged rows.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from include.catalog import tables as t
from include.catalog.store import as_utc
from include.exchange import cases

if TYPE_CHECKING:  # pragma: no cover
    from include.catalog.diff import CatalogDiff
    from include.exchange.run import RunContext
    from include.partners import Partner

USE_CASE = "catalog_sync"
DIFF_REASON = "diff"
KIND_LABELS = {"catalog": "Catalog", "price_list": "Price list", "promotions": "Promotions"}
SUPERSEDED_PREFIX = "[Superseded] "
TRUNCATION_MARGIN = 4096  # room under the inline cap for the JSON around the CSV text


def version_subject(kind: str, sha256: str) -> str:
    """The item's business key: the version's kind and content (short enough to stay readable)."""
    return f"{kind}-{sha256[:16]}"


def rejected_subject(entry_id: int) -> str:
    """The subject of a file refused before reading (no content, no kind): its ledger entry."""
    return f"entry-{entry_id}"


def diff_item_ref(tg_partner_id: str, kind: str, sha256: str) -> str:
    from trading_grid.refs import external_ref

    return external_ref(USE_CASE, tg_partner_id, version_subject(kind, sha256), DIFF_REASON)


def due_at(version: dict[str, Any], deadline_hours: int) -> str:
    # From the receipt, not from "now": a rerun must send the same body (same Idempotency-Key).
    return (as_utc(version["received_at"]) + timedelta(hours=deadline_hours)).isoformat(timespec="seconds")


def diff_item_payload(partner: Partner, version: dict[str, Any], diff: CatalogDiff, ctx: RunContext,
                      *, note: str | None = None) -> dict[str, Any]:
    """The TG item that carries a version's diff and asks for the retailer's acknowledgement."""
    settings = partner.settings(USE_CASE)
    label = KIND_LABELS[version["kind"]]
    answer_by = due_at(version, settings.ack_deadline_hours)
    body = [
        f"{label} **{version['file_name']}** from {partner.name} was received and passed its checks.",
        f"Please review the changes against the last accepted version and **acknowledge** this item "
        f"(or resolve it) to have it loaded, or **dispute** it to stop the load; a corrected file "
        f"then replaces this version. Answer by {answer_by}.",
        "",
        diff.summary_markdown(),
    ]
    if note:
        body += ["", note]
    return {
        "partner_id": partner.tg_partner_id,
        "type": "case",
        "category": USE_CASE,
        "title": f"{label} {version['file_name']}: {'changes to review' if not diff.is_empty else 'no changes'}"
        + (" (price changes above threshold)" if diff.price_changes_above_threshold else ""),
        "body": "\n".join(body),
        "severity": "medium" if diff.needs_attention else "low",
        "due_at": answer_by,
        "requires_ack": True,
        "external_ref": diff_item_ref(partner.tg_partner_id, version["kind"], version["sha256"]),
        "metadata": {
            "catalog_version_id": version["id"],
            "kind": version["kind"],
            "file_name": version["file_name"],
            "sha256": version["sha256"],
            "size": version["size"],
            "rows": version["row_count"],
            "diff": diff.counts(),
            "price_change_threshold_pct": settings.price_change_threshold_pct,
            "dag_id": ctx.dag_id,
            "run_id": ctx.run_id,
        },
    }


def bounded_csv(csv_bytes: bytes, limit: int) -> tuple[bytes, str | None]:
    """``csv_bytes`` if it fits in ``limit``, else its header and the whole lines that fit, and a note."""
    if len(csv_bytes) <= limit:
        return csv_bytes, None
    cut = csv_bytes.rfind(b"\n", 0, limit) + 1
    kept = csv_bytes[:cut]
    total, shown = csv_bytes.count(b"\n") - 1, max(kept.count(b"\n") - 1, 0)
    note = (f"The attached diff is **truncated**: it holds the first {shown} of {total} change lines "
            f"({len(csv_bytes)} bytes in full; inline attachments are limited to {limit} bytes).")
    return kept, note


def diff_post(partner: Partner, version: dict[str, Any], diff: CatalogDiff, ctx: RunContext) -> dict[str, Any]:
    """The diff item with the diff CSV attached inline (truncated, and said so, above the inline cap)."""
    from trading_grid.posts import MAX_INLINE_BYTES, InlineAttachment

    content, note = bounded_csv(diff.to_csv(), MAX_INLINE_BYTES - TRUNCATION_MARGIN)
    name = f"{partner.key}_{version['kind']}_v{version['id']}_diff{'_truncated' if note else ''}.csv"
    attachment = InlineAttachment(filename=name, content=content, content_type="text/csv")
    return cases.post_request(diff_item_payload(partner, version, diff, ctx, note=note), attachments=[attachment])


def version_case_post(partner: Partner, version: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """The validation_failure case of a version that failed its checks, built from what was stored."""
    summary = json.loads(version["checks_summary"] or "{}")
    reason_code = summary.get("reason_code") or "rejected"
    return cases.validation_failure_post(
        partner, use_case=USE_CASE, subject=version_subject(version["kind"], version["sha256"]),
        file_name=version["file_name"], label=KIND_LABELS.get(version["kind"], "Catalog file"),
        reason_code=reason_code, summary=summary.get("summary_markdown") or f"The file failed its checks: {reason_code}.",
        report_json=json.dumps(summary.get("report") or summary, indent=2, sort_keys=True, default=str),
        next_step="It will not be loaded. Please send a corrected file.",
        metadata={"kind": version["kind"], "file_name": version["file_name"], "sha256": version["sha256"],
                  "catalog_version_id": version["id"], "dag_id": ctx.dag_id, "run_id": ctx.run_id},
        due_from=as_utc(version["received_at"]))


def rejected_name_post(partner: Partner, entry_id: int, file_name: str, reason: str, ctx: RunContext, *,
                       seen_at: datetime) -> dict[str, Any]:
    """The validation_failure case of a file refused from its listing alone (unsafe name, no kind);
    due from when the ledger first saw it."""
    return cases.validation_failure_post(
        partner, use_case=USE_CASE, subject=rejected_subject(entry_id), file_name=file_name,
        label="Catalog file", reason_code="rejected_name", summary=f"The file was refused before reading: {reason}.",
        report_json=None, next_step="It will not be loaded. Please send it again under a catalog file name.",
        metadata={"kind": "unknown", "file_name": file_name, "sha256": None, "dag_id": ctx.dag_id,
                  "run_id": ctx.run_id}, due_from=seen_at)


def superseded_action(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Tell an older version's item that a newer file replaced it, mark its title, then resolve it.

    A disputed version replaced by a corrected file is how a dispute gets resolved. An item already
    answered for good (resolved/closed) is not moved again: closed is final on TG.
    """
    from trading_grid.posts import ItemAction, ItemUpdate

    was_disputed = old.get("decided_status") == "disputed" or old.get("status") == t.DISPUTED
    reason = "Corrected file received" if was_disputed else "Superseded"
    text = (
        f"{reason}: {new['file_name']} (sha256 {new['sha256'][:12]}…, catalog version #{new['id']}) replaces "
        f"{old['file_name']} (version #{old['id']}). This version will not be loaded; the new one has its own item."
    )
    update = ItemUpdate(title_prefix=SUPERSEDED_PREFIX,
                        metadata={"superseded_by_version": new["id"], "superseded_by_file": new["file_name"]})
    to_status = None if old.get("decided_status") in ("resolved", "closed") else "resolved"
    return ItemAction(old["tg_item_id"], comment=text, visibility="partner", update=update, to_status=to_status).to_dict()
