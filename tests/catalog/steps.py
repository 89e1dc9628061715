"""The catalog run's steps as a test drives them without Airflow: the run a task builds, and how a
run posts (plan_posts -> the bulk post operator's own function -> record_posts)."""
from __future__ import annotations


def catalog_run(engine, partner, run_id: str, dag_id: str = "catalog_sync", **ctx):
    """The :class:`~include.exchange.run.InboundRun` a catalog task builds, on ``engine``."""
    from include.exchange.run import InboundRun, RunContext
    from include.intake.ledger import Ledger

    return InboundRun(partner, Ledger(engine, create_schema=False), RunContext(dag_id=dag_id, run_id=run_id, **ctx))


def publish(run, hook, received):
    """plan_posts -> post_items (what TradingGridBulkPostOperator runs) -> record_posts; the waits."""
    from trading_grid.operators.bulk import post_items
    from trading_grid.posts import ItemAction, ItemPost

    from include.catalog.publish import plan_posts, record_posts

    plan = plan_posts(run, received)
    result = post_items(hook, [ItemPost.from_dict(p) for p in plan.posts],
                        [ItemAction.from_dict(a) for a in plan.actions])
    assert not result.errors, result.errors
    return record_posts(run, plan, [p.to_dict() for p in result.posted])


def post_diff(engine, hook, partner, version_id: int, *, run_id: str) -> dict | None:
    """One validated version through plan -> post -> record, as the DAG's per-partner group does it."""
    from include.catalog.receive import Received

    waits = publish(catalog_run(engine, partner, run_id), hook, Received(partner.key, [version_id]))
    return waits[0] if waits else None
