"""Outbound delivery: put one of our files into a partner's outbound folder, once, atomically.

:func:`deliver` checks before it touches anything: the file belongs to this partner, its name is a
safe plain name that partner tools will not take for a temporary one, and the outbound folder (and
every folder above it inside the partner's tree) is a real directory, not a symlink. It hashes the
local file; the ``sent_files`` ledger (:mod:`include.exchange.sent_files`, whose public names this
module re-exports) then says whether these bytes already went out under this name (or its ``~N``
variant): if so, nothing happens (``created`` False).

Otherwise the bytes are streamed (252 KiB writes, 8 in flight, every status checked; paramiko's own
pipelined writes drop write errors) into ``.NAME.<token>.part`` in the same folder and renamed with
plain SSH_FXP_RENAME, which OpenSSH refuses onto an existing target (``posix-rename`` would
overwrite). The partner never sees a partial file under its final name and nothing is overwritten.
A taken name holding other bytes gets ``NAME~2.ext``, ``~3``... (``on_conflict="rename"``) or
:class:`OutboundConflict` (``"refuse"``); a taken name holding the same bytes (size, then sha256
read back) is ours from a run that died before recording it: recorded now, not uploaded again.
The partner's marker follows the file (``NAME.done``, or ``NAME.sha256`` written atomically too);
the ledger row and its journal line come last, so a crash anywhere converges on the next call.

Time is bounded by :func:`include.intake.fetch.time_bound` (or ``timeout``): every wait for the
server is a channel timeout within it. Past it the session is dropped (transport closed) and
:class:`TransferTimeout` raised; the temporary file stays, it is never renamed.

Later runs watch pickup where the partner's server removes what it took (``delivery.pickup ==
"removes"``): :func:`observe_pickups` lists the folder once and marks the missing files picked up;
:func:`overdue_sends` names those still waiting after ``delivery.pickup_alert_hours``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import secrets
import socket
import stat as stat_mod
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from include.exchange.sent_files import (OutboundError, OverdueSend, SentFile, find_sent, name_variant, overdue_sends,
                                         pending_sends, record_pickups, record_sent, sent_files, set_sent_item)
from include.intake.errors import FileChangedError, TransferError, TransferTimeout
from include.intake.fetch import (DEFAULT_MAX_REQUESTS, DEFAULT_REQUEST_SIZE, DEFAULT_STALL_TIMEOUT, _pipelined_copy,
                                  _Responses, drop_session, time_bound, tune_session)
from include.intake.links import folder_problems, partner_tree
from include.intake.listing import list_folder
from include.intake.names import DONE_SUFFIX, MANIFEST_SUFFIX, is_temporary_name, unsafe_name_reason

__all__ = ["MAX_NAME_VARIANTS", "OutboundConflict", "OutboundError", "OutboundFile", "OutboundRefused", "OverdueSend",
           "SentFile", "deliver", "name_variant", "observe_pickups", "overdue_sends", "sent_files", "set_sent_item"]

log = logging.getLogger(__name__)

#: Highest ``~N`` tried for a taken name before giving up with :class:`OutboundConflict`.
MAX_NAME_VARIANTS = 99


class OutboundRefused(OutboundError):
    """The delivery was refused before anything was written; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboundConflict(OutboundError):
    """The name is taken by a different file and ``on_conflict="refuse"`` (or no ``~N`` is free)."""


@dataclass(frozen=True)
class OutboundFile:
    """A local file one use case wants a partner to have, under ``file_name``."""

    partner_key: str
    use_case: str
    local_path: str
    file_name: str
    subject_key: str | None = None


