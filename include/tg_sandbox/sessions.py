"""Partner page sessions: signed cookies that signing out really ends, and the login form's CSRF defence.

A session is a signed token of audience "portal" (auth.py) in the ``tg_portal`` cookie. Signing out
stores the cookie's sha256 in ``tg_portal_revocations`` (in the sandbox database, so a restart does
not bring it back) until the cookie would have expired anyway; a revoked cookie is refused.

Login CSRF: the sign-in page sets a random nonce in the ``tg_portal_login`` cookie (HttpOnly,
SameSite=Strict) and puts an HMAC of it in the form; the POST must carry both and, when the browser
says where it comes from (``Origin``, else ``Referer``), come from this origin. Cookies do not
separate ports, so the origin check is what stops another page on the same host (a cookie tossed
from 127.0.0.1:8080 with a token its owner fetched for themselves).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from .auth import Principal, TokenService
from .db import portal_revocations, read_tx, write_tx
from .seed import Client
from .service import Store, now_us

SESSION_COOKIE = "tg_portal"
LOGIN_COOKIE = "tg_portal_login"
SESSION_SECONDS = 8 * 3600
_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogatepass")).hexdigest()


class PortalSessions:
    def __init__(self, store: Store, tokens: TokenService):
        self.store = store
        self.tokens = tokens
        self._key = store.seed.token_signing_key

    # -- sessions -----------------------------------------------------------------------------------
    def open(self, client: Client) -> tuple[str, int]:
        """A new session cookie value for ``client`` and its lifetime in seconds."""
        return self.tokens.issue(client, ttl=SESSION_SECONDS, audience="portal")

    def current(self, cookie: str | None) -> Principal | None:
        """The partner signed in with ``cookie``: valid, unexpired, a partner client, not signed out."""
        who = self.tokens.verify(cookie, audience="portal") if cookie else None
        if who is None or not who.is_partner:
            return None
        with read_tx(self.store.engine) as conn:
            revoked = conn.execute(select(portal_revocations.c.session_hash)
                                   .where(portal_revocations.c.session_hash == _digest(cookie))).first()
        return None if revoked is not None else who

    def revoke(self, cookie: str) -> None:
        """Sign out: ``cookie`` is refused from now on (kept until it would have expired; older rows pruned)."""
        now = now_us()
        with write_tx(self.store.engine, self.store.write_lock) as conn:
            conn.execute(delete(portal_revocations).where(portal_revocations.c.expires_us < now))
            try:
                with conn.begin_nested():
                    conn.execute(insert(portal_revocations).values(
                        session_hash=_digest(cookie), expires_us=now + SESSION_SECONDS * 1_000_000))
            except IntegrityError:
                pass  # signed out twice

    def form_token(self, cookie: str) -> str:
        """The CSRF token of a signed-in session's forms."""
        return hmac.new(self._key, f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()[:32]

    def form_token_ok(self, cookie: str, token: str) -> bool:
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.form_token(cookie).encode())

    # -- login CSRF ---------------------------------------------------------------------------------
    @staticmethod
    def login_nonce(current: str | None) -> str:
        """The sign-in page's nonce: the browser's own if it has a well-formed one, else a new one."""
        return current if current and _NONCE.fullmatch(current) else secrets.token_urlsafe(24)

    def login_token(self, nonce: str) -> str:
        return hmac.new(self._key, f"login:{nonce}".encode(), hashlib.sha256).hexdigest()[:32]

    def login_token_ok(self, nonce: str | None, token: str) -> bool:
        if not nonce or not _NONCE.fullmatch(nonce):
            return False
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.login_token(nonce).encode())


def from_this_origin(headers, scheme: str) -> bool:
    """False when the browser says the request comes from another origin (``Origin``, else ``Referer``);
    True when it says nothing (a non-browser client: the form token still has to match)."""
    own = f"{scheme}://{headers.get('host', '')}".lower()
    origin = headers.get("origin")
    if origin is not None:
        return origin.lower() == own  # "null" (a sandboxed or privacy-redirected page) never matches
    referer = headers.get("referer")
    if referer is not None:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == own
    return True
