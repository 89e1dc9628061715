"""``PartnerInbox``: the intake of one partner's inbound folder over one SFTP session.

See the package docstring (``include/intake/__init__.py``) for the flow and an example.
"""
from __future__ import annotations

import logging
import os
import posixpath
import stat as stat_mod
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from include.intake import ledger as L
from include.intake.claims import claim_token
from include.intake.errors import (
    FileChangedError,
    FileVanishedError,
    FolderRefused,
    LedgerStateError,
    MoveBatchError,
    MoveError,
    NotAttempted,
    NotRegularFile,
    RefusedInPlace,
    TransferError,
)
from include.intake.fetch import (
    PIPELINE_MAX_SIZE,
    FetchJob,
    PipelineStats,
    fetch_many_to_files,
    fetch_to_file,
    supports_batch_pipelining,
    tune_session,
)
from include.intake.ledger import Ledger, LedgerEntry
from include.intake.links import folder_problems, handle_problem, link_reason, lstat_and_open, partner_tree
from include.intake.listing import RemoteEntry, list_folder
from include.intake.moves import companion_target, rename_many, target_path, unique_suffix
from include.intake.names import (
    DONE_SUFFIX,
    MANIFEST_SUFFIX,
    addressable_name,
    classify_name,
    read_manifest,
    safe_local_name,
)

log = logging.getLogger(__name__)

#: A manifest larger than this is not a sha256 manifest (and is not read whole).
MAX_MANIFEST_BYTES = 64 * 1024
DEFAULT_STALE_CLAIM = timedelta(hours=1)


@dataclass(frozen=True)
class ReadyFile:
    """A file judged complete and claimed by this inbox (ledger status ``ready``). JSON-friendly."""

    entry_id: int
    partner_key: str
    remote_path: str
    file_name: str
    size: int
    mtime: int
    doc_type: str | None
    suite: str | None
    format: str | None
    companions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ReadyFile:
        return cls(**data)


@dataclass(frozen=True)
class FetchedFile:
    """Result of :meth:`PartnerInbox.fetch`. JSON-friendly.

    ``outcome``: ``fetched`` (process it: validate, announce, archive), ``duplicate`` (same content
    as entry ``duplicate_of``; already moved to archive, announce once), or ``quarantined`` (its
    checksum manifest did not match; already moved to quarantine, ``reason`` says why).
    """

    entry_id: int
    partner_key: str
    remote_path: str
    file_name: str
    local_path: str | None
    size: int
    sha256: str
    doc_type: str | None
    suite: str | None
    format: str | None
    outcome: str
    duplicate_of: int | None = None
    reason: str | None = None
    final_path: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FetchedFile:
        return cls(**data)


@dataclass(frozen=True)
class Rejected:
    """A file refused from its listing alone and quarantined by :meth:`PartnerInbox.poll`."""

    entry_id: int
    remote_path: str
    file_name: str
    reason: str
    final_path: str | None  # None when the name cannot be addressed safely (left in place, recorded)


@dataclass(frozen=True)
class Waiting:
    """A candidate not ready yet, and why (for logs; nothing to do)."""

    file_name: str
    reason: str


@dataclass
class PollResult:
    """What one poll of the inbound folder found."""

    ready: list[ReadyFile] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    waiting: list[Waiting] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)  # claimed by this or another run already

    def __iter__(self):
        return iter(self.ready)

    def __len__(self) -> int:
        return len(self.ready)


@dataclass
class ResumeReport:
    """What :meth:`PartnerInbox.resume_unfinished` completed or took over."""

    completed_moves: list[LedgerEntry] = field(default_factory=list)
    reclaimed: list[LedgerEntry] = field(default_factory=list)


def _entry_id(item: Any) -> int:
    if isinstance(item, int):
        return item
    if isinstance(item, LedgerEntry):
        return item.id
    entry_id = getattr(item, "entry_id", None)
    if entry_id is None:
        raise TypeError(f"expected a ledger entry id, ReadyFile, FetchedFile or LedgerEntry, got {type(item).__name__}")
    return int(entry_id)


def move_target(folder: str, file_name: str, sha256: str | None = None) -> str:
    """Where a file moves in ``folder`` (archive or quarantine): its safe name + a unique suffix."""
    return target_path(folder, safe_local_name(file_name, max_len=180), unique_suffix(sha256, datetime.now(timezone.utc)))


