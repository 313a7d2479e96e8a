"""Where passphrases come from, and identities that ask for one only when a file needs it.

People type passphrases on the terminal; scripts name a file (`--passphrase-file`). The terminal
means the controlling terminal (/dev/tty), read without echo by getpass, and never standard
input: `camrec decrypt` may be reading the clip from stdin, and a passphrase silently taken from
piped data would be both a bug and a leak. getpass falls back to stdin (with a GetPassWarning)
when /dev/tty is unusable; that warning is turned into an error before anything is read.

A passphrase is asked for lazily: `LazyScryptIdentity` prompts only when the file's header really
has an scrypt stanza, the way `age -d` does, so `camrec decrypt` needs no flag to tell it a clip
was encrypted with a passphrase.
"""

from __future__ import annotations

import getpass
import os
import warnings
from collections.abc import Callable

from camrec.crypto.age import Stanza
from camrec.crypto.scrypt import ScryptIdentity, check_stanzas
from camrec.errors import IdentityError, UsageError

# prompt -> passphrase
PassphraseFn = Callable[[str], str]

NO_TERMINAL_HINT = "pass the passphrase in a file with --passphrase-file FILE (its first line is used)"
_MAX_PASSPHRASE_FILE = 1 << 16


def read_passphrase_file(path: str) -> str:
    """The first line of `path`, without its line ending (a trailing newline is not part of it)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise UsageError(f"cannot read passphrase file {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_PASSPHRASE_FILE:
        raise UsageError(f"passphrase file {path} is too large (its first line is the passphrase)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"passphrase file {path} is not UTF-8 text") from None
    line = text.split("\n", 1)[0].removesuffix("\r")
    if not line:
        raise UsageError(f"passphrase file {path} is empty (its first line is the passphrase)")
    return line


def _terminal_available() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def prompt_terminal(prompt: str) -> str:
    """Read a passphrase from the controlling terminal without echo; UsageError if there is none."""
    if not _terminal_available():
        raise UsageError("a passphrase is needed, but there is no terminal to ask it on", hint=NO_TERMINAL_HINT)
    with warnings.catch_warnings():
        # getpass's fallback (echoing, from stdin) announces itself with this warning first.
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(prompt)
        except getpass.GetPassWarning:
            raise UsageError("cannot read a passphrase from the terminal", hint=NO_TERMINAL_HINT) from None
        except EOFError:
            raise UsageError("no passphrase given (end of input on the terminal)") from None


class PassphraseSource:
    """Passphrases from `--passphrase-file` if given, else from the terminal.

    A file's passphrase is read once and reused for every question (a script has one
    passphrase to give); terminal answers are not cached, each prompt says what it is for.
    """

    def __init__(self, file: str | None = None, prompt: PassphraseFn = prompt_terminal) -> None:
        self.file = file
        self._prompt = prompt
        self._from_file: str | None = None

    def __call__(self, prompt: str) -> str:
        if self.file is not None:
            if self._from_file is None:
                self._from_file = read_passphrase_file(self.file)
            return self._from_file
        return self._prompt(prompt)

    def new_passphrase(self, what: str) -> str:
        """A new passphrase: from the file, or typed twice on the terminal."""
        if self.file is not None:
            return self(what)
        first = self._prompt(f"Enter a passphrase for {what}: ")
        if not first:
            raise UsageError("the passphrase can't be empty")
        if self._prompt("Confirm the passphrase: ") != first:
            raise UsageError("the passphrases didn't match")
        return first


class LazyScryptIdentity:
    """An identity for passphrase-encrypted files that asks for the passphrase only when needed.

    unwrap() returns None (without asking) when no stanza is an scrypt stanza. When there is
    one, it asks, and a wrong passphrase is an IdentityError "incorrect passphrase" rather than
    a silent no-match: nothing else could open such a file (scrypt must be the only stanza).
    """

    def __init__(self, passphrase: PassphraseFn, prompt: str = "Enter passphrase: ") -> None:
        self._passphrase = passphrase
        self._prompt = prompt
        self.asked = False

    def __repr__(self) -> str:
        return "LazyScryptIdentity()"

    def unwrap(self, stanzas: list[Stanza]) -> bytes | None:
        # The stanza is checked before asking: a malformed file or a hostile work factor fails
        # without bothering anyone for a passphrase.
        if check_stanzas(stanzas) is None:
            return None
        self.asked = True
        file_key = ScryptIdentity(self._passphrase(self._prompt)).unwrap(stanzas)
        if file_key is None:
            raise IdentityError("incorrect passphrase", hint="check the passphrase (or --passphrase-file)")
        return file_key
