"""The deferrable inbound sensor every use case waits with: "has the partner delivered anything?".

A DAG file imports this module at parse time, so it imports only ``airflow.sdk``: the SFTP provider's
sensor module imports paramiko and asyncssh at top level (0.3 s per parse). The trigger lives in
:mod:`include.exchange.triggers` and is imported when the task runs.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator


class PartnerInboundSensor(BaseSensorOperator):
    """Wait, deferred in the triggerer, until ``path`` holds a regular file matching ``file_pattern``.

    The deferrable branch of the provider's ``SFTPSensor`` with one difference: folders never count as
    files (the provider's trigger reports ``inbound/catalog`` as a delivery, so a partner with a catalog
    sub-folder was never quiet). Like the provider's deferrable sensor it reports no ``files_found``:
    the intake lists the folder itself. With ``soft_fail`` a timeout (nothing delivered) skips.
    """

    template_fields = ("path", "file_pattern", "sftp_conn_id")
    ui_color = "#f0eee4"

    #: Not ``*``: the async SFTP listing includes ``.`` and ``..``; dot-files are temporary names anyway.
    DEFAULT_PATTERN = "[!.]*"

    def __init__(self, *, path: str, file_pattern: str = DEFAULT_PATTERN, sftp_conn_id: str = "sftp_default",
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.path = path
        self.file_pattern = file_pattern
        self.sftp_conn_id = sftp_conn_id

    def execute(self, context: Any) -> None:
        from include.exchange.triggers import PartnerFilesTrigger  # paramiko + asyncssh: runtime only

        self.defer(
            trigger=PartnerFilesTrigger(path=self.path, file_pattern=self.file_pattern,
                                        sftp_conn_id=self.sftp_conn_id, poke_interval=self.poke_interval),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Any, event: dict | None = None) -> None:
        if not event:
            raise RuntimeError("No event received from the SFTP trigger")
        if event.get("status") == "error":
            raise RuntimeError(f"SFTP trigger failed: {event.get('message')}")
        self.log.info("%s: %s", self.task_id, event.get("message"))

    def poke(self, context: Any) -> bool:  # only for deferrable=False users; the DAGs defer
        from include.exchange.triggers import regular_files_matching
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        with SFTPHook(self.sftp_conn_id).get_managed_conn() as sftp:
            return bool(regular_files_matching(sftp.listdir_attr(self.path), self.file_pattern))


def wait_seconds(env_name: str, default: int) -> int:
    """How long a sensor waits for a delivery: env ``env_name`` (seconds) or ``default``."""
    try:
        return max(1, int(os.environ.get(env_name, default)))
    except ValueError:
        return default
