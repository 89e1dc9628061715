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
