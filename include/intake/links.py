"""Never follow a link: the folder checks and the handle check of everything the kit reads or writes.

An SFTP server resolves symbolic links in every path it is given, so a partner who can create links
in its own tree could make us read another partner's file as its own (a link in inbound, or a file
swapped for one between listing and fetch) or move files into another partner's tree (a folder
replaced by a link). Three rules close that:

- **Folders** (:func:`folder_problems`): before the kit lists a folder or writes into one, each
  component from the partner's tree root (:func:`partner_tree`) down to the folder is ``lstat``-ed
  (the last component is not followed; walking down from the root means no component above it is
  followed either) and must be a real directory. On a paramiko session the ``LSTAT`` requests of
  all components go out together: one round trip however many folders are checked.
- **Listings**: only regular files (``S_ISREG`` of the listing's lstat-like attributes) are
  deliveries; a link is refused with a reason and left in place (it is not the partner's file).
- **Handles** (:func:`opened_path`, :func:`handle_problem`): an ``LSTAT`` of the path goes out
  immediately before its ``OPEN``, in the same burst (no round trip of its own), and the server
  answers in order, so it shows what the path was just before the OPEN resolved it: it must be the
  listed regular file (size, mtime), else a link (or any other entry) is :class:`NotRegularFile`
  and nothing is read. Then the handle's FSTAT must match that LSTAT: a regular file, same size,
  same mtime. SFTP v3 (all OpenSSH offers) has no inode or device number, so FSTAT alone cannot
  tell a link to a file of the same size *and* mtime (which a partner can set on its own file)
  from the listed file; the LSTAT can. What remains is a swap between the LSTAT and the OPEN (both
  handled by the server back to back, microseconds apart) to a link whose target has the same size
  and mtime.

Everything here is pure or takes the session as an argument; paramiko is imported only when a
pipelined check runs.
"""
from __future__ import annotations

import posixpath
import stat as stat_mod
from typing import Any, Iterable

from include.intake.errors import FileVanishedError, HandleMismatch, NotRegularFile, TransferError


def partner_tree(folders: Any) -> str:
    """The deepest folder holding all of a partner's folders (``Folders.all()``), e.g. ``/partners/acme``;
    ``/`` when they share nothing but the root (then only each folder itself is checked)."""
    return posixpath.commonpath(list(folders.all().values()))


def folder_components(folder: str, tree: str) -> list[str]:
    """The paths to check for ``folder``, from ``tree`` down to ``folder`` itself.

    :raises ValueError: ``folder`` is not an absolute plain path inside ``tree``.
    """
    if not folder.startswith("/") or any(part in (".", "..") for part in folder.split("/")):
        raise ValueError(f"{folder!r} is not an absolute plain path")
    folder = posixpath.normpath(folder)
    if tree == "/":
        return [folder]
    if folder != tree and not folder.startswith(tree.rstrip("/") + "/"):
        raise ValueError(f"{folder} is outside the partner's tree {tree}")
    paths = [tree]
    for part in posixpath.relpath(folder, tree).split("/"):
        if part != ".":
            paths.append(posixpath.join(paths[-1], part))
    return paths


def attrs_problem(path: str, attrs: Any) -> str | None:
    """Why the lstat ``attrs`` of ``path`` are not a real directory (None: they are)."""
    if attrs is None:
        return f"{path} does not exist"
    mode = attrs.st_mode or 0
    if stat_mod.S_ISLNK(mode):
        return f"{path} is a symbolic link"
    if not stat_mod.S_ISDIR(mode):
        return f"{path} is not a directory"
    return None


def folder_problems(sftp: Any, folders: Iterable[str], tree: str) -> dict[str, str | None]:
    """For each folder, why the kit must not list or write into it (None: a real directory inside the
    partner's tree, and so is every component above it down from ``tree``).

    :param sftp: a paramiko ``SFTPClient`` (the LSTATs are pipelined: one round trip), or anything
        with ``lstat`` (one call per component).
    """
    folders = list(dict.fromkeys(folders))
    components: dict[str, list[str]] = {}
    problems: dict[str, str | None] = {}
    for folder in folders:
        try:
            components[folder] = folder_components(folder, tree)
        except ValueError as exc:
            problems[folder] = str(exc)
    paths = list(dict.fromkeys(path for chain in components.values() for path in chain))
    looked = _lstat_many(sftp, paths)
    for folder, chain in components.items():
        problems[folder] = next((looked[path] for path in chain if looked[path]), None)
    return {folder: problems[folder] for folder in folders}


