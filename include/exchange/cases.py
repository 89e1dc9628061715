"""The cases every use case opens the same way: a file failed its checks, a transfer failed.

Each builder returns a *post request* for the plugin's bulk post operator
(:class:`trading_grid.operators.trading_grid.TradingGridBulkPostOperator`): the item payload with its
``external_ref`` (:func:`trading_grid.refs.external_ref` of use case, partner, subject and reason) and,
for a validation failure, the check report attached inline (JSON text), so the task that posts needs no
disk shared with the worker that checked the file.

Every request goes out through :func:`post_request`, which passes the payload's texts (title, body,
metadata strings) through :func:`include.textsafe.safe_text`: a NUL or a control character in a file
name, a reason or a check message would make TG refuse the item (400) on every retry.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from include.textsafe import safe_data, safe_text

if TYPE_CHECKING:  # pragma: no cover
    from include.partners import Partner

VALIDATION_FAILURE = "validation_failure"
TRANSFER_FAILURE = "transfer_failure"
VALIDATION_REASON = "validation_failed"
TRANSFER_REASON = "transfer_failed"
#: What TG takes (the contract's maxima); longer texts are cut with an ellipsis.
MAX_TITLE_CHARS = 500
MAX_BODY_CHARS = 100_000
#: Longest string value kept in an item's metadata (file names, paths, errors).
MAX_METADATA_TEXT = 2000


def md_name(text: str) -> str:
    """A file name as a markdown code span: shown literally, whatever characters it holds."""
    escaped = safe_text(text, 300, keep="")  # controls, NUL, surrogates as \\xNN; other invisibles as ?
    return "`" + "".join(ch if ch.isprintable() else "?" for ch in escaped).replace("`", "'") + "`"


def item_ref(use_case: str, partner: Partner, subject: str, reason: str) -> str:
    from trading_grid.refs import external_ref

    return external_ref(use_case, partner.tg_partner_id, subject, reason)


def report_attachment(file_name: str, report_json: str):
    """The check report as an inline attachment named after the file."""
    from trading_grid.posts import InlineAttachment

    from include.intake.names import safe_local_name

    # backslashreplace: a stray lone surrogate becomes a JSON \\udcXX escape instead of an error.
    return InlineAttachment(filename=f"check-report-{safe_local_name(file_name, 100)}.json",
                            content=report_json.encode("utf-8", "backslashreplace"), content_type="application/json")


def post_request(payload: dict[str, Any], *, attachments=(), actions=()) -> dict[str, Any]:
    """One request for the bulk post operator (``ItemPost.to_dict()``): the item (its texts made safe,
    :func:`safe_payload`), then its attachments and the follow-up actions on other items that run once it exists."""
    from trading_grid.posts import ItemPost

    return ItemPost(safe_payload(payload), attachments=tuple(attachments), actions=tuple(actions)).to_dict()


def safe_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The item payload with every text TG or a database might refuse escaped and bounded: the title
    on one line, the body, and the metadata's strings (keys too)."""
    safe = dict(payload)
    if "title" in safe:
        safe["title"] = safe_text(safe["title"], MAX_TITLE_CHARS, keep="")
    if "body" in safe:
        safe["body"] = safe_text(safe["body"], MAX_BODY_CHARS)
    if "metadata" in safe:
        safe["metadata"] = safe_data(safe["metadata"], MAX_METADATA_TEXT)
    return safe


def validation_failure_post(partner: Partner, *, use_case: str, subject: str, file_name: str, label: str,
                            reason_code: str, summary: str, report_json: str | None, next_step: str,
                            metadata: dict[str, Any], due_in: timedelta | None = timedelta(days=2),
                            due_from: datetime | None = None) -> dict:
    """A quarantined file's validation_failure case (requires the partner's acknowledgement).

    ``subject`` names the file version (document and content), so each bad version has one case;
    ``next_step`` tells the partner what to send instead. ``due_at`` is ``due_in`` after ``due_from``
    (default: now); a stored moment (the receipt) makes a rebuilt case the same body byte for byte.
    """
    payload = {
        "partner_id": partner.tg_partner_id,
        "type": "case",
        "category": VALIDATION_FAILURE,
        "severity": "medium",
        "requires_ack": True,
        "title": f"{label} {file_name} failed its checks: {reason_code}",
        "body": f"{md_name(file_name)} was quarantined and not processed. {next_step}\n\n{summary}",
        "external_ref": item_ref(use_case, partner, subject, VALIDATION_REASON),
        "metadata": {**metadata, "reason_code": reason_code},
    }
    if due_in is not None:
        payload["due_at"] = ((due_from or datetime.now(timezone.utc)) + due_in).isoformat(timespec="seconds")
    return post_request(payload, attachments=[report_attachment(file_name, report_json)] if report_json else [])


def transfer_failure_post(partner: Partner, *, use_case: str, subject: str, title: str, body: str,
                          error: str, metadata: dict[str, Any], requires_ack: bool = True) -> dict:
    """A transfer_failure case: a file (or the whole session) could not be moved over SFTP."""
    from include.alerts import scrub_secrets

    error = safe_text(scrub_secrets(error), MAX_METADATA_TEXT)
    payload = {
        "partner_id": partner.tg_partner_id,
        "type": "case",
        "category": TRANSFER_FAILURE,
        "severity": "high",
        "requires_ack": requires_ack,
        "title": title,
        "body": f"{body}\n\nError: `{error}`",
        "external_ref": item_ref(use_case, partner, subject, TRANSFER_REASON),
        "metadata": {**metadata, "error": error},
    }
    return post_request(payload)
