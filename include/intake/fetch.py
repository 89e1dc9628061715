"""Streaming fetch of one remote file to local disk, hashing (sha256) while it streams.

Why a reader of our own: paramiko's ``get()``/``prefetch()`` hands read requests to a background
thread and marks the prefetch finished whenever its in-flight set is momentarily empty. When the
consumer drains responses faster than that thread issues requests, the prefetch ends early and
every further read becomes one synchronous round trip (measured here: 5 MB/s instead of ~85 MB/s,
with the abandoned responses piling up in memory, ~1.1 GB RSS for 1 GiB). So for a paramiko
``SFTPClient`` we pipeline ourselves, in the calling thread: keep ``max_requests`` read requests of
``request_size`` bytes in flight, write and hash each response in order, and drain what is left
after end of file. Memory stays bounded (``max_requests × request_size``) and the rate is the one
of the crypto, not of the round trip. TCP_NODELAY is set on the session's socket so small request
packets leave at once.

Clients without paramiko's internals (a test double, another library) fall back to
``open()`` + sequential ``read()`` of ``request_size`` chunks.

Many small files (:func:`fetch_many_to_files`, used by ``PartnerInbox.fetch_many``): one file costs
OPEN, READ, CLOSE, each a round trip when done one after another (~1 ms per file on loopback). So
the requests of a window of files are kept in flight together on the one session: each file's
LSTAT and OPEN go out as it enters the window, its FSTAT and reads on the handle's arrival, its
CLOSE when they are answered; the files come out in the given order with the per-file rules of :func:`fetch_to_file`.
The cost per file is then the Python of its requests, not their round trips.

Time is bounded: a deadline of ``timeout_floor + size / min_rate`` (or an explicit ``timeout``) is
checked between responses, and every wait gets a channel timeout within it (and within
``stall_timeout``) so a stalled server cannot block a read for ever. A socket timeout can fire in
the middle of an SFTP packet: paramiko has then taken part of it, and the next read of the session
would start inside the packet's data ("Garbage packet received", or worse, bytes taken for an
answer). So once a wait times out, the deadline passes with answers owed, or the session fails
under a transfer, the session is dropped (:func:`drop_session`: its transport closed) before the
error surfaces, and the error is :class:`TransferTimeout` (a failure after the deadline counts as
one: it is what the cut looks like) or, before the deadline, :class:`SessionBroken`. Both carry
``session_dropped``. Errors about the file (a status, a changed size, a local write) leave the
session clean and usable.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.intake.errors import (FileChangedError, FileVanishedError, HandleMismatch, NotAttempted, SessionBroken,
                                   TransferError, TransferTimeout)
from include.intake.links import fstat_problem, handle_problem, lstat_answer, opened_path, refusal

#: 252 KiB requests, 8 in flight: ~2 MiB outstanding = paramiko's default channel window. Bigger
#: requests cost less Python per byte; OpenSSH's sftp-server answers up to 255 KiB per read (a
#: larger request gets a short read, after which the reader adapts its request size). Measured on a
#: quiet machine, 1 GiB, 3 runs each: 128 KiB x 16 → 254 MB/s (0.46x OpenSSH's sftp), 252 KiB x 16 →
#: 332 MB/s, 252 KiB x 8 → 350 MB/s (0.66x), 252 KiB x 32 → 331 MB/s.
DEFAULT_REQUEST_SIZE = 252 * 1024
DEFAULT_MAX_REQUESTS = 8
#: Below this rate a transfer is considered stuck (paramiko's one-request-per-round-trip mode is 5 MB/s).
DEFAULT_MIN_RATE = 10 * 1024 * 1024
DEFAULT_TIMEOUT_FLOOR = 60.0
#: Longest wait for a single response before the session is declared stalled.
DEFAULT_STALL_TIMEOUT = 60.0


@dataclass(frozen=True)
class FetchResult:
    """Outcome of :func:`fetch_to_file`."""

    local_path: str
    size: int
    sha256: str
    seconds: float
    method: str  # "pipelined" or "sequential"

    @property
    def mb_per_s(self) -> float:
        return self.size / 1e6 / self.seconds if self.seconds > 0 else float("inf")


def time_bound(size: int | None, *, min_rate: float = DEFAULT_MIN_RATE, timeout_floor: float = DEFAULT_TIMEOUT_FLOOR) -> float:
    """Seconds a transfer of ``size`` bytes may take: ``timeout_floor + size / min_rate``."""
    return timeout_floor + (size or 0) / min_rate


def tune_session(sftp: Any) -> None:
    """Set TCP_NODELAY on the SSH socket under ``sftp`` (paramiko sets none). No-op if not reachable."""
    try:
        sock = sftp.get_channel().get_transport().sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:  # not a paramiko client, or a proxy-command socket: nothing to tune
        pass


def _supports_pipelining(sftp: Any) -> bool:
    return all(hasattr(sftp, name) for name in ("_async_request", "_read_response", "get_channel"))


def _server_path(sftp: Any, path: str):
    """``path`` as paramiko sends it (relative to its ``chdir``), for requests we send ourselves."""
    return sftp._adjust_cwd(path) if hasattr(sftp, "_adjust_cwd") else path


class _Sink:
    """Writes and hashes chunks on a helper thread, so disk I/O and sha256 (both release the GIL)
    overlap with receiving the next responses. The queue is bounded: memory stays bounded."""

    def __init__(self, out, digest, depth: int = 16) -> None:
        import queue
        import threading

        self._out = out
        self._digest = digest
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="intake-fetch-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._error is None:
                try:
                    self._out.write(data)
                    self._digest.update(data)
                except BaseException as exc:  # reported to the caller by write()/close()
                    self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop after a failure: the thread ends, its error (if any) is dropped for the first one."""
        self._queue.put(None)
        self._thread.join()


class _InlineSink:
    """Writes and hashes in the calling thread: for small files, where starting a helper thread
    (~0.25 ms) costs more than the overlap gains."""

    def __init__(self, out, digest) -> None:
        self._out = out
        self._digest = digest

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self._digest.update(data)

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass


