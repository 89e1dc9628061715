"""A partner's catalog history: each version, its checks, diff, decision and load, with its journal lines.

A view on the exchange journal (:mod:`include.exchange.journal`): the versions come from
``catalog_versions``, what happened to them from the journal lines of use case ``catalog_sync``.

    python -m include.catalog.history --partner acme [--kind price_list] [--json] [--db URL]

finds the database as the journal command does (:func:`include.exchange.cli.command_db_url`) and
creates nothing. For any file, item or period across use cases:
``python -m include.exchange.journal --partner acme --use-case catalog_sync``. The same text is what
the DAG's ``audit_trail`` task logs.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from include.catalog import store


def _ts(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def format_history(partner_key: str, versions: list[dict[str, Any]]) -> str:
    """Human-readable history, one block per version (oldest first), its journal lines under it."""
    if not versions:
        return f"No catalog versions for partner {partner_key}."
    lines = [f"Catalog history of partner {partner_key}: {len(versions)} version(s)"]
    for v in versions:
        checks = "passed" if v["checks_passed"] else ("FAILED" if v["checks_passed"] is False else "not run")
        lines += [
            "",
            f"#{v['id']} {v['kind']} {v['file_name']} sha256 {v['sha256'][:12]}… status {v['status'].upper()}",
            f"  sent        {_ts(v['sent_at'])}   received {_ts(v['received_at'])}   rows {v['row_count'] if v['row_count'] is not None else '-'}",
            f"  checks      {checks}",
            f"  diff posted {_ts(v['posted_at'])}   TG item {v['tg_item_id'] or '-'}   {v['diff_counts'] or ''}".rstrip(),
            f"  decision    {v['decided_status'] or '-'} by {v['decided_by'] or '-'} at {_ts(v['decided_at'])}",
            f"  loaded      {_ts(v['loaded_at'])}"
            + (f"   superseded by #{v['superseded_by']} at {_ts(v['superseded_at'])}" if v["superseded_by"] else ""),
        ]
        for e in v["events"]:
            actor = f" [{e['actor']}]" if e["actor"] else ""
            detail = f": {e['detail']}" if e["detail"] else ""
            lines.append(f"    {_ts(e['at'])} {e['event']}{actor}{detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from include.catalog import tables as t
    from include.exchange.cli import CommandError, open_command_db, require_tables
    from include.exchange.journal import journal_table

    parser = argparse.ArgumentParser(prog="python -m include.catalog.history", description=__doc__.splitlines()[0])
    parser.add_argument("--partner", required=True, help="partner registry key, e.g. acme")
    parser.add_argument("--kind", choices=["catalog", "price_list", "promotions"])
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--db", help="SQLAlchemy URL of the project database")
    args = parser.parse_args(argv)
    try:
        engine = open_command_db(args.db)
        require_tables(engine, t.catalog_versions.name, journal_table.name, what="catalog history")
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    versions = store.history(engine, args.partner, args.kind)
    if args.json:
        print(json.dumps(versions, default=str, indent=2))
    else:
        print(format_history(args.partner, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
