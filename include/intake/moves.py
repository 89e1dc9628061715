"""Archive/quarantine moves on the SFTP server: unique target names, retry-safe renames, no deletes."""
from __future__ import annotations

import errno
import posixpath
from datetime import datetime, timezone
from typing import Any

from include.intake.errors import MoveError
from include.intake.listing import wire_path


def unique_suffix(sha256: str | None, at: datetime | None = None) -> str:
    """``<utc timestamp>.<sha8>``, e.g. ``20261125T224501123456Z.9f86d081``.

    The microsecond timestamp keeps two deliveries of the same content apart; the sha prefix lets
    an operator match an archived file to its ledger entry. Without a digest (file never fetched)
    ``nosha`` is used.
    """
    at = at or datetime.now(timezone.utc)
    return f"{at.strftime('%Y%m%dT%H%M%S%fZ')}.{(sha256 or 'nosha')[:8]}"


def target_path(folder: str, name: str, suffix: str) -> str:
    """``<folder>/<name>.<suffix>``; ``name`` must already be a safe plain name."""
    if "/" in name or name in (".", ".."):
        raise ValueError("target name must be a plain file name")
    return posixpath.join(folder, f"{name}.{suffix}")


def companion_target(final_path: str, file_name: str, companion: str) -> str:
    """Where a marker/manifest goes: next to the moved file, ``<final name><companion ending>``,
    e.g. ``INV-1.csv.20261125T224501123456Z.9f86d081.done``, so the pair sorts together."""
    ending = companion[len(file_name):] if companion.startswith(file_name) else "." + companion
    ending = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in ending)
    return final_path + ending


def _check_plain_path(path: str) -> None:
    """Refuse paths that could address something else than the listed file (defence in depth:
    a listed name like ``../../etc/x`` must never become a rename source)."""
    parts = path.split("/")
    if not path.startswith("/") or any(part in (".", "..") for part in parts) or "\x00" in path:
        raise MoveError(f"refusing to move {path!r}: not a plain absolute path")


def _exists(sftp: Any, path: str) -> bool:
    try:
        sftp.stat(wire_path(path))
    except FileNotFoundError:
        return False
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.ENOENT:
            return False
        raise
    return True


def rename_retry_safe(sftp: Any, source: str, target: str) -> str:
    """Rename ``source`` to ``target`` with ``posix_rename``; safe to call again after a crash.

    :return: ``"renamed"``, or ``"already_done"`` when the source is gone and the target exists
        (a previous attempt succeeded before its outcome was recorded).
    :raises MoveError: the rename failed and the target does not exist, or the target already exists
        while the source is still there (never overwritten).
    """
    _check_plain_path(source)
    _check_plain_path(target)
    if _exists(sftp, target):
        if _exists(sftp, source):
            raise MoveError(f"cannot move {source}: target {target} already exists")
        return "already_done"
    try:
        sftp.posix_rename(wire_path(source), wire_path(target))
    except OSError as exc:
        if not _exists(sftp, source) and _exists(sftp, target):
            return "already_done"
        raise MoveError(f"cannot move {source} to {target}: {exc}") from exc
    return "renamed"
