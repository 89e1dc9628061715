"""Sample partner deliveries for the demo, written straight into the embedded SFTP server's root.

For every partner in the registry and every document type it sends, one good file named after the
type's first file-name pattern; plus a couple of bad invoices (their quarantine and TG case are
part of the show). Each file gets the companion its partner's readiness rule asks for (``NAME.done``
or ``NAME.sha256``) and an mtime a few minutes back, so it counts as completely delivered at once.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from include.intake.names import DONE_SUFFIX, MANIFEST_SUFFIX

#: Rows per good sample: enough to look like a real file, small enough to check in a blink.
SAMPLE_ROWS = range(20, 50)
#: The generator puts its seed into the document keys as two digits (``PO-{seed:02d}{row:08d}``),
#: and the suites' key patterns allow no more: seeds stay below 100.
GENERATOR_SEEDS = 100
#: Bad files dropped per run: (partner key, bad-input corpus entries to try, first that exists wins).
BAD_SAMPLES = (
    ("acme", ("missing_column", "truncated_last_row")),                  # unreadable as an invoice
    ("globex", ("duplicate_invoice_number", "negative_amount")),         # readable, fails expectations
)
#: How long ago the samples "arrived": older than any partner's readiness min_age_seconds in the demo.
DELIVERED_SECONDS_AGO = 300


@dataclass(frozen=True)
class Sample:
    partner: str
    doc_type: str
    remote_path: str           # as a client of the SFTP server sees it, e.g. /partners/acme/inbound/INV-….csv
    expected_reason: str | None  # None: should pass the checks; else the reason code it must fail with


def _remote_to_local(sftp_root: Path, remote_path: str) -> Path:
    return sftp_root / remote_path.lstrip("/")


def prepare_exchange(sftp_root: str | os.PathLike, registry=None) -> list[Sample]:
    """Create every partner's folders under ``sftp_root``; on the first call also drop samples.

    Later calls (the demo restarted on an existing ``var/``) leave the folders as the last run left
    them, so a restart does not pile up new deliveries. Returns the samples dropped now.
    """
    registry = registry or _load_registry()
    sftp_root = Path(sftp_root)
    first_time = not any(_remote_to_local(sftp_root, p.folders.inbound).exists() for p in registry.partners)
    create_partner_folders(sftp_root, registry)
    return drop_samples(sftp_root, registry) if first_time else []


def create_partner_folders(sftp_root: str | os.PathLike, registry=None) -> None:
    """Every partner's inbound/outbound/archive/quarantine folder under ``sftp_root`` (idempotent)."""
    registry = registry or _load_registry()
    for partner in registry.partners:
        for remote in partner.folders.all().values():
            _remote_to_local(Path(sftp_root), remote).mkdir(parents=True, exist_ok=True)


