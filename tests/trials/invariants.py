"""The promises a trial checks once the runs are done, whatever happened in between.

:func:`problems` returns what is wrong, as sentences (empty: every promise kept), so a script can
count broken trials and a test can assert ``== []`` with the reasons in its message:

- **server**: inbound is empty; every delivered file is, byte for byte, exactly once in archive or
  quarantine (good files, the duplicate and the correction archived, bad ones quarantined);
- **Trading Grid** (read with the enterprise client over the API): exactly one item per delivered
  file (none for the re-delivery), of its category, saying how many rows the check found (a retry
  that lost the check's report would say less); each validation case has its report attached
  once; the baseline's bad file's case is resolved with one comment linking the correction's
  notification; the baseline's good file's notification has one "delivered again" note;
- **ledger**: one closed entry per file with the right status, pointing at its TG item;
- **item tracking** (``tg_items``): each item tracked once under its external_ref, the case resolved;
- **journal**: each file's steps (received, checked, moved, item posted or reused; the duplicate's
  line; the case's resolution).
"""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from tests.document_delivery.conftest import PARTNER, TG_PARTNER, DeliveryEnv
from tests.trials.harness import BAD, BASELINE, CORRECTION, DUPLICATE, GOOD, TrialFile

STATUS_OF = {GOOD: "archived", CORRECTION: "archived", BAD: "quarantined", DUPLICATE: "duplicate"}
MOVED_EVENT = {GOOD: "archived", CORRECTION: "archived", BAD: "quarantined"}


def trial_items(env: DeliveryEnv, files: list[TrialFile]) -> list[dict]:
    """The TG items of the trial's files: by digest or by name (a wrong item would still be found)."""
    digests = {f.sha256 for f in files}
    names = {f.name for f in files}
    return [item for item in env.items(partner_id=TG_PARTNER)
            if (item.get("metadata") or {}).get("sha256") in digests
            or (item.get("metadata") or {}).get("file_name") in names]


def problems(env: DeliveryEnv, files: list[TrialFile]) -> list[str]:
    """Every broken promise of the trial (see the module docstring)."""
    found = server_problems(env, files)
    items = trial_items(env, files)
    found += item_problems(env, files, items)
    found += ledger_problems(env, files, items)
    found += journal_problems(env, files, items)
    return found


def server_problems(env: DeliveryEnv, files: list[TrialFile]) -> list[str]:
    """Inbound empty; archive and quarantine hold exactly the delivered contents, each where it belongs
    (compared by digest: the re-delivery has the baseline file's bytes, so both are counted)."""
    found = [f"inbound not empty: {env.names(env.inbound)}"] if env.names(env.inbound) else []
    stored: Counter = Counter()
    for folder_name, folder in (("archive", env.archive), ("quarantine", env.quarantine)):
        for name in env.names(folder):
            stored[(folder_name, hashlib.sha256((folder / name).read_bytes()).hexdigest())] += 1
    expected = Counter((f.folder, f.sha256) for f in files)
    for (folder, digest), count in sorted((expected - stored).items()):
        names = [f.name for f in files if f.sha256 == digest]
        found.append(f"{names}: {count} copy(ies) missing from {folder}")
    for (folder, digest), count in sorted((stored - expected).items()):
        names = [f.name for f in files if f.sha256 == digest] or ["unknown content"]
        found.append(f"{names}: {count} extra copy(ies) in {folder}")
    return found


def item_problems(env: DeliveryEnv, files: list[TrialFile], items: list[dict]) -> list[str]:
    found = []
    by_file = Counter((item["metadata"].get("file_name"), item["metadata"].get("sha256")) for item in items)
    for f in files:
        want = 0 if f.kind == DUPLICATE else 1
        if by_file[(f.name, f.sha256)] != want:
            found.append(f"{f.name}: {by_file[(f.name, f.sha256)]} TG items (want {want})")
    expected = sum(f.kind != DUPLICATE for f in files)
    if len(items) != expected:
        found.append(f"{len(items)} TG items for {expected} announced files")
    items_of = {(i["metadata"].get("file_name"), i["metadata"].get("sha256")): i for i in items}
    for f in files:
        item = items_of.get((f.name, f.sha256))
        if item is None:
            continue
        if item["category"] != f.category:
            found.append(f"{f.name}: item {item['id']} is a {item['category']} (want {f.category})")
        if item["metadata"].get("rows") != f.rows:  # a retry must announce what the check found, not less
            found.append(f"{f.name}: item {item['id']} says {item['metadata'].get('rows')} rows (want {f.rows})")
        if f.kind == BAD and len(env.attachments(item["id"])) != 1:
            found.append(f"{f.name}: case {item['id']} has {len(env.attachments(item['id']))} attachments (want 1)")
    found += _follow_up_problems(env, files, items_of)
    return found