#: Files of a known size up to this are written by :class:`_InlineSink` (no helper thread).
INLINE_SINK_MAX = 1024 * 1024


class _Responses:
    """Receives paramiko's asynchronous read responses (the ``fileobj`` of ``_async_request``)."""

    def __init__(self) -> None:
        self.by_num: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.by_num[num] = (t, msg)


# ---- the session after a timeout -----------------------------------------------------------------
#: A channel timeout armed to end at the deadline may fire this much before it.
_DEADLINE_SLACK = 0.01


def drop_session(sftp: Any) -> None:
    """Close the session under ``sftp`` for good: its SSH transport (which closes the channel), else
    the channel, else ``sftp.close()``. Best effort, never raises, sends nothing to the server.

    Why the transport, not only the channel: a channel cut in the middle of an SFTP packet can
    never be read in step again, and whoever holds the session (``transport.is_active()``) must see
    it as dead rather than reuse a connection whose server may be stuck."""
    try:
        channel = sftp.get_channel()
    except Exception:  # not a paramiko client
        channel = None
    for close in ((lambda: channel.get_transport().close(), channel.close) if channel is not None
                  else (getattr(sftp, "close", None),)):
        if close is None:
            continue
        try:
            close()
            return
        except Exception:
            continue


def _is_session_failure(exc: BaseException) -> bool:
    """Raised by a call into the SFTP client, does ``exc`` say the session itself failed (a socket
    timeout, the connection gone, a protocol error) rather than the server refusing a request?"""
    return isinstance(exc, (socket.timeout, EOFError)) or type(exc).__module__.startswith("paramiko")


def _counts_as_timeout(cause: BaseException | None, deadline: float) -> bool:
    """A deadline check (``cause`` None), a socket timeout, or any session failure once the deadline
    has passed (the data cut by it shows up as "Garbage packet", EOF, ...): a timeout."""
    return cause is None or isinstance(cause, socket.timeout) or time.monotonic() >= deadline - _DEADLINE_SLACK


