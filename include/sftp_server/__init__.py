"""Embedded pure-Python SFTP server (asyncssh) for the newcomer demo.

Not a production server: it exists so ``scripts/demo.sh`` runs on a machine without OpenSSH.
It speaks SFTP only (no shell, exec or scp), authenticates one user by public key (and, if asked,
by password), keeps every client inside ``--root`` and supports ``posix-rename@openssh.com``,
which the intake code uses to archive and quarantine files atomically.

Run it with ``python -m include.sftp_server --help``.
"""
from include.sftp_server.client import connect_pinned
from include.sftp_server.keys import ensure_client_key, ensure_host_key, public_key_line
from include.sftp_server.server import ExchangeSFTPServer, serve

__all__ = ["ExchangeSFTPServer", "connect_pinned", "ensure_client_key", "ensure_host_key", "public_key_line", "serve"]