def _lstat_many(sftp: Any, paths: list[str]) -> dict[str, str | None]:
    """``attrs_problem`` of every path: LSTAT requests in flight together on a paramiko session."""
    if not paths:
        return {}
    if not all(hasattr(sftp, name) for name in ("_async_request", "_read_response")):
        result = {}
        for path in paths:
            try:
                attrs = sftp.lstat(path)
            except FileNotFoundError:
                attrs = None
            except OSError as exc:
                result[path] = f"{path} cannot be checked: {exc}"
                continue
            result[path] = attrs_problem(path, attrs)
        return result
    from paramiko.sftp import CMD_ATTRS, CMD_LSTAT, CMD_STATUS, SFTP_NO_SUCH_FILE
    from paramiko.sftp_attr import SFTPAttributes

    answers = _Answers()
    sent = {sftp._async_request(answers, CMD_LSTAT, path): path for path in paths}
    while len(answers.by_num) < len(sent):
        sftp._read_response()
    result = {}
    for num, path in sent.items():
        t, msg = answers.by_num[num]
        if t == CMD_ATTRS:
            result[path] = attrs_problem(path, SFTPAttributes._from_msg(msg))
        elif t == CMD_STATUS:
            code = msg.get_int()
            result[path] = (attrs_problem(path, None) if code == SFTP_NO_SUCH_FILE
                            else f"{path} cannot be checked: SFTP status {code}")
        else:
            result[path] = f"{path} cannot be checked: unexpected SFTP response type {t}"
    return result


class _Answers:
    """Receives paramiko's asynchronous responses (the ``fileobj`` of ``_async_request``)."""

    def __init__(self) -> None:
        self.by_num: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.by_num[num] = (t, msg)


def handle_problem(attrs: Any, expected_size: int | None, expected_mtime: int | None,
                   what: str = "the opened file") -> str | None:
    """How an opened handle's FSTAT ``attrs`` (or the path's LSTAT, ``what`` = "the path") differ
    from the listed entry (None: they match).

    Not a regular file, another size, another mtime (whole seconds, as listed). The text names only
    what was listed, never the opened object's own size or time: it may be another partner's file.
    """
    mode = getattr(attrs, "st_mode", None)
    if mode is None or not stat_mod.S_ISREG(mode):
        return f"{what} is not the listed regular file"
    if expected_size is not None and attrs.st_size != expected_size:
        return f"listed {expected_size} bytes, {what} has another size"
    if expected_mtime is not None and int(attrs.st_mtime or 0) != int(expected_mtime):
        return f"{what} does not have the listed modification time"
    return None


def link_reason(name: str, attrs_mode: int) -> str:
    """The refusal text of a listed entry that is neither a regular file nor a directory."""
    what = "a symbolic link" if stat_mod.S_ISLNK(attrs_mode) else "not a regular file"
    return f"{name!r} is {what}: refused and left in place (never followed, never moved)"


def fstat_problem(t: int, msg: Any, remote_path: str, expected_size: int | None,
                  expected_mtime: int | None) -> str | None:
    """:func:`handle_problem` of a paramiko FSTAT answer; a refused FSTAT is a :class:`TransferError`."""
    from paramiko.sftp import CMD_ATTRS, CMD_STATUS
    from paramiko.sftp_attr import SFTPAttributes

    if t == CMD_ATTRS:
        return handle_problem(SFTPAttributes._from_msg(msg), expected_size, expected_mtime)
    if t == CMD_STATUS:
        raise TransferError(f"fetch of {remote_path} failed: the opened file cannot be verified "
                            f"(FSTAT: SFTP status {msg.get_int()})")
    raise TransferError(f"fetch of {remote_path}: unexpected SFTP response type {t} to FSTAT")


