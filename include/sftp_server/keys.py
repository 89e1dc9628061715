"""Key files for the embedded SFTP server: created on first start, reused afterwards.

The host key is what clients pin (``extra.host_key`` of the ``sftp_default`` connection), so it
must survive restarts; the client key pair is the demo's ``sftp_default`` identity.
"""
from __future__ import annotations

import os
from pathlib import Path

_KEY_ALGORITHM = "ssh-ed25519"


def _write_private_key(key, path: Path) -> None:
    # Created 0600 from the start, so the secret is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key("openssh"))


def ensure_host_key(path: str | os.PathLike) -> Path:
    """Return the host key file at ``path``, generating an Ed25519 key (and ``.pub``) if missing."""
    import asyncssh

    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key(_KEY_ALGORITHM, comment="exchange-demo-sftp-host")
        _write_private_key(key, path)
        key.write_public_key(str(path) + ".pub")
    return path


def ensure_client_key(authorized_keys: str | os.PathLike) -> Path:
    """Make sure ``authorized_keys`` exists; if not, create a client key pair for it.

    ``var/demo_client.pub`` gets the public key and ``var/demo_client`` the private key that the
    demo's ``sftp_default`` connection uses. An existing file is left alone (bring your own keys).
    """
    import asyncssh

    authorized_keys = Path(authorized_keys)
    if not authorized_keys.exists():
        authorized_keys.parent.mkdir(parents=True, exist_ok=True)
        private_path = authorized_keys.with_suffix("") if authorized_keys.suffix == ".pub" else Path(
            str(authorized_keys) + ".key"
        )
        key = asyncssh.generate_private_key(_KEY_ALGORITHM, comment="exchange-demo-client")
        _write_private_key(key, private_path)
        key.write_public_key(str(authorized_keys))
    return authorized_keys


def public_key_line(private_key_path: str | os.PathLike) -> str:
    """``"<type> <base64>"`` of a key: the form SSHHook/SFTPHook expect in ``extra.host_key``."""
    import asyncssh

    key = asyncssh.read_private_key(str(private_key_path))
    algorithm, data = key.export_public_key("openssh").decode().split()[:2]
    return f"{algorithm} {data}"
