"""The asyncssh server: SFTP subsystem only, one user, a virtual chroot."""
from __future__ import annotations

import asyncio
import hmac
import logging
import os
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)


class ExchangeSFTPServer(asyncssh.SFTPServer):
    """SFTP file operations confined to the root directory.

    asyncssh's chroot maps every client path inside the root and normalises ``..`` away. Links are
    refused outright: a link is the one way a client could make a path inside the root point
    outside it, and the exchange has no use for them.
    """

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links are not supported on this server")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links are not supported on this server")


class _SingleUserAuth(asyncssh.SSHServer):
    """Authenticate exactly one user name: by key from the authorized_keys file, or by password."""

    def __init__(self, username: str, authorized_keys: Path, password: str | None):
        self._username = username
        self._authorized_keys = authorized_keys
        self._password = password
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        # Keys are read per login, so replacing the authorized_keys file takes effect without a restart.
        if username == self._username and self._conn is not None:
            self._conn.set_authorized_keys(str(self._authorized_keys))
        return True

    def password_auth_supported(self) -> bool:
        return self._password is not None

    def validate_password(self, username: str, password: str) -> bool:
        if self._password is None or username != self._username:
            return False
        return hmac.compare_digest(password.encode(), self._password.encode())


async def serve(
    host: str,
    port: int,
    root: str | os.PathLike,
    host_key: str | os.PathLike,
    authorized_keys: str | os.PathLike,
    username: str = "demo",
    password: str | None = None,
) -> asyncssh.SSHAcceptor:
    """Start listening and return the acceptor (``acceptor.sockets[0].getsockname()`` has the port)."""
    root_path = Path(root).resolve()
    root_path.mkdir(parents=True, exist_ok=True)
    authorized_keys = Path(authorized_keys)
    chroot = str(root_path)

    return await asyncssh.create_server(
        lambda: _SingleUserAuth(username, authorized_keys, password),
        host,
        port,
        server_host_keys=[str(host_key)],
        sftp_factory=lambda chan: ExchangeSFTPServer(chan, chroot=chroot),
        allow_scp=False,
        # No session_factory/process_factory: asyncssh then refuses shell and exec requests.
    )


def run_forever(**kwargs) -> None:
    """Serve until SIGINT/SIGTERM; print one line with the bound address once listening."""
    import signal

    async def main() -> None:
        acceptor = await serve(**kwargs)
        bound_host, bound_port = acceptor.sockets[0].getsockname()[:2]
        print(f"SFTP server listening on {bound_host}:{bound_port} root={Path(kwargs['root']).resolve()}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        acceptor.close()
        await acceptor.wait_closed()

    asyncio.run(main())
