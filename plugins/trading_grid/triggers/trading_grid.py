"""Trigger that waits, in the triggerer, for a Trading Grid item to reach a status or be acknowledged.

A partner can take days to react; a deferred sensor holds no worker slot meanwhile. The trigger polls
``GET item`` every ``poll_interval`` seconds with :class:`TradingGridAsyncClient` (token cached,
429/5xx retried) and fires exactly one event:

- ``{"status": "success", "item": {...}}`` when the item is in one of ``statuses`` or (with
  ``accept_acknowledged``) has been acknowledged;
- ``{"status": "timeout", "item": {...}}`` when ``deadline`` (epoch seconds) passes first, so the
  sensor can decide to fail or escalate;
- ``{"status": "error", "message": "..."}`` on an error that retrying cannot fix (404, auth), with a
  sanitized message.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from trading_grid.exceptions import TradingGridError, redact

DEFAULT_STATUSES = ("acknowledged", "in_progress", "resolved", "closed")


def item_reached(item: Mapping[str, Any], statuses: Iterable[str], accept_acknowledged: bool) -> bool:
    """True if the item is in one of ``statuses`` or, when accepted, has been acknowledged."""
    if item.get("status") in set(statuses):
        return True
    return bool(accept_acknowledged and item.get("acknowledged_at"))


def summarize(item: Mapping[str, Any]) -> dict[str, Any]:
    """The few fields an event carries (events are stored in the metadata DB: keep them small)."""
    keys = ("id", "status", "severity", "acknowledged_at", "acknowledged_by", "version", "external_ref", "partner_id")
    return {k: item.get(k) for k in keys}


class TradingGridItemTrigger(BaseTrigger):
    """
    Poll a TG item until it reaches ``statuses`` (or is acknowledged), or ``deadline`` passes.

    :param item_id: the TG item id.
    :param statuses: statuses that end the wait.
    :param accept_acknowledged: an acknowledgement also ends the wait, whatever the status.
    :param trading_grid_conn_id: Airflow connection id.
    :param poll_interval: seconds between polls.
    :param deadline: epoch seconds after which a ``timeout`` event fires; None waits for ever
        (the sensor always passes one).
    """

    def __init__(
        self,
        item_id: str,
        statuses: Iterable[str] = DEFAULT_STATUSES,
        accept_acknowledged: bool = True,
        trading_grid_conn_id: str = "trading_grid_default",
        poll_interval: float = 60.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.item_id = item_id
        self.statuses = list(statuses)
        self.accept_acknowledged = accept_acknowledged
        self.trading_grid_conn_id = trading_grid_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "item_id": self.item_id,
                "statuses": list(self.statuses),
                "accept_acknowledged": self.accept_acknowledged,
                "trading_grid_conn_id": self.trading_grid_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from trading_grid.hooks.trading_grid import TradingGridAsyncClient

        client = None
        try:
            client = await TradingGridAsyncClient.from_conn_id(self.trading_grid_conn_id)
            while True:
                item = await client.get_item(self.item_id)
                if item_reached(item, self.statuses, self.accept_acknowledged):
                    yield TriggerEvent({"status": "success", "item": summarize(item)})
                    return
                now = time.time()
                if self.deadline is not None and now >= self.deadline:
                    yield TriggerEvent({"status": "timeout", "item": summarize(item)})
                    return
                self.log.debug("Trading Grid item %s is %s; polling again", self.item_id, item.get("status"))
                wait = self.poll_interval
                if self.deadline is not None:
                    wait = max(0.0, min(wait, self.deadline - now))
                await asyncio.sleep(wait)
        except TradingGridError as exc:
            yield TriggerEvent({"status": "error", "message": redact(exc), "http_status": exc.status})
        finally:
            if client is not None:
                await client.close()
