"""Folder listing: exactly one ``listdir_attr`` round trip per folder and poll, never a stat per file."""
from __future__ import annotations

import posixpath
import stat as stat_mod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RemoteEntry:
    """One entry of a remote folder listing."""

    name: str
    path: str
    size: int
    mtime: int
    is_file: bool
    is_dir: bool


def list_folder(sftp: Any, folder: str) -> list[RemoteEntry]:
    """List ``folder`` with a single ``listdir_attr`` call.

    :param sftp: a paramiko ``SFTPClient`` or any object with a compatible ``listdir_attr``.
    :return: entries sorted by name; directories and symlinks are reported too (``is_file`` False)
        so callers can ignore them explicitly. ``path`` is built by joining the raw name: callers
        must not use it for names judged unsafe (see :func:`include.intake.names.unsafe_name_reason`).
    """
    entries = []
    for attr in sftp.listdir_attr(folder):
        name = attr.filename
        if name in (".", ".."):
            continue
        mode = attr.st_mode or 0
        entries.append(
            RemoteEntry(
                name=name,
                path=posixpath.join(folder, name),
                size=int(attr.st_size or 0),
                mtime=int(attr.st_mtime or 0),
                is_file=stat_mod.S_ISREG(mode),
                is_dir=stat_mod.S_ISDIR(mode),
            )
        )
    entries.sort(key=lambda entry: entry.name)
    return entries
