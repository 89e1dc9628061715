"""Catalog files through the foundation's intake core, one data interval at a time.

Catalog files live in their own sub-folder of the partner's folders (``<inbound>/catalog``, and
``catalog`` under archive and quarantine): the document_delivery intake quarantines any file in
``inbound`` that is not one of its document types and ignores sub-folders, so the two use cases
never take each other's files. The catalog intake also keeps its own ledger namespace
(``<partner key>:catalog``): the ledger's vanished / stale-claim bookkeeping is per partner key,
and must not touch document_delivery's entries.

"Each run works on its own data interval": :class:`IntervalListing` shows the intake only the
files whose mtime falls in the run's interval (markers and manifests always, they may trail their
file), so a backfilled interval gets exactly the files that arrived during it.
"""
from __future__ import annotations

import posixpath
import stat
from datetime import datetime
from typing import Any

from include.intake.names import COMPANION_SUFFIXES

CATALOG_SUBFOLDER = "catalog"
LEDGER_SUFFIX = ":catalog"

# Used when the registry lists no catalog document types for the partner: the kind is in the name.
DEFAULT_PATTERNS = {
    "catalog": ["catalog*.csv", "catalog*.xlsx", "catalogue*.csv", "catalogue*.xlsx"],
    "price_list": ["price_list*.csv", "price_list*.xlsx", "pricelist*.csv", "pricelist*.xlsx", "prices*.csv", "prices*.xlsx"],
    "promotions": ["promotions*.csv", "promotions*.xlsx", "promo*.csv", "promo*.xlsx"],
}


def catalog_partner(partner):
    """The partner as the catalog intake sees it: catalog sub-folders, catalog document types only,
    and a ledger key of its own. A copy; the registry entry is unchanged."""
    from include.partners import DocumentType, Folders

    folders = Folders(**{role: posixpath.join(path, CATALOG_SUBFOLDER) for role, path in partner.folders.all().items()})
    own = {d.type: d for d in partner.document_types if d.type in DEFAULT_PATTERNS}
    document_types = [own.get(kind) or DocumentType(type=kind, patterns=patterns, suite=kind) for kind, patterns in DEFAULT_PATTERNS.items()]
    return partner.model_copy(update={"key": partner.key + LEDGER_SUFFIX, "folders": folders, "document_types": document_types})


def registry_key(ledger_key: str) -> str:
    return ledger_key.removesuffix(LEDGER_SUFFIX)


def ensure_folders(sftp: Any, folders) -> None:
    """Create the catalog sub-folders if the server does not have them yet (mkdir only; never deletes)."""
    for path in folders.all().values():
        try:
            sftp.stat(path)
        except FileNotFoundError:
            sftp.mkdir(path)
        except OSError:
            sftp.mkdir(path)


class IntervalListing:
    """An SFTP session whose listing of ``folder`` shows only the files modified in [start, end).

    Everything else is the wrapped session's (a paramiko ``SFTPClient``): reads, renames, pipelined
    fetches. Directories and companions (``.done``, ``.sha256``) are always listed.
    """

    def __init__(self, sftp: Any, folder: str, start: datetime, end: datetime) -> None:
        self._sftp = sftp
        self._folder = folder.rstrip("/")
        self._start = start.timestamp()
        self._end = end.timestamp()

    def listdir_attr(self, path: str = "."):
        attrs = self._sftp.listdir_attr(path)
        if path.rstrip("/") != self._folder:
            return attrs
        return [a for a in attrs if self._visible(a)]

    def _visible(self, attr) -> bool:
        if not stat.S_ISREG(attr.st_mode or 0) or attr.filename.endswith(COMPANION_SUFFIXES):
            return True
        return self._start <= (attr.st_mtime or 0) < self._end

    def __getattr__(self, name: str):
        return getattr(self._sftp, name)
