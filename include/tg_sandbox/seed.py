"""The seed file: tenant, community, partners and API clients (format in docs/trading-grid-sandbox.md)."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import yaml

CLIENT_KINDS = ("enterprise", "partner")


class SeedError(ValueError):
    """The seed file is not valid; the message names the offending entry (never a secret)."""


@dataclasses.dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    kind: str  # enterprise | partner
    partner_id: str | None = None
    name: str = ""


@dataclasses.dataclass(frozen=True)
class Seed:
    tenant_id: str
    community_id: str
    admin_token: str = dataclasses.field(repr=False)
    token_ttl_seconds: int
    attachment_max_bytes: int
    token_signing_key: bytes = dataclasses.field(repr=False)
    partners: dict[str, str]  # partner_id -> display name
    clients: dict[str, Client]  # client_id -> client


def load_seed(source: Path | str | dict[str, Any]) -> Seed:
    """Read and validate a seed (a YAML file path or an already parsed mapping)."""
    if isinstance(source, dict):
        raw = source
    else:
        with open(source, encoding="utf-8") as fh:
            try:
                raw = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                # Only the position and the parser's complaint: the offending text may hold a secret.
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
                raise SeedError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or 'parse error'}") from None
    if not isinstance(raw, dict):
        raise SeedError("seed must be a mapping")

    def required_str(mapping: dict, key: str, where: str) -> str:
        value = mapping.get(key)
        if not isinstance(value, str) or not value:
            raise SeedError(f"{where}: '{key}' must be a non-empty string")
        return value

    tenant_id = required_str(raw, "tenant_id", "seed")
    community_id = required_str(raw, "community_id", "seed")
    admin_token = required_str(raw, "admin_token", "seed")
    ttl = raw.get("token_ttl_seconds", 3600)
    max_bytes = raw.get("attachment_max_bytes", 10 * 1024 * 1024)
    if not isinstance(ttl, int) or ttl < 1:
        raise SeedError("seed: 'token_ttl_seconds' must be a positive integer")
    if not isinstance(max_bytes, int) or max_bytes < 1:
        raise SeedError("seed: 'attachment_max_bytes' must be a positive integer")

    partners: dict[str, str] = {}
    for i, entry in enumerate(raw.get("partners") or []):
        if not isinstance(entry, dict):
            raise SeedError(f"partners[{i}] must be a mapping")
        pid = required_str(entry, "id", f"partners[{i}]")
        if pid in partners:
            raise SeedError(f"partners[{i}]: duplicate id {pid!r}")
        partners[pid] = str(entry.get("name") or pid)

    clients: dict[str, Client] = {}
    for i, entry in enumerate(raw.get("clients") or []):
        if not isinstance(entry, dict):
            raise SeedError(f"clients[{i}] must be a mapping")
        cid = required_str(entry, "client_id", f"clients[{i}]")
        secret = required_str(entry, "client_secret", f"clients[{i}]")
        kind = entry.get("kind")
        if kind not in CLIENT_KINDS:
            raise SeedError(f"clients[{i}] ({cid}): 'kind' must be one of {CLIENT_KINDS}")
        partner_id = entry.get("partner_id")
        if kind == "partner" and partner_id not in partners:
            raise SeedError(f"clients[{i}] ({cid}): partner clients need a 'partner_id' listed under partners")
        if kind == "enterprise" and partner_id is not None:
            raise SeedError(f"clients[{i}] ({cid}): enterprise clients have no partner_id")
        if cid in clients:
            raise SeedError(f"clients[{i}]: duplicate client_id {cid!r}")
        clients[cid] = Client(cid, secret, kind, partner_id, str(entry.get("name") or cid))

    signing = raw.get("token_signing_key")
    if signing is None:
        # Derived from the seed's own secret, so tokens stay valid across restarts with the same seed.
        signing_key = hashlib.sha256(f"tg-sandbox:{tenant_id}:{admin_token}".encode()).digest()
    elif isinstance(signing, str) and signing:
        signing_key = signing.encode()
    else:
        raise SeedError("seed: 'token_signing_key' must be a non-empty string when given")

    return Seed(
        tenant_id=tenant_id,
        community_id=community_id,
        admin_token=admin_token,
        token_ttl_seconds=ttl,
        attachment_max_bytes=max_bytes,
        token_signing_key=signing_key,
        partners=partners,
        clients=clients,
    )
