"""The gate of the catalog load: wait, deferred, for the retailer's answer on a version's TG item.

A thin subclass of :class:`trading_grid.sensors.trading_grid.TradingGridItemSensor` for use inside
the DAG's mapped task group: it takes the whole ``version`` dict returned by
``include.catalog.publish.record_posts`` (a task-group mapped argument can only reach a classic
operator through a templated field, apache/airflow#39222), and sets the item and the partner's
deadline from it. At the deadline the base sensor escalates (severity up, reminder comment); this
class adds the catalog audit line and an alert mail through ``include.alerts``.
"""
from __future__ import annotations

from typing import Any, Sequence

from trading_grid.sensors.trading_grid import TradingGridItemSensor

# Statuses of the diff item that end the wait. "in_progress" does not: the retailer is still
# looking. "disputed" does: the load must stop, and the run should say so now, not at the deadline.
DECISION_STATUSES = ("acknowledged", "resolved", "closed", "disputed")

REMINDER = (
    "Reminder: this catalog version is still waiting for your acknowledgement and has not been loaded. "
    "Please acknowledge, resolve or dispute it."
)


class CatalogAckOverdue(Exception):
    """No answer on a catalog version's item by the partner's deadline (used for the alert text)."""


class CatalogAckSensor(TradingGridItemSensor):
    """Wait for ``version["item_id"]`` to be acknowledged, resolved, closed or disputed.

    :param version: ``{"version_id", "item_id", "deadline_hours"}`` (templated; an XCom or mapped argument).
    """

    template_fields: Sequence[str] = (*TradingGridItemSensor.template_fields, "version")

    def __init__(self, *, version: Any, **kwargs: Any) -> None:
        kwargs.setdefault("statuses", DECISION_STATUSES)
        kwargs.setdefault("accept_acknowledged", False)
        kwargs.setdefault("on_timeout", "escalate")
        kwargs.setdefault("escalation_severity", "high")
        kwargs.setdefault("reminder_comment", REMINDER)
        super().__init__(item_id="", **kwargs)
        self.version = version

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        self._apply_version()

    def _apply_version(self) -> None:
        if not isinstance(self.version, dict):
            return
        self.item_id = self.version["item_id"]
        hours = self.version.get("deadline_hours")
        if hours:
            self.timeout = float(hours) * 3600
            self.escalation_wait = float(hours) * 3600

    def escalate(self, context=None) -> dict[str, Any]:
        item = super().escalate(context)
        from include.catalog import store
        from include.db import get_engine

        version_id = self.version["version_id"]
        store.record_event(get_engine(), version_id, "escalated",
                           f"no answer by the deadline: TG item {self.item_id} severity {item.get('severity')}, reminder posted")
        if context is not None:
            from include.alerts import task_failure_alert

            overdue = CatalogAckOverdue(
                f"catalog version {version_id}: TG item {self.item_id} unanswered after "
                f"{self.version.get('deadline_hours')} h; escalated to {item.get('severity')} and reminded"
            )
            task_failure_alert({**context, "exception": overdue})
        return item
