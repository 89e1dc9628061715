"""TradingGridItemTrigger run with asyncio against the sandbox; TradingGridItemSensor deferring, poking, escalating.

The sensor runs outside a scheduler here, so its context is a dict with a small XCom recorder standing
in for the task instance (the real task instance path is covered by test_dag_operators.py).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import pytest

from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred
from tests.trading_grid.conftest import make_payload
from trading_grid.sensors.trading_grid import TradingGridItemSensor
from trading_grid.triggers.trading_grid import TradingGridItemTrigger


class XComRecorder:
    """Stands in for the task instance's xcom_push outside a DAG run."""

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def _context() -> dict:
    return {"ti": XComRecorder(), "run_id": "manual__test"}


async def _first_event(trigger: TradingGridItemTrigger, timeout: float = 20):
    gen = trigger.run()
    try:
        return await asyncio.wait_for(gen.__anext__(), timeout)
    finally:
        await gen.aclose()


def test_trigger_serializes_to_an_importable_equal_trigger():
    trigger = TradingGridItemTrigger("itm_1", ["resolved"], False, "tg_x", 7.5, 1234.0)
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert cls is TradingGridItemTrigger
    json.dumps(kwargs)  # the triggerer stores kwargs: plain JSON
    assert cls(**kwargs).serialize() == (classpath, kwargs)


def test_trigger_fires_when_the_item_transitions_despite_faults(tg, hook, monkeypatch):
    conn = json.loads(tg.airflow_conn_json())
    conn["extra"]["retry"] = {"max_attempts": 15, "backoff_base": 0.01, "backoff_max": 0.1}
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_GRID_DEFAULT", json.dumps(conn))
    item, _ = hook.create_item(make_payload())
    trigger = TradingGridItemTrigger(
        item_id=item["id"], statuses=["resolved"], accept_acknowledged=False, poll_interval=0.2, deadline=time.time() + 30
    )

    async def scenario():
        waiting = asyncio.ensure_future(_first_event(trigger))
        await asyncio.sleep(1.0)
        assert not waiting.done(), "fired before the item moved"
        tg.set_faults(error_rate=0.3, rate_limit_rate=0.2, retry_after_seconds=0)
        await asyncio.to_thread(hook.transition, item["id"], "resolved")
        return await waiting

    event = asyncio.run(scenario())
    tg.clear_faults()
    assert event.payload["status"] == "success"
    assert event.payload["item"]["id"] == item["id"] and event.payload["item"]["status"] == "resolved"


def test_trigger_reports_acknowledgement_timeout_and_errors(tg, hook):
    item, _ = hook.create_item(make_payload())
    timeout_event = asyncio.run(_first_event(TradingGridItemTrigger(item["id"], poll_interval=0.2, deadline=time.time() + 0.5)))
    assert timeout_event.payload["status"] == "timeout" and timeout_event.payload["item"]["status"] == "open"

    hook.acknowledge(item["id"])
    acked = asyncio.run(_first_event(TradingGridItemTrigger(item["id"], statuses=["resolved"], poll_interval=0.2)))
    assert acked.payload["status"] == "success" and acked.payload["item"]["acknowledged_at"]

    missing = asyncio.run(_first_event(TradingGridItemTrigger("itm_missing", poll_interval=0.2)))
    assert missing.payload["status"] == "error" and missing.payload["http_status"] == 404
    assert tg.enterprise[1] not in missing.payload["message"]


def test_deferrable_sensor_defers_to_the_trigger(tg, hook):
    item, _ = hook.create_item(make_payload())
    sensor = TradingGridItemSensor(task_id="wait_for_ack", item_id=item["id"], poke_interval=5, timeout=60)
    assert sensor.deferrable is True
    ctx = _context()
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, TradingGridItemTrigger)
    assert (trigger.item_id, trigger.poll_interval, trigger.accept_acknowledged) == (item["id"], 5.0, True)
    assert set(trigger.statuses) == {"acknowledged", "in_progress", "resolved", "closed"}
    assert before + 59 <= trigger.deadline <= time.time() + 61
    assert deferred.value.method_name == "execute_complete" and deferred.value.kwargs == {"phase": "waiting"}
    assert deferred.value.timeout >= timedelta(seconds=60)
    assert ctx["ti"].pushed["trading_grid_item_url"].endswith(f"/portal/items/{item['id']}")

    # Already there: no deferral at all.
    hook.acknowledge(item["id"])
    assert sensor.execute(_context())["acknowledged_at"]


def test_deferred_timeout_escalates_then_waits_again_then_fails(tg, hook):
    item, _ = hook.create_item(make_payload(severity="low"))
    sensor = TradingGridItemSensor(
        task_id="wait", item_id=item["id"], poke_interval=0.2, timeout=0.5, on_timeout="escalate", escalation_wait=30
    )
    event = asyncio.run(_first_event(TradingGridItemTrigger(item["id"], poll_interval=0.2, deadline=time.time() + 0.3)))
    assert event.payload["status"] == "timeout"
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute_complete(_context(), event.payload, phase="waiting")
    assert deferred.value.kwargs == {"phase": "escalated"}
    assert deferred.value.trigger.deadline >= time.time() + 25
    escalated = hook.get_item(item["id"])
    assert escalated["severity"] == "high" and escalated["metadata"]["escalated_by"].endswith(".wait")
    reminders = [c for c in hook.list_comments(item["id"]) if c["body"].startswith("Reminder:")]
    assert len(reminders) == 1 and reminders[0]["visibility"] == "partner"

    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(_context(), event.payload, phase="escalated")
    assert len([c for c in hook.list_comments(item["id"]) if c["body"].startswith("Reminder:")]) == 1


def test_on_timeout_fail_does_not_touch_the_item(tg, hook):
    item, _ = hook.create_item(make_payload())
    sensor = TradingGridItemSensor(task_id="wait", item_id=item["id"], timeout=1)
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(_context(), {"status": "timeout", "item": {"status": "open"}}, phase="waiting")
    after = hook.get_item(item["id"])
    assert after["severity"] == "info" and after["version"] == item["version"]
    assert hook.list_comments(item["id"]) == []


def test_poke_mode_escalates_once_and_fails_even_on_rerun(tg, hook):
    item, _ = hook.create_item(make_payload())
    sensor = TradingGridItemSensor(
        task_id="wait",
        item_id=item["id"],
        deferrable=False,
        poke_interval=0.2,
        timeout=0.5,
        on_timeout="escalate",
        escalation_severity="critical",
        fail_after_escalation=True,
    )
    for _ in range(2):  # the second run is a rerun of the same task
        with pytest.raises(AirflowSensorTimeout):
            sensor.execute(_context())
    assert hook.get_item(item["id"])["severity"] == "critical"
    assert len([c for c in hook.list_comments(item["id"]) if c["body"].startswith("Reminder:")]) == 1


def test_poke_mode_keeps_waiting_after_escalation_and_sees_the_ack(tg, hook):
    item, _ = hook.create_item(make_payload())
    sensor = TradingGridItemSensor(
        task_id="wait", item_id=item["id"], deferrable=False, poke_interval=0.2, timeout=0.5,
        on_timeout="escalate", escalation_wait=20,
    )
    threading.Timer(1.5, hook.acknowledge, args=(item["id"],)).start()
    result = sensor.execute(_context())
    assert result["acknowledged_at"] and result["severity"] == "high"
