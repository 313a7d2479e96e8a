"""The files a config depends on: read with a bound, regular files only, and not writable by others.

Reading: ``stat().st_size`` says nothing about /dev/zero (size 0, endless), a FIFO (size 0, blocks
in ``open()`` until a writer comes) or /proc files, so the bound is on the bytes actually read, and
the file is opened with O_NONBLOCK and refused unless ``fstat`` says it is a regular file. A FIFO
therefore never hangs `camrec check`, and a device never fills memory.

Permissions: the recorder encrypts to whatever public keys its config names. A config file,
recipients file or storage directory that another local user can write lets that user swap in
their own key (or move the store): `camrec check` and `camrec run` refuse such a setup with a
ConfigError and `camrec doctor` reports it as a failed check. "Writable by others" means
world-writable, or group-writable through a group that has members besides the owner (a user's
private group, as Debian creates them, is not "others").
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import Any

from camrec.errors import ConfigError, StorageError

__all__ = ["permission_problems", "read_limited", "refuse_unsafe_permissions"]

_READ_CHUNK = 64 * 1024


def read_limited(path: Path, limit: int, what: str, label: str | None = None) -> bytes:
    """At most ``limit`` bytes of the regular file ``path``; ConfigError for anything else.

    ``what`` names the file in messages ("config file", "recipients file"); ``label`` is how the
    path is shown (default: the path). OSErrors other than "not a regular file" and "too large"
    propagate, for the caller to word.
    """
    shown = label or str(path)
    # stat() first, so that a device is never even opened (opening some has side effects); the
    # fstat() after the non-blocking open closes the race with a swap in between.
    _refuse_special(os.stat(path).st_mode, path, shown, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _refuse_special(os.fstat(fd).st_mode, path, shown, what)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise ConfigError(f"{shown}: more than {limit} bytes is far too large for a {what}; is this the right "
                              "file?")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _refuse_special(mode: int, path: Path, shown: str, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) \
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file"
        raise ConfigError(f"{shown}: is {kind}, not a {what}", hint=f"pass the {what} itself (a regular file)")


def _group_has_others(gid: int, owner_uid: int) -> bool:
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return True  # an unknown group: nobody can say who is in it
    try:
        owner = pwd.getpwuid(owner_uid).pw_name
    except KeyError:
        owner = None
    if any(member != owner for member in group.gr_mem):
        return True
    return any(user.pw_gid == gid and user.pw_uid != owner_uid for user in pwd.getpwall())


def _writable_by_others(st: os.stat_result) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH:
        return f"mode {mode:04o}: world-writable"
    if mode & stat.S_IWGRP and _group_has_others(st.st_gid, st.st_uid):
        try:
            name = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            name = str(st.st_gid)
        return f"mode {mode:04o}: writable by group {name!r}, which has other members"
    return None


def writable_by_others(path: Path) -> str | None:
    """Why another local user can change or replace ``path`` ("mode 0777: world-writable"), or None.

    Also looks at the directory holding it: there, write access without the sticky bit (which
    /tmp has) lets anyone rename the entry away and put their own in its place.
    """
    try:
        why = _writable_by_others(path.stat())
        if why:
            return why
        parent = path.absolute().parent
        st = parent.stat()
    except OSError:
        return None  # missing or unreadable: reported by the checks that use the path
    why = None if st.st_mode & stat.S_ISVTX else _writable_by_others(st)
    return f"its directory {parent} has {why} and no sticky bit" if why else None


def permission_problems(config: Any) -> list[str]:
    """One line per file or directory of ``config`` that another local user could change."""
    paths: list[tuple[str, Path]] = [("storage directory", Path(config.storage.path))]
    if config.recipients_file is not None:
        paths.append(("recipients file", Path(config.recipients_file)))
    if config.source_path is not None:
        paths.append(("config file", Path(config.source_path)))
    problems = []
    for what, path in paths:
        why = writable_by_others(path)
        if why:
            problems.append(f"{what} {path}: {why}; another local user could swap the recipients or the clips")
    return problems


def refuse_unsafe_permissions(config: Any) -> None:
    """ConfigError (exit 3) naming the first path another user can write; `check` and `run` call it."""
    problems = permission_problems(config)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more, hint="remove write access for group and others, e.g. chmod go-w PATH "
                          "(0750 for the storage directory, 0640 for files)")


# The public key printed in config/camrec.example.yaml: a config still holding it would send every
# clip to a key whose identity is not the owner's (issue 9). Refused by `check` and `run`.
EXAMPLE_RECIPIENTS = frozenset({"age1t4yp4xullatyw6z006rwuatceerr743hj2h6g5504wlqynhxfeaq2ejmfl"})
# The service's state directory (systemd StateDirectory=camrec): the one storage `run` may create.
DEFAULT_STORAGE = Path("/var/lib/camrec")


def refuse_example_recipient(config: Any) -> None:
    for recipient in config.recipients:
        if recipient in EXAMPLE_RECIPIENTS:
            raise ConfigError(
                f"{config.source_path}: recipients: {recipient[:12]}… is the example key from "
                "config/camrec.example.yaml, not yours: every clip would be encrypted to a key you don't hold",
                hint="make your own key on your own computer (camrec keygen -o ~/camrec-owner.key) and put the "
                     "age1… line it prints under recipients:")


def refuse_missing_storage(config: Any) -> None:
    """`run` never creates a storage tree except the service's own state directory: a USB disk that
    failed to mount must not make the recorder fill the SD card under the empty mount point."""
    path = Path(config.storage.path)
    if not path.exists() and path != DEFAULT_STORAGE:
        raise StorageError(f"storage directory {path} does not exist",
                           hint=f"create it (sudo install -d -m 0750 -o camrec -g camrec {path}) or mount the "
                                "disk it is on; camrec creates only the default /var/lib/camrec by itself")
