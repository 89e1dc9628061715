"""Exceptions of the intake core. Messages name paths and reasons, never credentials."""
from __future__ import annotations


class IntakeError(Exception):
    """Base class of intake errors."""


class TransferError(IntakeError):
    """A fetch failed (connection lost, file vanished or changed, local disk error).

    The ledger entry stays claimed with the error recorded; a later run may retry it.
    """

    #: True when the fetch closed the SFTP session before raising this (a timeout, or the session
    #: broke while requests were in flight): nothing more can be done over that session.
    session_dropped: bool = False


class FileChangedError(TransferError):
    """The remote file's size differs from the listing it was judged ready on: it is being
    rewritten. The inbox puts the entry back to ``seen`` so readiness starts over."""


class HandleMismatch(FileChangedError):
    """The opened handle is not the listed entry (its FSTAT: not a regular file, another size or
    mtime). ``problem`` says how, naming only what was listed (the opened object may be another
    partner's file). Rewritten, as far as the inbox is concerned: readiness starts over."""

    def __init__(self, remote_path: str, problem: str) -> None:
        super().__init__(f"{remote_path} changed while fetching: {problem}")
        self.problem = problem


class FileVanishedError(TransferError):
    """The remote file is gone (withdrawn or moved by someone else). The inbox closes the entry."""


class TransferTimeout(TransferError):
    """A fetch exceeded its time bound or its stall timeout (also: the session failed after the
    deadline had passed). The session may have been cut in the middle of an SFTP packet, so the
    fetch has closed it (transport included) before raising: open a new one for further transfers."""

    session_dropped = True


class SessionBroken(TransferError):
    """The SFTP session failed under a fetch before its deadline (connection dropped, a protocol
    error) while requests were in flight. The fetch has closed it before raising."""

    session_dropped = True


class RefusedInPlace(TransferError):
    """The file was refused without being read and left where it is: the ledger records it as
    quarantined in place with the reason (nothing is moved, nothing deleted). Fetching it again
    raises this again."""


class NotRegularFile(RefusedInPlace):
    """The path is not the partner's regular file any more: swapped for a symbolic link (or another
    kind of entry) after it was listed. Found by the LSTAT sent with the OPEN (nothing is read), or
    by the handle check (FSTAT after OPEN) and an LSTAT after it; no byte of it is kept, the link is
    never followed again."""


class FolderRefused(IntakeError):
    """A folder the kit would list or write into is not a real directory inside the partner's tree
    (a symbolic link, a file, missing): nothing is listed there or moved into it. ``reason`` says why."""

    def __init__(self, folder: str, reason: str) -> None:
        super().__init__(f"folder {folder}: {reason}")
        self.folder = folder
        self.reason = reason


class MoveError(IntakeError):
    """An archive/quarantine rename failed and the target does not exist; the ledger keeps the intent
    so :meth:`PartnerInbox.resume_unfinished` can finish it."""


class LedgerStateError(IntakeError):
    """An operation does not fit the entry's current status (e.g. fetching an archived file)."""


class NotAttempted(TransferError):
    """A batch fetch stopped before this file because its session timed out on an earlier one
    (:class:`TransferTimeout`). Nothing was done to the entry: it stays claimed for a retry over a
    new session."""


class MoveBatchError(MoveError):
    """Some moves of a batch (:meth:`PartnerInbox.archive_many` / ``quarantine_many``) failed; the
    others were completed and are in ``done`` (``{entry_id: final_path}``), the failures in
    ``errors`` (``{entry_id: exception}``). Failed entries keep their recorded intent, so a retry or
    :meth:`PartnerInbox.resume_unfinished` finishes them."""

    def __init__(self, message: str, done: dict, errors: dict) -> None:
        super().__init__(message)
        self.done = done
        self.errors = errors
