"""The Airflow ``sftp_default`` connection for a server whose host key file we hold (the demo's).

Shape per docs/architecture.md: host key checking on, key auth, and paramiko steered to AES-GCM.
"""
from __future__ import annotations

import os

from include.sftp_server.keys import public_key_line

#: paramiko prefers aes*-ctr + HMAC; with these disabled it negotiates AES-GCM, which moved
#: 1.1-1.5x more data per second here. SSHHook hands ``disabled_algorithms`` to paramiko's connect
#: (its ``ciphers`` extra is applied only after the key exchange). The sshd test fixture uses it too.
PREFER_AES_GCM = {"ciphers": ["aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-cbc", "aes192-cbc",
                              "aes256-cbc", "3des-cbc"]}


def sftp_connection(host: str, port: int, username: str, host_key: str | os.PathLike,
                    key_file: str | os.PathLike) -> dict:
    """The connection as a dict for ``AIRFLOW_CONN_SFTP_DEFAULT`` (``json.dumps`` it).

    ``host_key`` is the server's key file; the extra carries its public half as ``"<type> <base64>"``,
    the form SSHHook and SFTPHookAsync parse (a bare base64 value would be read as an RSA key).
    """
    return {
        "conn_type": "sftp",
        "host": host,
        "port": port,
        "login": username,
        "extra": {
            "host_key": public_key_line(host_key),
            "key_file": str(key_file),
            "disabled_algorithms": PREFER_AES_GCM,
        },
    }
