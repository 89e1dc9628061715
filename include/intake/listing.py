"""Folder listing: exactly one ``listdir_attr`` round trip per folder and poll, never a stat per file.

The attributes are the server's ``lstat`` of each entry (OpenSSH's READDIR does not follow links), so a
symbolic link is listed as a link (``is_link``), never as the file it points at."""
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
    is_file: bool  # a regular file (a link to one is not)
    is_dir: bool
    mode: int = 0  # st_mode as listed


def list_folder(sftp: Any, folder: str) -> list[RemoteEntry]:
    """List ``folder`` with a single ``listdir_attr`` call.

    :param sftp: a paramiko ``SFTPClient`` or any object with a compatible ``listdir_attr``.
    :return: entries sorted by name; directories, symlinks and other non-regular entries are reported
        too (``is_file`` False, ``mode`` says what they are) so callers can refuse or ignore them explicitly. ``path`` is built by joining the raw name: callers
        must not use it for names judged unsafe (see :func:`include.intake.names.unsafe_name_reason`).
    """
    try:
        attrs = sftp.listdir_attr(folder)
    except UnicodeDecodeError:
        # paramiko decodes names as strict UTF-8 and fails the whole listing on one bad name; a
        # partner's stray Latin-1 file name must not block its other files.
        if not hasattr(sftp, "_request"):
            raise
        attrs = _listdir_attr_lenient(sftp, folder)
    entries = []
    for attr in attrs:
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
                mode=mode,
            )
        )
    entries.sort(key=lambda entry: entry.name)
    return entries


def _listdir_attr_lenient(sftp: Any, folder: str) -> list:
    """``listdir_attr`` over paramiko's request primitives, decoding names with ``surrogateescape``
    so undecodable bytes survive (and can be addressed again, see :func:`wire_path`)."""
    from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR
    from paramiko.sftp_attr import SFTPAttributes

    t, msg = sftp._request(CMD_OPENDIR, folder)
    if t != CMD_HANDLE:
        raise OSError(f"cannot list {folder}")
    handle = msg.get_binary()
    attrs = []
    try:
        while True:
            try:
                t, msg = sftp._request(CMD_READDIR, handle)
            except EOFError:
                break
            if t != CMD_NAME:
                raise OSError(f"unexpected answer listing {folder}")
            for _ in range(msg.get_int()):
                name = msg.get_string().decode("utf-8", "surrogateescape")
                longname = msg.get_string().decode("utf-8", "replace")
                attr = SFTPAttributes._from_msg(msg, name, longname)
                if name not in (".", ".."):
                    attrs.append(attr)
    finally:
        sftp._request(CMD_CLOSE, handle)
    return attrs


def wire_path(path: str) -> str | bytes:
    """The path to send to the server: bytes when it holds undecodable bytes (surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape")
    return path