def _baseline(files: list[TrialFile], kind: str) -> TrialFile:
    return next(f for f in files if f.wave == BASELINE and f.kind == kind)


def _has_follow_ups(files: list[TrialFile]) -> bool:
    """A workload with a baseline (a re-delivery and a correction follow it); the outage's has none."""
    return any(f.kind == CORRECTION for f in files)


def _follow_up_problems(env: DeliveryEnv, files: list[TrialFile], items_of: dict) -> list[str]:
    """The correction resolves the baseline case (one linking comment); the re-delivery notes the original once."""
    if not _has_follow_ups(files):
        return []
    found = []
    case = items_of.get((_baseline(files, BAD).name, _baseline(files, BAD).sha256))
    correction = next(f for f in files if f.kind == CORRECTION)
    notification = items_of.get((correction.name, correction.sha256))
    if case and notification:
        if env.item(case["id"])["status"] != "resolved":
            found.append(f"case {case['id']} is {env.item(case['id'])['status']}, not resolved by the correction")
        links = [c for c in env.comments(case["id"]) if notification["id"] in c["body"]]
        if len(links) != 1:
            found.append(f"case {case['id']}: {len(links)} comments linking the correction (want 1)")
    original = items_of.get((_baseline(files, GOOD).name, _baseline(files, GOOD).sha256))
    if original:
        notes = [c for c in env.comments(original["id"]) if "delivered again" in c["body"]]
        if len(notes) != 1:
            found.append(f"notification {original['id']}: {len(notes)} 'delivered again' notes (want 1)")
    return found


def ledger_problems(env: DeliveryEnv, files: list[TrialFile], items: list[dict]) -> list[str]:
    from include.db import get_engine
    from include.exchange.items import tracked_items
    from include.intake.ledger import Ledger

    engine = get_engine(env.ctx.db_url)
    entries = Ledger(engine, create_schema=False).entries(PARTNER)
    found = [f"ledger entry {e.id} ({e.file_name}) still open ({e.status})" for e in entries if e.is_open]
    items_of = {(i["metadata"].get("file_name"), i["metadata"].get("sha256")): i for i in items}
    tracked = Counter(t.item_id for t in tracked_items(engine, partner_key=PARTNER))
    for f in files:
        mine = [e for e in entries if e.file_name == f.name]
        if len(mine) != 1:
            found.append(f"{f.name}: {len(mine)} ledger entries (want 1)")
            continue
        entry, item = mine[0], items_of.get((f.name, f.sha256))
        if entry.status != STATUS_OF[f.kind] or entry.sha256 != f.sha256:
            found.append(f"{f.name}: ledger says {entry.status}, sha256 {entry.sha256} (want {STATUS_OF[f.kind]})")
        if item is not None:
            if entry.tg_item_id != item["id"]:
                found.append(f"{f.name}: ledger points at TG item {entry.tg_item_id}, TG has {item['id']}")
            if tracked[item["id"]] != 1:
                found.append(f"{f.name}: item {item['id']} tracked {tracked[item['id']]} times (want 1)")
    case = items_of.get((_baseline(files, BAD).name, _baseline(files, BAD).sha256)) if _has_follow_ups(files) else None
    if case:
        (row,) = tracked_items(engine, item_ids=[case["id"]]) or [None]
        if row is None or row.status != "resolved" or not row.resolved_by_item_id:
            found.append(f"tracking of case {case['id']}: {row and (row.status, row.resolved_by_item_id)} (want resolved)")
    return found


def journal_problems(env: DeliveryEnv, files: list[TrialFile], items: list[dict]) -> list[str]:
    from include.db import get_engine
    from include.exchange.journal import partner_journal

    lines = partner_journal(get_engine(env.ctx.db_url), PARTNER, use_case="document_delivery")
    events: dict[str, set[str]] = {}
    for line in lines:
        events.setdefault(line.file_name or "", set()).add(line.event)
    found = []
    for f in files:
        have = events.get(f.name, set())
        if f.kind == DUPLICATE:
            want: set[Any] = {"duplicate"}
        else:
            want = {"received", "checked", MOVED_EVENT[f.kind]}
        missing = want - have
        if f.kind != DUPLICATE and not have & {"item_posted", "item_reused"}:
            missing.add("item_posted|item_reused")
        if missing:
            found.append(f"{f.name}: journal lacks {sorted(missing)} (has {sorted(have)})")
    case = next((i for i in items if i["metadata"].get("file_name") == _baseline(files, BAD).name),
                None) if _has_follow_ups(files) else None
    if case and not any(line.event == "resolved" and line.item_id == case["id"] for line in lines):
        found.append(f"journal has no 'resolved' line for case {case['id']}")
    return found
