"""Operators that act on Trading Grid items: create, comment, transition, attach a file.

Each is safe to rerun (cleared task, retry, overlapping backfill): the create converges on the item
named by its ``external_ref``, a transition to the status the item already has succeeds, an identical
comment or an attachment with the same sha256 is not posted twice. Each pushes the item page URL to
XCom for the :class:`~trading_grid.links.TradingGridItemLink` button and returns a small dict.

Many items at once (what DAGs post per run): :class:`~trading_grid.operators.bulk.TradingGridBulkPostOperator`,
also importable from here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from trading_grid.links import ITEM_URL_XCOM_KEY, TradingGridItemLink
from trading_grid.operators.bulk import TradingGridBulkPostOperator

__all__ = [
    "TradingGridAttachFileOperator",
    "TradingGridBulkPostOperator",
    "TradingGridCommentOperator",
    "TradingGridCreateItemOperator",
    "TradingGridTransitionOperator",
]

if TYPE_CHECKING:
    from airflow.sdk import Context
    from trading_grid.hooks.trading_grid import TradingGridHook


class _TradingGridItemOperator(BaseOperator):
    """Shared parts: the hook, the item link, pushing the item URL."""

    operator_extra_links = (TradingGridItemLink(),)
    ui_color = "#dbeafe"

    def __init__(self, *, trading_grid_conn_id: str = "trading_grid_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trading_grid_conn_id = trading_grid_conn_id

    @cached_property
    def hook(self) -> TradingGridHook:
        from trading_grid.hooks.trading_grid import TradingGridHook

        return TradingGridHook(trading_grid_conn_id=self.trading_grid_conn_id)

    def _push_url(self, context: Context, item_id: str) -> str:
        url = self.hook.item_url(item_id)
        context["ti"].xcom_push(key=ITEM_URL_XCOM_KEY, value=url)
        return url


class TradingGridCreateItemOperator(_TradingGridItemOperator):
    """
    Create a TG item, or converge on the one a previous run created.

    The item is named by ``external_ref``: pass it, or let the operator derive it with
    :func:`trading_grid.refs.external_ref` from ``use_case`` (default: ``category``), ``partner_id``,
    ``subject`` and ``reason``. The run's ``dag_id``/``run_id``/``task_id`` go into ``metadata`` (for
    people reading the item); they change the body on a rerun, which TG answers with 409 and the hook
    with the existing item (``created=False``).

    Returns ``{"item_id", "url", "created", "status"}`` (the XCom return value); the URL also backs the
    "Trading Grid item" extra link.

    :param partner_id: TG partner id (``P-ACME``).
    :param title: item title (templated).
    :param category: TG category (``document_delivery``, ``validation_failure``, ...).
    :param item_type: notification | discussion | case | task | approval.
    :param body: markdown body (templated).
    :param severity: info | low | medium | high | critical.
    :param due_at: RFC 3339 string or datetime, optional.
    :param requires_ack: whether the partner must acknowledge.
    :param metadata: JSON object stored on the item (templated).
    :param external_ref: explicit ref; else derived from use_case/partner_id/subject/reason.
    :param subject: business key for the derived ref (file sha256, order number, ...).
    :param reason: why the item exists, for the derived ref (default ``notify``).
    :param add_run_metadata: add dag_id, run_id, task_id to metadata.
    """

    template_fields: Sequence[str] = (
        "title",
        "body",
        "metadata",
        "external_ref",
        "partner_id",
        "due_at",
        "severity",
        "subject",
        "reason",
        "use_case",
        "category",
        "item_type",
    )
    template_fields_renderers = {"body": "md", "metadata": "json"}

    def __init__(
        self,
        *,
        partner_id: str,
        title: str,
        category: str,
        item_type: str = "notification",
        body: str = "",
        severity: str = "info",
        due_at: str | datetime | None = None,
        requires_ack: bool = False,
        metadata: Mapping[str, Any] | None = None,
        external_ref: str | None = None,
        use_case: str | None = None,
        subject: str | None = None,
        reason: str = "notify",
        add_run_metadata: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partner_id = partner_id
        self.title = title
        self.category = category
        self.item_type = item_type
        self.body = body
        self.severity = severity
        self.due_at = due_at
        self.requires_ack = requires_ack
        self.metadata = metadata
        self.external_ref = external_ref
        self.use_case = use_case
        self.subject = subject
        self.reason = reason
        self.add_run_metadata = add_run_metadata
        if not external_ref and not subject:
            raise ValueError("TradingGridCreateItemOperator needs external_ref or subject (to derive it)")

    def build_payload(self, context: Context | None = None) -> dict[str, Any]:
        """The item body this task posts (after templating)."""
        from trading_grid.refs import external_ref

        ref = self.external_ref or external_ref(
            self.use_case or self.category, self.partner_id, str(self.subject), self.reason
        )
        metadata = dict(self.metadata or {})
        if self.add_run_metadata and context is not None:
            metadata.setdefault("dag_id", self.dag_id)
            metadata.setdefault("task_id", self.task_id)
            if context.get("run_id"):
                metadata.setdefault("run_id", context["run_id"])
        due_at = self.due_at.isoformat() if isinstance(self.due_at, datetime) else self.due_at
        payload: dict[str, Any] = {
            "external_ref": ref,
            "partner_id": self.partner_id,
            "type": self.item_type,
            "category": self.category,
            "title": self.title,
            "body": self.body or "",
            "severity": self.severity,
            "requires_ack": bool(self.requires_ack),
            "metadata": metadata,
        }
        if due_at:
            payload["due_at"] = due_at
        return payload

    def execute(self, context: Context) -> dict[str, Any]:
        payload = self.build_payload(context)
        item, created = self.hook.create_item(payload)
        url = self._push_url(context, item["id"])
        self.log.info(
            "Trading Grid item %s %s for %s: %s", item["id"], "created" if created else "already existed", payload["external_ref"], url
        )
        return {"item_id": item["id"], "url": url, "created": created, "status": item.get("status")}


class TradingGridCommentOperator(_TradingGridItemOperator):
    """
    Comment on a TG item; an identical comment (same body and visibility) is not posted twice.

    :param item_id: the item (templated, e.g. ``{{ ti.xcom_pull('create_item')['item_id'] }}``).
    :param body: markdown (templated). Include what tells legitimate repeats apart.
    :param visibility: ``partner`` (the partner sees it) or ``internal``.
    :param dedupe: set False to post even if the same comment exists.
    """

    template_fields: Sequence[str] = ("item_id", "body", "visibility")
    template_fields_renderers = {"body": "md"}

    def __init__(self, *, item_id: str, body: str, visibility: str = "partner", dedupe: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item_id = item_id
        self.body = body
        self.visibility = visibility
        self.dedupe = dedupe

    def execute(self, context: Context) -> dict[str, Any]:
        comment, created = self.hook.add_comment(self.item_id, self.body, visibility=self.visibility, dedupe=self.dedupe)
        url = self._push_url(context, self.item_id)
        return {"item_id": self.item_id, "url": url, "comment_id": comment.get("id"), "created": created}


class TradingGridTransitionOperator(_TradingGridItemOperator):
    """
    Move a TG item to another status; an item already there counts as done (reruns succeed).

    A move the workflow forbids (e.g. from ``closed``) fails with
    :class:`~trading_grid.exceptions.TradingGridConflict`.

    :param item_id: the item (templated).
    :param to_status: target status (templated).
    :param comment: optional comment recorded with the transition (templated).
    """

    template_fields: Sequence[str] = ("item_id", "to_status", "comment")

    def __init__(self, *, item_id: str, to_status: str, comment: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.item_id = item_id
        self.to_status = to_status
        self.comment = comment

    def execute(self, context: Context) -> dict[str, Any]:
        item = self.hook.transition(self.item_id, self.to_status, comment=self.comment)
        url = self._push_url(context, self.item_id)
        return {"item_id": self.item_id, "url": url, "status": item.get("status")}


class TradingGridAttachFileOperator(_TradingGridItemOperator):
    """
    Attach a local file to a TG item, streamed, with its sha256; skipped if that sha256 is already attached.

    :param item_id: the item (templated).
    :param path: local file path (templated).
    :param filename: name shown in TG (default: the file's base name).
    :param content_type: MIME type of the file.
    """

    template_fields: Sequence[str] = ("item_id", "path", "filename")

    def __init__(
        self,
        *,
        item_id: str,
        path: str,
        filename: str | None = None,
        content_type: str = "application/octet-stream",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_id = item_id
        self.path = path
        self.filename = filename
        self.content_type = content_type

    def execute(self, context: Context) -> dict[str, Any]:
        attachment, created = self.hook.attach_file(
            self.item_id, self.path, filename=self.filename, content_type=self.content_type
        )
        url = self._push_url(context, self.item_id)
        return {
            "item_id": self.item_id,
            "url": url,
            "attachment_id": attachment.get("id"),
            "sha256": attachment.get("sha256"),
            "created": created,
        }