def drop_samples(sftp_root: str | os.PathLike, registry=None, *, bad: bool = True, seed: int | None = None) -> list[Sample]:
    """Write one good file per (partner, document type) and, if ``bad``, the bad invoices.

    ``seed`` defaults to the clock, so every drop has new content: identical content would be a
    re-delivery, which the ledger rightly announces as a duplicate instead of processing again.
    Each file's generator seed and row count derive from (seed, partner, type), giving 3,000
    variants per partner and type.
    """
    from tests.data.bad_inputs import BAD_INPUT_SUITE, DOC_TYPES, make_bad_inputs, make_valid_file

    registry = registry or _load_registry()
    sftp_root = Path(sftp_root)
    seed = int(time.time()) if seed is None else seed
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="demo-samples-") as scratch:
        scratch = Path(scratch)
        for partner in registry.partners:
            for doc in partner.document_types:
                if doc.type not in DOC_TYPES:
                    continue  # a type the generator cannot produce (catalog feeds belong to catalog_sync)
                name = file_name_for(doc.patterns[0], stamp)
                variant = zlib.crc32(f"{seed}/{partner.key}/{doc.type}".encode())
                rows = SAMPLE_ROWS[variant // GENERATOR_SEEDS % len(SAMPLE_ROWS)]
                made = make_valid_file(scratch / partner.key, doc.type, rows=rows, fmt=doc.format, name=name,
                                       seed=variant % GENERATOR_SEEDS)
                samples.append(_deliver(sftp_root, partner, made, name, doc.type, None))
        if bad:
            corpus = make_bad_inputs(scratch / "bad")
            for partner_key, wanted in BAD_SAMPLES:
                partner = registry.get(partner_key) if _has(registry, partner_key) else None
                invoice = next((d for d in partner.document_types if d.type == BAD_INPUT_SUITE), None) if partner else None
                entry = next((w for w in wanted if w in corpus), None)
                if invoice is None or entry is None:
                    continue
                path, reason = corpus[entry]
                name = file_name_for(invoice.patterns[0], f"{stamp}-bad-{entry.replace('_', '-')}")
                samples.append(_deliver(sftp_root, partner, path, name, invoice.type, reason))
    return samples


def correct_quarantined(sftp_root: str | os.PathLike, registry=None, *, seed: int | None = None) -> list[Sample]:
    """Act as the partner answering a validation_failure case: re-send each quarantined demo sample
    under its original name, now with valid content. The DAG recognises the same document and
    resolves the open case. Only the demo's own bad samples (``-bad-`` in the name) are corrected.
    """
    from tests.data.bad_inputs import make_valid_file

    registry = registry or _load_registry()
    sftp_root = Path(sftp_root)
    seed = int(time.time()) if seed is None else seed
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="demo-corrections-") as scratch:
        for partner in registry.partners:
            quarantine = _remote_to_local(sftp_root, partner.folders.quarantine)
            originals = sorted({m.group("name") for p in quarantine.glob("*") if (m := _QUARANTINED.match(p.name))})
            for name in originals:
                doc = partner.document_type_for(name)
                if "-bad-" not in name or doc is None:
                    continue
                variant = zlib.crc32(f"{seed}/{partner.key}/{name}".encode())
                made = make_valid_file(Path(scratch) / partner.key, doc.type, rows=SAMPLE_ROWS[0], fmt=doc.format,
                                       name=name, seed=variant % GENERATOR_SEEDS)
                samples.append(_deliver(sftp_root, partner, made, name, doc.type, None))
    return samples


#: "<original name>.<UTC timestamp>Z.<sha8 | nosha>", as include.intake.moves names moved files.
_QUARANTINED = re.compile(r"^(?P<name>.+)\.\d{8}T\d{12}Z\.(?:[0-9a-f]{8}|nosha)$")


def file_name_for(pattern: str, token: str) -> str:
    """A name matching the glob ``pattern``: ``INV-*.csv`` + ``20261125T1200`` → ``INV-20261125T1200.csv``."""
    name = pattern.replace("*", token, 1).replace("*", "").replace("?", "x")
    if "[" in name:
        raise ValueError(f"cannot derive a sample name from pattern {pattern!r}")
    return name


def _deliver(sftp_root: Path, partner, source: Path, name: str, doc_type: str, reason: str | None) -> Sample:
    remote = f"{partner.folders.inbound}/{name}"
    target = _remote_to_local(sftp_root, remote)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    companions = [target]
    marker = partner.readiness.marker
    if marker == "done":
        done = target.with_name(name + DONE_SUFFIX)
        done.write_bytes(b"")
        companions.append(done)
    elif marker == "manifest":
        manifest = target.with_name(name + MANIFEST_SUFFIX)
        manifest.write_text(f"{hashlib.sha256(target.read_bytes()).hexdigest()}  {name}\n")
        companions.append(manifest)
    delivered_at = time.time() - DELIVERED_SECONDS_AGO
    for path in companions:
        os.utime(path, (delivered_at, delivered_at))
    return Sample(partner.key, doc_type, remote, reason)


def _has(registry, key: str) -> bool:
    return any(p.key == key for p in registry.partners)


def _load_registry():
    from include.partners import load_registry

    return load_registry()
