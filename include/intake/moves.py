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


#: Rename requests kept in flight by :func:`rename_many` (each is ~100 bytes on the wire).
RENAME_WINDOW = 64


class _Statuses:
    """Receives paramiko's asynchronous responses (the ``fileobj`` of ``_async_request``)."""

    def __init__(self) -> None:
        self.by_num: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.by_num[num] = (t, msg)


def refuses_overwrite(sftp: Any) -> bool:
    """True when the session's plain SFTP RENAME is known to fail on an existing target.

    The SFTP v3 draft (draft-ietf-secsh-filexfer-02, SSH_FXP_RENAME) makes an existing target an
    error, and OpenSSH's sftp-server implements it with ``link()`` + ``unlink()`` (the link fails
    with EEXIST), so no existence check is needed before renaming. Servers whose RENAME may
    overwrite are not trusted with it: only OpenSSH is, and only over paramiko's request primitives.
    """
    if not all(hasattr(sftp, name) for name in ("_async_request", "_read_response", "get_channel")):
        return False
    try:
        version = sftp.get_channel().get_transport().remote_version or ""
    except Exception:
        return False
    return "OpenSSH" in version


def rename_many(sftp: Any, pairs: list[tuple[str, str]], *, window: int = RENAME_WINDOW) -> list[str | MoveError]:
    """Rename every ``(source, target)`` with :func:`rename_retry_safe`'s rules, pipelined.

    On an OpenSSH server (see :func:`refuses_overwrite`) the plain SFTP RENAME requests are sent
    ``window`` at a time without waiting for each answer and without a ``stat`` first: the server
    refuses an existing target, so nothing is overwritten. Only a failed rename is looked at
    (``stat`` of target and source): target there and source gone is ``"already_done"`` (a previous
    attempt succeeded), target and source both there is a :class:`MoveError`, and otherwise the
    pair gets one :func:`rename_retry_safe` (a server refusing hard links still renames). Other
    clients get :func:`rename_retry_safe` pair by pair.

    :return: per pair, in order: ``"renamed"``, ``"already_done"`` or the :class:`MoveError`.
    """
    results: list[str | MoveError | None] = [None] * len(pairs)
    todo: list[int] = []
    for index, (source, target) in enumerate(pairs):
        try:
            _check_plain_path(source)
            _check_plain_path(target)
        except MoveError as exc:
            results[index] = exc
            continue
        todo.append(index)
    if not refuses_overwrite(sftp):
        for index in todo:
            try:
                results[index] = rename_retry_safe(sftp, *pairs[index])
            except MoveError as exc:
                results[index] = exc
        return results  # type: ignore[return-value]

    from paramiko.sftp import CMD_RENAME, CMD_STATUS, SFTP_OK

    statuses = _Statuses()
    inflight: dict[int, int] = {}
    failed: list[tuple[int, str]] = []
    position = 0
    while position < len(todo) or inflight:
        while position < len(todo) and len(inflight) < window:
            index = todo[position]
            position += 1
            source, target = pairs[index]
            inflight[sftp._async_request(statuses, CMD_RENAME, wire_path(source), wire_path(target))] = index
        while not statuses.by_num:
            sftp._read_response()
        for num in list(statuses.by_num):
            t, msg = statuses.by_num.pop(num)
            index = inflight.pop(num)
            code = msg.get_int() if t == CMD_STATUS else None
            if code == SFTP_OK:
                results[index] = "renamed"
            else:
                detail = msg.get_text() if code is not None else f"unexpected SFTP response type {t}"
                failed.append((index, f"SFTP status {code}: {detail}"))
    for index, detail in failed:  # only failures cost round trips
        source, target = pairs[index]
        try:
            if _exists(sftp, target):
                if _exists(sftp, source):
                    raise MoveError(f"cannot move {source}: target {target} already exists")
                results[index] = "already_done"
            elif not _exists(sftp, source):
                raise MoveError(f"cannot move {source} to {target}: {detail}")
            else:
                results[index] = rename_retry_safe(sftp, source, target)
        except MoveError as exc:
            results[index] = exc
        except OSError as exc:
            results[index] = MoveError(f"cannot move {source} to {target}: {exc}")
    return results  # type: ignore[return-value]
