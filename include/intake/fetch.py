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

Time is bounded: a deadline of ``timeout_floor + size / min_rate`` (or an explicit ``timeout``) is
checked between responses, and the channel gets a socket timeout so a stalled server cannot block
a read for ever. Exceeding it raises :class:`TransferTimeout`; the session then still carries
abandoned requests and must be closed by the caller.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.intake.errors import FileChangedError, FileVanishedError, TransferError, TransferTimeout

#: 128 KiB requests, 16 in flight: 2 MiB outstanding = paramiko's default channel window. Bigger
#: requests cost less Python per byte; OpenSSH's sftp-server answers up to ~255 KiB per read (a
#: larger request gets a short read, after which the reader adapts its request size).
DEFAULT_REQUEST_SIZE = 128 * 1024
DEFAULT_MAX_REQUESTS = 16
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


#: Files of a known size up to this are written by :class:`_InlineSink` (no helper thread).
INLINE_SINK_MAX = 1024 * 1024


class _Responses:
    """Receives paramiko's asynchronous read responses (the ``fileobj`` of ``_async_request``)."""

    def __init__(self) -> None:
        self.by_num: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.by_num[num] = (t, msg)


def _pipelined_copy(sftp: Any, remote_path: str, out, digest, deadline: float, request_size: int,
                    max_requests: int, stall_timeout: float, expected_size: int | None = None) -> int:
    from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, int64

    channel = sftp.get_channel()
    previous_timeout = channel.gettimeout()
    channel.settimeout(stall_timeout)
    responses = _Responses()
    inflight: deque[tuple[int, int, int]] = deque()
    total = 0
    sink = (_InlineSink(out, digest) if expected_size is not None and expected_size <= INLINE_SINK_MAX
            else _Sink(out, digest))

    def wait_for(num: int) -> tuple[int, Any]:
        while num not in responses.by_num:
            if time.monotonic() > deadline:
                raise TransferTimeout(f"fetch of {remote_path} exceeded its time bound after {total} bytes")
            sftp._read_response()
        return responses.by_num.pop(num)

    try:
        with sftp.open(remote_path, "rb") as remote:
            handle = remote.handle
            next_offset = 0
            eof = False
            try:
                while not eof:
                    # With a known size, ask for nothing past one probe at the end (it confirms EOF,
                    # or shows the file grew): a small file costs two requests, not max_requests.
                    while len(inflight) < max_requests and (
                        expected_size is None or next_offset <= expected_size or not inflight):
                        num = sftp._async_request(responses, CMD_READ, handle, int64(next_offset), int(request_size))
                        inflight.append((num, next_offset, request_size))
                        next_offset += request_size
                    num, offset, length = inflight.popleft()
                    t, msg = wait_for(num)
                    if t == CMD_STATUS:
                        code = msg.get_int()
                        if code == SFTP_EOF:
                            eof = True
                            break
                        raise TransferError(f"read of {remote_path} failed at offset {offset}: SFTP status {code}")
                    if t != CMD_DATA:
                        raise TransferError(f"read of {remote_path}: unexpected SFTP response type {t}")
                    data = msg.get_string()
                    sink.write(data)
                    total += len(data)
                    if expected_size is not None and total > expected_size:
                        raise FileChangedError(f"{remote_path} changed while fetching: listed {expected_size} bytes, "
                                            f"read more than that")
                    if len(data) < length:
                        # Short read before EOF: the server caps read lengths. Drop the queued
                        # requests, continue where the data stopped (the file stays in order) and
                        # ask for that size from now on, so it happens once per file.
                        while inflight:
                            wait_for(inflight.popleft()[0])
                        next_offset = offset + len(data)
                        if expected_size is None or next_offset < expected_size:
                            request_size = max(len(data), 4096)
            except TransferTimeout:
                inflight.clear()  # the session is abandoned by the caller; do not wait any longer
                raise
            finally:
                while inflight:  # answers to requests past the end (or after an error): drained, unused
                    wait_for(inflight.popleft()[0])
    except socket.timeout as exc:
        sink.close()
        if time.monotonic() >= deadline - 0.01:
            raise TransferTimeout(f"fetch of {remote_path} exceeded its time bound after {total} bytes") from exc
        raise TransferTimeout(f"fetch of {remote_path} stalled: no data for {stall_timeout:.0f}s") from exc
    except BaseException:
        sink.close()
        raise
    finally:
        try:
            channel.settimeout(previous_timeout)
        except Exception:
            pass
    sink.close()
    return total


def _sequential_copy(sftp: Any, remote_path: str, out, digest, deadline: float, request_size: int) -> int:
    total = 0
    with sftp.open(remote_path, "rb") as remote:
        while True:
            if time.monotonic() > deadline:
                raise TransferTimeout(f"fetch of {remote_path} exceeded its time bound after {total} bytes")
            data = remote.read(request_size)
            if not data:
                break
            out.write(data)
            digest.update(data)
            total += len(data)
    return total


def fetch_to_file(
    sftp: Any,
    remote_path: str,
    local_path: str | os.PathLike,
    *,
    expected_size: int | None = None,
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
    :param timeout: overall bound in seconds; default ``time_bound(expected_size, ...)``.
    :raises TransferTimeout: the bound was exceeded (close the session afterwards).
    :raises TransferError: the file vanished, changed size, or a read/write failed.
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
                                       max(0.001, min(stall_timeout, deadline - time.monotonic())),
                                       expected_size)
            else:
                size = _sequential_copy(sftp, remote_path, out, digest, deadline, request_size)
    except TransferError:
        partial.unlink(missing_ok=True)
        raise
    except FileNotFoundError as exc:
        partial.unlink(missing_ok=True)
        raise FileVanishedError(f"{remote_path} vanished before it could be fetched") from exc
    except (OSError, EOFError) as exc:
        partial.unlink(missing_ok=True)
        raise TransferError(f"fetch of {remote_path} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # paramiko.SSHException and friends: a transfer error for the caller
        partial.unlink(missing_ok=True)
        if type(exc).__module__.startswith("paramiko"):
            raise TransferError(f"fetch of {remote_path} failed: {type(exc).__name__}: {exc}") from exc
        raise
    if expected_size is not None and size != expected_size:
        partial.unlink(missing_ok=True)
        raise FileChangedError(f"{remote_path} changed while fetching: listed {expected_size} bytes, read {size}")
    os.replace(partial, local)
    return FetchResult(str(local), size, digest.hexdigest(), time.monotonic() - started,
                       "pipelined" if pipelined else "sequential")