class PartnerInbox:
    """The intake of one partner's inbound folder, over one SFTP session.

    :param partner: the registry :class:`~include.partners.Partner`.
    :param sftp: an open SFTP client session (paramiko ``SFTPClient`` from
        ``SFTPHook(partner.sftp_conn_id).get_managed_conn()``, or any object with ``listdir_attr``,
        ``open``, ``stat`` and ``posix_rename``). The inbox never opens or closes connections:
        every call of one inbox uses this one session.
    :param ledger: the :class:`~include.intake.ledger.Ledger` (project database).
    :param staging_dir: local directory for fetched files; each file lands in
        ``<staging_dir>/<partner key>/<entry id>-<safe name>`` whatever its remote name.
    :param claimed_by: this run's claim token (:func:`include.intake.claims.claim_token`); a one-off token if None.
    :param clock: seconds since the epoch (tests move time forward without sleeping).
    :param fetch_min_rate: bytes/s below which a fetch counts as stuck (time bound
        ``fetch_timeout_floor + size / fetch_min_rate``).
    """

    def __init__(
        self,
        partner: Any,
        sftp: Any,
        ledger: Ledger,
        staging_dir: str | os.PathLike,
        *,
        claimed_by: str | None = None,
        clock=time.time,
        fetch_min_rate: float | None = None,
        fetch_timeout_floor: float | None = None,
    ) -> None:
        self.partner = partner
        self.sftp = sftp
        self.ledger = ledger
        self.staging_dir = Path(staging_dir)
        self.claimed_by = claimed_by or claim_token("adhoc", f"{partner.key}-{uuid.uuid4().hex}")
        self.clock = clock
        self._fetch_kwargs: dict = {}
        if fetch_min_rate is not None:
            self._fetch_kwargs["min_rate"] = fetch_min_rate
        if fetch_timeout_floor is not None:
            self._fetch_kwargs["timeout_floor"] = fetch_timeout_floor
        #: Counters of the cross-file pipeline of the last :meth:`fetch_many` (None: not used).
        self.last_pipeline: PipelineStats | None = None
        #: Folders checked on this session (:meth:`_folder_problems`): path -> why not usable, or None.
        self._checked_folders: dict[str, str | None] = {}
        tune_session(sftp)

    # ------------------------------------------------------------------------------------------
    @property
    def folders(self):
        return self.partner.folders

    def entry(self, item: Any) -> LedgerEntry:
        """The current ledger entry of an id / ReadyFile / FetchedFile / LedgerEntry."""
        return self.ledger.get(_entry_id(item))

    def _own(self, item: Any) -> LedgerEntry:
        entry = self.entry(item)
        if entry.partner_key != self.partner.key:
            raise LedgerStateError(f"entry {entry.id} belongs to another partner")
        return entry

    def _folder_problems(self, folders: list[str]) -> dict[str, str | None]:
        """Why each folder must not be listed or written into (None: a real directory inside the
        partner's tree, see :func:`include.intake.links.folder_problems`). Checked once per folder
        and session (the inbox's): the first use pays one round trip for all new folders. A folder
        swapped for a link later in the same session is not seen: the residual of checking per session."""
        new = [folder for folder in dict.fromkeys(folders) if folder not in self._checked_folders]
        if new:
            self._checked_folders.update(folder_problems(self.sftp, new, partner_tree(self.folders)))
        return {folder: self._checked_folders[folder] for folder in folders}

    def _doc_type_info(self, doc_type: str | None) -> tuple[str | None, str | None]:
        for candidate in self.partner.document_types:
            if candidate.type == doc_type:
                return candidate.suite, candidate.format
        return None, None

    # ---- poll ----------------------------------------------------------------------------------
    def poll(self) -> PollResult:
        """List the inbound folder once, update the readiness observations, claim what is ready.

        Quarantines at once what can never become a valid document: unsafe names and files that are
        complete but match no document type (``result.rejected``). Symbolic links (and anything else
        that is neither a regular file nor a folder) are refused too, recorded as quarantined and
        left in place: a link is not the partner's file. Temporary names are left alone.

        :raises FolderRefused: the inbound folder is not a real directory inside the partner's tree
            (e.g. a symbolic link into another partner's folder): nothing is listed.
        """
        readiness = self.partner.readiness
        inbound = self.folders.inbound
        problem = self._folder_problems([inbound])[inbound]
        if problem:
            raise FolderRefused(inbound, problem)
        entries = list_folder(self.sftp, inbound)
        names = {entry.name for entry in entries if entry.is_file}  # a link never counts as a marker or manifest
        result = PollResult()
        now = self.clock()
        candidates: list[RemoteEntry] = []
        for remote in entries:
            if remote.is_dir:
                continue  # sub-folders (e.g. catalog/) are not deliveries
            if not remote.is_file:
                rejected = self._reject(remote, link_reason(remote.name, remote.mode), addressable=False)
                if rejected:
                    result.rejected.append(rejected)
                continue
            verdict = classify_name(remote.name, readiness.temp_suffixes, names)
            if verdict.kind == "unsafe":
                rejected = self._reject(remote, verdict.reason or "unsafe file name",
                                        addressable=addressable_name(remote.name))
                if rejected:
                    result.rejected.append(rejected)
                continue
            if verdict.kind == "temporary":
                result.temporary.append(remote.name)
            elif verdict.kind == "file":
                candidates.append(remote)
            # companions travel with their file (a lone companion waits for it)

        # A constant number of ledger round trips per poll: one read of the open entries, one
        # transaction of sightings (insert new / count re-seen), one compare-and-set claim.
        open_entries = self.ledger.open_entries(self.partner.key)
        busy: set[str] = set()
        to_observe: list[RemoteEntry] = []
        for remote in candidates:
            existing = open_entries.get(remote.path)
            if existing is not None and existing.status != L.SEEN:
                busy.add(remote.name)
            else:
                to_observe.append(remote)
        observed = self.ledger.observe_many(
            self.partner.key, [(remote.path, remote.name, remote.size, remote.mtime) for remote in to_observe])
        to_claim: list[tuple[RemoteEntry, LedgerEntry, Any, list[str]]] = []
        for remote in to_observe:
            entry = observed[remote.path]
            if entry.status != L.SEEN:
                busy.add(remote.name)
                continue
            reason = self._not_ready_reason(remote, entry, names, now)
            if reason:
                result.waiting.append(Waiting(remote.name, reason))
                continue
            doc_type = self.partner.document_type_for(remote.name)
            companions = self._companions(remote.name, names)
            if doc_type is None:
                rejected = self._reject(
                    remote, f"no document type of partner {self.partner.key} matches {remote.name!r}",
                    addressable=True, companions=companions)
                if rejected:
                    result.rejected.append(rejected)
                continue
            to_claim.append((remote, entry, doc_type, companions))
        claimed = self.ledger.claim_many(
            [(entry.id, doc_type.type, companions) for _, entry, doc_type, companions in to_claim], self.claimed_by)
        for remote, entry, doc_type, companions in to_claim:
            if entry.id not in claimed:
                busy.add(remote.name)  # an overlapping run claimed it first
                continue
            result.ready.append(ReadyFile(
                entry_id=entry.id, partner_key=self.partner.key, remote_path=remote.path,
                file_name=remote.name, size=remote.size, mtime=remote.mtime, doc_type=doc_type.type,
                suite=doc_type.suite, format=doc_type.format, companions=companions))
        result.in_progress = [remote.name for remote in candidates if remote.name in busy]
        self.ledger.mark_vanished(self.partner.key, {remote.path for remote in candidates})
        return result

    def _companions(self, name: str, names: set[str]) -> list[str]:
        return [companion for companion in (name + DONE_SUFFIX, name + MANIFEST_SUFFIX) if companion in names]

    def _not_ready_reason(self, remote: RemoteEntry, entry: LedgerEntry, names: set[str], now: float) -> str | None:
        readiness = self.partner.readiness
        if entry.stable_count < readiness.stable_polls:
            return f"size/mtime stable for {entry.stable_count} of {readiness.stable_polls} polls"
        age = now - remote.mtime
        if age < readiness.min_age_seconds:
            return f"modified {age:.0f}s ago, needs {readiness.min_age_seconds}s"
        if readiness.marker == "done" and remote.name + DONE_SUFFIX not in names:
            return f"waiting for marker {remote.name + DONE_SUFFIX}"
        if readiness.marker == "manifest" and remote.name + MANIFEST_SUFFIX not in names:
            return f"waiting for manifest {remote.name + MANIFEST_SUFFIX}"
        return None

    def _reject(self, remote: RemoteEntry, reason: str, *, addressable: bool,
                companions: list[str] | None = None) -> Rejected | None:
        # The entry and its quarantine are recorded in one statement: a run killed right after it leaves
        # a pending move (finished by the next run's resume_unfinished), never an open 'ready' entry.
        target = move_target(self.folders.quarantine, remote.name) if addressable else None
        entry = self.ledger.register_rejected(self.partner.key, remote.path, remote.name, remote.size,
                                              remote.mtime, reason, self.claimed_by, final_path=target,
                                              companions=companions or ())
        if entry is None:
            return None
        if target is None:
            log.warning("partner %s: %s left in place and recorded as quarantined: %s",
                        self.partner.key, entry.file_name, reason)
            return Rejected(entry.id, remote.path, remote.name, reason, None)
        # The listed path, not the stored one: the ledger keeps undecodable bytes escaped.
        self._execute_move(entry, remote.path)
        return Rejected(entry.id, remote.path, remote.name, reason, self.ledger.mark_moved(entry.id).final_path)

    # ---- fetch ---------------------------------------------------------------------------------
    def fetch(self, item: Any, *, timeout: float | None = None) -> FetchedFile:
        """Stream a claimed file to the staging dir (sha256 while streaming) and classify it.

        Verifies the ``.sha256`` manifest when present (mismatch → quarantined), then records the
        fetch in the ledger, which recognises an identical earlier delivery (→ ``duplicate``, moved
        to archive). Returns a :class:`FetchedFile` whose ``outcome`` says which.

        :raises TransferError: the transfer failed or exceeded its time bound. After a
            ``TransferTimeout`` or ``SessionBroken`` the session has been dropped (``session_dropped``):
            nothing more goes over it. The entry stays ``ready`` with the error recorded, for a retry;
            except ``FileChangedError`` (back to ``seen``: readiness starts over),
            ``FileVanishedError`` (entry closed as ``vanished``) and ``NotRegularFile`` (the opened
            handle is not the listed regular file and the path is now a symbolic link: nothing of it
            is kept, the entry is closed as quarantined with the reason, the link left in place).
        """
        entry = self._own(item)
        self._check_fetchable(entry)
        local = self._staging_path(entry)
        try:
            result = fetch_to_file(self.sftp, entry.remote_path, local, expected_size=entry.size,
                                   expected_mtime=entry.mtime, timeout=timeout, **self._fetch_kwargs)
        except NotRegularFile as exc:
            self._quarantine_entry(entry, str(exc), movable=False)
            raise
        except FileChangedError as exc:
            self.ledger.release_claim(entry.id, str(exc))  # still being written: judge it again
            raise
        except FileVanishedError as exc:
            self.ledger.close_vanished(entry.id, str(exc))
            raise
        except TransferError as exc:
            self.ledger.record_error(entry.id, str(exc))
            raise
        suite, fmt = self._doc_type_info(entry.doc_type)
        base = dict(entry_id=entry.id, partner_key=entry.partner_key, remote_path=entry.remote_path,
                    file_name=entry.file_name, size=result.size, sha256=result.sha256, doc_type=entry.doc_type,
                    suite=suite, format=fmt, seconds=result.seconds)

        manifest_name = entry.file_name + MANIFEST_SUFFIX
        if manifest_name in entry.companions or self.partner.readiness.marker == "manifest":
            reason = self._manifest_mismatch(entry, manifest_name, result.sha256)
            if reason:
                # Keep what arrived (digest, staged copy) without claiming its content as received.
                self.ledger.record_unverified_fetch(entry.id, sha256=result.sha256, size=result.size,
                                                    local_path=str(local), error=reason)
                final_path = self.quarantine(entry.id, reason)
                return FetchedFile(local_path=str(local), outcome="quarantined", reason=reason,
                                   final_path=final_path, **base)

        recorded = self.ledger.mark_fetched(entry.id, sha256=result.sha256, size=result.size, local_path=str(local))
        if recorded.status == L.DUPLICATE:
            final_path = self._move(recorded, L.DUPLICATE, self.folders.archive, reason=None)
            return FetchedFile(local_path=str(local), outcome="duplicate", duplicate_of=recorded.duplicate_of,
                               final_path=final_path, **base)
        return FetchedFile(local_path=str(local), outcome="fetched", **base)

    def fetch_all(self, items: list[Any], *, timeout: float | None = None) -> tuple[list[FetchedFile], dict[int, str]]:
        """Fetch many files over this one session. Returns (fetched files, {entry id: error}).

        A failed transfer does not stop the batch, except one that dropped the session (a timeout, a
        broken session): the remaining files are reported as errors (they stay claimed for the next run).
        """
        done: list[FetchedFile] = []
        errors: dict[int, str] = {}
        items = list(items)
        for index, item in enumerate(items):
            try:
                done.append(self.fetch(item, timeout=timeout))
            except TransferError as exc:
                errors[_entry_id(item)] = str(exc)
                if exc.session_dropped:
                    for rest in items[index + 1:]:
                        errors[_entry_id(rest)] = "not fetched: the session was dropped on an earlier file"
                    break
        return done, errors

    def _check_fetchable(self, entry: LedgerEntry) -> None:
        if entry.partner_key != self.partner.key:
            raise LedgerStateError(f"entry {entry.id} belongs to another partner")
        # A retry after these outcomes gets the same transfer error again, not a state error.
        if entry.status == L.VANISHED:
            raise FileVanishedError(entry.error or f"{entry.remote_path} vanished before it could be fetched")
        if entry.status == L.SEEN and entry.is_open and entry.error:
            raise FileChangedError(f"{entry.remote_path} is being rewritten; it is fetched once stable again")
        if entry.status == L.QUARANTINED and entry.closed_at is not None and entry.final_path is None \
                and entry.sha256 is None:
            raise RefusedInPlace(entry.error or f"{entry.remote_path} was refused and left in place")
        if not entry.is_open or entry.status not in (L.READY, L.FETCHED):
            raise LedgerStateError(f"entry {entry.id} ({entry.file_name}) is {entry.status}, not fetchable")

    def _staging_path(self, entry: LedgerEntry) -> Path:
        return self.staging_dir / self.partner.key / f"{entry.id}-{safe_local_name(entry.file_name)}"

    def _needs_manifest(self, entry: LedgerEntry) -> bool:
        return entry.file_name + MANIFEST_SUFFIX in entry.companions or self.partner.readiness.marker == "manifest"

    def fetch_many(self, items: list[Any], *, timeout: float | None = None
                   ) -> tuple[list[FetchedFile], dict[int, Exception]]:
        """Fetch many claimed files over this one session, with the rules of :meth:`fetch`, and
        record them in the ledger in a few transactions whatever their number.

        Returns (fetched files in the order given, ``{entry_id: exception}`` for the others). Per
        file, as :meth:`fetch`: ``FileChangedError`` (claim released: readiness starts over),
        ``FileVanishedError`` (entry closed as vanished), ``NotRegularFile`` (swapped for a link:
        closed as quarantined in place), any other ``TransferError`` (error recorded, entry stays
        claimed), ``LedgerStateError`` (not fetchable). A ``TransferTimeout`` or a
        ``SessionBroken`` has dropped the session: the batch stops there, the files after it get :class:`NotAttempted`
        (entries untouched), and moves the batch still owes (duplicates, manifest mismatches) are
        recorded as intents without renaming, for :meth:`resume_unfinished` over a new session. A
        move that fails leaves its intent too and reports the :class:`MoveError`.

        Received files are recorded with :meth:`Ledger.mark_fetched_many` (duplicates by the
        ``(partner, content)`` constraint: against earlier entries and within the batch, the first
        being the original); duplicates go to the archive and manifest mismatches to quarantine with
        one batched move (:meth:`archive_many`'s machinery).

        Transfers: small files (listed size up to ``PIPELINE_MAX_SIZE``, 1 MiB) on a paramiko
        session are pipelined across files (:func:`~include.intake.fetch.fetch_many_to_files`: a
        window of files whose OPEN/READ/CLOSE requests are in flight together; counters of the last
        batch in :attr:`last_pipeline`); bigger files, and clients without paramiko's internals or
        with an ``open`` of their own, one at a time (:func:`~include.intake.fetch.fetch_to_file`).
        When a pipelined batch times out, the file the server is stuck on gets the
        ``TransferTimeout``; the unfinished files of the window before it get ``NotAttempted`` too.

        :param timeout: bound of each file's transfer, as in :meth:`fetch` (in the pipeline, a
            file's clock starts when the file before it is done, as if fetched one after another).
        """
        ids = list(dict.fromkeys(_entry_id(item) for item in items))
        entries = self.ledger.get_many(ids)
        errors: dict[int, Exception] = {}
        todo: list[LedgerEntry] = []
        for entry_id in ids:
            try:
                self._check_fetchable(entries[entry_id])
            except (TransferError, LedgerStateError) as exc:
                errors[entry_id] = exc
                continue
            todo.append(entries[entry_id])

        received: list[tuple[LedgerEntry, Path, Any]] = []
        mismatched: dict[int, str] = {}
        session_ok = True
        transfers = self._transfers(todo, timeout)
        try:
            for index, (entry, local, result) in enumerate(transfers):
                if isinstance(result, NotAttempted):  # the session timed out on a later file of the window
                    errors[entry.id] = result
                    continue
                if isinstance(result, NotRegularFile):  # swapped for a link: refused, left in place
                    self._quarantine_entry(entry, str(result), movable=False)
                    errors[entry.id] = result
                    continue
                if isinstance(result, FileChangedError):
                    self.ledger.release_claim(entry.id, str(result))
                    errors[entry.id] = result
                    continue
                if isinstance(result, FileVanishedError):
                    self.ledger.close_vanished(entry.id, str(result))
                    errors[entry.id] = result
                    continue
                if isinstance(result, TransferError) and result.session_dropped:  # a timeout, a broken session
                    self.ledger.record_error(entry.id, str(result))
                    errors[entry.id] = result
                    for rest in todo[index + 1:]:
                        errors[rest.id] = NotAttempted(
                            f"{rest.remote_path} not fetched: the session was dropped on {entry.remote_path}")
                    session_ok = False
                    break
                if isinstance(result, TransferError):
                    self.ledger.record_error(entry.id, str(result))
                    errors[entry.id] = result
                    continue
                if self._needs_manifest(entry):
                    reason = self._manifest_mismatch(entry, entry.file_name + MANIFEST_SUFFIX, result.sha256)
                    if reason:
                        self.ledger.record_unverified_fetch(entry.id, sha256=result.sha256, size=result.size,
                                                            local_path=str(local), error=reason)
                        mismatched[entry.id] = reason
                received.append((entry, local, result))
        finally:
            transfers.close()

        to_record = [(e.id, r.sha256, r.size, str(local)) for e, local, r in received if e.id not in mismatched]
        try:
            recorded = self.ledger.mark_fetched_many(to_record)
        except LedgerStateError:  # one changed state meanwhile: record the others one by one
            recorded = {}
            for entry_id, sha256, size, local_path in to_record:
                try:
                    recorded[entry_id] = self.ledger.mark_fetched(entry_id, sha256=sha256, size=size,
                                                                  local_path=local_path)
                except LedgerStateError as exc:
                    errors[entry_id] = exc
        moves = [(entry, L.DUPLICATE, self.folders.archive, None)
                 for entry in recorded.values() if entry.status == L.DUPLICATE]
        if mismatched:
            current = self.ledger.get_many(list(mismatched))
            moves += [(current[i], L.QUARANTINED, self.folders.quarantine, reason) for i, reason in mismatched.items()]
        moved, move_errors = self._move_many(moves, execute=session_ok)
        errors.update(move_errors)

        done: list[FetchedFile] = []
        for entry, local, result in received:
            if entry.id in errors:
                continue
            suite, fmt = self._doc_type_info(entry.doc_type)
            base = dict(entry_id=entry.id, partner_key=entry.partner_key, remote_path=entry.remote_path,
                        file_name=entry.file_name, local_path=str(local), size=result.size, sha256=result.sha256,
                        doc_type=entry.doc_type, suite=suite, format=fmt, seconds=result.seconds)
            if entry.id in mismatched:
                done.append(FetchedFile(outcome="quarantined", reason=mismatched[entry.id],
                                        final_path=moved.get(entry.id), **base))
            elif recorded[entry.id].status == L.DUPLICATE:
                done.append(FetchedFile(outcome="duplicate", duplicate_of=recorded[entry.id].duplicate_of,
                                        final_path=moved.get(entry.id), **base))
            else:
                done.append(FetchedFile(outcome="fetched", **base))
        return done, {i: errors[i] for i in ids if i in errors}

    def _transfers(self, todo: list[LedgerEntry], timeout: float | None):
        """The transfers of :meth:`fetch_many`: ``(entry, staging path, FetchResult | TransferError)``
        in the order of ``todo``, ending after an error that dropped the session (the rest is not attempted).

        Runs of small files (listed size up to ``PIPELINE_MAX_SIZE``) on a paramiko session go
        through :func:`fetch_many_to_files`, with several files' requests in flight at once; bigger
        files, and clients without paramiko's internals, one at a time through :func:`fetch_to_file`.
        """
        pipelined = supports_batch_pipelining(self.sftp)
        self.last_pipeline = PipelineStats() if pipelined else None

        def small(entry: LedgerEntry) -> bool:
            return pipelined and entry.size is not None and entry.size <= PIPELINE_MAX_SIZE

        index = 0
        while index < len(todo):
            if small(todo[index]):
                end = index
                while end < len(todo) and small(todo[end]):
                    end += 1
                run = todo[index:end]
                locals_ = [self._staging_path(entry) for entry in run]
                jobs = [FetchJob(entry.remote_path, local, entry.size, timeout, entry.mtime)
                        for entry, local in zip(run, locals_)]
                batch = fetch_many_to_files(self.sftp, jobs, stats=self.last_pipeline, **self._fetch_kwargs)
                try:
                    for position, result in batch:
                        yield run[position], locals_[position], result
                        if isinstance(result, TransferError) and result.session_dropped:
                            return
                finally:
                    batch.close()
                index = end
                continue
            entry = todo[index]
            local = self._staging_path(entry)
            try:
                result = fetch_to_file(self.sftp, entry.remote_path, local, expected_size=entry.size,
                                       expected_mtime=entry.mtime, timeout=timeout, **self._fetch_kwargs)
            except TransferError as exc:
                result = exc
            yield entry, local, result
            if isinstance(result, TransferError) and result.session_dropped:
                return
            index += 1

    def _manifest_mismatch(self, entry: LedgerEntry, manifest_name: str, sha256: str) -> str | None:
        raw = self._read_manifest(posixpath.join(self.folders.inbound, manifest_name), manifest_name)
        if isinstance(raw, str):
            return raw
        if len(raw) > MAX_MANIFEST_BYTES:
            return f"checksum manifest {manifest_name} is larger than {MAX_MANIFEST_BYTES} bytes"
        lookup = read_manifest(raw.decode("utf-8", "replace"), entry.file_name)
        if lookup.problem:
            return f"checksum manifest {manifest_name} {lookup.problem}"
        expected = lookup.digest
        if expected is None:
            return f"checksum manifest {manifest_name} holds no sha256 for {entry.file_name}"
        if expected != sha256:
            return f"sha256 mismatch: manifest {manifest_name} says {expected}, received file has {sha256}"
        if manifest_name not in entry.companions:
            self.ledger.set_companions(entry.id, [*entry.companions, manifest_name])
        return None

    def _read_manifest(self, path: str, name: str) -> bytes | str:
        """The manifest's first bytes, or why it cannot be used. Never through a link: its lstat (sent
        with the OPEN, :func:`~include.intake.links.lstat_and_open`) must be a regular file and the
        opened handle (FSTAT) must match that lstat (size, mtime), else another partner's manifest
        could vouch for this file (one round trip more than a plain read; only files with a manifest
        pay it)."""
        try:
            listed, opened = lstat_and_open(self.sftp, path)
            with opened as handle:
                mode = (listed.st_mode or 0) if listed is not None else stat_mod.S_IFREG
                if not stat_mod.S_ISREG(mode):  # opened, never read
                    what = "a symbolic link" if stat_mod.S_ISLNK(mode) else "not a regular file"
                    return f"checksum manifest {name} is {what}: refused (never followed)"
                if listed is None or handle_problem(handle.stat(), listed.st_size, listed.st_mtime):
                    return f"checksum manifest {name} was replaced while it was read: refused"
                return handle.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            return f"checksum manifest {name} is missing"
        except OSError as exc:
            return f"checksum manifest {name} cannot be read: {exc}"

    # ---- outcome bookkeeping ---------------------------------------------------------------------
    def mark_validated(self, item: Any, *, tg_item_id: str | None = None) -> LedgerEntry:
        """Record that the fetched file passed its checks (optionally with its TG item id)."""
        return self.ledger.mark_validated(self._own(item).id, tg_item_id=tg_item_id)

    def set_tg_item(self, item: Any, tg_item_id: str) -> None:
        self.ledger.set_tg_item(self._own(item).id, tg_item_id)

    def claim_announcement(self, item: Any) -> bool:
        """True exactly once per entry (announce a duplicate or quarantine only once)."""
        return self.ledger.claim_announcement(self._own(item).id)

    # ---- moves ---------------------------------------------------------------------------------
    def archive(self, item: Any) -> str:
        """Move the file (and its marker/manifest) into the archive folder; returns the final path.

        Allowed for fetched/validated entries (and duplicates); idempotent on retry.
        """
        entry = self._own(item)
        if entry.status not in (L.FETCHED, L.VALIDATED, L.DUPLICATE, L.ARCHIVED):
            raise LedgerStateError(f"entry {entry.id} is {entry.status}; only fetched or validated files are archived")
        target = L.DUPLICATE if entry.status == L.DUPLICATE else L.ARCHIVED
        return self._move(entry, target, self.folders.archive, reason=None)

    def quarantine(self, item: Any, reason: str) -> str | None:
        """Move the file (and its companions) into quarantine with ``reason``; returns the final path.

        Idempotent on retry. Never deletes anything.
        """
        entry = self._own(item)
        return self._quarantine_entry(entry, reason, movable=True)

    def archive_many(self, items: list[Any]) -> dict[int, str]:
        """:meth:`archive` for many entries: the move intents in one transaction, the renames
        pipelined over the session (file first, then its companions), the entries closed in one
        transaction. Returns ``{entry_id: final_path}``.

        :raises LedgerStateError: an entry is not fetched/validated/duplicate (nothing is moved).
        :raises MoveBatchError: some renames failed; the others are done (``exc.done``), the failed
            ones keep their intent for a retry or :meth:`resume_unfinished`.
        """
        entries = self._own_many(items)
        bad = [f"{e.id} ({e.status})" for e in entries.values()
               if e.status not in (L.FETCHED, L.VALIDATED, L.DUPLICATE, L.ARCHIVED)]
        if bad:
            raise LedgerStateError(f"entries {', '.join(bad)}: only fetched or validated files are archived")
        return self._raise_failed(self._move_many([
            (e, L.DUPLICATE if e.status == L.DUPLICATE else L.ARCHIVED, self.folders.archive, None)
            for e in entries.values()]))

    def quarantine_many(self, items: list[tuple[Any, str]]) -> dict[int, str | None]:
        """:meth:`quarantine` for many ``(item, reason)`` pairs, batched like :meth:`archive_many`.
        Returns ``{entry_id: final_path}``. Never deletes anything.

        :raises MoveBatchError: as :meth:`archive_many`.
        """
        pairs = list(items)
        entries = self._own_many([item for item, _ in pairs])
        reasons = {_entry_id(item): reason for item, reason in pairs}
        return self._raise_failed(self._move_many([
            (entries[entry_id], L.QUARANTINED, self.folders.quarantine, reason) for entry_id, reason in reasons.items()]))

    def _own_many(self, items: list[Any]) -> dict[int, LedgerEntry]:
        entries = self.ledger.get_many([_entry_id(item) for item in items])
        foreign = [e.id for e in entries.values() if e.partner_key != self.partner.key]
        if foreign:
            raise LedgerStateError(f"entries {foreign} belong to another partner")
        return entries

    @staticmethod
    def _raise_failed(outcome: tuple[dict[int, str | None], dict[int, Exception]]) -> dict:
        done, errors = outcome
        if errors:
            first = next(iter(errors.values()))
            raise MoveBatchError(f"{len(errors)} of {len(done) + len(errors)} moves failed, e.g.: {first}",
                                 done, errors)
        return done

    def _move_many(self, moves: list[tuple[LedgerEntry, str, str, str | None]], *, execute: bool = True
                   ) -> tuple[dict[int, str | None], dict[int, Exception]]:
        """Two-phase moves of many entries (``(entry, target_status, folder, reason)``): intents
        recorded in one transaction before any rename, renames pipelined, entries closed in one
        transaction. Returns ({entry_id: final_path}, {entry_id: error}) in the order given.

        With ``execute=False`` (the session is not usable) only the intents are recorded and their
        targets returned: :meth:`resume_unfinished` does the renames later."""
        done: dict[int, str | None] = {}
        errors: dict[int, Exception] = {}
        intents = []
        to_move: list[int] = []
        entries: dict[int, LedgerEntry] = {}
        at = datetime.now(timezone.utc)
        for index, (entry, target_status, folder, reason) in enumerate(moves):
            entries[entry.id] = entry
            if entry.closed_at is not None:
                if entry.target_status == target_status or entry.status == target_status:
                    done[entry.id] = entry.final_path  # already done
                else:
                    errors[entry.id] = LedgerStateError(f"entry {entry.id} is already {entry.status}")
                continue
            if entry.final_path is None:
                # One microsecond apart: names that sanitise alike still get distinct targets.
                suffix = unique_suffix(entry.sha256, at + timedelta(microseconds=index))
                intents.append((entry.id, target_status,
                                target_path(folder, safe_local_name(entry.file_name, max_len=180), suffix), reason))
            to_move.append(entry.id)
        if intents:
            entries.update(self.ledger.record_move_intents(intents))
        ready = []
        for entry_id in to_move:
            entry = entries[entry_id]
            if entry.closed_at is not None and entry.target_status is None:
                errors[entry_id] = LedgerStateError(f"entry {entry_id} is closed ({entry.status})")
            else:
                ready.append(entry)
        if not execute:
            done.update({entry.id: entry.final_path for entry in ready})
            ready = []
        failures = self._execute_moves(ready)
        errors.update(failures)
        closed = self.ledger.mark_moved_many([e.id for e in ready if e.id not in failures])
        done.update({entry_id: entry.final_path for entry_id, entry in closed.items()})
        order = [entry.id for entry, *_ in moves]
        return ({i: done[i] for i in order if i in done}, {i: errors[i] for i in order if i in errors})

    def _execute_moves(self, entries: list[LedgerEntry], source_paths: dict[int, str] | None = None
                       ) -> dict[int, MoveError]:
        """Rename files, then their companions, to the recorded targets (pipelined, retry-safe).
        Returns the entries whose file could not be moved; a companion that cannot be moved is
        logged and does not block its document.

        Nothing is renamed out of or into a folder that is not a real directory inside the partner's
        tree (a symbolic link would take the file into another partner's tree while the ledger
        records the intended path): such an entry gets a :class:`MoveError`, its file stays where it is."""
        sources = {e.id: (source_paths or {}).get(e.id) or e.remote_path for e in entries}
        problems = self._folder_problems([posixpath.dirname(path) for e in entries
                                          for path in (sources[e.id], e.final_path)])
        failures: dict[int, MoveError] = {}
        for e in entries:
            problem = problems[posixpath.dirname(sources[e.id])] or problems[posixpath.dirname(e.final_path)]
            if problem:
                failures[e.id] = MoveError(f"refusing to move {sources[e.id]} to {e.final_path}: {problem}")
        movable = [e for e in entries if e.id not in failures]
        results = rename_many(self.sftp, [(sources[e.id], e.final_path) for e in movable])
        failures.update({e.id: result for e, result in zip(movable, results) if isinstance(result, MoveError)})
        companions = [(e, companion) for e in entries if e.id not in failures for companion in e.companions]
        pairs = [(posixpath.join(posixpath.dirname(e.remote_path), companion),
                  companion_target(e.final_path, e.file_name, companion)) for e, companion in companions]
        for (e, companion), result in zip(companions, rename_many(self.sftp, pairs)):
            if isinstance(result, MoveError):
                log.warning("partner %s: companion %s could not be moved", self.partner.key, companion)
        return failures

    def _quarantine_entry(self, entry: LedgerEntry, reason: str, *, movable: bool,
                          source_path: str | None = None) -> str | None:
        if not movable:
            # The name cannot be addressed safely (e.g. contains '/'): record, leave it where it is.
            entry = self.ledger.record_move_intent(entry.id, target_status=L.QUARANTINED, final_path=None, reason=reason)
            self.ledger.mark_moved(entry.id)
            log.warning("partner %s: %s left in place and recorded as quarantined: %s",
                        self.partner.key, entry.file_name, reason)
            return None
        return self._move(entry, L.QUARANTINED, self.folders.quarantine, reason=reason, source_path=source_path)

    def _move(self, entry: LedgerEntry, target_status: str, folder: str, *, reason: str | None,
              source_path: str | None = None) -> str:
        if entry.closed_at is not None:
            if entry.target_status == target_status or entry.status == target_status:
                return entry.final_path  # already done
            raise LedgerStateError(f"entry {entry.id} is already {entry.status}")
        if entry.final_path is None:
            final_path = move_target(folder, entry.file_name, entry.sha256)
            entry = self.ledger.record_move_intent(entry.id, target_status=target_status, final_path=final_path,
                                                   reason=reason)
        self._execute_move(entry, source_path)
        return self.ledger.mark_moved(entry.id).final_path

    def _execute_move(self, entry: LedgerEntry, source_path: str | None = None) -> None:
        """Rename the file and its companions to the recorded targets (retry-safe)."""
        failures = self._execute_moves([entry], {entry.id: source_path} if source_path else None)
        if failures:
            raise failures[entry.id]

    # ---- crash recovery ------------------------------------------------------------------------
    def resume_unfinished(self, *, stale_after: timedelta = DEFAULT_STALE_CLAIM) -> ResumeReport:
        """Finish what a crashed run left: recorded-but-unconfirmed moves are completed (renames are
        retry-safe), and claims older than ``stale_after`` are taken over by this inbox and returned
        in ``reclaimed`` for the caller to continue: :meth:`fetch` a ``ready``/``fetched`` entry
        again (``ready_file(entry)``), :meth:`archive` a ``validated`` one.
        Call it at the start of a run, inside the same session.
        """
        report = ResumeReport()
        pending = self.ledger.pending_moves(self.partner.key)
        failures = self._execute_moves(pending)
        for entry_id, exc in failures.items():
            self.ledger.record_error(entry_id, str(exc))
            log.error("partner %s: pending move of entry %s failed again: %s", self.partner.key, entry_id, exc)
        closed = self.ledger.mark_moved_many([e.id for e in pending if e.id not in failures])
        report.completed_moves.extend(closed.values())
        for entry in self.ledger.stale_claims(self.partner.key, stale_after):
            if self.ledger.reclaim(entry.id, self.claimed_by, stale_after):
                report.reclaimed.append(self.ledger.get(entry.id))
        return report

    def ready_file(self, item: Any) -> ReadyFile:
        """A :class:`ReadyFile` for a (reclaimed) entry, to pass to :meth:`fetch`."""
        entry = self._own(item)
        suite, fmt = self._doc_type_info(entry.doc_type)
        return ReadyFile(entry.id, entry.partner_key, entry.remote_path, entry.file_name, entry.size or 0,
                         entry.mtime or 0, entry.doc_type, suite, fmt, list(entry.companions))

    def fetched_file(self, item: Any) -> FetchedFile:
        """The :class:`FetchedFile` of an entry an earlier attempt fetched (``fetched``/``validated``), as
        :meth:`fetch` returned it then, so a retried task carries on without fetching again.

        The staged copy may be gone (another worker): check ``local_path`` before reading it; a
        ``fetched`` entry can be fetched again.
        """
        entry = self._own(item)
        if entry.status not in (L.FETCHED, L.VALIDATED) or not entry.sha256:
            raise LedgerStateError(f"entry {entry.id} ({entry.file_name}) is {entry.status}, not fetched")
        suite, fmt = self._doc_type_info(entry.doc_type)
        return FetchedFile(entry_id=entry.id, partner_key=entry.partner_key, remote_path=entry.remote_path,
                           file_name=entry.file_name, local_path=entry.local_path, size=entry.size or 0,
                           sha256=entry.sha256, doc_type=entry.doc_type, suite=suite, format=fmt, outcome="fetched")
