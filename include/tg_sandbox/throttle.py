"""Failed sign-in throttle for the token endpoint and the portal login.

Only failures count. Each attempt names two keys, the client id and the caller's address; after a
key's ``free_failures`` consecutive failures every further failure locks it for a backoff that
doubles (``base_lockout_seconds`` → ``max_lockout_seconds``). While a key is locked every attempt on
it is answered 429 with ``Retry-After`` *before* the secret is checked, so a locked key gives no
oracle. A success resets the keys of its attempt (legitimate clients that sign in often are never
slowed down); a key with no failure for ``forget_after_seconds`` starts over.

Unknown client ids are tracked like known ones (a lockout must not tell which ids exist), in a
bounded LRU table; the address key stops a sweep over many ids. The state is in memory: a restart
forgets it. The clock is injected (``time.monotonic`` by default) so tests need no sleeps.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections import OrderedDict
from typing import Callable, TypeVar

T = TypeVar("T")


class Throttled(Exception):
    """Too many failed attempts: answer 429 with ``Retry-After: retry_after`` (whole seconds)."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many failed sign-ins; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    base_lockout_seconds: float = 1.0
    max_lockout_seconds: float = 300.0
    forget_after_seconds: float = 900.0

    def lockout_after(self, failures: int) -> float:
        """Seconds a key is locked after its ``failures``-th consecutive failure (0: not locked)."""
        excess = failures - self.free_failures
        if excess <= 0:
            return 0.0
        cap = max(self.max_lockout_seconds, self.base_lockout_seconds)
        return min(cap, self.base_lockout_seconds * 2 ** min(excess - 1, 62))


@dataclasses.dataclass
class _Record:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class LoginThrottle:
    """Per client id and per address failure counters with exponential lockouts (thread-safe)."""

    def __init__(self, client_policy: ThrottlePolicy | None = None, address_policy: ThrottlePolicy | None = None,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.client_policy = client_policy or ThrottlePolicy()
        self.address_policy = address_policy or ThrottlePolicy(free_failures=4 * self.client_policy.free_failures)
        self._clock = clock
        self._max_keys = max_keys
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._lock = threading.Lock()

    def _keys(self, client_id: str, address: str | None) -> list[tuple[tuple[str, str], ThrottlePolicy]]:
        # A client id longer than any real one is kept as a digest, so a key never holds megabytes.
        cid = client_id if len(client_id) <= 200 else "sha256:" + hashlib.sha256(client_id.encode()).hexdigest()
        return [(("client", cid), self.client_policy), (("address", address or "-"), self.address_policy)]

    def _record(self, key: tuple[str, str], policy: ThrottlePolicy, now: float, create: bool) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now >= record.locked_until and now - record.last_failure >= policy.forget_after_seconds:
            del self._records[key]
            record = None
        if record is None and create:
            record = self._records[key] = _Record()
            while len(self._records) > self._max_keys:
                self._records.popitem(last=False)
        if record is not None:
            self._records.move_to_end(key)
        return record

    def _wait(self, keys, now: float) -> int | None:
        waits = [r.locked_until - now for key, policy in keys
                 if (r := self._record(key, policy, now, create=False)) is not None and r.locked_until > now]
        return max(1, math.ceil(max(waits))) if waits else None

    def retry_after(self, client_id: str, address: str | None) -> int | None:
        """Whole seconds until an attempt for this client id from this address may be tried; None: now."""
        with self._lock:
            return self._wait(self._keys(client_id, address), self._clock())

    def attempt(self, client_id: str, address: str | None, authenticate: Callable[[], T | None]) -> T | None:
        """``authenticate()`` unless the client id or the address is locked (then :class:`Throttled`, and the
        secret is not even looked at); its result is counted: None is a failure, anything else a success.
        Check, attempt and count happen under one lock, so concurrent guesses cannot slip past a lockout."""
        with self._lock:
            now = self._clock()
            keys = self._keys(client_id, address)
            if (wait := self._wait(keys, now)) is not None:
                raise Throttled(wait)
            result = authenticate()
            if result is not None:
                for key, _policy in keys:
                    self._records.pop(key, None)
                return result
            for key, policy in keys:
                record = self._record(key, policy, now, create=True)
                record.failures += 1
                record.last_failure = now
                if lockout := policy.lockout_after(record.failures):
                    record.locked_until = max(record.locked_until, now + lockout)
            return None
