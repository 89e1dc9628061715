"""A paramiko client that trusts exactly one host key: how the demo and the tests log in."""
from __future__ import annotations

import base64
import os


def connect_pinned(
    host: str,
    port: int,
    host_key: str | os.PathLike,
    username: str,
    key_file: str | os.PathLike | None = None,
    password: str | None = None,
    timeout: float = 10,
):
    """Return a connected ``paramiko.SSHClient`` that accepts only the public key of ``host_key``.

    ``host_key`` is the server's private key file (its public half is derived); any other key, or
    none, makes paramiko raise ``BadHostKeyException``/``SSHException``. Agent and ~/.ssh keys are
    never tried, so a login proves the key or password given here.
    """
    import paramiko

    from include.sftp_server.keys import public_key_line

    algorithm, data = public_key_line(host_key).split()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    name = host if port == 22 else f"[{host}]:{port}"
    client.get_host_keys().add(name, algorithm, paramiko.PKey.from_type_string(algorithm, base64.b64decode(data)))
    try:
        client.connect(host, port=port, username=username, key_filename=str(key_file) if key_file else None,
                       password=password, look_for_keys=False, allow_agent=False, timeout=timeout)
    except BaseException:
        client.close()
        raise
    return client
