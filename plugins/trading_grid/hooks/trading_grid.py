"""Hook and async client for the Trading Grid collaboration API (contract: shared/trading-grid-api.md).

:class:`TradingGridHook` is what operators, sensors and DAG tasks use: a synchronous client over one
``requests.Session`` built from the Airflow connection ``trading_grid_default`` (conn type ``http``).
:class:`TradingGridAsyncClient` is the small aiohttp client the trigger polls with in the triggerer.

Both follow the same rules, because TG is a remote service that fails in ordinary ways:

- **Auth**: OAuth2 client credentials. The token is cached, renewed shortly before it expires, and
  renewed once more if TG answers 401 anyway (revoked, clock skew).
- **Retries**: 429, 5xx and connection errors are retried with exponential backoff and jitter,
  honouring ``Retry-After``, bounded both in attempts and in total time (:class:`RetryPolicy`).
  A 429 closes a back-off gate shared by every thread of the hook, so a bulk run slows down as a
  whole instead of each thread hammering on.
- **Idempotency**: every create carries a deterministic ``Idempotency-Key`` and ``external_ref``
  (:mod:`trading_grid.refs`). After a timeout or a dropped connection, whose outcome is unknown, the
  hook looks the item (comment, attachment) up before posting again.
- **Secrets**: the client secret and tokens are registered with Airflow's secrets masker and with
  :func:`trading_grid.exceptions.redact`; headers and request bodies are never logged.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter

from airflow.sdk import BaseHook
from trading_grid import refs
from trading_grid.exceptions import (
    TradingGridAuthError,
    TradingGridBulkError,
    TradingGridConflict,
    TradingGridError,
    TradingGridNotFound,
    TradingGridPermissionDenied,
    TradingGridPreconditionFailed,
    TradingGridRetryExhausted,
    TradingGridValidationError,
    redact,
    register_secret,
)

if TYPE_CHECKING:
    import aiohttp

    from airflow.sdk.definitions.connection import Connection

DEFAULT_CONN_ID = "trading_grid_default"
# 503/429 mean "not processed"; any other 5xx or a lost answer may come after the server committed.
_NOT_PROCESSED_STATUSES = {429, 503}
_ATTACH_CHUNK = 1024 * 1024


def _mask(value: str | None) -> None:
    """Hide ``value`` from Airflow task logs (and from our own exception messages)."""
    if not value:
        return
    register_secret(value)
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older SDKs
        return
    try:
        mask_secret(value)
    except Exception:  # masking must never break a call
        pass


# --------------------------------------------------------------------------------------------------
# Settings and retry policy (shared by the sync hook and the async client)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TradingGridSettings:
    """What a TG client needs, read from an Airflow connection (see :meth:`from_connection`)."""

    base_url: str
    tenant_id: str
    community_id: str
    client_id: str
    client_secret: str = field(repr=False)
    ui_base_url: str | None = None
    timeout: float = 30.0
    trust_env: bool = False

    @classmethod
    def from_connection(cls, conn: Connection) -> TradingGridSettings:
        """Build settings from a connection: host/port/schema → base URL, login/password → client.

        Like HttpHook: ``host`` may be a full URL (``http://tg.example:8443/api``); otherwise
        ``schema`` is the scheme (default ``http``) and ``port`` is appended. Extra:
        ``tenant_id`` and ``community_id`` (required), ``ui_base_url``, ``timeout`` (seconds),
        ``trust_env`` (honour HTTP(S)_PROXY / .netrc; off by default so no ambient credential or
        proxy changes where our secret goes).
        """
        extra = conn.extra_dejson or {}
        host = (conn.host or "").rstrip("/")
        if not host:
            raise ValueError(f"Connection {conn.conn_id!r} has no host (the TG base URL)")
        if "://" in host:
            base_url = host
        else:
            scheme = conn.schema or "http"
            base_url = f"{scheme}://{host}"
        if conn.port:
            parsed = urlparse(base_url)
            if parsed.port is None:
                base_url = parsed._replace(netloc=f"{parsed.netloc}:{conn.port}").geturl()
        missing = [k for k in ("tenant_id", "community_id") if not extra.get(k)]
        if missing:
            raise ValueError(f"Connection {conn.conn_id!r} lacks extra {', '.join(missing)}")
        if not conn.login or not conn.password:
            raise ValueError(f"Connection {conn.conn_id!r} needs login (client_id) and password (client_secret)")
        _mask(conn.password)
        return cls(
            base_url=base_url.rstrip("/"),
            tenant_id=str(extra["tenant_id"]),
            community_id=str(extra["community_id"]),
            client_id=conn.login,
            client_secret=conn.password,
            ui_base_url=(extra.get("ui_base_url") or None),
            timeout=float(extra.get("timeout", 30.0)),
            trust_env=str(extra.get("trust_env", "false")).lower() in ("1", "true", "yes"),
        )

    @property
    def token_path(self) -> str:
        return f"/tenants/{quote(self.tenant_id, safe='')}/oauth2/token"

    @property
    def community_path(self) -> str:
        return f"/v1/communities/{quote(self.community_id, safe='')}"

    def item_path(self, item_id: str) -> str:
        return f"{self.community_path}/items/{quote(str(item_id), safe='')}"

    def item_url(self, item_id: str) -> str:
        """The human page of an item (the sandbox's partner portal, or ``ui_base_url`` in production)."""
        return f"{(self.ui_base_url or self.base_url).rstrip('/')}/portal/items/{quote(str(item_id), safe='')}"


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a request that failed in a retryable way (429, 5xx, transport).

    The n-th retry waits ``d/2 + uniform(0, d/2)`` with ``d = min(backoff_max, backoff_base * 2**(n-1))``
    ("equal jitter": grows exponentially, never zero, spreads concurrent clients), or ``Retry-After``
    if the server asked for longer (capped at ``retry_after_max``). Gives up after ``max_attempts``
    requests or when the next wait would cross ``max_retry_time`` seconds since the first attempt.
    """

    max_attempts: int = 10
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_time: float = 300.0
    retry_after_max: float = 120.0

    def delay(self, retry_number: int, retry_after: float | None = None) -> float:
        cap = min(self.backoff_max, self.backoff_base * (2 ** max(0, retry_number - 1)))
        backoff = cap / 2 + random.uniform(0, cap / 2)
        if retry_after is not None:
            return max(min(retry_after, self.retry_after_max), backoff)
        return backoff

    def next_delay_or_give_up(
        self, attempt: int, started: float, retry_after: float | None, what: str, reason: str, status: int | None
    ) -> float:
        """The wait before the next attempt, or :class:`TradingGridRetryExhausted` if the budget is spent."""
        delay = self.delay(attempt, retry_after)
        elapsed = time.monotonic() - started
        if attempt >= self.max_attempts or elapsed + delay > self.max_retry_time:
            raise TradingGridRetryExhausted(
                f"Trading Grid {what} still failing after {attempt} attempts in {elapsed:.1f} s (last: {reason})",
                status=status,
            )
        return delay

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> RetryPolicy:
        """Optional connection extra ``retry``: ``{"max_attempts": 10, "backoff_base": 0.5, ...}``."""
        conf = extra.get("retry") or {}
        if isinstance(conf, str):
            conf = json.loads(conf)
        known = {k: float(v) if k != "max_attempts" else int(v) for k, v in conf.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds form; an HTTP date is read as "no hint")."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class _BackoffGate:
    """A gate all threads of one hook pass before each request; a 429 closes it for Retry-After."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_at = 0.0

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._open_at = max(self._open_at, time.monotonic() + seconds)

    def wait(self) -> float:
        waited = 0.0
        while True:
            remaining = self._open_at - time.monotonic()
            if remaining <= 0:
                if waited:
                    # Spread the threads released together so they do not re-trigger the limit at once.
                    extra = random.uniform(0, min(0.25, waited * 0.1))
                    time.sleep(extra)
                    waited += extra
                return waited
            time.sleep(remaining)
            waited += remaining


@dataclass
class _Recovered:
    """Returned by ``_send`` when a lookup after an unknown outcome found the object already there."""

    value: Any


class _PlainResponse:
    """The part of ``requests.Response`` the hook reads, over a preloaded urllib3 response.

    The lean path below sends JSON/bodiless requests on the session's own urllib3 pool: requests'
    per-call machinery (request preparation, cookie extraction, hooks) costs more client CPU than
    the rest of a post, and those requests need none of it.
    """

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, raw: Any) -> None:
        self.status_code: int = raw.status
        self.headers = raw.headers  # urllib3 HTTPHeaderDict: case-insensitive like requests'
        self.content: bytes = raw.data

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        """Nothing to release: the body was read whole and the connection went back to the pool."""


def _error_fields(payload: Any) -> tuple[str | None, str | None, str | None]:
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(err, dict):
        return err.get("code"), err.get("message"), err.get("request_id")
    if isinstance(payload, dict) and "detail" in payload:  # FastAPI's own validation errors
        return "invalid_request", json.dumps(payload["detail"])[:500], None
    return None, None, None


_ERROR_CLASSES: dict[int, type[TradingGridError]] = {
    400: TradingGridValidationError,
    401: TradingGridAuthError,
    403: TradingGridPermissionDenied,
    404: TradingGridNotFound,
    409: TradingGridConflict,
    412: TradingGridPreconditionFailed,
    413: TradingGridValidationError,
    422: TradingGridValidationError,
}


def error_from_response(method: str, path: str, status: int, payload: Any, secrets: Iterable[str | None] = ()) -> TradingGridError:
    """Turn a non-2xx answer into the matching exception, with a sanitized message."""
    code, message, request_id = _error_fields(payload)
    text = f"Trading Grid {method} {path} failed: HTTP {status}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    if request_id:
        text += f" (request_id {request_id})"
    cls = _ERROR_CLASSES.get(status, TradingGridError)
    return cls(
        redact(text, secrets),
        status=status,
        code=code,
        request_id=request_id,
        details=payload if isinstance(payload, dict) else {},
    )


def find_item_id(payload: Any) -> str | None:
    """The existing item's id in a 409 body, wherever the server put it (``item_id``, ``existing_item_id``...)."""
    if isinstance(payload, dict):
        for key in ("existing_item_id", "item_id", "existing_id"):
            if payload.get(key):
                return str(payload[key])
        for value in payload.values():
            found = find_item_id(value)
            if found:
                return found
    return None


def item_matches(item: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    """True if ``item`` carries every field of ``payload`` (metadata compared as a subset: TG merges it)."""
    for key, want in payload.items():
        have = item.get(key)
        if isinstance(want, Mapping) and isinstance(have, Mapping):
            if any(have.get(k) != v for k, v in want.items()):
                return False
        elif have != want:
            return False
    return True


class _MultipartFile:
    """A multipart/form-data body streamed from a file: read() hands out chunks, len() is exact.

    requests sends a body with ``read`` and ``__len__`` with a Content-Length, chunk by chunk, so a
    large attachment never sits in memory.
    """

    def __init__(self, path: str, filename: str, content_type: str, fields: Mapping[str, str]) -> None:
        self.boundary = f"tg-{uuid.uuid4().hex}"
        head = b""
        for name, value in fields.items():
            head += (
                f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ).encode()
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head += (
            f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{safe_name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        self._parts: list[bytes | str] = [head, path, f"\r\n--{self.boundary}--\r\n".encode()]
        self._length = len(head) + os.path.getsize(path) + len(self._parts[2])  # type: ignore[arg-type]
        self._fh = None

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        size = _ATTACH_CHUNK if size is None or size < 0 else size
        while self._parts:
            part = self._parts[0]
            if isinstance(part, bytes):
                if part:
                    chunk, self._parts[0] = part[:size], part[size:]
                    return chunk
                self._parts.pop(0)
                continue
            if self._fh is None:
                self._fh = open(part, "rb")  # noqa: SIM115 - closed below when exhausted
            chunk = self._fh.read(size)
            if chunk:
                return chunk
            self._fh.close()
            self._fh = None
            self._parts.pop(0)
        return b""

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _CoalescingSend:
    """Send the header block and a small bytes body in one ``sendall``, as http.client itself does.

    urllib3 2 sends them in two writes; the server then wakes up twice per request, which on a
    loaded machine costs more than the request's own CPU. Only bodies that are ``bytes`` up to
    64 KiB are coalesced (a streamed attachment goes out as before).
    """

    _coalesce_next = False
    _held: bytes | None = None

    def request(self, method, url, body=None, headers=None, **kwargs):  # type: ignore[no-untyped-def]
        self._coalesce_next = isinstance(body, (bytes, bytearray)) and 0 < len(body) <= 65536
        self._held = None
        return super().request(method, url, body=body, headers=headers, **kwargs)  # type: ignore[misc]

    def send(self, data):  # type: ignore[no-untyped-def]
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self._coalesce_next:
            self._coalesce_next, self._held = False, data  # the header block: wait for the body
            return None
        return super().send(data)  # type: ignore[misc]


class _CoalescingHTTPAdapter(HTTPAdapter):
    """requests' adapter whose pools use connections with :class:`_CoalescingSend`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        from urllib3.connection import HTTPConnection, HTTPSConnection
        from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

        super().init_poolmanager(*args, **kwargs)

        class _Conn(_CoalescingSend, HTTPConnection):
            pass

        class _SConn(_CoalescingSend, HTTPSConnection):
            pass

        class _Pool(HTTPConnectionPool):
            ConnectionCls = _Conn

        class _SPool(HTTPSConnectionPool):
            ConnectionCls = _SConn

        self.poolmanager.pool_classes_by_scheme = {"http": _Pool, "https": _SPool}


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_ATTACH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _list_from(payload: Any, *keys: str) -> list:
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for key in keys:
            if isinstance(payload.get(key), list):
                return payload[key]
    return []


# --------------------------------------------------------------------------------------------------
# The sync hook
# --------------------------------------------------------------------------------------------------
class TradingGridHook(BaseHook):
    """
    Talk to the Trading Grid collaboration API: items, transitions, comments, attachments, events.

    One hook holds one ``requests.Session`` (keep-alive, pool sized for :meth:`create_items`) and one
    cached token; it is thread-safe, so bulk mode shares both across its threads.

    :param trading_grid_conn_id: Airflow connection (conn type ``http``): host/port/schema = base URL,
        login = client_id, password = client_secret, extra ``tenant_id``, ``community_id``, optional
        ``ui_base_url``, ``timeout``, ``retry`` (see :class:`RetryPolicy`).
    :param retry_policy: overrides the connection's ``retry`` extra.
    :param timeout: read timeout in seconds; overrides the connection's ``timeout`` extra.
    :param pool_maxsize: HTTP connections kept per host; bulk mode raises it to its concurrency.
    """

    conn_name_attr = "trading_grid_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "http"
    hook_name = "Trading Grid"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel the HTTP connection form for TG (the UI shows these labels and placeholders)."""
        return {
            "hidden_fields": [],
            "relabeling": {
                "host": "Base URL (or host)",
                "schema": "Scheme (http/https)",
                "login": "Client ID",
                "password": "Client secret",
            },
            "placeholders": {
                "host": "https://tg.example.com",
                "login": "enterprise-client-id",
                "extra": json.dumps(
                    {
                        "tenant_id": "demo-tenant",
                        "community_id": "demo-community",
                        "ui_base_url": "https://tg.example.com",
                        "timeout": 30,
                    }
                ),
            },
        }

    def __init__(
        self,
        trading_grid_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        timeout: float | None = None,
        pool_maxsize: int = 32,
        logger_name: str | None = None,
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.trading_grid_conn_id = trading_grid_conn_id
        self._retry_policy = retry_policy
        self._timeout_override = timeout
        self._pool_maxsize = pool_maxsize
        self._settings: TradingGridSettings | None = None
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        self._lean_pool_cache: tuple[requests.Session, Any] | None = None
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_renew_at = 0.0
        self._gate = _BackoffGate()
        # Counters for tests and benchmarks: how often the hook had to retry, and why.
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "token_fetches": 0, "renewals_on_401": 0, "recovered": 0}
        self._stats_lock = threading.Lock()

    # ---------------------------------------------------------------- connection and session
    @property
    def settings(self) -> TradingGridSettings:
        if self._settings is None:
            conn = self.get_connection(self.trading_grid_conn_id)
            settings = TradingGridSettings.from_connection(conn)
            if self._retry_policy is None:
                self._retry_policy = RetryPolicy.from_extra(conn.extra_dejson or {})
            self._settings = settings
        return self._settings

    @property
    def retry_policy(self) -> RetryPolicy:
        _ = self.settings  # the connection may define it
        return self._retry_policy or RetryPolicy()

    @property
    def _timeout(self) -> tuple[float, float]:
        read = self._timeout_override or self.settings.timeout
        return (min(10.0, read), read)

    def get_conn(self) -> requests.Session:
        """The shared keep-alive session (created on first use)."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    session = requests.Session()
                    session.trust_env = self.settings.trust_env
                    self._mount(session, self._pool_maxsize)
                    self._session = session
        return self._session

    def _lean_pool(self, session: requests.Session) -> Any:
        """The session's urllib3 pool for the TG host (looked up once per session: it is stable)."""
        cached = self._lean_pool_cache
        if cached is None or cached[0] is not session:
            base = self.settings.base_url
            cached = (session, session.get_adapter(base).poolmanager.connection_from_url(base))
            self._lean_pool_cache = cached
        return cached[1]

    @staticmethod
    def _mount(session: requests.Session, pool_maxsize: int) -> None:
        # max_retries=0: retries are ours (they know about idempotency); urllib3's would not.
        adapter = _CoalescingHTTPAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    def close(self) -> None:
        """Close pooled connections (the hook can be used again afterwards)."""
        with self._session_lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def __enter__(self) -> TradingGridHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        """Used by the UI's "Test" button: fetch a token and read one page of items."""
        try:
            self._get_token(force=True)
            next(iter(self.iter_items(page_size=1)), None)
            return True, "Token obtained and items listed."
        except Exception as exc:  # the UI shows the message: it is sanitized by redact()
            return False, redact(exc, [self._secret()])

    def item_url(self, item_id: str) -> str:
        return self.settings.item_url(item_id)

    def _secret(self) -> str | None:
        return self._settings.client_secret if self._settings else None

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    # ---------------------------------------------------------------- auth
    def _get_token(self, force: bool = False) -> str:
        if not force and self._token and time.monotonic() < self._token_renew_at:
            return self._token
        with self._token_lock:
            if not force and self._token and time.monotonic() < self._token_renew_at:
                return self._token
            s = self.settings
            try:
                resp = self._send(
                    "POST",
                    s.token_path,
                    form={"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.client_secret},
                    authenticated=False,
                )
            except TradingGridValidationError as exc:  # OAuth2 says invalid_client may be a 400
                raise TradingGridAuthError(str(exc), status=exc.status, code=exc.code) from None
            assert not isinstance(resp, _Recovered)
            payload = resp.json()
            token = payload["access_token"]
            _mask(token)
            expires_in = float(payload.get("expires_in") or 300)
            # Renew before expiry: a fifth of the lifetime early, at most a minute.
            self._token = token
            self._token_renew_at = time.monotonic() + expires_in - min(60.0, expires_in * 0.2)
            self._count("token_fetches")
            self.log.debug("Trading Grid token obtained for client %s (expires in %.0f s)", s.client_id, expires_in)
            return token

    def _invalidate_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    # ---------------------------------------------------------------- the one request loop
    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        raw_body: bytes | None = None,
        form: Mapping[str, str] | None = None,
        body_factory: Callable[[], _MultipartFile] | None = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
        recover: Callable[[], Any] | None = None,
    ) -> requests.Response | _PlainResponse | _Recovered:
        """Send one logical request, retrying what may be retried; raise a sanitized error otherwise.

        ``recover`` is for non-idempotent posts: after an answer that may have come after a commit
        (timeout, dropped connection, 5xx other than 503), it is called before posting again; if it
        returns something (the comment/attachment/item is already there) that is returned, wrapped in
        :class:`_Recovered`.
        """
        policy = self.retry_policy
        session = self.get_conn()
        url = self.settings.base_url + path
        started = time.monotonic()
        attempt = 0
        renewed = False
        base_headers = dict(headers or {})
        if json_body is not None:
            raw_body = refs.canonical_json(json_body)
        if raw_body is not None:
            base_headers.setdefault("Content-Type", "application/json")
        lean_pool = lean_timeout = None
        if not session.trust_env and params is None and form is None and body_factory is None:
            lean_pool = self._lean_pool(session)
            connect_timeout, read_timeout = self._timeout
            lean_timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        while True:
            attempt += 1
            self._gate.wait()
            req_headers = dict(base_headers)
            token = None
            if authenticated:
                token = self._get_token()
                req_headers["Authorization"] = f"Bearer {token}"
            stream = body_factory() if body_factory else None
            if stream is not None:
                req_headers["Content-Type"] = stream.content_type
            retry_after: float | None = None
            self._count("requests")
            try:
                data = stream if stream is not None else (form if form is not None else raw_body)
                if lean_pool is not None:
                    resp = _PlainResponse(lean_pool.urlopen(
                        method, url, body=raw_body, headers=req_headers, timeout=lean_timeout,
                        retries=False, redirect=False, preload_content=True, assert_same_host=False,
                    ))
                elif session.trust_env:  # proxies/.netrc from the environment: requests' full merge
                    resp = session.request(
                        method, url, params=params, data=data, headers=req_headers,
                        timeout=self._timeout, allow_redirects=False,
                    )
                else:
                    # Prepared directly and sent on the session: skips the cookie/environment merging
                    # of Session.request (a third of requests' per-call CPU; we use neither).
                    prepared = requests.PreparedRequest()
                    prepared.prepare(method=method, url=url, headers=req_headers, data=data, params=params)
                    resp = session.send(prepared, timeout=self._timeout, allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
                unknown_outcome = not isinstance(exc, (requests.ConnectTimeout, urllib3.exceptions.ConnectTimeoutError))
                reason = type(exc).__name__
                status = None
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    return resp
                if status == 401 and authenticated and not renewed:
                    # A token can be revoked or expire early: renew once, then believe the 401.
                    renewed = True
                    self._invalidate_token(token or "")
                    self._count("renewals_on_401")
                    self.log.info("Trading Grid answered 401 on %s %s; renewing the token once", method, path)
                    attempt -= 1
                    continue
                if status != 429 and status < 500:
                    raise self._error(method, path, resp)
                unknown_outcome = status not in _NOT_PROCESSED_STATUSES
                reason = f"HTTP {status}"
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
            finally:
                if stream is not None:
                    stream.close()

            delay = policy.next_delay_or_give_up(attempt, started, retry_after, f"{method} {path}", reason, status)
            if status == 429:
                self._gate.hold(delay)
            self._count("retries")
            self.log.warning(
                "Trading Grid %s %s: %s (attempt %d/%d), retrying in %.2f s",
                method, path, reason, attempt, policy.max_attempts, delay,
            )
            if status != 429:  # a 429 waits at the shared gate (next loop) instead
                time.sleep(delay)
            if unknown_outcome and recover is not None:
                found = recover()
                if found is not None:
                    self._count("recovered")
                    self.log.info("Trading Grid %s %s: the earlier attempt had committed; not posting again", method, path)
                    return _Recovered(found)

    def _error(self, method: str, path: str, resp: requests.Response | _PlainResponse) -> TradingGridError:
        try:
            payload = resp.json()
        except ValueError:
            payload = {}
        return error_from_response(method, path, resp.status_code, payload, [self._secret(), self._token])

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        if isinstance(resp, _Recovered):
            return resp.value
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    # ---------------------------------------------------------------- items
    def create_item(self, payload: Mapping[str, Any], *, idempotency_key: str | None = None) -> tuple[dict, bool]:
        """Create an item, or return the one that already has this ``external_ref``.

        Returns ``(item, created)``. ``created`` is True when this call made the item (a 201, or an
        earlier attempt of this same call that committed before its answer was lost) and False when
        it already existed (a replay of an earlier run's identical POST, or the 409 "external_ref
        taken" path when the body changed: TG keeps the first item, it is not modified).

        :param payload: the item body; must contain ``external_ref`` (use
            :func:`trading_grid.refs.external_ref`).
        :param idempotency_key: defaults to :func:`trading_grid.refs.idempotency_key` of ref and body.
        """
        ref = payload.get("external_ref")
        if not ref:
            raise ValueError("create_item needs payload['external_ref'] (see trading_grid.refs.external_ref)")
        body = refs.canonical_json(payload)
        key = idempotency_key or refs.idempotency_key(ref, payload, body=body)
        unknown_outcome = {"seen": False}

        def recover() -> dict | None:
            unknown_outcome["seen"] = True
            return self.find_by_external_ref(ref)

        try:
            resp = self._send(
                "POST",
                f"{self.settings.community_path}/items",
                raw_body=body,
                headers={"Idempotency-Key": key},
                recover=recover,
            )
        except TradingGridConflict as exc:
            item_id = find_item_id(exc.details)
            item = self.get_item(item_id) if item_id else self.find_by_external_ref(ref)
            if item is None:
                raise
            self.log.info("Trading Grid item %s already exists for %s; reusing it", item["id"], ref)
            return item, False
        except TradingGridValidationError as exc:
            # 422 "same key, different body" cannot come from our derived key, but a caller-given
            # key can hit it: the item exists, so converge on it.
            if exc.status == 422 and exc.code == "idempotency_key_reused":
                item_id = find_item_id(exc.details)
                item = self.get_item(item_id) if item_id else self.find_by_external_ref(ref)
                if item is not None:
                    return item, False
            raise
        if isinstance(resp, _Recovered):
            item = resp.value
            return item, item_matches(item, payload)
        item = resp.json()
        created = resp.status_code == 201 or (unknown_outcome["seen"] and item_matches(item, payload))
        return item, created

    def create_items(
        self,
        payloads: Sequence[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        return_exceptions: bool = False,
    ) -> list:
        """Create many items with at most ``max_concurrency`` requests in flight; results in input order.

        Threads share this hook's session, token and back-off gate, so a 429 pauses all of them.
        Every slot is attempted even if some fail; then, unless ``return_exceptions``, a
        :class:`TradingGridBulkError` carrying all slots is raised if any failed.
        """
        if not payloads:
            return []
        workers = max(1, min(max_concurrency, len(payloads)))
        if workers > self._pool_maxsize:
            with self._session_lock:
                self._pool_maxsize = workers
                if self._session is not None:
                    self._mount(self._session, workers)
        self.get_conn()
        self._get_token()  # once, before the threads start

        def one(payload: Mapping[str, Any]) -> Any:
            try:
                return self.create_item(payload)
            except Exception as exc:  # collected; re-raised below unless return_exceptions
                return exc

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tg-bulk") as pool:
            results = list(pool.map(one, payloads))
        failures = [r for r in results if isinstance(r, Exception)]
        if failures and not return_exceptions:
            raise TradingGridBulkError(
                f"{len(failures)} of {len(results)} Trading Grid creates failed; first: {failures[0]}",
                results=results,
            )
        return results

    def get_item(self, item_id: str) -> dict:
        """The item (404 → :class:`TradingGridNotFound`, also for another partner's item)."""
        return self._json("GET", self.settings.item_path(item_id))

    def find_by_external_ref(self, ref: str) -> dict | None:
        """The item with this ``external_ref``, or None."""
        page = self._json("GET", f"{self.settings.community_path}/items", params={"external_ref": ref, "limit": 1})
        items = _list_from(page, "items")
        return items[0] if items else None

    def iter_items(
        self,
        *,
        partner_id: str | None = None,
        status: str | None = None,
        category: str | None = None,
        type: str | None = None,  # noqa: A002 - the API's filter name
        external_ref: str | None = None,
        updated_since: str | None = None,
        page_size: int = 200,
    ) -> Iterator[dict]:
        """Yield every item matching the filters, following ``next_cursor`` page by page."""
        params: dict[str, Any] = {
            k: v
            for k, v in {
                "partner_id": partner_id,
                "status": status,
                "category": category,
                "type": type,
                "external_ref": external_ref,
                "updated_since": updated_since,
            }.items()
            if v is not None
        }
        params["limit"] = max(1, min(200, page_size))
        cursor = None
        while True:
            if cursor:
                params["cursor"] = cursor
            page = self._json("GET", f"{self.settings.community_path}/items", params=params)
            yield from _list_from(page, "items")
            cursor = page.get("next_cursor") if isinstance(page, dict) else None
            if not cursor:
                return

    def list_items(self, **filters: Any) -> list[dict]:
        """All items matching the filters of :meth:`iter_items`, as a list."""
        return list(self.iter_items(**filters))

    def update_item(
        self,
        item_id: str,
        changes: Mapping[str, Any],
        *,
        version: int | str | None = None,
        max_precondition_retries: int = 5,
    ) -> dict:
        """PATCH title/body/severity/due_at/metadata with ``If-Match``; on 412 re-read and re-apply.

        A re-read that already shows the changes (an earlier attempt went through) ends the loop.
        """
        for _ in range(max_precondition_retries + 1):
            if version is None:
                current = self.get_item(item_id)
                if item_matches(current, changes):
                    return current
                version = current["version"]
            try:
                return self._json(
                    "PATCH", self.settings.item_path(item_id), json_body=dict(changes), headers={"If-Match": str(version)}
                )
            except TradingGridPreconditionFailed:
                self.log.info("Trading Grid item %s changed meanwhile (412); re-reading", item_id)
                version = None
        raise TradingGridPreconditionFailed(
            f"Trading Grid item {item_id} kept changing; gave up after {max_precondition_retries} re-reads",
            status=412,
        )

    def transition(self, item_id: str, to: str, comment: str | None = None) -> dict:
        """Move the item to status ``to``; an item already in ``to`` counts as success (reruns)."""
        body: dict[str, Any] = {"to": to}
        if comment:
            body["comment"] = comment
        try:
            result = self._json("POST", f"{self.settings.item_path(item_id)}/transitions", json_body=body)
        except TradingGridConflict:
            item = self.get_item(item_id)
            if item.get("status") == to:
                self.log.info("Trading Grid item %s is already %s", item_id, to)
                return item
            raise
        if isinstance(result, dict) and result.get("id") == item_id and "status" in result:
            return result
        return self.get_item(item_id)

    def acknowledge(self, item_id: str, note: str | None = None) -> dict:
        """Acknowledge the item (open → acknowledged); an already acknowledged item counts as success."""
        body = {"note": note} if note else {}
        try:
            result = self._json("POST", f"{self.settings.item_path(item_id)}/acknowledgements", json_body=body)
        except TradingGridConflict:
            item = self.get_item(item_id)
            if item.get("acknowledged_at"):
                return item
            raise
        if isinstance(result, dict) and result.get("id") == item_id and "status" in result:
            return result
        return self.get_item(item_id)

    # ---------------------------------------------------------------- comments
    def list_comments(self, item_id: str) -> list[dict]:
        return _list_from(self._json("GET", f"{self.settings.item_path(item_id)}/comments"), "comments", "items")

    def add_comment(
        self, item_id: str, body: str, *, visibility: str = "partner", dedupe: bool = True
    ) -> tuple[dict, bool]:
        """Comment on an item; returns ``(comment, created)``.

        TG has no idempotency key for comments, so with ``dedupe`` (default) a comment whose body and
        visibility equal an existing one is not posted again: a rerun does not repeat itself. Put
        something rerun-stable that tells comments apart (a file name, a ref) in ``body`` when two
        identical comments are legitimate, or pass ``dedupe=False``. After an unknown outcome the
        comments are re-read before posting again, whatever ``dedupe`` says.
        """
        text = body.strip()

        def existing() -> dict | None:
            for comment in self.list_comments(item_id):
                if (comment.get("body") or "").strip() == text and comment.get("visibility", visibility) == visibility:
                    return comment
            return None

        if dedupe:
            found = existing()
            if found is not None:
                self.log.info("Trading Grid item %s already has this comment; not posting it again", item_id)
                return found, False
        resp = self._send(
            "POST",
            f"{self.settings.item_path(item_id)}/comments",
            json_body={"body": text, "visibility": visibility},
            recover=existing,
        )
        if isinstance(resp, _Recovered):
            return resp.value, True
        return resp.json(), True

    # ---------------------------------------------------------------- attachments
    def list_attachments(self, item_id: str) -> list[dict]:
        return _list_from(self._json("GET", f"{self.settings.item_path(item_id)}/attachments"), "attachments", "items")

    def attach_file(
        self,
        item_id: str,
        path: str,
        *,
        filename: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> tuple[dict, bool]:
        """Attach a file, streamed from ``path``, with its sha256 (TG checks it: a mismatch is a 422).

        Returns ``(attachment, created)``; an attachment with the same sha256 already on the item is
        returned with ``created=False`` instead of uploading again. Over TG's size limit → 413 →
        :class:`TradingGridValidationError`.
        """
        digest = file_sha256(path)
        name = filename or os.path.basename(path)

        def existing() -> dict | None:
            return next((a for a in self.list_attachments(item_id) if a.get("sha256") == digest), None)

        found = existing()
        if found is not None:
            self.log.info("Trading Grid item %s already has %s (sha256 %s)", item_id, found.get("filename", name), digest)
            return found, False
        resp = self._send(
            "POST",
            f"{self.settings.item_path(item_id)}/attachments",
            body_factory=lambda: _MultipartFile(path, name, content_type, {"sha256": digest}),
            recover=existing,
        )
        if isinstance(resp, _Recovered):
            return resp.value, True
        return resp.json(), True

    def get_attachment_content(self, item_id: str, attachment_id: str) -> bytes:
        resp = self._send("GET", f"{self.settings.item_path(item_id)}/attachments/{quote(str(attachment_id), safe='')}/content")
        assert not isinstance(resp, _Recovered)
        return resp.content

    # ---------------------------------------------------------------- events
    def get_events_page(
        self, cursor: str | None = None, *, limit: int | None = None, item_id: str | None = None
    ) -> tuple[list[dict], str | None]:
        """One page of the audit trail (optionally of one item) and the cursor of the next (None at the end)."""
        params: dict[str, Any] = {}
        if item_id:
            params["item_id"] = item_id
        if cursor:
            params["cursor"] = cursor
        if limit:
            params["limit"] = limit
        page = self._json("GET", f"{self.settings.community_path}/events", params=params)
        return _list_from(page, "events", "items"), (page.get("next_cursor") if isinstance(page, dict) else None)

    def iter_events(
        self, cursor: str | None = None, *, limit: int | None = None, item_id: str | None = None
    ) -> Iterator[dict]:
        """Yield audit events from ``cursor`` (the beginning if None) to the end, in order."""
        while True:
            events, cursor = self.get_events_page(cursor, limit=limit, item_id=item_id)
            yield from events
            if not cursor:
                return

    def iter_event_pages(self, cursor: str | None = None, *, limit: int | None = None) -> Iterator[EventsPage]:
        """Pages of the community's feed from ``cursor`` (the beginning if None) to its end, in order.

        Each page says where to resume after it (:attr:`EventsPage.resume_cursor`), so a reader can
        store its position page by page; the next page is requested only when the caller asks for it.
        """
        while True:
            before = self.stats["requests"]
            params = {k: v for k, v in (("cursor", cursor), ("limit", limit)) if v}
            page = self._json("GET", f"{self.settings.community_path}/events", params=params)
            page = page if isinstance(page, dict) else {}
            next_cursor = page.get("next_cursor") or None
            # A server without resume_cursor: resume where the next page starts, or re-read this page
            # (from the request's own cursor) next time; re-reading is the reader's duplicate to drop.
            resume = page.get("resume_cursor") or next_cursor or cursor
            yield EventsPage(tuple(_list_from(page, "events")), next_cursor, resume, self.stats["requests"] - before)
            if not next_cursor:
                return
            cursor = next_cursor

    def read_events(self, cursor: str | None = None, *, limit: int | None = None) -> EventsRead:
        """Every event after ``cursor`` (the beginning if None) up to now, and where to resume next time."""
        events: list[dict] = []
        resume, requests_made = cursor, 0
        for page in self.iter_event_pages(cursor, limit=limit):
            events += page.events
            resume, requests_made = page.resume_cursor, requests_made + page.requests
        return EventsRead(tuple(events), resume, requests_made)


@dataclass(frozen=True)
class EventsPage:
    """One page of the events feed. ``requests``: HTTP requests it took, retries and a token fetch included
    (read from the hook's counter: other threads' requests on the same hook meanwhile count too)."""

    events: tuple[dict, ...]
    next_cursor: str | None
    resume_cursor: str | None  # None only when the feed was empty and no cursor was given (no resume_cursor sent)
    requests: int


@dataclass(frozen=True)
class EventsRead:
    """The feed read to its end: the events, the cursor to store for next time, the HTTP requests it took."""

    events: tuple[dict, ...]
    resume_cursor: str | None
    requests: int


# --------------------------------------------------------------------------------------------------
# The async client (for the trigger)
# --------------------------------------------------------------------------------------------------
class TradingGridAsyncClient:
    """A minimal aiohttp client for the triggerer: get a token, GET an item, same retry rules as the hook.

    Use as ``async with await TradingGridAsyncClient.from_conn_id(conn_id) as client: ...`` or build it
    from :class:`TradingGridSettings` directly.
    """

    def __init__(self, settings: TradingGridSettings, retry_policy: RetryPolicy | None = None) -> None:
        self.settings = settings
        self.retry_policy = retry_policy or RetryPolicy()
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_renew_at = 0.0

    @classmethod
    async def from_conn_id(cls, conn_id: str = DEFAULT_CONN_ID) -> TradingGridAsyncClient:
        conn = await BaseHook.aget_connection(conn_id)
        extra = await conn.aextra_dejson() if hasattr(conn, "aextra_dejson") else conn.extra_dejson
        settings = TradingGridSettings.from_connection(conn)
        return cls(settings, RetryPolicy.from_extra(extra or {}))

    async def __aenter__(self) -> TradingGridAsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout, connect=min(10.0, self.settings.timeout))
            self._session = aiohttp.ClientSession(timeout=timeout, trust_env=self.settings.trust_env)
        return self._session

    async def get_token(self, force: bool = False) -> str:
        if not force and self._token and time.monotonic() < self._token_renew_at:
            return self._token
        s = self.settings
        payload = await self._request(
            "POST",
            s.token_path,
            form={"grant_type": "client_credentials", "client_id": s.client_id, "client_secret": s.client_secret},
            authenticated=False,
        )
        token = payload["access_token"]
        register_secret(token)
        try:
            from airflow.sdk.log import amask_secret

            await amask_secret(token)
        except Exception:
            pass
        expires_in = float(payload.get("expires_in") or 300)
        self._token = token
        self._token_renew_at = time.monotonic() + expires_in - min(60.0, expires_in * 0.2)
        return token

    async def get_item(self, item_id: str) -> dict:
        return await self._request("GET", self.settings.item_path(item_id))

    async def _request(
        self, method: str, path: str, *, form: Mapping[str, str] | None = None, authenticated: bool = True
    ) -> Any:
        import aiohttp

        policy = self.retry_policy
        session = self._get_session()
        started = time.monotonic()
        attempt = 0
        renewed = False
        secrets = [self.settings.client_secret, self._token]
        while True:
            attempt += 1
            headers = {}
            token = None
            if authenticated:
                token = await self.get_token()
                headers["Authorization"] = f"Bearer {token}"
            retry_after = None
            status = None
            try:
                async with session.request(method, self.settings.base_url + path, data=form, headers=headers) as resp:
                    status = resp.status
                    if 200 <= status < 300:
                        return await resp.json(content_type=None)
                    try:
                        payload = await resp.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        payload = {}
                    if status == 401 and authenticated and not renewed:
                        renewed = True
                        self._token = None
                        attempt -= 1
                        continue
                    if status != 429 and status < 500:
                        raise error_from_response(method, path, status, payload, secrets)
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    reason = f"HTTP {status}"
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
                reason = type(exc).__name__
            delay = policy.next_delay_or_give_up(attempt, started, retry_after, f"{method} {path}", reason, status)
            await asyncio.sleep(delay)
