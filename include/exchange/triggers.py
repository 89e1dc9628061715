"""The trigger behind :class:`include.exchange.sensor.PartnerInboundSensor` (runs in the triggerer).

The provider's ``SFTPTrigger`` matches every directory entry, folders included. This one lists the same
way (one ``readdir`` per poke over asyncssh) and counts only regular files.
"""
from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Iterable
from fnmatch import fnmatch
from typing import Any

from airflow.providers.sftp.triggers.sftp import SFTPTrigger
from airflow.triggers.base import TriggerEvent


def _mode(entry: Any) -> int:
    attrs = getattr(entry, "attrs", entry)  # asyncssh SFTPName.attrs.permissions | paramiko SFTPAttributes.st_mode
    return int(getattr(attrs, "permissions", None) or getattr(attrs, "st_mode", None) or 0)


def _name(entry: Any) -> str:
    name = entry.filename
    return name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else str(name)


def regular_files_matching(entries: Iterable[Any], pattern: str) -> list[str]:
    """Names of the regular files among ``entries`` (asyncssh or paramiko listings) matching ``pattern``."""
    return sorted(_name(e) for e in entries if stat.S_ISREG(_mode(e)) and fnmatch(_name(e), pattern))


class PartnerFilesTrigger(SFTPTrigger):
    """Fires when ``path`` holds a regular file matching ``file_pattern``; folders never count."""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"path": self.path, "file_pattern": self.file_pattern, "sftp_conn_id": self.sftp_conn_id,
                 "poke_interval": self.poke_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._get_async_hook()
        while True:
            try:
                files = regular_files_matching(await hook.read_directory(self.path) or [], self.file_pattern)
            except FileNotFoundError:
                files = []
            except Exception as exc:  # noqa: BLE001 - the provider's trigger ends on a terminal error too
                if type(exc).__name__ == "AirflowException":
                    files = []
                else:
                    yield TriggerEvent({"status": "error", "message": str(exc)})
                    return
            if files:
                yield TriggerEvent({"status": "success", "message": f"Sensed {len(files)} files: {files[:20]}"})
                return
            await asyncio.sleep(self.poke_interval)
