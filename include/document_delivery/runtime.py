"""Glue between Airflow's task context and document_delivery's functions (imported inside tasks only).

Resolves, once per task, what the plain functions take: the run context (dag and run id; staging and
database from the environment: EXCHANGE_STAGING_DIR, EXCHANGE_DB_URL or connection ``exchange_db``),
the partner and the ledger (:func:`include.exchange.run.open_run`), the TG hook
(``trading_grid_default``). Posting is not done here: the DAG's ``TradingGridBulkPostOperator`` posts
what :func:`plan_posts` returns.
"""
from __future__ import annotations

import logging
from typing import Any

from include.document_delivery.payloads import USE_CASE
from include.exchange.run import RunContext

log = logging.getLogger(__name__)

DAG_ID = "document_delivery"


def run_context() -> RunContext:
    """The :class:`RunContext` of the running Airflow task."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    return RunContext(dag_id=context["dag"].dag_id, run_id=context["run_id"])


def enabled_partner_targets(registry_path: str | None = None) -> list[dict]:
    """One mapping entry per enabled partner: ``partner_key``, ``inbound``, ``sftp_conn_id``."""
    from include.partners import load_registry

    return [{"partner_key": p.key, "inbound": p.folders.inbound, "sftp_conn_id": p.sftp_conn_id}
            for p in load_registry(registry_path).enabled()]


def intake(partner_key: str) -> list[dict]:
    from include.document_delivery.intake import intake as run_intake
    from include.exchange.run import open_run

    return [o.to_dict() for o in run_intake(open_run(partner_key, run_context()))]


def plan_posts(partner_key: str, outcomes: list[dict]) -> dict[str, Any]:
    from include.document_delivery.outcomes import outcomes_from
    from include.document_delivery.publish import plan_posts as plan
    from include.exchange.run import open_run

    return plan(open_run(partner_key, run_context()), outcomes_from(outcomes)).to_dict()


def record_posts(partner_key: str, plan: dict[str, Any], posted: list[dict] | None) -> dict[str, Any]:
    from include.document_delivery.publish import PublishPlan
    from include.document_delivery.publish import record_posts as record
    from include.exchange.run import open_run

    summary = record(open_run(partner_key, run_context()), PublishPlan.from_dict(plan), posted or [])
    log.info("%s: %s", partner_key, summary)
    return summary


def sync_partner_feedback() -> dict[str, Any]:
    from trading_grid.hooks.trading_grid import TradingGridHook

    from include.db import get_engine
    from include.document_delivery.feedback import sync_partner_feedback as sync
    from include.schema import ensure_schema

    engine = get_engine()
    ensure_schema(engine)
    with TradingGridHook() as hook:
        return sync(engine, hook)


def transfer_failure_callback(context: dict[str, Any]) -> None:
    """``on_failure_callback`` of the intake task: after the last retry, open a transfer_failure case.

    A callback is not a task, so it cannot hand its post to the bulk operator: it posts through the
    operator's own function (:func:`trading_grid.operators.bulk.post_items`).
    """
    try:
        task = context.get("task")
        partner_key = (getattr(task, "op_kwargs", None) or {}).get("partner_key")
        if not partner_key:
            log.error("transfer_failure_callback: no partner_key in the task's arguments")
            return
        dag = context.get("dag")
        ctx = RunContext(dag_id=getattr(dag, "dag_id", DAG_ID), run_id=str(context.get("run_id")))
        exc = context.get("exception")
        open_session_failure_case(partner_key, f"{type(exc).__name__}: {exc}" if exc else "unknown error", ctx)
    except Exception:  # noqa: BLE001 - a callback must never raise
        log.exception("transfer_failure_callback could not open the transfer_failure case")


def open_session_failure_case(partner_key: str, error: str, ctx: RunContext) -> dict:
    """Open (or find) today's transfer_failure case of a partner whose SFTP session failed for good."""
    from trading_grid.hooks.trading_grid import TradingGridHook
    from trading_grid.operators.bulk import post_items
    from trading_grid.posts import ItemPost, PostComment

    from include.document_delivery.payloads import SESSION_SUBJECT, session_case_post, session_day
    from include.exchange.items import ItemRecord, remember_items
    from include.exchange.journal import JournalEvent, record
    from include.exchange.run import open_run

    run = open_run(partner_key, ctx)
    day = session_day()
    post = ItemPost.from_dict(session_case_post(run.partner, error, ctx, day))
    with TradingGridHook(ctx.tg_conn_id) as hook:
        (posted,) = post_items(hook, [post]).posted
        if posted is None:
            raise RuntimeError(f"could not open the transfer_failure case of {partner_key}")
        if not posted.created:  # the same day's case: say it failed again
            again = ItemPost(post.payload, comments=(PostComment(f"Failed again in run {ctx.run_id}: `{post.payload['metadata']['error']}`"),))
            post_items(hook, [again])
    remember_items(run.engine, [({**posted.to_dict(), "id": posted.item_id},
                                 ItemRecord(use_case=USE_CASE, partner_key=partner_key, kind="transfer_failure",
                                            subject_key=f"{SESSION_SUBJECT}:{day}", run_id=ctx.run_id))])
    record(run.engine, [JournalEvent(event="transfer_failed", use_case=USE_CASE, partner_key=partner_key,
                                     item_id=posted.item_id, run_id=ctx.run_id, detail=post.payload["metadata"]["error"])])
    return {"id": posted.item_id, **posted.to_dict()}
