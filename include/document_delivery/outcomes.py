"""What the intake decided about each file, as a typed record the publish step reads (via XCom).

**Document key** (what a "corrected file" corrects): ``<doc type>:<file stem>``, lower-cased, with a
trailing revision marker removed (``_v2``, ``-rev3``, ``_corrected``, ``_correction``, ``_fixed``,
``_resend``). ``INV-0001.csv`` and ``INV-0001_corrected.csv`` of the same partner are one document.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from include.textsafe import safe_text

if TYPE_CHECKING:  # pragma: no cover
    from include.intake.ledger import LedgerEntry

PASSED = "passed"
FAILED = "failed"
DUPLICATE = "duplicate"
REJECTED = "rejected"  # bad from its listing alone (unsafe name, unknown document type)
TRANSFER_FAILED = "transfer_failed"
KINDS = (PASSED, FAILED, DUPLICATE, REJECTED, TRANSFER_FAILED)

_REVISION_MARKER = re.compile(
    r"(?:[ _.-](?:v\d+|rev\d+|r\d+|corrected|correction|fixed|fix|resend|resent|new))+$", re.IGNORECASE
)


def printable_name(file_name: str) -> str:
    """A file name safe for JSON, logs, TG and the database: undecodable bytes (surrogates) become
    ``\\xNN``, so do NUL and other control characters (:func:`include.textsafe.safe_text`)."""
    return safe_text(file_name)


def document_key(doc_type: str | None, file_name: str) -> str:
    """``<doc type>:<normalised stem>``; a corrected file of the same document has the same key."""
    stem = printable_name(file_name).rstrip(". ")
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    stem = _REVISION_MARKER.sub("", stem.strip()).strip().lower()
    stem = re.sub(r"\s+", "_", stem) or "unnamed"
    return f"{doc_type or 'unknown'}:{stem}"


@dataclass(frozen=True)
class Outcome:
    """One file of the run and what happened to it; JSON-serialisable (``to_dict``/``from_dict``).

    ``report`` carries a failed file's check report (JSON text) inline, so the task that posts the
    case needs no disk shared with the worker that checked the file.
    """

    entry_id: int
    kind: str
    file_name: str
    remote_path: str
    doc_type: str | None
    document_key: str
    sha256: str | None = None
    size: int | None = None
    mtime: int | None = None
    local_path: str | None = None
    duplicate_of: int | None = None
    moved_to: str | None = None
    reason: str | None = None
    reason_code: str | None = None
    rows: int | None = None
    summary: str | None = None
    report: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown outcome kind {self.kind!r}")

    @property
    def version(self) -> str:
        """The file version when no content hash exists (never fetched): size and mtime."""
        return f"{self.size}-{self.mtime}"

    @property
    def code(self) -> str:
        """The reason code shown in titles: the explicit one, else the reason's prefix."""
        return self.reason_code or str(self.reason or "refused").split(":", 1)[0]

    def with_changes(self, **changes: Any) -> Outcome:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def of_entry(cls, entry: LedgerEntry, kind: str, **extra: Any) -> Outcome:
        return cls(
            entry_id=entry.id, kind=kind, file_name=printable_name(entry.file_name),
            remote_path=printable_name(entry.remote_path), doc_type=entry.doc_type,
            document_key=document_key(entry.doc_type, entry.file_name), sha256=entry.sha256, size=entry.size,
            mtime=entry.mtime, local_path=entry.local_path, duplicate_of=entry.duplicate_of,
            moved_to=entry.final_path if entry.closed_at is not None else None, **extra)


def outcomes_from(data: list[Any]) -> list[Outcome]:
    """Outcomes from XCom (dicts) or already typed."""
    return [o if isinstance(o, Outcome) else Outcome.from_dict(o) for o in data]
