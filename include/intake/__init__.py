"""SFTP intake core: listing, readiness, streamed fetch with sha256, ledger, archive/quarantine.

Plain Python over an SFTP client session: a paramiko ``SFTPClient`` (in Airflow, from
``SFTPHook(partner.sftp_conn_id).get_managed_conn()``) or any object with ``listdir_attr``,
``open``, ``stat``, ``lstat`` and ``posix_rename``. Nothing here imports Airflow, so it is tested with a bare
paramiko client against a real sshd.

The facade is :class:`PartnerInbox` (one partner, one session, one ledger)::

    from include.db import get_engine
    from include.intake import Ledger, PartnerInbox
    from include.partners import load_registry

    partner = load_registry().get("acme")
    ledger = Ledger(get_engine())                     # creates the ledger table if missing
    with SFTPHook(partner.sftp_conn_id).get_managed_conn() as sftp:
        inbox = PartnerInbox(partner, sftp, ledger, staging_dir, claimed_by=run_id)
        inbox.resume_unfinished()                     # finish moves a crashed run left behind
        polled = inbox.poll()                         # one listdir_attr; claims ready files
        for rejected in polled.rejected: ...          # already quarantined (bad name / unknown type)
        for ready in polled.ready:
            fetched = inbox.fetch(ready)              # streamed to staging, sha256, duplicate check
            if fetched.outcome == "fetched":
                ...validate fetched.local_path with suite fetched.suite...
                inbox.mark_validated(fetched, tg_item_id=item_id)
                inbox.archive(fetched)                # or inbox.quarantine(fetched, reason)
            # "duplicate": archived already, points at fetched.duplicate_of
            # "quarantined": manifest mismatch, fetched.reason
            if fetched.outcome != "fetched" and inbox.claim_announcement(fetched):
                ...tell the partner once...

Rules it enforces:

- **One listing per folder per poll** (``listdir_attr``), never a stat per file.
- **Readiness**: a file is ready when its size and mtime were the same for ``stable_polls``
  consecutive polls (observations live in the ledger, since each poll is a separate task run), its
  mtime is at least ``min_age_seconds`` old, its name is not temporary (``.filepart``, ``.part``,
  ``.tmp``, ``~``, dot-files, ...), and, if the partner uses them, ``NAME.done`` or ``NAME.sha256``
  is present. A manifest is checked after the fetch: a mismatch quarantines the file.
- **Unsafe names** (path separators/traversal, control characters, invalid UTF-8) are quarantined
  with a clear reason; locally every file is staged under ``<entry id>-<sanitised name>``, so no
  remote name can escape the staging dir. A name containing ``/`` cannot be addressed on the server
  at all: it is recorded as quarantined and left in place.
- **Fetch** streams with a bounded number of requests in flight and a bounded total time
  (see :mod:`include.intake.fetch` for why not paramiko's ``get``); many files reuse the one session.
- **Ledger** (:mod:`include.intake.ledger`): every file version seen, its status
  (seen → ready → fetched → validated → archived | quarantined | duplicate), sha256, TG item id,
  error and final path. Unique constraints make the claim safe for overlapping runs and detect an
  identical re-delivery (same partner + sha256) as a duplicate of the original entry.
- **Links are never followed** (:mod:`include.intake.links`): a symbolic link in inbound is refused
  at listing (recorded as quarantined, left in place); a fetched file's handle (FSTAT) must match
  its listing (regular file, size, mtime), so a file swapped for a link is refused before any byte
  is used; folders are listed or renamed into only when they and every folder above them in the
  partner's tree are real directories (checked once per session).
- **Moves** rename into archive/ or quarantine/ as ``NAME.<utc timestamp>.<sha8>`` (markers and
  manifests move along with the same suffix), after recording the intent in the ledger; renames are
  retry-safe and nothing is ever deleted on the server.

Every result type (``ReadyFile``, ``FetchedFile``) is a frozen dataclass with ``to_dict()`` /
``from_dict()`` for XCom; every method taking an entry accepts an id, a result or a ``LedgerEntry``.
"""
from include.intake.errors import (
    FileChangedError,
    FileVanishedError,
    FolderRefused,
    HandleMismatch,
    IntakeError,
    LedgerStateError,
    MoveBatchError,
    MoveError,
    NotAttempted,
    NotRegularFile,
    RefusedInPlace,
    SessionBroken,
    TransferError,
    TransferTimeout,
)
from include.intake.fetch import FetchResult, drop_session, fetch_to_file, time_bound, tune_session
from include.intake.inbox import FetchedFile, PartnerInbox, PollResult, ReadyFile, Rejected, ResumeReport, Waiting
from include.intake.ledger import Ledger, LedgerEntry, intake_files
from include.intake.listing import RemoteEntry, list_folder
from include.intake.moves import companion_target, refuses_overwrite, rename_many, rename_retry_safe, unique_suffix
from include.intake.names import addressable_name, classify_name, is_temporary_name, safe_local_name, unsafe_name_reason

__all__ = [
    "FetchResult",
    "FileChangedError",
    "FileVanishedError",
    "FetchedFile",
    "FolderRefused",
    "HandleMismatch",
    "IntakeError",
    "Ledger",
    "LedgerEntry",
    "LedgerStateError",
    "MoveBatchError",
    "MoveError",
    "NotAttempted",
    "NotRegularFile",
    "PartnerInbox",
    "PollResult",
    "ReadyFile",
    "RefusedInPlace",
    "Rejected",
    "RemoteEntry",
    "ResumeReport",
    "SessionBroken",
    "TransferError",
    "TransferTimeout",
    "Waiting",
    "addressable_name",
    "classify_name",
    "companion_target",
    "drop_session",
    "fetch_to_file",
    "intake_files",
    "is_temporary_name",
    "list_folder",
    "refuses_overwrite",
    "rename_many",
    "rename_retry_safe",
    "safe_local_name",
    "time_bound",
    "tune_session",
    "unique_suffix",
    "unsafe_name_reason",
]
