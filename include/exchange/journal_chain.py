"""The journal's hash chain: every line carries the hash of the one before it, one chain per partner.

Why: the append-only triggers stop mistakes, not someone with write access to the database, who can
drop them. With a chain, an edited, removed or reordered line shows: ``verify`` walks each chain and
names the first line that does not fit.

- ``entry_hash = sha256(prev_hash + canonical content)``, where the content is the line's stored
  values (all columns but ``id`` and the two hashes) as JSON with sorted keys, ``at`` in UTC with
  microseconds. ``prev_hash`` is the partner's previous line's ``entry_hash`` (NULL for the first).
- One chain per partner, so tasks of different partners append at the same time; appends of ONE
  partner are serialised inside the insert transaction: a transaction-level advisory lock per
  partner on PostgreSQL (the lock is released by the commit, after the rows are visible), the
  database's write lock on SQLite (taken by a no-op write before the head is read). The hashes are
  computed in Python before the one executemany INSERT.
- Upgrade: ``ensure_schema`` (``create_all``) does not add columns to an existing table, so
  :func:`upgrade_table` runs after every ``create_all`` of the project's metadata (a listener that
  :mod:`include.exchange.journal` registers) and adds ``prev_hash``, ``entry_hash`` and the
  ``(partner_key, id)`` index where they are missing. Lines written before have no hash and cannot
  get one (the table refuses UPDATE, and hashing them now would vouch for whatever they hold): a
  chain begins at its partner's first hashed line; :func:`verify` counts the older lines as not
  covered, and refuses a hash-less line after the chain began.
- Limits: a chain shows changes inside it, not the removal of a partner's newest lines, and someone
  who rewrites a whole chain from some line on with recomputed hashes is not caught; keep the chain
  heads (``verify --json``) somewhere the database's writers cannot reach to catch both.

This module takes the journal table as an argument (it does not import the journal module, which
imports it).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table, and_, inspect, select, text
from sqlalchemy.engine import Connection, Engine

#: The stored columns a line's hash covers, in the journal's column order.
CONTENT_COLUMNS = (
    "at", "use_case", "partner_key", "event", "file_name", "sha256", "remote_path", "item_id",
    "subject_key", "run_id", "actor", "detail", "ledger_entry_id", "data",
)
HASH_COLUMNS = ("prev_hash", "entry_hash")
#: The first key of the journal's two-key PostgreSQL advisory locks (the second is the partner's).
CHAIN_LOCK_CLASS = 742018
VERIFY_BATCH = 5000


def utc(value: datetime) -> datetime:
    """UTC, microseconds kept; a naive time is UTC (SQLite gives aware columns back naive)."""
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


# One encoder, keys taken in sorted order: json.dumps with options builds an encoder per call (a
# third of the time of hashing 1,000 lines).
_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), check_circular=False).encode
_SORTED_CONTENT = tuple(sorted(CONTENT_COLUMNS))


def canonical_content(row: Mapping[str, Any]) -> bytes:
    """The bytes a line's hash covers: its stored content as ASCII JSON, keys sorted."""
    content = {name: row[name] for name in _SORTED_CONTENT}
    content["at"] = utc(content["at"]).isoformat(timespec="microseconds")
    return _ENCODE(content).encode("ascii")


def entry_hash(prev_hash: str | None, row: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash or "").encode("ascii") + canonical_content(row)).hexdigest()


def chain_lock_key(partner_key: str) -> int:
    """A signed 32-bit key per partner: a collision only makes two partners wait for each other."""
    return int.from_bytes(hashlib.sha256(partner_key.encode()).digest()[:4], "big", signed=True)


def lock_chains(conn: Connection, table: Table, partner_keys: Iterable[str]) -> None:
    """Hold the chains of ``partner_keys`` until ``conn``'s transaction ends."""
    if conn.dialect.name == "postgresql":
        # Sorted: two transactions locking the same partners always do it in the same order.
        for key in sorted({chain_lock_key(p) for p in partner_keys}):
            conn.execute(text("SELECT pg_advisory_xact_lock(:class, :key)"), {"class": CHAIN_LOCK_CLASS, "key": key})
    elif conn.dialect.name == "sqlite":
        # The driver opens the transaction at the first write; a no-op write takes the database's
        # write lock now, so no other writer appends between our read of the head and our INSERT.
        conn.execute(text(f"UPDATE {table.name} SET id = id WHERE 0"))


def chain_heads(conn: Connection, table: Table, partner_keys: Iterable[str]) -> dict[str, str | None]:
    """Each partner's newest ``entry_hash`` (None: the chain has not begun)."""
    c = table.c
    heads: dict[str, str | None] = {}
    for partner in sorted(set(partner_keys)):
        query = (select(c.entry_hash).where(c.partner_key == partner, c.entry_hash.is_not(None))
                 .order_by(c.id.desc()).limit(1))
        heads[partner] = conn.execute(query).scalar()
    return heads


