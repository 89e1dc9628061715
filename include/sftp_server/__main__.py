"""``python -m include.sftp_server``: run the embedded demo SFTP server in the foreground."""
from __future__ import annotations

import argparse
import logging
import os

from include.sftp_server.keys import ensure_client_key, ensure_host_key
from include.sftp_server.server import run_forever


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m include.sftp_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2222, help="0 picks a free port (printed on start)")
    parser.add_argument("--root", default="var/sftp-root", help="directory clients see as /")
    parser.add_argument("--host-key", default="var/ssh_host_ed25519", help="generated if missing")
    parser.add_argument(
        "--authorized-keys",
        default="var/demo_client.pub",
        help="public keys allowed to log in; if missing, a client key pair is generated next to it",
    )
    parser.add_argument("--user", default="demo", help="the one user name accepted")
    parser.add_argument(
        "--password-env",
        metavar="VAR",
        help="also accept the password in this environment variable (demo only; never on the command line)",
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not password:
        parser.error(f"--password-env {args.password_env}: the variable is not set")

    ensure_host_key(args.host_key)
    ensure_client_key(args.authorized_keys)
    run_forever(
        host=args.host,
        port=args.port,
        root=args.root,
        host_key=args.host_key,
        authorized_keys=args.authorized_keys,
        username=args.user,
        password=password,
    )


if __name__ == "__main__":
    main()