def refusal(remote_path: str, problem: str, lstat) -> TransferError:
    """The error for a handle that is not the listed file, from what ``lstat(remote_path)`` says the
    path is now: a symbolic link (or any non-regular entry) is :class:`NotRegularFile`, gone is
    :class:`FileVanishedError`, a regular file :class:`HandleMismatch` (rewritten: readiness starts
    over). Only this failure path pays the LSTAT's round trip."""
    try:
        attrs = lstat(remote_path)
    except FileNotFoundError:
        return FileVanishedError(f"{remote_path} vanished before it could be fetched")
    except OSError as exc:
        return HandleMismatch(remote_path, f"{problem} (lstat: {exc})")
    mode = attrs.st_mode or 0
    if stat_mod.S_ISREG(mode):
        return HandleMismatch(remote_path, problem)
    return not_regular(remote_path, mode)


def not_regular(remote_path: str, mode: int) -> NotRegularFile:
    """The refusal of a listed path that is now a link (or any entry but a regular file)."""
    what = "a symbolic link" if stat_mod.S_ISLNK(mode) else "something that is not a regular file"
    return NotRegularFile(f"{remote_path} was replaced by {what} after it was listed: refused (never followed), "
                          f"left in place")


def lstat_answer(t: int, msg: Any, remote_path: str) -> Any:
    """The attributes of a paramiko LSTAT answer; None: no such path. A refused LSTAT is a
    :class:`TransferError` (the path cannot be checked, so it is not read)."""
    from paramiko.sftp import CMD_ATTRS, CMD_STATUS, SFTP_NO_SUCH_FILE
    from paramiko.sftp_attr import SFTPAttributes

    if t == CMD_ATTRS:
        return SFTPAttributes._from_msg(msg)
    if t == CMD_STATUS:
        code = msg.get_int()
        if code == SFTP_NO_SUCH_FILE:
            return None
        raise TransferError(f"fetch of {remote_path} failed: the path cannot be checked (LSTAT: SFTP status {code})")
    raise TransferError(f"fetch of {remote_path}: unexpected SFTP response type {t} to LSTAT")


def opened_path(attrs: Any, remote_path: str, expected_size: int | None,
                expected_mtime: int | None) -> tuple[int, int]:
    """The verdict of the LSTAT ``attrs`` sent just before the OPEN of ``remote_path`` (None: there
    was no such path): the ``(size, mtime)`` the handle's FSTAT must then show.

    :raises NotRegularFile: a symbolic link, or any entry but a regular file (refused in place).
    :raises HandleMismatch: no such path, or a regular file of another size or mtime than listed
        (rewritten: readiness starts over).
    """
    if attrs is None:
        raise HandleMismatch(remote_path, "the path was not there just before it was opened")
    mode = attrs.st_mode or 0
    if not stat_mod.S_ISREG(mode):
        raise not_regular(remote_path, mode)
    problem = handle_problem(attrs, expected_size, expected_mtime, what="the path")
    if problem:
        raise HandleMismatch(remote_path, problem)
    return attrs.st_size, int(attrs.st_mtime or 0)


def lstat_and_open(sftp: Any, path: str) -> tuple[Any, Any]:
    """``(lstat attributes or None, file opened for reading)`` of ``path``, the LSTAT sent
    immediately before the OPEN on a paramiko session (one round trip for both; the server answers
    in order, so the LSTAT shows the path just before the OPEN resolved it). Other clients: ``lstat``
    then ``open``. The caller checks the attributes before reading, and closes the file.

    :raises FileNotFoundError: nothing to open (or, on other clients, to lstat).
    """
    if not all(hasattr(sftp, name) for name in ("_async_request", "_read_response", "_adjust_cwd")):
        attrs = sftp.lstat(path)
        return attrs, sftp.open(path, "rb")
    from paramiko.sftp import CMD_LSTAT

    answers = _Answers()
    num = sftp._async_request(answers, CMD_LSTAT, sftp._adjust_cwd(path))
    handle = sftp.open(path, "rb")  # reads the LSTAT's answer on the way: it comes first
    answer = answers.by_num.pop(num, None)
    try:
        if answer is None:
            raise OSError(f"{path}: the server answered the OPEN before the LSTAT sent ahead of it")
        return lstat_answer(*answer, path), handle
    except (OSError, TransferError) as exc:
        handle.close()
        raise OSError(str(exc)) from None
