"""File-name rules of the intake: temporary names, companions (markers, manifests), unsafe names.

Everything here is pure string logic; nothing touches the server or the disk.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

DONE_SUFFIX = ".done"
MANIFEST_SUFFIX = ".sha256"
COMPANION_SUFFIXES = (DONE_SUFFIX, MANIFEST_SUFFIX)

#: Longest name (UTF-8 bytes) we accept; most file systems stop at 255.
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class NameVerdict:
    """How the intake treats a directory entry, judged from its name alone.

    kind: ``file`` (a candidate document), ``companion`` (a ``.done`` marker or ``.sha256`` manifest
    of ``companion_of``), ``temporary`` (still being written: left alone, never quarantined) or
    ``unsafe`` (cannot be handled as a plain file name: quarantined with ``reason``).
    """

    kind: str
    reason: str | None = None
    companion_of: str | None = None


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` is not a safe plain file name, or None if it is.

    Rejected: empty, ``.``/``..``, path separators (a traversal like ``../../etc/x`` from a broken or
    hostile server), control or format characters (newlines, NUL, bidi overrides), undecodable
    bytes, and names too long for a file system.
    """
    if not name:
        return "empty file name"
    if name in (".", ".."):
        return f"file name {name!r} is a directory reference"
    if "/" in name or "\\" in name:
        return f"file name {name!r} contains a path separator (path traversal)"
    for ch in name:
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            if category == "Cs" or ch == "\ufffd":
                return f"file name {name!r} is not valid UTF-8"
            return f"file name {name!r} contains a control or invisible character U+{ord(ch):04X}"
        if ch == "\ufffd":
            return f"file name {name!r} is not valid UTF-8"
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return f"file name {name!r} is not valid UTF-8"
    if len(encoded) > MAX_NAME_BYTES:
        return f"file name is longer than {MAX_NAME_BYTES} bytes"
    return None


def addressable_name(name: str) -> bool:
    """Whether a listed name, even an unsafe one, can be used as a path on the server.

    Control characters, backslashes and undecodable bytes (kept as surrogate escapes, sent back as
    bytes) are fine inside an SFTP path, so such files are moved to quarantine. A ``/``, a dot name,
    NUL or U+FFFD (bytes already lost by a decoder) are not: the path would point elsewhere, e.g.
    ``inbound/../../etc/x``, or not exist. Such entries are recorded, never touched.
    """
    if not name or name in (".", "..") or "/" in name or "\x00" in name or "\ufffd" in name:
        return False
    return True


def is_temporary_name(name: str, temp_suffixes: tuple[str, ...] | list[str]) -> bool:
    """True for names transfer tools use while writing: dot-files, ``~`` prefix/suffix, temp suffixes.

    Also WinSCP-style ``NAME.filepart`` and ``NAME.part.1``-like chunks of the listed suffixes.
    """
    lowered = name.lower()
    if lowered.startswith(".") or lowered.startswith("~") or lowered.endswith("~"):
        return True
    for suffix in temp_suffixes:
        suffix = suffix.lower()
        if suffix and (lowered.endswith(suffix) or re.search(re.escape(suffix) + r"\.\d+$", lowered)):
            return True
    return False


def classify_name(name: str, temp_suffixes: tuple[str, ...] | list[str], siblings: set[str] | frozenset[str] = frozenset()) -> NameVerdict:
    """Classify one directory entry name (see :class:`NameVerdict`).

    ``siblings`` (all names in the folder) lets ``X.done``/``X.sha256`` count as companions only when
    ``X`` is present or could still arrive; a companion is never a document by itself.
    """
    reason = unsafe_name_reason(name)
    if reason:
        return NameVerdict("unsafe", reason=reason)
    if is_temporary_name(name, temp_suffixes):
        return NameVerdict("temporary")
    lowered = name.lower()
    for suffix in COMPANION_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return NameVerdict("companion", companion_of=name[: -len(suffix)])
    return NameVerdict("file")


_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=@,-]")


def safe_local_name(name: str, max_len: int = 120) -> str:
    """A name safe for the local staging dir and for quarantine targets: no separators, no control
    characters, never starting with a dot; unsafe characters become ``_``. Not unique by itself:
    callers prefix the ledger id.
    """
    cleaned = _SAFE_CHARS.sub("_", name).lstrip(".") or "unnamed"
    return cleaned[:max_len]


@dataclass(frozen=True)
class ManifestLookup:
    """What a checksum manifest says about one file: its digest, or why it vouches for nothing."""

    digest: str | None
    problem: str | None = None  # e.g. "names INV.csv more than once": the manifest is refused


def read_manifest(text: str, file_name: str) -> ManifestLookup:
    """The hex sha256 of ``file_name`` from a manifest's text (see :func:`manifest_digest`).

    A manifest names each file once: a second line for the same name (even one that agrees) makes
    the whole manifest ambiguous, so it vouches for nothing (``problem`` says which name). Otherwise
    the first line whose name is ``file_name`` wins; a single digest line without a name is taken as is.
    """
    candidates: list[tuple[str, str | None]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64})(?:\s+\*?(.+))?", line)
        if match:
            named = match.group(2)
            candidates.append((match.group(1).lower(), None if named is None else named.strip()))
    counts = Counter(named for _, named in candidates if named is not None)
    repeated = sorted(named for named, count in counts.items() if count > 1)
    if repeated:
        shown = ", ".join(repr(named) for named in repeated[:3])
        return ManifestLookup(None, f"names {shown} more than once (a manifest names each file once)")
    for digest, named in candidates:
        if named == file_name:
            return ManifestLookup(digest)
    unnamed = [digest for digest, named in candidates if named is None]
    if len(unnamed) == 1 and len(candidates) == 1:
        return ManifestLookup(unnamed[0])
    return ManifestLookup(None)


def manifest_digest(text: str, file_name: str) -> str | None:
    """The hex sha256 of ``file_name`` from a manifest's text, or None if it holds none (or names a file
    twice: :func:`read_manifest` says so).

    Accepts a bare digest, or ``sha256sum`` lines ``<hex>  <name>`` / ``<hex> *<name>``.
    """
    return read_manifest(text, file_name).digest
