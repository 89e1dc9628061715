"""Sensor that waits for a partner to react to a Trading Grid item.

Deferrable by default: a partner may take hours, and a deferred sensor waits in the triggerer
(:class:`~trading_grid.triggers.trading_grid.TradingGridItemTrigger`) without holding a worker slot.
``deferrable=False`` pokes instead (``mode="poke"`` or ``"reschedule"``).

When nobody reacts within ``timeout`` seconds, ``on_timeout`` decides:

- ``"fail"``: the task fails with ``AirflowSensorTimeout`` (or is skipped with ``soft_fail``);
- ``"escalate"``: the item's severity is raised to ``escalation_severity`` (never lowered) via PATCH
  and a reminder comment is posted for the partner; then the task fails if
  ``fail_after_escalation``, else waits ``escalation_wait`` seconds more (default: ``timeout``) and
  fails only then. Escalating twice (a rerun) changes nothing: the severity is already raised and
  the identical reminder is not posted again.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout
from trading_grid.links import ITEM_URL_XCOM_KEY, TradingGridItemLink
from trading_grid.triggers.trading_grid import DEFAULT_STATUSES, TradingGridItemTrigger, item_reached, summarize

if TYPE_CHECKING:
    from airflow.sdk import Context
    from trading_grid.hooks.trading_grid import TradingGridHook

SEVERITY_ORDER = ("info", "low", "medium", "high", "critical")
ON_TIMEOUT_CHOICES = ("fail", "escalate")


class TradingGridItemSensor(BaseSensorOperator):
    """
    Wait until a TG item reaches one of ``statuses`` or (with ``accept_acknowledged``) is acknowledged.

    Returns (XCom) a summary of the item: id, status, severity, acknowledged_at/by, version.

    :param item_id: the item (templated).
    :param statuses: statuses that end the wait (default acknowledged, in_progress, resolved, closed).
    :param accept_acknowledged: an acknowledgement ends the wait whatever the status.
    :param deferrable: wait in the triggerer (default) instead of poking from a worker.
    :param on_timeout: ``"fail"`` or ``"escalate"`` (see module docstring).
    :param escalation_severity: severity set on escalation (if higher than the current one).
    :param reminder_comment: text of the reminder; default names the item's status. Keep it free of
        timestamps so a rerun recognizes it and does not post it twice.
    :param fail_after_escalation: fail right after escalating instead of waiting ``escalation_wait``.
    :param escalation_wait: seconds to keep waiting after escalating (default: ``timeout``).
    :param trading_grid_conn_id: Airflow connection id.
    """

    template_fields: Sequence[str] = ("item_id", "statuses", "reminder_comment")
    operator_extra_links = (TradingGridItemLink(),)
    ui_color = "#fef3c7"

    def __init__(
        self,
        *,
        item_id: str,
        statuses: Iterable[str] = DEFAULT_STATUSES,
        accept_acknowledged: bool = True,
        deferrable: bool = True,
        on_timeout: str = "fail",
        escalation_severity: str = "high",
        reminder_comment: str | None = None,
        fail_after_escalation: bool = False,
        escalation_wait: float | timedelta | None = None,
        trading_grid_conn_id: str = "trading_grid_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_timeout not in ON_TIMEOUT_CHOICES:
            raise ValueError(f"on_timeout must be one of {ON_TIMEOUT_CHOICES}, got {on_timeout!r}")
        if escalation_severity not in SEVERITY_ORDER:
            raise ValueError(f"escalation_severity must be one of {SEVERITY_ORDER}, got {escalation_severity!r}")
        self.item_id = item_id
        self.statuses = list(statuses)
        self.accept_acknowledged = accept_acknowledged
        self.deferrable = deferrable
        self.on_timeout = on_timeout
        self.escalation_severity = escalation_severity
        self.reminder_comment = reminder_comment
        self.fail_after_escalation = fail_after_escalation
        if isinstance(escalation_wait, timedelta):
            escalation_wait = escalation_wait.total_seconds()
        self.escalation_wait = float(escalation_wait) if escalation_wait is not None else float(self.timeout)
        self.trading_grid_conn_id = trading_grid_conn_id

    @cached_property
    def hook(self) -> TradingGridHook:
        from trading_grid.hooks.trading_grid import TradingGridHook

        return TradingGridHook(trading_grid_conn_id=self.trading_grid_conn_id)

    # ------------------------------------------------------------------ poke mode
    def poke(self, context: Context) -> bool | PokeReturnValue:
        item = self.hook.get_item(self.item_id)
        self.log.info("Trading Grid item %s: status %s, acknowledged %s", self.item_id, item.get("status"), bool(item.get("acknowledged_at")))
        if item_reached(item, self.statuses, self.accept_acknowledged):
            return PokeReturnValue(is_done=True, xcom_value=summarize(item))
        return False

    def execute(self, context: Context) -> Any:
        context["ti"].xcom_push(key=ITEM_URL_XCOM_KEY, value=self.hook.item_url(self.item_id))
        if self.deferrable:
            item = self.hook.get_item(self.item_id)
            if item_reached(item, self.statuses, self.accept_acknowledged):
                return summarize(item)  # nothing to wait for: do not occupy the triggerer
            self._defer(phase="waiting", window=self.timeout)
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            if self.on_timeout != "escalate":
                raise
            self.escalate(context)
            if self.fail_after_escalation:
                raise
            # Wait a second window. Reschedule mode measures from the first try, poke mode from now.
            original = self.timeout
            self.timeout = original + self.escalation_wait if self.reschedule else self.escalation_wait
            try:
                return super().execute(context)
            finally:
                self.timeout = original

    # ------------------------------------------------------------------ deferrable mode
    def _defer(self, *, phase: str, window: float) -> None:
        trigger = TradingGridItemTrigger(
            item_id=self.item_id,
            statuses=self.statuses,
            accept_acknowledged=self.accept_acknowledged,
            trading_grid_conn_id=self.trading_grid_conn_id,
            poll_interval=self.poke_interval,
            deadline=time.time() + window,
        )
        # The trigger reports the deadline itself (so we can escalate); the defer timeout is only a
        # backstop for a triggerer that was down at the deadline.
        backstop = timedelta(seconds=window + max(300.0, 2 * self.poke_interval))
        self.defer(trigger=trigger, method_name="execute_complete", kwargs={"phase": phase}, timeout=backstop)

    def execute_complete(self, context: Context, event: dict[str, Any], phase: str = "waiting") -> Any:
        status = event.get("status")
        if status == "success":
            item = event.get("item") or {}
            self.log.info("Trading Grid item %s reached %s", self.item_id, item.get("status"))
            return item
        if status == "timeout":
            if phase == "waiting" and self.on_timeout == "escalate":
                self.escalate(context)
                if not self.fail_after_escalation:
                    self._defer(phase="escalated", window=self.escalation_wait)
            raise AirflowSensorTimeout(
                f"Trading Grid item {self.item_id} did not reach {self.statuses} in time "
                f"(last status {(event.get('item') or {}).get('status')}, phase {phase})"
            )
        from trading_grid.exceptions import TradingGridError

        raise TradingGridError(f"Waiting for Trading Grid item {self.item_id} failed: {event.get('message')}")

    # ------------------------------------------------------------------ escalation
    def escalate(self, context: Context | None = None) -> dict[str, Any]:
        """Raise the item's severity (never lower it) and post the reminder comment; idempotent."""
        item = self.hook.get_item(self.item_id)
        current = item.get("severity") or "info"
        if SEVERITY_ORDER.index(current) < SEVERITY_ORDER.index(self.escalation_severity):
            changes = {
                "severity": self.escalation_severity,
                "metadata": {
                    "escalated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "escalated_by": f"{self.dag_id}.{self.task_id}",
                },
            }
            item = self.hook.update_item(self.item_id, changes, version=item.get("version"))
            self.log.warning("Trading Grid item %s escalated from %s to %s", self.item_id, current, self.escalation_severity)
        text = self.reminder_comment or (
            f"Reminder: this item is still waiting for your response (status: {item.get('status')}). "
            f"It has been escalated to severity {item.get('severity')}."
        )
        self.hook.add_comment(self.item_id, text, visibility="partner")
        return item
