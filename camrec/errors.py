"""The error hierarchy. Each class carries the exit code the CLI returns for it.

Exit codes (also listed in README.md):
  0  success
  1  unexpected internal error (a bug: the traceback is logged once)
  2  usage error (bad command line)
  3  configuration error
  4  camera/source error (unreachable camera, unreadable input)
  5  identity error (no identity matches the file, unreadable or malformed key)
  6  format error (not an age file, malformed header)
  7  integrity error (authentication failed: the file was altered or is corrupt)
  8  truncated clip (the authenticated prefix was released; see `decrypt --salvage`)
  9  storage error (unwritable directory, disk full, index problems)
 10  `camrec doctor`: a check failed (or warned, with --strict); defined in camrec/service/doctor.py
 130 interrupted (Ctrl-C)
"""

from __future__ import annotations


class CamrecError(Exception):
    """Base class: a message for the user, an optional hint, and an exit code."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(CamrecError):
    exit_code = 2


class ConfigError(CamrecError):
    """`problems`: every (message, hint) found when there were several (`camrec check` lists them)."""

    exit_code = 3

    def __init__(self, message: str, hint: str | None = None,
                 problems: list[tuple[str, str | None]] | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems or [(message, hint)]


class SourceError(CamrecError):
    exit_code = 4


class AuthError(SourceError):
    """The camera refused the credentials (RTSP 401/403): retried slowly, never at the normal rate,
    because many cameras lock the account (and the owner's phone app) after a few failed logins."""


class IdentityError(CamrecError):
    exit_code = 5


class FormatError(CamrecError):
    exit_code = 6


class IntegrityError(CamrecError):
    exit_code = 7


class TruncatedError(CamrecError):
    """The file ends before its final chunk (a crash cut it). Carries how much was authenticated."""

    exit_code = 8

    def __init__(self, message: str, hint: str | None = None, authenticated_bytes: int = 0) -> None:
        super().__init__(message, hint)
        self.authenticated_bytes = authenticated_bytes


class StorageError(CamrecError):
    exit_code = 9


# Owners on the recorder read its files as members of the service's group (README, install step 3).
GROUP_HINT = ("add yourself to group camrec (`sudo adduser $USER camrec`, then log in again), or work on a "
              "copy of the store (--store DIR)")


def permission_error(what: str, path: object) -> StorageError:
    """The expected failure of an owner reading the recorder's files without the group: exit 9."""
    return StorageError(f"permission denied: cannot read {what} {path}", hint=GROUP_HINT)


class StorageUnavailable(StorageError):
    """A storage condition the recorder waits out instead of failing on (a full disk, an unmounted
    storage disk): recording resumes by itself once it clears, so a restart would not help."""


class DiskFullError(StorageUnavailable):
    """No space left for a clip or for the index (ENOSPC, EDQUOT, SQLite's "disk is full")."""


EXIT_INTERRUPTED = 130