def chain_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Lock the rows' chains, read their heads and set each row's ``prev_hash``/``entry_hash``, in order."""
    partners = {row["partner_key"] for row in rows}
    lock_chains(conn, table, partners)
    heads = chain_heads(conn, table, partners)
    for row in rows:
        row["prev_hash"] = heads[row["partner_key"]]
        row["entry_hash"] = heads[row["partner_key"]] = entry_hash(row["prev_hash"], row)


# ---- upgrade ------------------------------------------------------------------------------------


def missing_hash_columns(conn_or_engine, table: Table) -> list[str]:
    present = {column["name"] for column in inspect(conn_or_engine).get_columns(table.name)}
    return [name for name in HASH_COLUMNS if name not in present]


def upgrade_table(conn: Connection, table: Table) -> list[str]:
    """Add the hash columns and the chain index to a journal created before them; returns what was added."""
    if not inspect(conn).has_table(table.name):
        return []
    added = missing_hash_columns(conn, table)
    for name in added:
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {name} VARCHAR(64)"))
    for index in table.indexes:
        if [column.name for column in index.columns] == ["partner_key", "id"]:
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {index.name} ON {table.name} (partner_key, id)"))
    return added


# ---- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first line of a partner's chain that does not fit, and why."""

    partner_key: str
    entry_id: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChainReport:
    entries: int  # hashed lines checked
    chains: int
    unhashed: int  # lines older than their chain (written before the upgrade): not covered
    breaks: tuple[ChainBreak, ...]
    heads: dict[str, str]  # partner -> newest entry_hash of an intact chain

    @property
    def ok(self) -> bool:
        return not self.breaks

    def summary(self) -> str:
        older = f" ({self.unhashed} older entries without a hash not covered)" if self.unhashed else ""
        if self.ok:
            return f"ok, {self.entries} entries in {self.chains} chains{older}"
        lines = [f"partner {b.partner_key}: entry {b.entry_id}: {b.reason}" for b in self.breaks]
        lines.append(f"BROKEN: {len(self.breaks)} of {self.chains} chains{older}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "chains": self.chains, "unhashed": self.unhashed,
                "breaks": [b.to_dict() for b in self.breaks], "heads": self.heads}


@dataclass
class _Walk:
    """One chain being walked."""

    partner_key: str
    head: str | None = None
    previous_id: int | None = None
    hashed: int = 0
    unhashed: int = 0


def verify(engine: Engine, table: Table, partner_key: str | None = None) -> ChainReport:
    """Walk every partner's chain (or one partner's) in id order; name each chain's first bad line."""
    c = table.c
    query = select(c.id, *(c[name] for name in CONTENT_COLUMNS + HASH_COLUMNS)).order_by(c.partner_key, c.id)
    if partner_key is not None:
        query = query.where(c.partner_key == partner_key)
    entries = unhashed = chains = 0
    breaks: list[ChainBreak] = []
    heads: dict[str, str] = {}
    with engine.connect() as conn, engine.connect() as lookups:
        result = conn.execution_options(stream_results=True, yield_per=VERIFY_BATCH).execute(query).mappings()
        for partner, rows in itertools.groupby(result, key=lambda row: row["partner_key"]):
            walk = _Walk(partner)
            problem = _walk_chain(walk, rows, lambda h: _find_entry(lookups, table, partner, h))
            chains += 1
            entries, unhashed = entries + walk.hashed, unhashed + walk.unhashed
            if problem is not None:
                breaks.append(problem)
            elif walk.head is not None:
                heads[partner] = walk.head
    return ChainReport(entries, chains, unhashed, tuple(breaks), heads)


def _walk_chain(walk: _Walk, rows: Iterator[Mapping[str, Any]], find) -> ChainBreak | None:
    for row in rows:
        if row["entry_hash"] is None:
            if walk.head is None:
                walk.unhashed += 1  # older than the chain
                continue
            return ChainBreak(walk.partner_key, row["id"], (
                f"has no entry_hash but follows hashed entry {walk.previous_id}: its hash was removed, "
                "or it was written around the journal's record()"))
        if row["prev_hash"] != walk.head:
            return ChainBreak(walk.partner_key, row["id"], _link_problem(walk, row, find))
        if entry_hash(row["prev_hash"], row) != row["entry_hash"]:
            return ChainBreak(walk.partner_key, row["id"], "edited: its content does not match its entry_hash")
        walk.head, walk.previous_id, walk.hashed = row["entry_hash"], row["id"], walk.hashed + 1
    return None


def _link_problem(walk: _Walk, row: Mapping[str, Any], find) -> str:
    """Why a line's ``prev_hash`` is not the hash of the line before it."""
    before = f"entry {walk.previous_id}" if walk.previous_id is not None else "the start of the chain"
    if row["prev_hash"] is None:
        return (f"claims to begin the chain but follows {before}: it was inserted, or its prev_hash "
                "was removed")
    linked = find(row["prev_hash"])
    if linked is None:
        return (f"the entry before it was removed: it links to an entry that is not in the chain "
                f"(the last intact one is {before})")
    if linked > row["id"]:
        return f"out of order: it links to entry {linked}, which comes after it (entries were reordered)"
    return (f"links to entry {linked}, not to {before}: {before} was inserted, or the chain forked "
            "(two writers appended to the same head)")


def _find_entry(conn: Connection, table: Table, partner_key: str, hash_value: str) -> int | None:
    c = table.c
    query = select(c.id).where(and_(c.partner_key == partner_key, c.entry_hash == hash_value)).limit(1)
    return conn.execute(query).scalar()
