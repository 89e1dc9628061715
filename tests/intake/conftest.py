"""Fixtures of the intake tests: a real sshd (tests.support.sshd), a PostgreSQL ledger (pg_url),
and a fresh partner per test.

Each test gets its own partner key (``t<random>``) over the demo folders of ``acme`` on the sshd,
so its ledger rows cannot mix with other tests sharing the session database.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from include.partners import load_registry


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture
def make_partner(registry):
    """Build a partner like ``acme`` with a unique key and readiness overrides."""

    def make(marker: str = "none", min_age_seconds: int = 0, stable_polls: int = 2, template: str = "acme"):
        base = registry.get(template)
        readiness = base.readiness.model_copy(
            update={"marker": marker, "min_age_seconds": min_age_seconds, "stable_polls": stable_polls})
        return base.model_copy(update={"key": f"t{uuid.uuid4().hex[:10]}", "readiness": readiness})

    return make


@pytest.fixture(scope="session")
def pg_ledger_engine(pg_url):
    from include.db import get_engine
    from include.schema import ensure_schema

    engine = get_engine(pg_url)
    ensure_schema(engine)
    return engine


@pytest.fixture
def ledger(pg_ledger_engine):
    from include.intake import Ledger

    return Ledger(pg_ledger_engine)


@pytest.fixture
def sftp(clean_partner_folders):
    """A bare paramiko SFTPClient on the real sshd (host key checked); folders emptied first."""
    client = clean_partner_folders.sftp_client()
    yield client
    client.close()


class Drop:
    """Writes files into the sshd chroot as a partner would (local side of the server)."""

    def __init__(self, server):
        self.server = server

    def put(self, remote_path: str, data: bytes | str, age: float = 3600) -> Path:
        local = self.server.local_path(remote_path)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data.encode() if isinstance(data, str) else data)
        stamp = time.time() - age
        os.utime(local, (stamp, stamp))
        return local

    def names(self, remote_folder: str) -> list[str]:
        return sorted(p.name for p in self.server.local_path(remote_folder).iterdir())


@pytest.fixture
def drop(clean_partner_folders):
    return Drop(clean_partner_folders)


@pytest.fixture
def staging(tmp_path):
    return tmp_path / "staging"


@pytest.fixture
def make_inbox(sftp, ledger, staging):
    from include.intake import PartnerInbox

    def make(partner, client=None, led=None, **kwargs):
        return PartnerInbox(partner, client or sftp, led or ledger, staging, **kwargs)

    return make
