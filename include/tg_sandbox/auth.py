"""OAuth2 client-credentials tokens: HMAC-signed, so they survive a restart with the same seed.

A token is ``tg1.<payload>.<signature>`` (unpadded base64url); the payload names the client and the
expiry. Verification is strict: the signature must be exactly the text this server would write for
the payload (compared in constant time), so padding, trailing junk, characters outside the alphabet
or a non-canonical last character are refused; the payload must decode canonically too.
Validation is a dictionary hit for tokens seen before, an HMAC otherwise.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import secrets
import time

from .seed import Client, Seed


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: an enterprise client (partner_id None) or a partner client bound to one partner."""

    client_id: str
    kind: str
    partner_id: str | None

    @property
    def is_partner(self) -> bool:
        return self.kind == "partner"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict unpadded base64url: only the alphabet, and only the one canonical spelling of the bytes."""
    if not text.isascii() or "=" in text:
        raise ValueError("not unpadded base64url")
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def _sign(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, f"tg1.{body}".encode(), hashlib.sha256).digest())


class TokenService:
    _CACHE_LIMIT = 10_000

    def __init__(self, seed: Seed):
        self.seed = seed
        self._cache: dict[tuple[str, str], tuple[Principal, float]] = {}

    def authenticate_client(self, client_id: str, client_secret: str) -> Client | None:
        client = self.seed.clients.get(client_id)
        # An unknown id still pays one comparison, so timing does not tell which ids exist.
        expected = client.client_secret if client is not None else "\x00" * max(len(client_secret), 1)
        matches = hmac.compare_digest(expected.encode(), client_secret.encode("utf-8", "surrogatepass"))
        return client if client is not None and matches else None

    def issue(self, client: Client, ttl: int | None = None, audience: str = "api") -> tuple[str, int]:
        """A signed token for ``client``; ``audience`` keeps portal session cookies and API tokens apart."""
        ttl = self.seed.token_ttl_seconds if ttl is None else ttl
        payload = json.dumps(
            {"c": client.client_id, "exp": time.time() + ttl, "aud": audience, "n": _b64(secrets.token_bytes(6))},
            separators=(",", ":"),
        ).encode()
        body = _b64(payload)
        return f"tg1.{body}.{_sign(self.seed.token_signing_key, body)}", ttl

    def verify(self, token: str, audience: str = "api") -> Principal | None:
        """The principal for a valid, unexpired token of ``audience``; None otherwise."""
        now = time.time()
        hit = self._cache.get((audience, token))
        if hit is not None:
            principal, exp = hit
            if now < exp:
                return principal
            self._cache.pop((audience, token), None)
            return None
        try:
            prefix, body, sig = token.split(".")
            if prefix != "tg1" or not sig.isascii():
                return None
            if not hmac.compare_digest(_sign(self.seed.token_signing_key, body).encode(), sig.encode()):
                return None
            payload = json.loads(_unb64(body))
            client = self.seed.clients.get(payload["c"])
            exp = float(payload["exp"])
            if payload.get("aud") != audience:
                return None
        except (ValueError, KeyError, TypeError):
            return None
        if client is None or now >= exp:
            return None
        principal = Principal(client.client_id, client.kind, client.partner_id)
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[(audience, token)] = (principal, exp)
        return principal