# ---- the delivery ---------------------------------------------------------------------------------
def deliver(sftp: Any, partner: Any, engine: Any, file: OutboundFile, *, run_id: str, on_conflict: str = "rename",
            timeout: float | None = None, stall_timeout: float = DEFAULT_STALL_TIMEOUT) -> SentFile:
    """Put ``file`` into ``partner.folders.outbound`` (see the module docstring) and record it.

    :param sftp: a paramiko ``SFTPClient``; dropped (transport closed) after a timeout.
    :param on_conflict: ``"rename"`` (``NAME~2.ext``...) or ``"refuse"`` when the name holds other bytes.
    :param timeout: seconds for the server part; default ``time_bound(size)``.
    :raises OutboundRefused: wrong partner, unsafe or temporary name, bad outbound folder, no local file.
    :raises OutboundConflict: name taken and ``on_conflict="refuse"``.
    :raises TransferTimeout: the time bound passed (session dropped; nothing renamed).
    :raises TransferError: the server failed a request, or the local file changed while uploading.
    """
    if on_conflict not in ("rename", "refuse"):
        raise ValueError(f"on_conflict must be 'rename' or 'refuse', not {on_conflict!r}")
    folder = partner.folders.outbound
    size = _check_request(partner, file)
    sha = _local_sha256(file.local_path)
    known = find_sent(engine, partner.key, folder, file.file_name, sha)
    if known is not None:
        log.info("outbound %s: %s already sent as %s (sha256 %s): nothing to do", partner.key, file.file_name,
                 known.remote_path, sha[:12])
        return known
    session = _Session(sftp, timeout if timeout is not None else time_bound(size), stall_timeout)
    try:
        _check_folder(session, partner)
        name = _place(session, folder, file, size, sha, on_conflict, partner.delivery.marker)
        _write_marker(session, folder, name, sha, partner.delivery.marker)
    except (socket.timeout, TransferTimeout) as exc:
        session.drop()
        raise TransferTimeout(f"delivery of {file.file_name} to {folder} exceeded its time bound "
                              f"({session.bound:.0f}s); session dropped") from exc
    except (OSError, EOFError) as exc:
        raise TransferError(f"delivery of {file.file_name} to {folder} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # paramiko.SSHException and friends: a transfer error for the caller
        if not type(exc).__module__.startswith("paramiko"):
            raise
        raise TransferError(f"delivery of {file.file_name} to {folder} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        session.restore()
    sent = record_sent(engine, use_case=file.use_case, partner_key=partner.key, subject_key=file.subject_key,
                       remote_path=posixpath.join(folder, name), sha=sha, size=size, run_id=run_id)
    log.info("outbound %s: %s delivered as %s (%d bytes, sha256 %s)", partner.key, file.file_name,
             sent.remote_path, size, sha[:12])
    return sent


def _check_request(partner: Any, file: OutboundFile) -> int:
    """Refusals that need neither the server nor the ledger; returns the local file's size."""
    if file.partner_key != partner.key:
        raise OutboundRefused(f"{file.file_name!r} belongs to partner {file.partner_key!r}, "
                              f"not to {partner.key!r}: refused")
    reason = unsafe_name_reason(file.file_name)
    if reason:
        raise OutboundRefused(f"unsafe file name: {reason}")
    if is_temporary_name(file.file_name, partner.readiness.temp_suffixes):
        raise OutboundRefused(f"file name {file.file_name!r} looks temporary: partner tools would ignore it")
    try:
        info = os.stat(file.local_path)
    except OSError as exc:
        raise OutboundRefused(f"local file {file.local_path} cannot be read: {exc.strerror}") from None
    if not stat_mod.S_ISREG(info.st_mode):
        raise OutboundRefused(f"local file {file.local_path} is not a regular file")
    return info.st_size


def _local_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


class _Session:
    """The SFTP client of one delivery and its deadline: every wait for the server is armed with a
    channel timeout within it, so a stalled server raises ``socket.timeout`` instead of blocking."""

    def __init__(self, sftp: Any, bound: float, stall_timeout: float) -> None:
        self.sftp = sftp
        self.bound = bound
        self.deadline = time.monotonic() + bound
        self.stall_timeout = stall_timeout
        self.channel = sftp.get_channel()
        self.previous_timeout = self.channel.gettimeout()
        tune_session(sftp)

    def arm(self) -> Any:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TransferTimeout("time bound passed")
        self.channel.settimeout(min(self.stall_timeout, remaining))
        return self.sftp

    def restore(self) -> None:
        try:
            self.channel.settimeout(self.previous_timeout)
        except Exception:  # the session is gone: nothing to restore
            pass

    def drop(self) -> None:
        """After a timeout the channel may carry unanswered requests: it must not be used again."""
        drop_session(self.sftp)


def _lstat(session: _Session, path: str):
    try:
        return session.arm().lstat(path)
    except FileNotFoundError:
        return None


def _check_folder(session: _Session, partner: Any) -> None:
    """The outbound folder and its parents within the partner's tree are real directories (the
    intake's one folder check, :func:`include.intake.links.folder_problems`)."""
    folder = partner.folders.outbound
    problem = folder_problems(session.arm(), [folder], partner_tree(partner.folders))[folder]
    if problem:
        raise OutboundRefused(f"outbound folder {folder}: {problem}")


def _marker_name(name: str, marker: str) -> str | None:
    return {"none": None, "done": name + DONE_SUFFIX, "manifest": name + MANIFEST_SUFFIX}[marker]


def _examine(session: _Session, folder: str, name: str, size: int, sha: str, marker: str) -> str:
    """``free`` (no file, no marker), ``same`` (our bytes are there) or ``taken``."""
    attrs = _lstat(session, posixpath.join(folder, name))
    if attrs is None:
        companion = _marker_name(name, marker)
        # A marker without its file (the partner took only the file) would vouch for ours.
        free = companion is None or _lstat(session, posixpath.join(folder, companion)) is None
        return "free" if free else "taken"
    if not stat_mod.S_ISREG(attrs.st_mode or 0) or attrs.st_size != size:
        return "taken"
    return "same" if _remote_sha256(session, posixpath.join(folder, name), size) == sha else "taken"


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def _remote_sha256(session: _Session, path: str, size: int) -> str | None:
    digest = hashlib.sha256()
    stall = max(0.001, min(session.stall_timeout, session.deadline - time.monotonic()))
    try:
        _pipelined_copy(session.sftp, path, _Discard(), digest, session.deadline, DEFAULT_REQUEST_SIZE,
                        DEFAULT_MAX_REQUESTS, stall, size)
    except (FileNotFoundError, FileChangedError):
        return None  # gone or changed while we read it: not ours to vouch for
    return digest.hexdigest()


def _place(session: _Session, folder: str, file: OutboundFile, size: int, sha: str, on_conflict: str,
           marker: str) -> str:
    """Upload once under a temporary name, rename to the first free variant; returns the final name."""
    temp = None
    for n in range(1, MAX_NAME_VARIANTS + 1):
        name = name_variant(file.file_name, n)
        state = _examine(session, folder, name, size, sha, marker)
        if state == "taken" and on_conflict == "refuse":
            _remove_quietly(session, temp)
            raise OutboundConflict(f"{posixpath.join(folder, name)} holds a different file: refused "
                                   f"(never overwritten)")
        if state == "same":
            _remove_quietly(session, temp)
            return name
        if state == "taken" or unsafe_name_reason(name):
            continue
        if temp is None:
            temp = _upload(session, file.local_path, folder, file.file_name, size, sha)
        try:
            session.arm().rename(temp, posixpath.join(folder, name))  # SSH_FXP_RENAME: never onto a file
            return name
        except OSError:
            if _lstat(session, temp) is None:
                raise TransferError(f"rename of {temp} to {name} failed and the temporary file is gone") from None
            # Taken meanwhile (an overlapping run): the next turn of the loop looks at it again.
            state = _examine(session, folder, name, size, sha, marker)
            if state == "same":
                _remove_quietly(session, temp)
                return name
            if on_conflict == "refuse":
                _remove_quietly(session, temp)
                raise OutboundConflict(f"{posixpath.join(folder, name)} was taken by a different file: refused")
    _remove_quietly(session, temp)
    raise OutboundConflict(f"no free name for {file.file_name} in {folder} up to ~{MAX_NAME_VARIANTS}")


def _temp_path(folder: str, file_name: str) -> str:
    # A dot-name with a .part suffix: partner tools skip it. The name part is cut to stay < 255 bytes.
    short = file_name.encode("utf-8")[:200].decode("utf-8", "ignore")
    return posixpath.join(folder, f".{short}.{secrets.token_hex(6)}.part")


def _upload(session: _Session, local_path: str, folder: str, file_name: str, size: int, sha: str) -> str:
    """Stream ``local_path`` into a new temporary file (exclusive create); returns its path."""
    from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_OPEN, CMD_STATUS, CMD_WRITE, SFTP_OK, int64
    from paramiko.sftp import SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE
    from paramiko.sftp_attr import SFTPAttributes

    temp = _temp_path(folder, file_name)
    sftp = session.arm()
    t, msg = sftp._request(CMD_OPEN, temp, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL, SFTPAttributes())
    if t != CMD_HANDLE:
        raise TransferError(f"open of {temp}: unexpected SFTP response type {t}")
    handle = msg.get_binary()
    digest, responses, inflight, offset = hashlib.sha256(), _Responses(), deque(), 0

    def settle(num: int, at: int) -> None:
        while num not in responses.by_num:
            session.arm()
            sftp._read_response()
        t, msg = responses.by_num.pop(num)
        code = msg.get_int() if t == CMD_STATUS else None
        if code != SFTP_OK:
            raise TransferError(f"write of {temp} at offset {at} failed: SFTP status {code} (type {t})")

    try:
        with _open_local(local_path) as src:
            while True:
                while len(inflight) < DEFAULT_MAX_REQUESTS and (data := src.read(DEFAULT_REQUEST_SIZE)):
                    digest.update(data)
                    session.arm()
                    inflight.append((sftp._async_request(responses, CMD_WRITE, handle, int64(offset), data), offset))
                    offset += len(data)
                if not inflight:
                    break
                settle(*inflight.popleft())
        session.arm()
        sftp._request(CMD_CLOSE, handle)
    except (socket.timeout, TransferTimeout):
        raise  # the session is dropped by the caller: nothing more is asked of it
    except (TransferError, OSError):  # a failed write, or the local file could not be read
        for num, at in inflight:  # the server answers in order: drain, then close and remove
            _ignore(settle, num, at)
        _ignore(sftp._request, CMD_CLOSE, handle)
        _remove_quietly(session, temp)
        raise
    if offset != size or digest.hexdigest() != sha:
        _remove_quietly(session, temp)
        raise TransferError(f"local file {local_path} changed while uploading: not delivered")
    return temp


def _open_local(path: str):
    """The local file an upload reads from, one ``read(DEFAULT_REQUEST_SIZE)`` per write request: the
    point where tests interpose on the transfer between two chunks (no thread racing it)."""
    return open(path, "rb")


def _ignore(call, *args) -> None:
    try:
        call(*args)
    except (socket.timeout, TransferTimeout):
        raise
    except Exception:
        pass


def _remove_quietly(session: _Session, path: str | None) -> None:
    if path is not None:
        _ignore(lambda: session.arm().remove(path))


def _write_marker(session: _Session, folder: str, name: str, sha: str, marker: str) -> None:
    """The partner's marker after the file: empty ``NAME.done`` or ``NAME.sha256`` (hex, 2 spaces, NAME)."""
    companion = _marker_name(name, marker)
    if companion is None:
        return
    content = b"" if marker == "done" else f"{sha}  {name}\n".encode()
    target = posixpath.join(folder, companion)
    if _lstat(session, target) is not None:  # written before a crash: fine if it says the same
        with session.arm().open(target, "rb") as existing:
            if existing.read(len(content) + 1) == content:
                return
        raise OutboundConflict(f"{target} exists with other content")
    temp = _temp_path(folder, companion)
    with session.arm().open(temp, "wx") as out:
        out.write(content)
    session.arm().rename(temp, target)


# ---- pickup ----------------------------------------------------------------------------------------
def observe_pickups(sftp: Any, partner: Any, engine: Any, *, now: datetime | None = None) -> list[SentFile]:
    """Mark sends no longer in the outbound folder as picked up (one listing); returns those newly marked.

    Only for partners whose server removes what it took (``delivery.pickup == "removes"``); for
    "keeps" partners nothing is listed or marked.
    """
    if partner.delivery.pickup != "removes":
        return []
    now = now or datetime.now(timezone.utc)
    pending = pending_sends(engine, partner)
    if not pending:
        return []
    present = {entry.name for entry in list_folder(sftp, partner.folders.outbound) if entry.is_file}
    picked = record_pickups(engine, partner, pending, [s for s in pending if s.file_name not in present], now=now)
    for sent in picked:
        log.info("outbound %s: %s picked up", partner.key, sent.remote_path)
    return picked
