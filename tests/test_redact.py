"""The single redaction helper: URL userinfo, registered secrets, the logging filter."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator

import pytest

from camrec import redact as redact_module
from camrec.redact import (
    RedactingFilter,
    redact,
    redact_url,
    register_secret,
    register_url_credentials,
)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    redact_module._clear_secrets_for_tests()
    yield
    redact_module._clear_secrets_for_tests()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://user:pass@host/x", "rtsp://***:***@host/x"),
        ("rtsp://user@host:554/x", "rtsp://***@host:554/x"),
        ("rtsps://admin:p@ss@cam.local:322/s", "rtsps://***:***@cam.local:322/s"),
        ("open rtsp://a:b@h/x failed: rtsp://c:d@h/y", "open rtsp://***:***@h/x failed: rtsp://***:***@h/y"),
        ("'rtsp://a:b@h/x'", "'rtsp://***:***@h/x'"),
        ("http://h/a?user=admin&password=hunter2&res=hd", "http://h/a?user=***&password=***&res=hd"),
        # Left alone: no userinfo, an "@" after the path, an e-mail address in prose.
        ("rtsp://host:554/stream1", "rtsp://host:554/stream1"),
        ("rtsp://host/path?to=a@b", "rtsp://host/path?to=a@b"),
        ("rtsp://cam and bob@example.com", "rtsp://cam and bob@example.com"),
        ("no urls here", "no urls here"),
    ],
)
def test_url_userinfo_is_always_hidden(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_is_idempotent() -> None:
    once = redact("rtsp://user:pass@host/x")
    assert redact(once) == once


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:hunter2@10.0.0.5:554/h264") == "rtsp://***:***@10.0.0.5:554/h264"


def test_registered_secret_is_hidden_everywhere_and_encoded() -> None:
    register_secret("Tr0ub4dor&3/x")
    text = "pw=Tr0ub4dor&3/x encoded=Tr0ub4dor%263%2Fx lower=Tr0ub4dor%263%2fx half=Tr0ub4dor%263/x"
    out = redact(text)
    assert "Tr0ub4dor" not in out
    assert out.count("***") == 4


def test_longer_secret_wins_over_its_prefix() -> None:
    register_secret("abcdef")
    register_secret("abcdefghij")
    assert redact("x abcdefghij y") == "x *** y"


@pytest.mark.parametrize("short", ["", "a", "ab"])
def test_very_short_secrets_leave_prose_alone(short: str) -> None:
    register_secret(short)
    assert redact("a cab ab") == "a cab ab"


@pytest.mark.parametrize("short", ["x'", "<>", "@", ":", "7"])
def test_very_short_secrets_are_hidden_in_credential_positions(short: str) -> None:
    # Issue 8: a two-character ${env:} password showed in clear (it was not registered at all).
    register_secret(short)
    for text in (f"rtsp://admin:{short}@cam/s", f"'rtsp://admin:{short}@cam/s'", f"admin:{short}@cam/s"):
        out = redact(text)
        assert f":{short}@" not in out, out
        assert ":***@cam/s" in out, out
    assert redact(f"x?user=a&password={short}") == "x?user=***&password=***"


@pytest.mark.parametrize("password", ["p'w", 'a"b', "<pw>", "a/b", "p#w", "p?w", "p w", "p@s:s%w", "x\\y'\""])
@pytest.mark.parametrize("shape", ["rtsp://admin:{}@cam.local:554/s?x=1", "admin:{}@cam.local/cam"])
def test_passwords_that_defeat_a_character_class_are_registered(password: str, shape: str) -> None:
    # Issue 8: quotes, "<>", "/", "#", "?", space or a missing scheme stopped the old pattern, so
    # the password was neither registered nor hidden in logs, status.json and config errors.
    url = shape.format(password)
    register_url_credentials(url)
    for text in (f"cannot open {url}: refused", f"source {url!r} has no host", repr([url]), f"pw is {password}"):
        assert password not in redact(text), redact(text)


def test_register_url_credentials_registers_password_not_user() -> None:
    register_url_credentials("rtsp://admin:s3cr%40t@cam/x and http://h/?password=qwerty9")
    # The password now hides even outside a URL, decoded or not; the user name does not.
    assert redact("echo s3cr@t s3cr%40t qwerty9 admin") == "echo *** *** *** admin"


def _logger_with_filter() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"camrec.test.redact.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_filter_redacts_message_and_args() -> None:
    register_secret("hunter2-secret")
    logger, stream = _logger_with_filter()
    logger.info("camera %s: opening %s with %s", "front", "rtsp://u:pw@h/x", "hunter2-secret")
    assert stream.getvalue() == "INFO camera front: opening rtsp://***:***@h/x with ***\n"


def test_filter_redacts_exception_text() -> None:
    register_secret("hunter2-secret")
    logger, stream = _logger_with_filter()
    try:
        raise ConnectionError("cannot open rtsp://u:hunter2-secret@h/x")
    except ConnectionError:
        logger.exception("camera %s failed", "front")
    output = stream.getvalue()
    assert "Traceback" in output
    assert "hunter2" not in output
    assert "rtsp://***:***@h/x" in output


def test_filter_survives_bad_format_arguments() -> None:
    logger, stream = _logger_with_filter()
    logger.info("two %s %s", "rtsp://u:p@h/x")  # one argument missing
    output = stream.getvalue()
    assert "rtsp://***:***@h/x" in output
    assert "u:p" not in output


def test_filter_redacts_stack_info() -> None:
    logger, stream = _logger_with_filter()
    register_secret("stack-secret-xyz")
    # The stack text quotes this very source line, secret included.
    logger.info("value %s", "stack-secret-xyz", stack_info=True)
    output = stream.getvalue()
    assert "Stack (most recent call last)" in output
    assert "stack-secret-xyz" not in output


def test_concurrent_registration_and_redaction() -> None:
    secrets = [f"secret-number-{i:04d}" for i in range(200)]
    errors: list[str] = []

    def writer() -> None:
        for secret in secrets:
            register_secret(secret)

    def reader() -> None:
        for _ in range(2000):
            out = redact("rtsp://a:b@h/x secret-number-0000")
            if "a:b" in out:
                errors.append(out)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert redact(" ".join(secrets)) == " ".join(["***"] * len(secrets))