class _Cut(Exception):
    """Internal: the session failed under a transfer (``cause``), or the deadline passed with requests
    in flight (``cause`` None). The session cannot be trusted any more: :func:`_dropped_on_cut`
    drops it and raises :class:`TransferTimeout` or :class:`SessionBroken` instead."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def _cut_error(cause: BaseException | None, what: str, deadline: float, stall_timeout: float) -> TransferError:
    if not _counts_as_timeout(cause, deadline):
        return SessionBroken(f"{what} failed: {type(cause).__name__}: {cause}; session dropped")
    if isinstance(cause, socket.timeout) and time.monotonic() < deadline - _DEADLINE_SLACK:
        return TransferTimeout(f"{what} stalled: no data for {stall_timeout:g}s; session dropped")
    return TransferTimeout(f"{what} exceeded its time bound; session dropped")


@contextmanager
def _dropped_on_cut(sftp: Any, remote_path: str, deadline: float, stall_timeout: float, received: list[int]):
    """Around one file's transfer: a :class:`_Cut` drops the session before its error surfaces; so
    does an interruption (KeyboardInterrupt, the task being killed), which may come mid-request."""
    try:
        yield
    except _Cut as cut:
        drop_session(sftp)
        raise _cut_error(cut.cause, f"fetch of {remote_path} (after {received[0]} bytes)", deadline,
                         stall_timeout) from cut.cause
    except Exception:
        raise
    except BaseException:
        drop_session(sftp)
        raise


def _guarded(call, *args):
    """``call(*args)`` on the SFTP client, a session failure raised as :class:`_Cut`."""
    try:
        return call(*args)
    except Exception as exc:
        if _is_session_failure(exc):
            raise _Cut(exc) from exc
        raise


class _Wire:
    """The requests of one file's transfer on a paramiko session. Every wait is armed with a channel
    timeout within the deadline (a stalled server cannot block for ever); every failure of a
    session call, and the deadline passing while an answer is owed, raise :class:`_Cut`."""

    def __init__(self, sftp: Any, deadline: float, stall_timeout: float) -> None:
        self.sftp = sftp
        self.channel = sftp.get_channel()
        self.deadline = deadline
        self.stall_timeout = stall_timeout
        self.responses = _Responses()

    def arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Cut(None)
        self.channel.settimeout(max(0.001, min(self.stall_timeout, remaining)))

    def send(self, cmd: int, *args: Any) -> int:
        try:
            return self.sftp._async_request(self.responses, cmd, *args)
        except Exception as exc:  # possibly half a packet sent: the server's side is cut too
            raise _Cut(exc) from exc

    def wait_for(self, num: int) -> tuple[int, Any]:
        by_num = self.responses.by_num
        while num not in by_num:
            self.arm()
            try:
                self.sftp._read_response()
            except Exception as exc:  # a timeout here may have taken part of a packet
                raise _Cut(exc) from exc
        return by_num.pop(num)


def _pipelined_copy(sftp: Any, remote_path: str, out, digest, deadline: float, request_size: int,
                    max_requests: int, stall_timeout: float, expected_size: int | None = None,
                    expected_mtime: int | None = None, classify: bool = False) -> int:
    """Own pipelined reads of one file into ``out`` and ``digest`` (see the module docstring).

    The path is checked before anything is read: an LSTAT goes out immediately before the OPEN (same
    burst, answered first) and must show the listed regular file
    (:func:`~include.intake.links.opened_path`: a link is :class:`NotRegularFile`, another
    size/mtime :class:`HandleMismatch`). Then the handle: an FSTAT goes out with the first reads and
    must show a regular file of the LSTAT's size and mtime, else :class:`HandleMismatch` (a
    :class:`FileChangedError`); with ``classify`` an LSTAT of the path then tells what it is now
    (:func:`~include.intake.links.refusal`: a link is :class:`NotRegularFile`).

    A file-level error (an SFTP status, a changed size, a local write) leaves the session clean:
    owed answers drained, handle closed. A timeout, or a failure of the session, drops it
    (:func:`drop_session`) and raises :class:`TransferTimeout` / :class:`SessionBroken`;
    ``FileNotFoundError`` at the open passes through."""
    from paramiko.sftp import CMD_CLOSE, CMD_LSTAT

    wire = _Wire(sftp, deadline, stall_timeout)
    previous_timeout = wire.channel.gettimeout()
    inflight: deque[tuple[int, int, int]] = deque()
    received = [0]
    sink = (_InlineSink(out, digest) if expected_size is not None and expected_size <= INLINE_SINK_MAX
            else _Sink(out, digest))
    try:
        with _dropped_on_cut(sftp, remote_path, deadline, stall_timeout, received):
            wire.arm()
            path_check = wire.send(CMD_LSTAT, _server_path(sftp, remote_path))  # answered before the OPEN
            remote = _guarded(sftp.open, remote_path, "rb")
            check = None
            try:
                listed = opened_path(lstat_answer(*wire.wait_for(path_check), remote_path), remote_path,
                                     expected_size, expected_mtime)
                check = _HandleCheck(wire, remote.handle, remote_path, *listed)
                _read_pipelined(wire, remote.handle, remote_path, sink, request_size, max_requests,
                                expected_size, inflight, received, check)
            except _Cut:
                raise
            except Exception as exc:
                _drain(wire, inflight)
                if check is not None:
                    check.settle()
                _close_handle(wire, remote, CMD_CLOSE)
                if classify and check is not None and isinstance(exc, HandleMismatch):  # FSTAT's: what is it now?
                    wire.arm()
                    raise refusal(remote_path, exc.problem, lambda path: _guarded(sftp.lstat, path)) from None
                raise
            _drain(wire, inflight)
            _close_handle(wire, remote, CMD_CLOSE)
    except BaseException:
        sink.abandon()
        raise
    finally:
        try:
            wire.channel.settimeout(previous_timeout)
        except Exception:
            pass
    sink.close()
    return received[0]


class _HandleCheck:
    """The FSTAT of one opened handle, sent before its reads (so answered before them): verified at
    the first answer of the file, before any byte is written or hashed. No round trip of its own."""

    def __init__(self, wire: _Wire, handle: bytes, remote_path: str, expected_size: int | None,
                 expected_mtime: int | None) -> None:
        from paramiko.sftp import CMD_FSTAT

        self.wire = wire
        self.remote_path = remote_path
        self.expected = (expected_size, expected_mtime)
        self.num: int | None = wire.send(CMD_FSTAT, handle)

    def verify(self) -> None:
        if self.num is None:
            return
        num, self.num = self.num, None
        t, msg = self.wire.wait_for(num)
        problem = fstat_problem(t, msg, self.remote_path, *self.expected)
        if problem:
            raise HandleMismatch(self.remote_path, problem)

    def settle(self) -> None:
        """After an error: the answer is owed, read it unused."""
        if self.num is not None:
            num, self.num = self.num, None
            self.wire.wait_for(num)


def _drain(wire: _Wire, inflight: deque) -> None:
    """Answers to requests past the end (or after an error): read, unused."""
    while inflight:
        wire.wait_for(inflight.popleft()[0])


def _close_handle(wire: _Wire, remote: Any, cmd_close: int) -> None:
    """CLOSE through the wire (armed, and a failure is a :class:`_Cut`), answer awaited, status
    ignored as paramiko's ``close()`` does; the file object is then marked closed so it never
    sends a CLOSE of its own (the server may have given the handle to another file by then)."""
    wire.wait_for(wire.send(cmd_close, remote.handle))
    remote._closed = True


def _read_pipelined(wire: _Wire, handle: bytes, remote_path: str, sink, request_size: int, max_requests: int,
                    expected_size: int | None, inflight: deque, received: list[int], check: _HandleCheck) -> None:
    from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, int64

    next_offset = 0
    while True:
        # With a known size, ask for nothing past one probe at the end (it confirms EOF, or shows
        # the file grew): a small file costs two requests, not max_requests.
        while len(inflight) < max_requests and (expected_size is None or next_offset <= expected_size or not inflight):
            num = wire.send(CMD_READ, handle, int64(next_offset), int(request_size))
            inflight.append((num, next_offset, request_size))
            next_offset += request_size
        num, offset, length = inflight.popleft()
        t, msg = wire.wait_for(num)
        check.verify()  # the first answer of the file: nothing of it is used before the handle is checked
        if t == CMD_STATUS:
            code = msg.get_int()
            if code == SFTP_EOF:
                return
            raise TransferError(f"read of {remote_path} failed at offset {offset}: SFTP status {code}")
        if t != CMD_DATA:
            raise TransferError(f"read of {remote_path}: unexpected SFTP response type {t}")
        data = msg.get_string()
        sink.write(data)
        received[0] += len(data)
        if expected_size is not None and received[0] > expected_size:
            raise FileChangedError(f"{remote_path} changed while fetching: listed {expected_size} bytes, "
                                   f"read more than that")
        if len(data) < length:
            # Short read before EOF: the server caps read lengths. Drop the queued requests, continue
            # where the data stopped (the file stays in order) and ask for that size from now on, so
            # it happens once per file.
            _drain(wire, inflight)
            next_offset = offset + len(data)
            if expected_size is None or next_offset < expected_size:
                request_size = max(len(data), 4096)


def _sequential_copy(sftp: Any, remote_path: str, out, digest, deadline: float, request_size: int,
                     expected_size: int | None = None, expected_mtime: int | None = None) -> int:
    """``open()`` + ``read()`` for clients without paramiko's internals; the deadline is checked
    between reads (there is no channel of ours to arm). The path and the handle are checked as in
    :func:`_pipelined_copy` when the client has ``lstat`` (here a round trip before the OPEN) and the
    opened file object ``stat()`` (paramiko's is FSTAT); one without them cannot be checked.
    Timeouts and session failures as in :func:`_pipelined_copy`."""
    received = [0]
    lstat = getattr(sftp, "lstat", None)
    with _dropped_on_cut(sftp, remote_path, deadline, DEFAULT_STALL_TIMEOUT, received):
        if callable(lstat):  # no such path: FileNotFoundError, i.e. vanished
            expected_size, expected_mtime = opened_path(_guarded(lstat, remote_path), remote_path,
                                                        expected_size, expected_mtime)
        remote = _guarded(sftp.open, remote_path, "rb")
        try:
            if callable(getattr(remote, "stat", None)):
                problem = handle_problem(_guarded(remote.stat), expected_size, expected_mtime)
                if problem:
                    raise (refusal(remote_path, problem, lstat) if callable(lstat)
                           else HandleMismatch(remote_path, problem))
            while True:
                if time.monotonic() > deadline:
                    raise _Cut(None)
                data = _guarded(remote.read, request_size)
                if not data:
                    break
                out.write(data)
                digest.update(data)
                received[0] += len(data)
        except _Cut:
            raise  # not closed: the session is dropped
        except Exception:
            _guarded(remote.close)  # a session failure here replaces the error: the session goes
            raise
        _guarded(remote.close)
    return received[0]


def fetch_to_file(
    sftp: Any,
    remote_path: str,
    local_path: str | os.PathLike,
    *,
    expected_size: int | None = None,
    expected_mtime: int | None = None,
    timeout: float | None = None,
    min_rate: float = DEFAULT_MIN_RATE,
    timeout_floor: float = DEFAULT_TIMEOUT_FLOOR,
    request_size: int = DEFAULT_REQUEST_SIZE,
    max_requests: int = DEFAULT_MAX_REQUESTS,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
) -> FetchResult:
    """Stream ``remote_path`` into ``local_path`` and return its size and sha256.

    The data goes to ``<local_path>.partial`` first and is renamed into place only when complete, so
    a crash never leaves a truncated file under the final name. Nothing is held in memory beyond
    the requests in flight.

    :param expected_size: size from the listing; a different size at the end means the file changed
        while we read it (:class:`TransferError`).
    :param expected_mtime: mtime from the listing. The path (an LSTAT sent with the OPEN) and the
        opened handle (FSTAT) must both be a regular file of ``expected_size`` bytes and this mtime
        before any byte is used; a path swapped for a symbolic link raises :class:`NotRegularFile`
        (even to a file of the same size and mtime), a rewritten file :class:`FileChangedError`
        (see :mod:`include.intake.links` for the window that remains).
    :param timeout: overall bound in seconds; default ``time_bound(expected_size, ...)``.
    :param stall_timeout: longest wait for one answer.
    :raises TransferTimeout: the bound or the stall timeout was exceeded, or the session failed
        after the deadline; the session has been dropped (:func:`drop_session`).
    :raises SessionBroken: the session failed before the deadline; it has been dropped.
    :raises TransferError: the file vanished, changed size, the server refused a request, or a local
        write failed; the session stays usable.
    """
    local = Path(local_path)
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".partial")
    bound = timeout if timeout is not None else time_bound(expected_size, min_rate=min_rate, timeout_floor=timeout_floor)
    started = time.monotonic()
    deadline = started + bound
    digest = hashlib.sha256()
    pipelined = _supports_pipelining(sftp)
    try:
        with open(partial, "wb") as out:
            if pipelined:
                tune_session(sftp)
                size = _pipelined_copy(sftp, remote_path, out, digest, deadline, request_size, max_requests,
                                       stall_timeout, expected_size, expected_mtime, classify=True)
            else:
                size = _sequential_copy(sftp, remote_path, out, digest, deadline, request_size, expected_size,
                                        expected_mtime)
    except TransferError:  # TransferTimeout, SessionBroken: the session has been dropped
        partial.unlink(missing_ok=True)
        raise
    except FileNotFoundError as exc:
        partial.unlink(missing_ok=True)
        raise FileVanishedError(f"{remote_path} vanished before it could be fetched") from exc
    except OSError as exc:  # an SFTP status of the server, or the local disk
        partial.unlink(missing_ok=True)
        raise TransferError(f"fetch of {remote_path} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # a session failure that escaped the guards: the session goes
        partial.unlink(missing_ok=True)
        if not _is_session_failure(exc):
            raise
        drop_session(sftp)
        raise _cut_error(exc, f"fetch of {remote_path}", deadline, stall_timeout) from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if expected_size is not None and size != expected_size:
        partial.unlink(missing_ok=True)
        raise FileChangedError(f"{remote_path} changed while fetching: listed {expected_size} bytes, read {size}")
    os.replace(partial, local)
    return FetchResult(str(local), size, digest.hexdigest(), time.monotonic() - started,
                       "pipelined" if pipelined else "sequential")


# ---- many small files over one session, pipelined across files ------------------------------------
#: Files of a known size up to this go through :func:`fetch_many_to_files`' cross-file pipeline.
PIPELINE_MAX_SIZE = 1024 * 1024
#: Files in the window (opened or being opened, read, closed; or done and waiting for their turn).
DEFAULT_WINDOW_FILES = 32
#: Sum of the listed sizes of the files in the window (bounds the data outstanding/buffered; the
#: first file is admitted whatever its size). 2 MiB = paramiko's default channel window.
DEFAULT_WINDOW_BYTES = 2 * 1024 * 1024
#: Length of the read at the listed size that confirms end of file (any data there: the file grew).
_PROBE_LENGTH = 1

#: A file of up to this many bytes is read with one request of its size + 1: an answer of exactly
#: its size is end of file (SFTP v3: a read of a disk file returns the bytes asked for or up to the
#: end; read caps of servers are 32 KiB or more, so they cannot cut such a read short at exactly
#: the listed size), one byte more means it grew. A shorter answer falls back to the piecewise
#: reads and the probe.
SINGLE_READ_MAX = 32 * 1024 - 1

#: Request kinds: _PATH is the LSTAT sent just before the OPEN, _LSTAT the one after an FSTAT mismatch.
_OPEN, _READ, _PROBE, _CLOSE, _WHOLE, _FSTAT, _LSTAT, _PATH = range(8)
_KIND_NAMES = ("OPEN", "READ", "READ", "CLOSE", "READ", "FSTAT", "LSTAT", "LSTAT")


@dataclass(frozen=True)
class FetchJob:
    """One file for :func:`fetch_many_to_files`: like the arguments of :func:`fetch_to_file`, with
    a known ``expected_size`` (the listing's)."""

    remote_path: str
    local_path: str | os.PathLike
    expected_size: int
    timeout: float | None = None  # None: time_bound(expected_size, ...)
    expected_mtime: int | None = None  # the listing's; None: the handle check compares type and size only


@dataclass
class PipelineStats:
    """Counters of :func:`fetch_many_to_files` (also to show that requests were really in flight together)."""

    files: int = 0
    requests: int = 0
    max_requests_in_flight: int = 0
    max_files_in_flight: int = 0
    handles_opened: int = 0
    handles_closed: int = 0  # CLOSE answered (the rest is closed with the session after a timeout)


def supports_batch_pipelining(sftp: Any) -> bool:
    """True for a paramiko ``SFTPClient`` (or a proxy forwarding to one) whose ``open`` is paramiko's
    own: the cross-file pipeline sends OPEN/READ/CLOSE itself, so a wrapper that changes how files
    are opened keeps the per-file path (:func:`fetch_to_file`)."""
    if not _supports_pipelining(sftp):
        return False
    try:
        from paramiko import SFTPClient
    except ImportError:  # pragma: no cover - paramiko is a dependency
        return False
    return getattr(getattr(sftp, "open", None), "__func__", None) is SFTPClient.open


class _File:
    __slots__ = ("index", "remote", "size", "mtime", "local", "partial", "bound", "handle", "data", "digest", "reads",
                 "chunks", "written", "received", "error", "state", "started", "outcome", "saving", "mismatch",
                 "path_answer")

    def __init__(self, index: int, job: FetchJob, bound: float) -> None:
        self.index = index
        self.remote = job.remote_path
        self.size = int(job.expected_size)
        self.mtime = job.expected_mtime
        self.mismatch: str | None = None  # how the handle differs from the listing (FSTAT), until LSTAT tells why
        self.path_answer: tuple[int, Any] | None = None  # the answer to the LSTAT sent just before the OPEN
        self.local = Path(job.local_path)
        self.partial = self.local.with_name(self.local.name + ".partial")
        self.bound = bound
        self.handle: bytes | None = None
        self.data: list[bytes] = []  # received in order, written to disk when the file is complete
        self.digest = hashlib.sha256()
        self.reads = 0  # read requests outstanding
        self.chunks: dict[int, bytes] = {}  # received, not yet written (arrived ahead of an earlier chunk)
        self.written = 0
        self.received = 0
        self.error: TransferError | None = None
        self.state = "opening"  # -> reading -> closing -> done
        self.started = time.monotonic()
        self.outcome: FetchResult | TransferError | None = None
        self.saving = None  # Future of the local write (open .partial, write, rename)


class _BatchPipeline:
    """The state machine of :func:`fetch_many_to_files` (one instance per call)."""

    def __init__(self, sftp: Any, jobs: list[FetchJob], *, min_rate: float, timeout_floor: float,
                 request_size: int, window_files: int, window_bytes: int, stall_timeout: float,
                 stats: PipelineStats | None) -> None:
        from paramiko import sftp as proto
        from paramiko.sftp_attr import SFTPAttributes

        self.p = proto
        self.attributes = SFTPAttributes
        self.sftp = sftp
        self.jobs = jobs
        self.min_rate = min_rate
        self.timeout_floor = timeout_floor
        self.request_size = max(1, int(request_size))
        self.window_files = max(1, int(window_files))
        self.window_bytes = window_bytes
        self.stall_timeout = stall_timeout
        self.stats = stats if stats is not None else PipelineStats()
        self.channel = sftp.get_channel()
        self.responses = _Responses()
        self.requests: dict[int, tuple[_File, int, int, int]] = {}  # num -> (file, kind, offset, length)
        self.active: deque[_File] = deque()  # admitted, not yet handed out, in the given order
        self.active_bytes = 0
        self.next_job = 0
        self.head_since = time.monotonic()
        self.made_dirs: set[Path] = set()
        self.saver = None  # ThreadPoolExecutor of the local writes, started with the first complete file

    # -- requests ------------------------------------------------------------------------------
    def _send(self, f: _File, kind: int, cmd: int, *args: Any, offset: int = 0, length: int = 0) -> None:
        num = self.sftp._async_request(self.responses, cmd, *args)
        self.requests[num] = (f, kind, offset, length)
        self.stats.requests += 1
        if len(self.requests) > self.stats.max_requests_in_flight:
            self.stats.max_requests_in_flight = len(self.requests)

    def _read(self, f: _File, offset: int, length: int, kind: int = _READ) -> None:
        self._send(f, kind, self.p.CMD_READ, f.handle, self.p.int64(offset), int(length), offset=offset, length=length)
        f.reads += 1

    def _close_remote(self, f: _File) -> None:
        f.state = "closing"
        self._send(f, _CLOSE, self.p.CMD_CLOSE, f.handle)

    def _admit(self) -> None:
        while self.next_job < len(self.jobs) and len(self.active) < self.window_files:
            job = self.jobs[self.next_job]
            if self.active and self.active_bytes + job.expected_size > self.window_bytes:
                break
            bound = job.timeout if job.timeout is not None else time_bound(
                job.expected_size, min_rate=self.min_rate, timeout_floor=self.timeout_floor)
            f = _File(self.next_job, job, bound)
            self.next_job += 1
            if not self.active:
                self.head_since = f.started
            self.active.append(f)
            self.active_bytes += f.size
            busy = sum(1 for a in self.active if a.state != "done")
            self.stats.max_files_in_flight = max(self.stats.max_files_in_flight, busy)
            try:
                path = _server_path(self.sftp, f.remote)
            except (UnicodeError, TypeError) as exc:
                f.error = TransferError(f"fetch of {f.remote} failed: {type(exc).__name__}: {exc}")
                self._finalize(f)
                continue
            # The LSTAT right before the OPEN, in the same burst: answered first, it shows what the
            # path was just before the OPEN resolved it (a link is refused before anything is read).
            self._send(f, _PATH, self.p.CMD_LSTAT, path)
            self._send(f, _OPEN, self.p.CMD_OPEN, path, self.p.SFTP_FLAG_READ, self.attributes())

    # -- responses -----------------------------------------------------------------------------
    def _process_responses(self) -> None:
        by_num = self.responses.by_num
        while by_num:
            for num in list(by_num):
                t, msg = by_num.pop(num)
                request = self.requests.pop(num, None)
                if request is not None:
                    self._handle(t, msg, *request)

    def _handle(self, t: int, msg: Any, f: _File, kind: int, offset: int, length: int) -> None:
        p = self.p
        if kind == _PATH:
            f.path_answer = (t, msg)
        elif kind == _OPEN:
            self._on_open(f, t, msg)
        elif kind == _CLOSE:
            self.stats.handles_closed += 1
            if t == p.CMD_STATUS:
                code = msg.get_int()
                if code != p.SFTP_OK and f.error is None:
                    f.error = TransferError(f"close of {f.remote} failed: SFTP status {code} ({_status_text(msg)})")
            elif f.error is None:
                f.error = TransferError(f"close of {f.remote}: unexpected SFTP response type {t}")
            self._finalize(f)
        else:
            f.reads -= 1  # FSTAT and LSTAT count as reads: the CLOSE waits for them too
            if kind == _FSTAT:
                self._on_fstat(f, t, msg)
            elif kind == _LSTAT:
                self._on_lstat(f, t, msg)
            else:
                self._on_read(f, t, msg, kind, offset, length)
            if f.reads == 0 and f.state == "reading":
                if f.error is None and (f.written != f.size or f.chunks):
                    f.error = FileChangedError(f"{f.remote} changed while fetching: listed {f.size} bytes, "
                                               f"read {f.received}")
                self._close_remote(f)

    def _on_open(self, f: _File, t: int, msg: Any) -> None:
        p = self.p
        if t == p.CMD_HANDLE:
            f.handle = msg.get_binary()
            self.stats.handles_opened += 1
            if f.error is not None:  # abandoned while its OPEN was on the way
                self._close_remote(f)
                return
            f.state = "reading"
            try:
                f.mtime = self._path_verdict(f)
            except TransferError as exc:  # a link (NotRegularFile), rewritten, not checkable: nothing read
                f.error = exc
                self._close_remote(f)
                return
            # The handle check goes out first (answered before the reads): no byte is used unchecked.
            self._send(f, _FSTAT, p.CMD_FSTAT, f.handle)
            f.reads += 1
            if f.size <= SINGLE_READ_MAX:
                self._read(f, 0, f.size + 1, _WHOLE)
                return
            # The listed bytes in request_size pieces, and one probe at the listed size that must
            # answer end of file (data there: the file grew). All at once: no round trip between them.
            for offset in range(0, f.size, self.request_size):
                self._read(f, offset, min(self.request_size, f.size - offset))
            self._read(f, f.size, _PROBE_LENGTH, _PROBE)
            return
        if t == p.CMD_STATUS:
            code = msg.get_int()
            if code == p.SFTP_NO_SUCH_FILE:
                f.error = f.error or FileVanishedError(f"{f.remote} vanished before it could be fetched")
            else:
                f.error = f.error or TransferError(
                    f"fetch of {f.remote} failed: open: SFTP status {code} ({_status_text(msg)})")
        else:
            f.error = f.error or TransferError(f"open of {f.remote}: unexpected SFTP response type {t}")
        self._finalize(f)  # no handle: nothing to close

    def _path_verdict(self, f: _File) -> int:
        """The LSTAT sent before ``f``'s OPEN against the listing: the mtime its FSTAT must show."""
        answer, f.path_answer = f.path_answer, None
        if answer is None:  # a server answering out of order: the path cannot be vouched for
            raise TransferError(f"fetch of {f.remote} failed: the server answered its OPEN before its LSTAT")
        return opened_path(lstat_answer(*answer, f.remote), f.remote, f.size, f.mtime)[1]

    def _on_fstat(self, f: _File, t: int, msg: Any) -> None:
        """The handle against the listing; a mismatch voids the file (its data is drained unused) and
        an LSTAT of the path says what it is now (:func:`~include.intake.links.refusal`)."""
        try:
            problem = fstat_problem(t, msg, f.remote, f.size, f.mtime)
        except TransferError as exc:
            f.error = f.error or exc
            return
        if problem is None or f.error is not None:
            return
        f.mismatch = problem
        f.error = HandleMismatch(f.remote, problem)
        self._send(f, _LSTAT, self.p.CMD_LSTAT, _server_path(self.sftp, f.remote))
        f.reads += 1

    def _on_lstat(self, f: _File, t: int, msg: Any) -> None:
        p = self.p

        def lstat(_path: str):
            if t == p.CMD_ATTRS:
                return self.attributes._from_msg(msg)
            code = msg.get_int() if t == p.CMD_STATUS else None
            if code == p.SFTP_NO_SUCH_FILE:
                raise FileNotFoundError(f.remote)
            raise OSError(f"SFTP status {code}" if code is not None else f"unexpected SFTP response type {t}")

        if isinstance(f.error, HandleMismatch):  # not replaced by a later error meanwhile
            f.error = refusal(f.remote, f.mismatch or "", lstat)

    def _on_read(self, f: _File, t: int, msg: Any, kind: int, offset: int, length: int) -> None:
        p = self.p
        if t == p.CMD_DATA:
            data = msg.get_string()
            f.received += len(data)
            if f.error is not None:
                return  # answers after an error of this file: drained, unused
            if kind == _PROBE or (kind == _WHOLE and len(data) > f.size):
                if data:
                    f.error = FileChangedError(f"{f.remote} changed while fetching: listed {f.size} bytes, "
                                               f"read more than that")
                return
            if kind == _WHOLE:
                if data:
                    f.chunks[0] = data
                    self._write_ready(f)
                if 0 < len(data) < f.size:  # cut short: the rest piecewise, then the end-of-file probe
                    self._read(f, len(data), f.size - len(data))
                    self._read(f, f.size, _PROBE_LENGTH, _PROBE)
                return
            if len(data) > length:
                f.error = TransferError(f"read of {f.remote} at offset {offset}: {len(data)} bytes for a request "
                                        f"of {length}")
                return
            if data:
                f.chunks[offset] = data
                self._write_ready(f)
                if len(data) < length and f.error is None:
                    # Short read before the listed end (a server capping read lengths, or the file
                    # shrank): ask for the rest of this piece; end of file there means it shrank.
                    self._read(f, offset + len(data), length - len(data))
            return  # empty data: nothing more here, the size check at the end decides
        if t == p.CMD_STATUS:
            code = msg.get_int()
            if code == p.SFTP_EOF:
                return  # at the probe: as expected; before the listed size: the size check decides
            if f.error is None:
                f.error = TransferError(f"read of {f.remote} failed at offset {offset}: SFTP status {code}")
            return
        if f.error is None:
            f.error = TransferError(f"read of {f.remote}: unexpected SFTP response type {t}")

    def _write_ready(self, f: _File) -> None:
        chunks = f.chunks
        while f.written in chunks:
            data = chunks.pop(f.written)
            f.data.append(data)
            f.digest.update(data)
            f.written += len(data)

    def _finalize(self, f: _File) -> None:
        """The remote side of ``f`` is over (closed, or never opened): its outcome, or its local write."""
        f.state = "done"
        f.chunks = {}
        if f.error is not None:
            f.data = []
            f.outcome = f.error
            return
        # Complete and verified: write it locally on the helper thread (file creation and rename cost
        # about as much as the SFTP requests here), while this thread carries on with the session.
        if self.saver is None:
            from concurrent.futures import ThreadPoolExecutor

            self.saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intake-fetch-save")
        data, f.data = f.data, []
        f.saving = self.saver.submit(self._save, f.remote, f.local, f.partial, data)

    def _save(self, remote: str, local: Path, partial: Path, data: list[bytes]) -> TransferError | None:
        """Helper thread: ``<local>.partial`` written and renamed into place (a crash never leaves a
        truncated file under the final name)."""
        try:
            parent = local.parent
            if parent not in self.made_dirs:
                parent.mkdir(parents=True, exist_ok=True)
                self.made_dirs.add(parent)
            with open(partial, "wb") as out:
                out.writelines(data)
            os.replace(partial, local)
        except OSError as exc:
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass  # e.g. its folder could not be made: then there is no partial either
            return TransferError(f"fetch of {remote} failed: {type(exc).__name__}: {exc}")
        return None

    def _settle(self, f: _File) -> None:
        """Wait for the local write of ``f`` and set its outcome."""
        if f.saving is None:
            return
        error, f.saving = f.saving.result(), None
        if error is not None:
            f.outcome = f.error = error
        else:
            f.outcome = FetchResult(str(f.local), f.size, f.digest.hexdigest(), time.monotonic() - f.started,
                                    "pipelined")
            self.stats.files += 1

    # -- timing --------------------------------------------------------------------------------
    def _deadline(self) -> float:
        # The head's clock starts when it becomes the head (the file before it was handed out), so
        # each file gets its own bound as if the files were fetched one after another.
        return self.head_since + self.active[0].bound if self.active else time.monotonic() + self.stall_timeout

    def _arm(self) -> float:
        deadline = self._deadline()
        self.channel.settimeout(max(0.001, min(self.stall_timeout, deadline - time.monotonic())))
        return deadline

    def _stalled(self) -> tuple[_File, str]:
        """The file the session is stuck on: the owner of the oldest unanswered request (a server
        answers in order, OpenSSH's does), else the head."""
        active = {id(f) for f in self.active}
        for num in sorted(self.requests):
            f, kind, _, _ = self.requests[num]
            if id(f) in active and f.state != "done":
                return f, _KIND_NAMES[kind]
        return self.active[0], "request"

    def _timeout(self, f: _File, request: str, deadline: float, exc: BaseException | None = None) -> TransferTimeout:
        return _cut_error(exc, f"fetch of {f.remote} (after {f.received} bytes, no answer to its {request})",
                          deadline, self.stall_timeout)

    # -- the loop ------------------------------------------------------------------------------
    def run(self):
        previous_timeout = self.channel.gettimeout()
        ending = "abandoned"  # unless the loop ends otherwise: the consumer stopped early, or a bug
        error: BaseException | None = None
        try:
            while self.next_job < len(self.jobs) or self.active:
                try:
                    self._arm()
                    self._admit()
                    self._process_responses()
                    head = self.active[0]
                    if head.state != "done" or (head.saving is not None and not head.saving.done() and self.requests):
                        # Wait for an answer (the head's, or any while the head is being written locally).
                        if time.monotonic() > self._deadline():
                            raise TransferTimeout("deadline")
                        self._arm()
                        self.sftp._read_response()
                        self._process_responses()
                        continue
                except TransferTimeout:  # the deadline check above: no cause
                    ending, error = "timeout", None
                    break
                except Exception as exc:
                    if not (isinstance(exc, OSError) or _is_session_failure(exc)):
                        raise
                    ending, error = ("timeout" if _counts_as_timeout(exc, self._deadline()) else "broken"), exc
                    break
                except BaseException:  # KeyboardInterrupt, the task being killed: mid-call, maybe mid-packet
                    ending = "interrupted"
                    raise
                self._settle(head)
                self.active.popleft()
                self.active_bytes -= head.size
                self.channel.settimeout(previous_timeout)  # the caller may use the session meanwhile
                yield head.index, head.outcome
                self.head_since = time.monotonic()
            else:
                ending = "complete"
            if ending == "complete":
                return
            deadline = self._deadline()
            # Possibly cut in the middle of a packet: closed before any error is handed out, so that
            # nothing can read from it again.
            drop_session(self.sftp)
            while self.active and self.active[0].state == "done":  # finished before it went wrong
                f = self.active.popleft()
                self._settle(f)
                yield f.index, f.outcome
            if ending == "timeout":
                # The time bound is the head's, the blame goes to the file the server is stuck on;
                # the unfinished files before it are not attempted, and nothing after it is handed out.
                stalled, request = self._stalled()
                for f in self.active:
                    if f is stalled:
                        yield f.index, self._timeout(f, request, deadline, error)
                        return
                    if f.state == "done":
                        self._settle(f)
                        yield f.index, f.outcome
                    else:
                        yield f.index, NotAttempted(f"{f.remote} not fetched: the session timed out on {stalled.remote}")
                return
            # The session is gone: every file not handed out yet gets a transfer error.
            failure = _cut_error(error, f"fetch of {self.active[0].remote}", deadline, self.stall_timeout)
            yield self.active[0].index, failure
            for f in list(self.active)[1:]:
                if f.state == "done":
                    self._settle(f)
                    yield f.index, f.outcome
                else:
                    yield f.index, SessionBroken(f"fetch of {f.remote} failed: the session failed ({failure})")
            for index in range(self.next_job, len(self.jobs)):
                yield index, SessionBroken(f"fetch of {self.jobs[index].remote_path} failed: "
                                           f"the session failed ({failure})")
        finally:
            self._cleanup(ending)
            try:
                self.channel.settimeout(previous_timeout)
            except Exception:
                pass

    def _cleanup(self, ending: str) -> None:
        unfinished = [f for f in self.active if f.state != "done"]
        if ending == "abandoned" and unfinished:
            # Healthy session, caller stopped early (or an unexpected error): let the answers come
            # in, close every handle, for a bounded time.
            for f in unfinished:
                f.error = f.error or TransferError(f"fetch of {f.remote} abandoned")
            limit = time.monotonic() + min(self.stall_timeout, 10.0)
            try:
                while self.requests and time.monotonic() < limit:
                    self.channel.settimeout(max(0.001, limit - time.monotonic()))
                    self.sftp._read_response()
                    self._process_responses()
            except Exception:  # the wait may have cut a packet: the session cannot be read again
                drop_session(self.sftp)
        elif ending == "interrupted":
            drop_session(self.sftp)  # stopped in the middle of a session call
        # After a timeout or a failure the session is already dropped: its end closes the handles.
        for f in self.active:
            if f.state != "done":
                f.state, f.data, f.chunks = "done", [], {}
                f.outcome = f.outcome or f.error
        if self.saver is not None:
            self.saver.shutdown(wait=True)  # local writes in progress finish: no .partial left behind


def _status_text(msg: Any) -> str:
    try:
        return msg.get_text()
    except Exception:
        return ""


def fetch_many_to_files(
    sftp: Any,
    jobs: list[FetchJob],
    *,
    min_rate: float = DEFAULT_MIN_RATE,
    timeout_floor: float = DEFAULT_TIMEOUT_FLOOR,
    request_size: int = DEFAULT_REQUEST_SIZE,
    window_files: int = DEFAULT_WINDOW_FILES,
    window_bytes: int = DEFAULT_WINDOW_BYTES,
    stall_timeout: float = DEFAULT_STALL_TIMEOUT,
    stats: PipelineStats | None = None,
):
    """Fetch many small files over one paramiko session with requests of several files in flight.

    A generator of ``(index into jobs, FetchResult | TransferError)`` in the order of ``jobs``. Up
    to ``window_files`` files (and ``window_bytes`` of listed sizes) are in flight: an LSTAT of each
    file's path and its OPEN are sent together as it enters the window (the path checks of
    :func:`fetch_to_file`); on its handle, its FSTAT, reads covering the listed size and one probe
    read at the listed size (must be end of file) go out together; when they are answered, CLOSE.
    Per file the rules of :func:`fetch_to_file`: ``<local>.partial`` renamed into place when
    complete, sha256 of the bytes received, more or fewer bytes than listed → ``FileChangedError``,
    no such file at OPEN → ``FileVanishedError``, another SFTP error → ``TransferError``; every
    handle opened is closed, also after an error of that file.

    Time: each file gets its bound (``job.timeout``, else ``time_bound(expected_size)``) from the
    moment the file before it was handed out, as if fetched one after another; the channel gets a
    socket timeout. Exceeding it drops the session (:func:`drop_session`), then yields
    ``TransferTimeout`` for the file the server is stuck on and ends the generator: the unfinished
    files before it get ``NotAttempted``, the files after it are not handed out. A session that
    fails before the deadline is dropped too and yields a ``SessionBroken`` for every file not
    handed out yet.

    Between items the channel timeout is the caller's, so the caller may use the session (e.g. read
    a manifest) before asking for the next item. Close the generator if you stop early: it then
    waits (bounded) for the outstanding answers and closes the handles.

    Use it for files up to :data:`PIPELINE_MAX_SIZE` and clients where
    :func:`supports_batch_pipelining` holds; :func:`fetch_to_file` for the others.
    """
    jobs = list(jobs)
    if jobs:
        tune_session(sftp)
    pipeline = _BatchPipeline(sftp, jobs, min_rate=min_rate, timeout_floor=timeout_floor, request_size=request_size,
                              window_files=window_files, window_bytes=window_bytes, stall_timeout=stall_timeout,
                              stats=stats)
    return pipeline.run()
