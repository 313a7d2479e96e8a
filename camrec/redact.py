"""The one redaction helper: every log line, error message and --json document goes through it.

Two rules, applied together by :func:`redact`:

1. URL userinfo is always hidden, registered or not: ``rtsp://admin:pw@cam/x`` becomes
   ``rtsp://***:***@cam/x``. Both halves go, because camera user names are often the same on
   every device of a vendor and half of a credential pair is still worth having. Credentials put in
   a URL's query string (``?user=admin&password=pw``, a habit of cheap cameras) are hidden too.
2. Every string registered with :func:`register_secret` (camera passwords substituted from the
   environment, passwords found in configured URLs) is replaced wherever it appears, also in its
   percent-encoded form, because FFmpeg and PyAV sometimes echo a URL back encoded, and escaped as
   repr() and JSON write it (a password with quotes or a backslash in a %r argument).

Where the secrets come from: the config loader registers every ``${env:…}``/``${cred:…}`` value
and every password of a camera URL, taken from the URL's parsed userinfo (``urlsplit``) *and* from
the raw text up to the last ``@`` before the host, with or without a scheme (``admin:pw@host/cam``).
Both, because a password holding ``/``, ``#``, ``?`` or ``@`` makes ``urlsplit`` cut the userinfo
short, and a password holding quotes or ``<>`` defeats any character-class pattern; registering
what was read means the redaction no longer depends on recognising a URL in the output.

Short secrets (decision): a secret of ``MIN_SECRET_LENGTH`` characters or more is hidden wherever
it appears. A shorter one (a one- or two-character password) is still registered, whatever its
length, but hidden only in credential positions: between ``:`` and ``@`` (the password of a
userinfo, with or without a scheme) and as a ``key=value`` value. Masking every "ab" or "1" in
every log line would make the logs useless while protecting nothing such a password does not
already give away to a guess; what matters is that the URL never shows it.

Registration is process-wide and permanent: a secret cannot be "un-known" once the process has
seen it. The registry is guarded by a lock and the compiled pattern is replaced atomically, so
redact() can run from any thread (PyAV demux threads log too) without taking the lock.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from urllib.parse import quote, unquote, urlsplit

__all__ = [
    "MASK",
    "RedactingFilter",
    "redact",
    "redact_url",
    "register_secret",
    "register_url_credentials",
    "userinfo_readings",
]

MASK = "***"

# Shorter secrets are hidden only in credential positions (see the module docstring).
MIN_SECRET_LENGTH = 3

# scheme://userinfo@ — userinfo may itself contain unencoded "@" (people type passwords like
# "p@ss" straight into camera URLs), so the match runs greedily to the last "@" before the host
# part ends. It stops at whitespace, "/", "?", "#" and quotes, so "rtsp://cam/path?to=a@b" and
# prose such as "rtsp://cam and bob@example.com" are left alone.
_URL_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://)(?P<userinfo>[^\s/?#@'\"<>]*(?:@[^\s/?#@'\"<>]*)*)@"
)
_QUERY_CREDENTIAL = re.compile(
    r"(?P<key>[?&;](?:user|username|usr|password|passwd|pass|pwd|pw|token|secret|auth|key|apikey|api_key)=)"
    r"(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)

# A scheme at the start of a source string, and what may follow the "@" that ends a userinfo:
# a host name or [IPv6] literal, an optional port, then the path, query, fragment or the end.
_LEADING_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]{0,31}://")
_HOST_TAIL = re.compile(r"(?:\[[0-9A-Za-z:.%]+\]|[\w.\-]+)(?::\d*)?(?:[/?#]|\s*$)")

_lock = threading.Lock()
_secrets: set[str] = set()
_short_secrets: set[str] = set()
# (pattern or None); replaced as a whole under the lock, read without it.
_pattern: re.Pattern[str] | None = None
_short_pattern: re.Pattern[str] | None = None


def register_secret(secret: str) -> None:
    """Make :func:`redact` hide ``secret`` (and its percent-encoded forms) from now on.

    Any non-empty secret is registered; one shorter than MIN_SECRET_LENGTH is hidden only in
    credential positions (module docstring).
    """
    global _pattern, _short_pattern
    if not isinstance(secret, str) or not secret:
        return
    # Encoded with and without "/" kept literal (URL libraries differ on that one), and escaped
    # as repr() and JSON write it: a password holding quotes or "\\" shows escaped in a %r log
    # argument or a JSON document, where the raw form would not match.
    forms = {secret, quote(secret, safe=""), quote(secret), repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    with _lock:
        long_before, short_before = len(_secrets), len(_short_secrets)
        for form in forms:
            (_secrets if len(form) >= MIN_SECRET_LENGTH else _short_secrets).add(form)
        if len(_secrets) != long_before:
            _pattern = _alternation(_secrets)
        if len(_short_secrets) != short_before:
            alternatives = _alternation(_short_secrets).pattern
            # ":pw@" (a userinfo's password, scheme or not) or "=pw" up to the end of the value.
            _short_pattern = re.compile(
                rf"(?<=:)(?:{alternatives})(?=@)|(?<==)(?:{alternatives})(?=[&;#\s'\"]|$)"
            )


def _alternation(secrets: set[str]) -> re.Pattern[str]:
    # Longest first, so that a secret which contains another is replaced as a whole.
    return re.compile("|".join(_literal(s) for s in sorted(secrets, key=len, reverse=True)))


def _literal(text: str) -> str:
    # Escaped text, except that percent escapes match in either case ("%2F" and "%2f").
    pieces = re.split(r"(%[0-9A-F]{2})", text)
    return "".join(
        "%" + "".join(f"[{c}{c.lower()}]" if c.isalpha() else c for c in piece[1:])
        if re.fullmatch(r"%[0-9A-F]{2}", piece)
        else re.escape(piece)
        for piece in pieces
    )


def register_url_credentials(text: str) -> None:
    """Register the passwords (and query-string credentials) of every URL found in ``text``.

    Used by the config loader for every string it reads and by the CLI for URLs given as
    arguments, so that a password still gets hidden when a library prints it outside its URL.
    User names are not registered (they would blot out words like "admin" everywhere); in URLs
    they are hidden by the userinfo rule anyway.
    """
    userinfos = [match.group("userinfo") for match in _URL_USERINFO.finditer(text)]
    userinfos += userinfo_readings(text)
    for userinfo in userinfos:
        _, sep, password = userinfo.partition(":")
        if sep and password:
            register_secret(password)
            register_secret(unquote(password))
    for match in _QUERY_CREDENTIAL.finditer(text):
        if not match.group("key")[1:].lower().startswith(("user", "usr")):
            register_secret(match.group("value"))
            register_secret(unquote(match.group("value")))


def userinfo_readings(text: str) -> list[str]:
    """The userinfo of ``text`` read as one source string, by both readings (module docstring).

    The raw reading takes everything after the scheme (or from the start, without one) up to the
    last "@" that is followed by something shaped like a host: a password may hold "/", "#", "?",
    quotes, spaces and "@" itself, none of which a camera host name can.
    """
    found: list[str] = []
    scheme = _LEADING_SCHEME.match(text)
    start = scheme.end() if scheme else len(text) - len(text.lstrip())
    try:
        netloc = urlsplit(text if scheme else "//" + text[start:]).netloc
    except ValueError:  # bad brackets: the raw reading below still applies
        netloc = ""
    if "@" in netloc:
        found.append(netloc.rpartition("@")[0])
    at = text.rfind("@")
    while at >= start:
        if _HOST_TAIL.match(text, at + 1):
            found.append(text[start:at])
            break
        at = text.rfind("@", start, at)
    return found


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    hidden = f"{MASK}:{MASK}" if ":" in userinfo else MASK
    return f"{match.group('scheme')}{hidden}@"


def redact(text: str) -> str:
    """``text`` with URL credentials and every registered secret replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    pattern = _pattern  # one read: a concurrent register_secret swaps in a new pattern whole
    if pattern is not None:
        text = pattern.sub(MASK, text)
    short_pattern = _short_pattern
    if short_pattern is not None:
        text = short_pattern.sub(MASK, text)
    text = _URL_USERINFO.sub(_mask_userinfo, text)
    return _QUERY_CREDENTIAL.sub(lambda m: m.group("key") + MASK, text)


def redact_url(url: str) -> str:
    """A URL safe to show: ``rtsp://user:pw@cam:554/s`` → ``rtsp://***:***@cam:554/s``."""
    return redact(url)


class RedactingFilter(logging.Filter):
    """Redacts each record's formatted message, exception text and stack text in place.

    Install it on handlers (the CLI puts it on the root logger's handlers), not on loggers:
    logger filters do not see records propagated from child loggers. The message is formatted
    here (msg % args) and args dropped, since a secret may sit in an argument and formatting
    later would bring it back.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not make the record (or the secret) escape
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatter.format() reuses exc_text when set, so filling it here keeps the raw
            # exception text (FFmpeg errors often quote the URL) from being formatted later.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _clear_secrets_for_tests() -> None:
    """Forget every registered secret. Only tests call this; the daemon never forgets."""
    global _pattern, _short_pattern
    with _lock:
        _secrets.clear()
        _short_secrets.clear()
        _pattern = _short_pattern = None
