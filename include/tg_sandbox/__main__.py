"""``python -m include.tg_sandbox``: run the Trading Grid sandbox (see docs/trading-grid-sandbox.md)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import socket
import sys
from pathlib import Path

from .schemas import Faults
from .seed import SeedError, load_seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m include.tg_sandbox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090, help="0 picks a free port (see --port-file)")
    p.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    p.add_argument("--seed", type=Path, default=Path(__file__).with_name("demo_seed.yaml"))
    p.add_argument("--db", default="sqlite:///var/tg-sandbox.db", help="SQLAlchemy URL (sqlite:///... or postgresql+psycopg2://...)")
    p.add_argument("--token-ttl", type=int, help="token lifetime in seconds (overrides the seed)")
    p.add_argument("--attachment-max-bytes", type=int, help="attachment size limit (overrides the seed)")
    p.add_argument("--login-free-failures", type=int, default=5,
                   help="failed sign-ins per client id before lockouts start (per address: 4x)")
    p.add_argument("--login-lockout-seconds", type=float, default=1.0,
                   help="first lockout after that; it doubles with each further failure, up to 300 s (or this)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--access-log", action="store_true", help="log every request (slower)")
    faults = p.add_argument_group("fault injection (also settable at runtime: PUT /_sandbox/faults)")
    for name, field in Faults.model_fields.items():
        flag = "--fault-seed" if name == "seed" else "--" + name.replace("_", "-")
        faults.add_argument(flag, dest=f"fault_{name}", type=field.annotation if field.annotation in (int, float) else int,
                            default=None, help=field.description)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.login_free_failures < 0 or args.login_lockout_seconds <= 0:
        print("tg_sandbox: --login-free-failures must be >= 0 and --login-lockout-seconds > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        seed = load_seed(args.seed)
    except (OSError, SeedError) as exc:
        print(f"tg_sandbox: bad seed {args.seed}: {exc}", file=sys.stderr)
        return 2
    overrides = {}
    if args.token_ttl is not None:
        overrides["token_ttl_seconds"] = args.token_ttl
    if args.attachment_max_bytes is not None:
        overrides["attachment_max_bytes"] = args.attachment_max_bytes
    seed = dataclasses.replace(seed, **overrides)
    faults = Faults(**{name: getattr(args, f"fault_{name}") for name in Faults.model_fields
                       if getattr(args, f"fault_{name}") is not None})

    if args.db.startswith("sqlite:///") and not args.db.startswith("sqlite:////"):
        Path(args.db.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    import uvicorn

    from .app import create_app
    from .faults import DroppableHttpToolsProtocol
    from .throttle import LoginThrottle, ThrottlePolicy

    client_policy = ThrottlePolicy(free_failures=args.login_free_failures, base_lockout_seconds=args.login_lockout_seconds)
    address_policy = dataclasses.replace(client_policy, free_failures=4 * args.login_free_failures)
    app = create_app(seed, args.db, faults, LoginThrottle(client_policy, address_policy))
    # Bind ourselves: port 0 works, and SO_REUSEADDR lets a restart take the same port at once.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    port = sock.getsockname()[1]
    # proxy_headers off: the peer address is what the sign-in throttle counts, and uvicorn would
    # otherwise take X-Forwarded-For from any loopback client at its word.
    config = uvicorn.Config(app, http=DroppableHttpToolsProtocol, loop="uvloop", log_level=args.log_level,
                            access_log=args.access_log, timeout_keep_alive=30, backlog=1024, proxy_headers=False)
    server = uvicorn.Server(config)
    if args.port_file:
        args.port_file.write_text(str(port))
    print(f"tg_sandbox listening on http://{args.host}:{port}", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
